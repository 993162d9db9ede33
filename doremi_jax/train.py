"""Train a reference, DoReMi proxy or main model (``doremi-train``).

    python -m doremi_jax.train --gin_file=runs/proxy.gin --gin_file=experiments/synthetic.gin \
        --gin.MODEL_DIR=\"runs/x/proxy\" --gin.REFERENCE_MODEL_DIR=\"runs/x/reference\"

The run itself is ``doremi_jax.run.trainer.train``; a proxy run's averaged weights are
then written in every export format next to its weights JSON (``MODEL_DIR/export/``).
"""
from __future__ import annotations

from typing import Any, Sequence

from doremi_jax import errors
from doremi_jax.run import config, proxy, registry, trainer


@errors.exit_on_user_error
def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
  args = config.start_cli(argv, "Train a reference, DoReMi proxy or main model.")
  registry.register_configurables()
  config.configure(args.gin_file, args.bindings, args.gin_search_paths)
  config.prepare_tasks()
  summary = trainer.train_from_gin()
  if any("export" in p for p in summary.get("proxies", [])):
    summary = proxy.write_export_formats(summary["model_dir"], summary)
  return summary


def console_main() -> None:
  main()


if __name__ == "__main__":
  main()
