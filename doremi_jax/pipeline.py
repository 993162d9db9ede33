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
import re
import shutil
import sys
from typing import Any, Mapping, Sequence

import gin
import numpy as np

from doremi_jax import (comparison, distributed, doremi, errors, evaluate, export, gin_utils,
                        report, steps, tasks_lib, tokenizer_info)
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

  def evaluate(self, model_dir: str, mixture: str, split: str) -> dict[str, Any]:
    cached = os.path.join(model_dir, evaluate.EVAL_FILE.format(split=split))
    if os.path.exists(cached):
      with open(cached) as f:
        result = json.load(f)
      if result.get("mixture_or_task_name") == mixture and "bits_per_byte" in result:
        return result
    gin.clear_config()
    # The run's own operative config fixes the architecture; only eval settings are added.
    gin_utils.configure([os.path.join(model_dir, "config.gin"), "runs/eval.gin"],
                        self.bindings + [f"MODEL_DIR = {model_dir!r}",
                                         f"MIXTURE_OR_TASK_NAME = {mixture!r}",
                                         f"evaluate.split = {split!r}"],
                        self.search_paths)
    gin_utils.call_configured(train_lib.import_task_modules)
    print(f"[pipeline] {os.path.relpath(model_dir)}: evaluating on {mixture} ({split})",
          flush=True)
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


def _load_arms(extra_arms: Mapping[str, str], domains: Sequence[str]
               ) -> dict[str, tuple[str, dict[str, float] | None, dict[str, Any]]]:
  """User-named arms, checked before anything is written: a registered mixture name, or a
  weights JSON (ours or the reference implementation's) naming exactly the experiment's
  domains. Returns {arm: (mixture name or JSON path, weights or None, metadata)}."""
  out = {}
  for arm, spec in extra_arms.items():
    if arm in ("natural", "uniform") or arm.startswith("doremi"):
      raise errors.DoremiError(f"arm name {arm!r} is taken by a built-in arm; rename it")
    if not str(spec).endswith(".json"):
      rates = tasks_lib.mixture_rates(spec)
      if sorted(rates) != sorted(domains):
        raise errors.DoremiError(f"arm {arm!r}: mixture {spec!r} has domains {sorted(rates)}, "
                                 f"not the experiment's {sorted(domains)}")
      out[arm] = (spec, None, {})
      continue
    weights, metadata = export.load_weights(spec)
    unknown, missing = sorted(set(weights) - set(domains)), sorted(set(domains) - set(weights))
    if unknown or missing:
      raise errors.DoremiError(f"arm {arm!r}: {spec} names unknown domains {unknown} and lacks "
                               f"{missing}; it must name exactly the experiment's tasks")
    out[arm] = (os.path.abspath(spec), weights, metadata)
  return out


def _arm_modules(experiment_dir: str, arms) -> dict[str, tuple[str, list[str]]]:
  """(mixture name, modules to import) per user arm; weights files become mixture modules
  under ``<experiment>/arms/`` so every main run's config.gin can re-register them."""
  out = {}
  for arm, (spec, weights, metadata) in arms.items():
    if weights is None:
      out[arm] = (spec, [])
      continue
    name = re.sub(r"\W", "_", f"arm_{arm}")
    paths = export.write_exports(os.path.join(experiment_dir, "arms"), name, weights,
                                 {**metadata, "source": spec}, overwrite=True)
    out[arm] = (name, [paths["module"]])
  return out


def _main_runs(stages: _Stages, experiment_dir: str, arms: Mapping[str, tuple[str, list[str]]],
               seeds: Sequence[int], main_steps: int, main_files: Sequence[str],
               uniform_mixture: str, eval_splits: Sequence[str]) -> dict[str, Any]:
  """Every arm x seed trained the same way, each evaluated on the same held-out sets.
  Returns ``({split: {arm: {seed: eval}}}, [wall seconds of each main run])``."""
  evals: dict[str, dict[str, dict[str, Any]]] = {split: {} for split in eval_splits}
  seconds = []
  for arm, (mixture, modules) in arms.items():
    for seed in seeds:
      main_dir = os.path.join(experiment_dir, "main", arm, f"seed_{seed}")
      summary = stages.train("runs/main.gin", main_dir, main_steps,
                             [f"MIXTURE_OR_TASK_NAME = {mixture!r}", f"SEED = {int(seed)}"],
                             modules, main_files)
      seconds.append(summary["wall_seconds"])
      for split in eval_splits:
        evals[split].setdefault(arm, {})[str(seed)] = stages.evaluate(
            main_dir, uniform_mixture, split)
  return evals, seconds


