"""The pipeline's stages: each an ordinary training or evaluation run under a fresh gin
config (the stage's ``gin/runs/<stage>.gin`` + the experiment's files + stage bindings),
so any stage can be re-run by hand with the ``config.gin`` it leaves behind."""
from __future__ import annotations

import dataclasses
import hashlib
import os
from typing import Any, Mapping, Sequence

import gin

from doremi_jax import errors, mixture_files, mixtures
from doremi_jax.run import config, evaluate, heldout, paths, trainer

# (mixture name, exported mixtures to register first) per arm of the main runs.
Arms = Mapping[str, tuple[str, Sequence[str]]]


class Stages:
  """Runs stages under fresh gin configs built from the experiment's files + bindings."""

  def __init__(self, gin_files: Sequence[str], bindings: Sequence[str], search_paths: str):
    self.gin_files, self.bindings, self.search_paths = list(gin_files), list(bindings), search_paths

  def configure(self, run_gin: str, stage_bindings: Sequence[str],
                task_modules: Sequence[str] = (), extra_files: Sequence[str] = ()) -> None:
    """A fresh gin config; ``task_modules`` (exported mixtures: weights JSONs or modules)
    are registered after the experiment's ``TASK_MODULES``, ``extra_files`` parsed last."""
    gin.clear_config()
    config.configure([run_gin] + self.gin_files + list(extra_files),
                     self.bindings + list(stage_bindings), self.search_paths)
    if task_modules:
      modules = list(gin.query_parameter("%TASK_MODULES")) + list(task_modules)
      gin.bind_parameter("import_task_modules.modules", modules)
    config.prepare_tasks()

  def train(self, run_gin: str, model_dir: str, steps: int, extra: Sequence[str] = (),
            task_modules: Sequence[str] = (), extra_files: Sequence[str] = ()) -> dict[str, Any]:
    self.configure(run_gin, [f"MODEL_DIR = {model_dir!r}", f"TRAIN_STEPS = {steps}",
                             "RESUME = True", *extra], task_modules, extra_files)
    print(f"[pipeline] {os.path.relpath(model_dir)}: training {steps} steps", flush=True)
    return trainer.train_from_gin()

  def evaluate(self, model_dir: str, mixture: str, split: str) -> dict[str, Any]:
    cached = paths.eval_file(model_dir, split)
    if os.path.exists(cached):
      result = paths.read_json(cached)
      if result.get("mixture_or_task_name") == mixture and "bits_per_byte" in result:
        return result
    gin.clear_config()
    # The run's own operative config fixes the architecture; only eval settings are added.
    config.configure([os.path.join(model_dir, paths.CONFIG_FILE), "runs/eval.gin"],
                     self.bindings + [f"MODEL_DIR = {model_dir!r}",
                                      f"MIXTURE_OR_TASK_NAME = {mixture!r}",
                                      f"evaluate.split = {split!r}"],
                     self.search_paths)
    config.prepare_tasks()
    print(f"[pipeline] {os.path.relpath(model_dir)}: evaluating on {mixture} ({split})",
          flush=True)
    return config.call_configured(evaluate.evaluate_main)


def load_arms(extra_arms: Mapping[str, str], domains: Sequence[str]
              ) -> dict[str, tuple[str, dict[str, float] | None, dict[str, Any]]]:
  """User-named arms, checked before anything is written: a registered mixture name, or a
  weights JSON (ours or the reference implementation's) naming exactly the experiment's
  domains. Returns {arm: (mixture name or JSON path, weights or None, metadata)}."""
  out = {}
  for arm, spec in extra_arms.items():
    if arm in ("natural", "uniform", "unimax", "regmix") or arm.startswith("doremi"):
      raise errors.DoremiError(f"arm name {arm!r} is taken by a built-in arm; rename it")
    if not str(spec).endswith(".json"):
      rates = mixtures.mixture_rates(spec)
      if sorted(rates) != sorted(domains):
        raise errors.DoremiError(f"arm {arm!r}: mixture {spec!r} has domains {sorted(rates)}, "
                                 f"not the experiment's {sorted(domains)}")
      out[arm] = (spec, None, {})
      continue
    weights, metadata = mixture_files.load_weights(spec, domains)
    mixtures.check_weights(weights, what=f"arm {arm!r}: {spec}", domains=domains)
    out[arm] = (os.path.abspath(spec), weights, metadata)
  return out


