"""The whole DoReMi pipeline: reference -> proxy -> export (x rounds) -> main runs -> eval.

    python -m doremi_jax.pipeline --gin_file=experiments/demo.gin

Each stage is an ordinary ``doremi_jax.train`` run configured from the stage's
``gin/runs/<stage>.gin`` + the experiment's gin files + stage bindings, so any
stage can be re-run by hand with the ``config.gin`` it leaves behind. Stages
resume: a finished stage is skipped, an interrupted one continues from its
latest checkpoint. Round k+1's reference trains on round k's exported mixture.
"""
from __future__ import annotations

if __name__ == "__main__":  # run the package module, so gin sees each configurable once
  from doremi_jax.pipeline import console_main as _main  # pylint: disable=g-import-not-at-top
  _main()
  raise SystemExit(0)

import hashlib
import json
import os
import shutil
import sys
from typing import Any, Sequence

import gin
import numpy as np

from doremi_jax import (distributed, doremi, errors, evaluate, export, gin_utils, report, tasks_lib,
                        tokenizer_info)
from doremi_jax import train as train_lib

PIPELINE_FILE = "pipeline.json"
SUMMARY_FILE = "summary.json"


class _Stages:
  """Runs stages under fresh gin configs built from the experiment's files + bindings."""

  def __init__(self, gin_files: Sequence[str], bindings: Sequence[str], search_paths: str):
    self.gin_files, self.bindings, self.search_paths = list(gin_files), list(bindings), search_paths

  def configure(self, run_gin: str, stage_bindings: Sequence[str],
                extra_modules: Sequence[str] = (), extra_files: Sequence[str] = ()) -> None:
    gin.clear_config()
    gin_utils.configure([run_gin] + self.gin_files + list(extra_files),
                        self.bindings + list(stage_bindings), self.search_paths)
    if extra_modules:
      modules = list(gin.query_parameter("%TASK_MODULES")) + list(extra_modules)
      gin.bind_parameter("import_task_modules.modules", modules)
    gin_utils.call_configured(train_lib.import_task_modules)

  def train(self, run_gin: str, model_dir: str, steps: int, extra: Sequence[str] = (),
            extra_modules: Sequence[str] = (), extra_files: Sequence[str] = ()) -> dict[str, Any]:
    self.configure(run_gin, [f"MODEL_DIR = {model_dir!r}", f"TRAIN_STEPS = {steps}",
                             "RESUME = True", *extra], extra_modules, extra_files)
    print(f"[pipeline] {os.path.relpath(model_dir)}: training {steps} steps", flush=True)
    return gin_utils.call_configured(train_lib.train)

  def evaluate(self, model_dir: str, mixture: str) -> dict[str, Any]:
    cached = os.path.join(model_dir, evaluate.EVAL_FILE.format(split="validation"))
    if os.path.exists(cached):
      with open(cached) as f:
        result = json.load(f)
      if result.get("mixture_or_task_name") == mixture:
        return result
    gin.clear_config()
    # The run's own operative config fixes the architecture; only eval settings are added.
    gin_utils.configure([os.path.join(model_dir, "config.gin"), "runs/eval.gin"],
                        self.bindings + [f"MODEL_DIR = {model_dir!r}",
                                         f"MIXTURE_OR_TASK_NAME = {mixture!r}"],
                        self.search_paths)
    gin_utils.call_configured(train_lib.import_task_modules)
    print(f"[pipeline] {os.path.relpath(model_dir)}: evaluating on {mixture}", flush=True)
    return gin_utils.call_configured(evaluate.evaluate_main)


def _check_experiment_dir(experiment_dir: str, fingerprint: dict[str, Any], overwrite: bool) -> None:
  """An experiment dir belongs to one configuration; reruns of it reuse finished stages."""
  path = os.path.join(experiment_dir, PIPELINE_FILE)
  if os.path.exists(path):
    with open(path) as f:
      previous = json.load(f)
    if previous.get("config_sha256") != fingerprint["config_sha256"] and not overwrite:
      raise errors.DoremiError(
          f"{experiment_dir!r} holds a different experiment (its gin config changed); "
          "choose a new pipeline.experiment_dir or pass --gin.pipeline.overwrite=True")
    if overwrite and previous.get("config_sha256") != fingerprint["config_sha256"]:
      shutil.rmtree(experiment_dir)
  elif os.path.isdir(experiment_dir) and os.listdir(experiment_dir) and not overwrite:
    raise errors.DoremiError(f"{experiment_dir!r} is not empty and is not a pipeline dir; "
                             "choose a new pipeline.experiment_dir")
  os.makedirs(experiment_dir, exist_ok=True)
  with open(path, "w") as f:
    json.dump(fingerprint, f, indent=2)


