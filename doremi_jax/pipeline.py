"""The whole DoReMi pipeline (``doremi-pipeline``): reference -> proxy -> main runs -> eval.

    python -m doremi_jax.pipeline --gin_file=experiments/demo.gin

Stages and rounds: ``doremi_jax.run.pipeline``; each stage is an ordinary training run
configured from ``gin/runs/<stage>.gin`` + the experiment's gin files + stage bindings.
"""
from __future__ import annotations

from typing import Any, Sequence

from doremi_jax import errors
from doremi_jax.run import config, pipeline, registry, report, stages


@errors.exit_on_user_error
def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
  args = config.start_cli(argv, "Run the DoReMi pipeline: reference, proxy, export, main, eval.")
  registry.register_configurables()
  runner = stages.Stages(args.gin_file, args.bindings, args.gin_search_paths)
  runner.configure("runs/base.gin", ["MODEL_DIR = ''", "TRAIN_STEPS = 1",
                                     "MIXTURE_OR_TASK_NAME = ''"])
  result = config.call_configured(pipeline.pipeline, runner)
  print(report.summary_text(result))
  return result


def console_main() -> None:
  main()


if __name__ == "__main__":
  main()