def arm_mixtures(experiment_dir: str, arms) -> dict[str, tuple[str, list[str]]]:
  """(mixture name, weights files to register) per user arm; weights become weights JSONs
  (with their domains' specs) under ``<experiment>/arms/`` so every main run's config.gin
  can re-register them."""
  out = {}
  for arm, (spec, weights, metadata) in arms.items():
    if weights is None:
      out[arm] = (spec, [])
      continue
    name = mixture_files.export_name("arm", arm)
    path = os.path.join(experiment_dir, "arms", name + ".json")
    mixture_files.write_weights(path, name, weights, {**metadata, "source": spec})
    out[arm] = (name, [path])
  return out


@dataclasses.dataclass
class MainRuns:
  """Every arm x seed of one main model size: evaluations, learning curves and costs."""
  evals: dict[str, dict[str, dict[str, Any]]]  # {split: {arm: {seed: evaluation}}}
  curves: dict[str, dict[str, dict[str, list[dict[str, Any]]]]]  # {split: {arm: {seed: rows}}}
  model: dict[str, Any]  # the main model's config (with num_params) from a run's summary
  # {arm: {"seconds": [...], "flops": [...]}} over seeds: an online arm's include its proxy
  arm_cost: dict[str, dict[str, list[float]]] = dataclasses.field(default_factory=dict)

  @property
  def seconds(self) -> list[float]:
    """Every main run's wall seconds (all arms and seeds)."""
    return [x for c in self.arm_cost.values() for x in c["seconds"]]

  @property
  def flops(self) -> list[float]:
    return [x for c in self.arm_cost.values() for x in c["flops"]]


def main_runs(stages: Stages, experiment_dir: str, arms: Arms, seeds: Sequence[int],
              main_steps: int, main_files: Sequence[str], uniform_mixture: str,
              eval_splits: Sequence[str], size: str | None = None,
              eval_every: int | None = None, curve_split: str = "test") -> MainRuns:
  """Every arm x seed trained the same way, each evaluated on the same held-out sets (and,
  with ``eval_every``, on a fixed subset of ``curve_split`` every ``eval_every`` steps)."""
  out = MainRuns({split: {} for split in eval_splits}, {split: {} for split in eval_splits},
                 {})
  curve = ([f"train.eval_every = {int(eval_every)}", f"train.curve_splits = {[curve_split]!r}"]
           if eval_every else [])
  for arm, entry in arms.items():
    mixture, modules = entry[0], entry[1]
    bindings = list(entry[2]) if len(entry) > 2 else []  # e.g. a domain schedule
    for seed in seeds:
      main_dir = paths.main_run_dir(experiment_dir, arm, seed, size)
      summary = stages.train("runs/main.gin", main_dir, main_steps,
                             [f"MIXTURE_OR_TASK_NAME = {mixture!r}", f"SEED = {int(seed)}",
                              *curve, *bindings], modules, main_files)
      cost = out.arm_cost.setdefault(arm, {"seconds": [], "flops": []})
      cost["seconds"].append(summary["wall_seconds"])
      cost["flops"].append(summary.get("estimated_flops") or 0.0)
      out.model = summary["model"]
      for split in eval_splits:
        out.evals[split].setdefault(arm, {})[str(seed)] = stages.evaluate(
            main_dir, uniform_mixture, split)
        if eval_every and split == curve_split:
          out.curves[split].setdefault(arm, {})[str(seed)] = heldout.read_curve(main_dir, split)
  return out


def fingerprint(gin_files: Sequence[str], bindings: Sequence[str]) -> dict[str, Any]:
  """What makes an experiment dir this experiment: the sha256 of its parsed gin config."""
  text = gin.config_str()
  return {"config_sha256": hashlib.sha256(text.encode()).hexdigest(),
          "gin_files": list(gin_files), "bindings": list(bindings)}

