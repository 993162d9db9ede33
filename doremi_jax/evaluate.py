"""Per-domain held-out log-perplexity of a trained model (``doremi-eval``).

    python -m doremi_jax.evaluate --gin.MODEL_DIR=\"runs/x/main\" \
        --gin.MIXTURE_OR_TASK_NAME=\"synthetic_uniform\"

The model's own ``config.gin`` (written by training) is parsed first, so the
architecture always matches the checkpoint; then ``runs/eval.gin`` and any ``--gin_file``.
"""
from __future__ import annotations

import os
from typing import Any, Sequence

from doremi_jax import errors
from doremi_jax.run import config, evaluate, paths, registry


def _model_dir(bindings: Sequence[str]) -> str:
  """MODEL_DIR from the command line: its config.gin must be read before anything else."""
  for binding in bindings:
    key, _, value = binding.partition("=")
    if key.strip() == "MODEL_DIR":
      return value.strip().strip("\"'")
  raise errors.DoremiError("missing required gin value: MODEL_DIR (--gin.MODEL_DIR=\\\"...\\\")")


@errors.exit_on_user_error
def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
  args = config.start_cli(argv, "Per-domain held-out log-perplexity of a trained model.")
  registry.register_configurables()
  model_dir = _model_dir(args.bindings)
  run_config = os.path.join(model_dir, paths.CONFIG_FILE)
  if not os.path.exists(run_config):
    raise errors.DoremiError(f"{run_config!r} not found: is {model_dir!r} a trained model dir?")
  config.configure([run_config, "runs/eval.gin", *args.gin_file], args.bindings,
                   args.gin_search_paths)
  config.prepare_tasks()
  result = config.call_configured(evaluate.evaluate_main)
  print(evaluate.format_table({os.path.basename(os.path.normpath(model_dir)): result}))
  return result


def console_main() -> None:
  main()


if __name__ == "__main__":
  main()