@gin.configurable(denylist=["stages"])
def pipeline(stages: _Stages, experiment_dir: str = gin.REQUIRED,
             baseline_mixture: str = gin.REQUIRED, uniform_mixture: str = gin.REQUIRED,
             reference_steps: int = gin.REQUIRED, proxy_steps: int = gin.REQUIRED,
             main_steps: int = gin.REQUIRED, rounds: int = 1, tolerance: float | None = None,
             run_main: bool = True, export_prefix: str = "doremi",
             main_gin_files: Sequence[str] = (), overwrite: bool = False,
             seeds: Sequence[int] = (0,), extra_arms: Mapping[str, str] | None = None,
             selection_split: str = "validation", report_split: str = "test"
             ) -> dict[str, Any]:
  """Runs all stages; returns (and writes) ``summary.json``.

  Main runs: arms ``natural`` (token counts), ``uniform``, the DoReMi mixture(s) and any
  ``extra_arms`` ({arm: mixture name or weights JSON}), each with every seed of ``seeds``.
  A sweep (several DoReMi settings) gives one arm per setting; the setting whose main
  models do best on ``selection_split`` is exported as ``export_prefix``, and numbers are
  reported on ``report_split`` (choices never look at it).
  """
  experiment_dir = os.path.abspath(experiment_dir)
  settings = steps.DoremiConfig().settings()
  if len(settings) > 1 and rounds > 1:
    raise errors.DoremiError("a DoReMi sweep (several step sizes/estimators/smoothings) runs "
                             "one round; set pipeline.rounds = 1 or give one setting")
  if not seeds or len(set(seeds)) != len(seeds):
    raise errors.DoremiError(f"pipeline.seeds must be distinct integers, got {list(seeds)}")
  baseline_rates = tasks_lib.mixture_rates(baseline_mixture)
  domains = tasks_lib.domain_names(uniform_mixture)
  if sorted(baseline_rates) != sorted(domains):
    raise errors.DoremiError(f"{baseline_mixture!r} and {uniform_mixture!r} have different domains")
  user_arms = _load_arms(dict(extra_arms or {}), domains)
  config_text = gin.config_str()
  fingerprint = {"config_sha256": hashlib.sha256(config_text.encode()).hexdigest(),
                 "gin_files": stages.gin_files, "bindings": stages.bindings}
  _check_experiment_dir(experiment_dir, fingerprint, overwrite)
  extra = _arm_modules(experiment_dir, user_arms)

  rounds_out: list[dict[str, Any]] = []
  reference_mixture, reference_modules = baseline_mixture, []
  previous = baseline_rates
  for k in range(1, rounds + 1):
    round_dir = os.path.join(experiment_dir, f"round_{k}")
    ref_dir, proxy_dir = os.path.join(round_dir, "reference"), os.path.join(round_dir, "proxy")
    ref_summary = stages.train("runs/reference.gin", ref_dir, reference_steps,
                               [f"BASELINE_MIXTURE = {reference_mixture!r}"], reference_modules)
    name = f"{export_prefix}_round{k}"
    summary = stages.train("runs/proxy.gin", proxy_dir, proxy_steps,
                           [f"UNIFORM_MIXTURE = {uniform_mixture!r}",
                            f"REFERENCE_MODEL_DIR = {ref_dir!r}", f"EXPORT_NAME = {name!r}"])
    proxies = [{**p, "average_domain_weights": export.normalise(p["average_domain_weights"],
                                                                domains)}
               for p in summary["proxies"]]
    weights = proxies[0]["average_domain_weights"]
    change = float(doremi.l1_distance(np.array([weights[d] for d in domains]),
                                      np.array([previous.get(d, 0.0) for d in domains])))
    rounds_out.append({"round": k, "reference_mixture": reference_mixture,
                       "average_domain_weights": weights, "l1_change": change,
                       "export": proxies[0]["export"], "proxies": proxies,
                       "reference_seconds": ref_summary["wall_seconds"],
                       "proxy_seconds": summary["wall_seconds"]})
    print(f"[pipeline] round {k}: L1 change of the weights {change:.4f}", flush=True)
    if tolerance is not None and change < tolerance:
      break
    reference_mixture, reference_modules = name, [proxies[0]["export"]["module"]]
    previous = weights

  export_dir = os.path.join(experiment_dir, "export")
  last = rounds_out[-1]
  doremi_arms: dict[str, dict[str, Any]] = {}
  for proxy in last["proxies"]:
    arm = "doremi" if len(last["proxies"]) == 1 else f"doremi_{proxy['tag']}"
    export_name = (export_prefix if len(last["proxies"]) == 1
                   else re.sub(r"\W", "_", f"{export_prefix}_{proxy['tag']}"))
    weights, metadata = export.load_weights(proxy["export"]["json"])
    paths = export.write_exports(export_dir, export_name, weights,
                                 {**metadata, "rounds": len(rounds_out)}, overwrite=True)
    doremi_arms[arm] = {"mixture": export_name, "weights": weights, "export": paths,
                        "setting": proxy["setting"]}
  result: dict[str, Any] = {
      "experiment_dir": experiment_dir, "domains": domains, "baseline_mixture": baseline_mixture,
      "baseline_weights": baseline_rates, "rounds": rounds_out, "doremi_arms": doremi_arms,
      "tokenizer": tokenizer_info.describe(uniform_mixture), "seeds": list(seeds)}
  selected = next(iter(doremi_arms))
  if run_main:
    arms = {"natural": (baseline_mixture, []), "uniform": (uniform_mixture, []),
            **{a: (v["mixture"], [v["export"]["module"]]) for a, v in doremi_arms.items()},
            **extra}
    splits = list(dict.fromkeys([selection_split, report_split]))
    evals, main_seconds = _main_runs(stages, experiment_dir, arms, seeds, main_steps,
                                     main_gin_files, uniform_mixture, splits)
    result["cost_seconds"] = {
        "reference_and_proxy": sum(r["reference_seconds"] + r["proxy_seconds"]
                                   for r in rounds_out),
        "main_run_median": float(np.median(main_seconds))}
    comparisons = {split: comparison.compare_arms(evals[split]) for split in splits}
    selected = comparison.best_arm(comparisons[selection_split], candidates=list(doremi_arms))
    result.update({"main": evals, "comparison": comparisons, "selected_arm": selected,
                   "selection": f"lowest mean average_bits_per_byte on {selection_split}",
                   "report_split": report_split})
  chosen = doremi_arms[selected]
  result["doremi_weights"] = chosen["weights"]
  result["export"] = (chosen["export"] if chosen["mixture"] == export_prefix else
                      export.write_exports(export_dir, export_prefix, chosen["weights"],
                                           {"selected_arm": selected, **chosen["setting"]},
                                           overwrite=True))
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