@gin.configurable(denylist=["stages"])
def pipeline(stages: _Stages, experiment_dir: str = gin.REQUIRED,
             baseline_mixture: str = gin.REQUIRED, uniform_mixture: str = gin.REQUIRED,
             reference_steps: int = gin.REQUIRED, proxy_steps: int = gin.REQUIRED,
             main_steps: int = gin.REQUIRED, rounds: int = 1, tolerance: float | None = None,
             run_main: bool = True, export_prefix: str = "doremi",
             main_gin_files: Sequence[str] = (), overwrite: bool = False) -> dict[str, Any]:
  """Runs all stages; returns (and writes) ``summary.json``."""
  experiment_dir = os.path.abspath(experiment_dir)
  config_text = gin.config_str()
  fingerprint = {"config_sha256": hashlib.sha256(config_text.encode()).hexdigest(),
                 "gin_files": stages.gin_files, "bindings": stages.bindings}
  _check_experiment_dir(experiment_dir, fingerprint, overwrite)
  baseline_rates = tasks_lib.mixture_rates(baseline_mixture)
  domains = tasks_lib.domain_names(uniform_mixture)
  if sorted(baseline_rates) != sorted(domains):
    raise errors.DoremiError(f"{baseline_mixture!r} and {uniform_mixture!r} have different domains")

  rounds_out: list[dict[str, Any]] = []
  reference_mixture, reference_modules = baseline_mixture, []
  previous = baseline_rates
  for k in range(1, rounds + 1):
    round_dir = os.path.join(experiment_dir, f"round_{k}")
    ref_dir, proxy_dir = os.path.join(round_dir, "reference"), os.path.join(round_dir, "proxy")
    stages.train("runs/reference.gin", ref_dir, reference_steps,
                 [f"BASELINE_MIXTURE = {reference_mixture!r}"], reference_modules)
    name = f"{export_prefix}_round{k}"
    summary = stages.train("runs/proxy.gin", proxy_dir, proxy_steps,
                           [f"UNIFORM_MIXTURE = {uniform_mixture!r}",
                            f"REFERENCE_MODEL_DIR = {ref_dir!r}", f"EXPORT_NAME = {name!r}"])
    weights = summary["average_domain_weights"]
    total = sum(weights.values())
    weights = {d: weights[d] / total for d in domains}
    change = float(doremi.l1_distance(np.array([weights[d] for d in domains]),
                                      np.array([previous.get(d, 0.0) for d in domains])))
    rounds_out.append({"round": k, "reference_mixture": reference_mixture,
                       "average_domain_weights": weights, "l1_change": change,
                       "export": summary["export"]})
    print(f"[pipeline] round {k}: L1 change of the weights {change:.4f}", flush=True)
    if tolerance is not None and change < tolerance:
      break
    reference_mixture, reference_modules = name, [summary["export"]["module"]]
    previous = weights

  export_dir = os.path.join(experiment_dir, "export")
  os.makedirs(export_dir, exist_ok=True)
  final_weights, metadata = export.load_weights(rounds_out[-1]["export"]["json"])
  paths = export.write_exports(export_dir, export_prefix, final_weights,
                               {**metadata, "rounds": len(rounds_out)}, overwrite=True)
  result: dict[str, Any] = {
      "experiment_dir": experiment_dir, "domains": domains, "baseline_mixture": baseline_mixture,
      "baseline_weights": baseline_rates, "rounds": rounds_out,
      "doremi_weights": final_weights, "export": paths,
      "tokenizer": tokenizer_info.describe(uniform_mixture)}

  if run_main:
    main_files = list(main_gin_files)
    runs = {"baseline": (baseline_mixture, []), "doremi": (export_prefix, [paths["module"]])}
    evals = {}
    for label, (mixture, modules) in runs.items():
      main_dir = os.path.join(experiment_dir, f"main_{label}")
      stages.train("runs/main.gin", main_dir, main_steps,
                   [f"MIXTURE_OR_TASK_NAME = {mixture!r}"], modules, main_files)
      evals[label] = stages.evaluate(main_dir, uniform_mixture)
    result["main"] = {label: {k: ev[k] for k in ("log_perplexity", "average_log_perplexity",
                                                 "worst_log_perplexity", "worst_domain")}
                      for label, ev in evals.items()}
  with open(os.path.join(experiment_dir, SUMMARY_FILE), "w") as f:
    json.dump(result, f, indent=2)
  result["report"] = report.write_report(experiment_dir, result)
  return result


@errors.exit_on_user_error
def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
  distributed.maybe_initialize()
  args = gin_utils.parse_args(sys.argv[1:] if argv is None else argv,
                              "Run the DoReMi pipeline: reference, proxy, export, main, eval.")
  stages = _Stages(args.gin_file, args.bindings, args.gin_search_paths)
  stages.configure("runs/base.gin", ["MODEL_DIR = ''", "TRAIN_STEPS = 1",
                                     "MIXTURE_OR_TASK_NAME = ''"])
  result = gin_utils.call_configured(pipeline, stages)
  print(report.summary_text(result))
  return result


def console_main() -> None:
  main()

