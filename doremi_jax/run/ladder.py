"""Main models at one or more sizes (``pipeline.main_models``), and what is read off them:
the arms compared per size, learning curves and steps-to-target, each arm's excess loss
over the reference per domain, and the DoReMi stages' cost as a fraction of a main run.

The first size is where choices are made (the DoReMi setting, on the selection split);
larger sizes train the baselines, the chosen DoReMi mixture and its reference-free twin.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

import numpy as np

from doremi_jax import errors
from doremi_jax.run import comparison, curves
from doremi_jax.run.stages import MainRuns


@dataclasses.dataclass(frozen=True)
class MainSize:
  label: str              # e.g. "1x", "4x": a directory name and a report heading
  model_gin: str | None   # a model gin file (e.g. "models/tiny.gin"); None: the experiment's


def main_sizes(main_models: Mapping[str, str | None] | None) -> list[MainSize]:
  """``{label: model gin}`` in order; None or empty: one size, the experiment's own model
  (run dirs ``main/<arm>/seed_<s>``, as before ladders existed)."""
  if not main_models:
    return [MainSize("", None)]
  if not isinstance(main_models, Mapping):
    raise errors.DoremiError("pipeline.main_models must map a size label to a model gin file, "
                             f"e.g. {{'1x': None, '4x': 'models/tiny.gin'}}; got {main_models!r}")
  out = []
  for label, gin_file in main_models.items():
    if not isinstance(label, str) or not label or "/" in label or label.startswith("."):
      raise errors.DoremiError(f"pipeline.main_models: size label {label!r} must be a plain "
                               "name such as '4x'")
    if gin_file is not None and not isinstance(gin_file, str):
      raise errors.DoremiError(f"pipeline.main_models[{label!r}] must be a gin file or None")
    out.append(MainSize(label, gin_file))
  return out


def later_size_arms(arms: Mapping[str, Any], doremi_arms: Sequence[str], selected: str
                    ) -> dict[str, Any]:
  """The arms a larger size trains: every non-DoReMi arm, the selected DoReMi arm and the
  reference-free ablation of the same setting (when the sweep has it)."""
  twin = selected + "-noref"
  return {a: v for a, v in arms.items()
          if a not in doremi_arms or a in (selected, twin)}


def _curve_series(rows: Sequence[Mapping[str, Any]], domains: Sequence[str]) -> dict[str, list]:
  return {"steps": [int(r["step"]) for r in rows],
          "values": [float(np.mean([r["bits_per_byte"][d] for d in domains])) for r in rows]}


def curve_series(split_curves: Mapping[str, Mapping[str, Sequence[Mapping[str, Any]]]],
                 domains: Sequence[str]) -> dict[str, dict[str, dict[str, list]]]:
  """{arm: {seed: {"steps", "values"}}}: average bits per byte over ``domains`` per row."""
  return {arm: {seed: _curve_series(rows, domains) for seed, rows in by_seed.items()}
          for arm, by_seed in split_curves.items()}


def excess_over_reference(evals: Mapping[str, Mapping[str, Mapping[str, Any]]],
                          reference: Mapping[str, Any]) -> dict[str, Any]:
  """Per arm: each domain's bits per byte minus the reference's (t interval over seeds),
  and the worst-case excess (max over domains per seed): DoReMi's objective, beside the
  worst-case absolute loss of the comparison."""
  ref = reference["bits_per_byte"]
  out = {}
  for arm, by_seed in evals.items():
    seeds = list(by_seed)
    per_domain = {d: comparison.t_interval(
        [by_seed[s]["bits_per_byte"][d] - ref[d] for s in seeds]) for d in ref}
    worst = [max(by_seed[s]["bits_per_byte"][d] - ref[d] for d in ref) for s in seeds]
    worst_domain = max(ref, key=lambda d: per_domain[d]["mean"])
    out[arm] = {"bits_per_byte": per_domain, "worst": comparison.t_interval(worst),
                "worst_domain": worst_domain}
  return out


def subset_average(evals: Mapping[str, Mapping[str, Mapping[str, Any]]],
                   domains: Sequence[str], baselines: Sequence[str] = ("natural", "uniform")
                   ) -> dict[str, Any]:
  """Average bits per byte over a subset of domains (e.g. the learnable ones of a controls
  experiment) per arm, with seed-paired differences against the baselines."""
  def series(arm):
    return np.array([np.mean([evals[arm][s]["bits_per_byte"][d] for d in domains])
                     for s in sorted(evals[arm])])
  out = {}
  for arm in evals:
    entry = {"average": comparison.t_interval(series(arm)), "paired_difference": {}}
    for base in baselines:
      if base in evals and base != arm:
        entry["paired_difference"][base] = comparison.t_interval(series(arm) - series(base))
    out[arm] = entry
  return {"domains": list(domains), "arms": out}


def analyse(runs: MainRuns, splits: Sequence[str], report_split: str,
            reference_eval: Mapping[str, Any] | None, doremi_cost: Mapping[str, float],
            learnable: Sequence[str] | None) -> dict[str, Any]:
  """Everything the report shows for one size (JSON-ready)."""
  evals = runs.evals[report_split]
  domains = sorted(next(iter(next(iter(evals.values())).values()))["bits_per_byte"])
  out: dict[str, Any] = {
      "model": runs.model,
      "comparison": {s: comparison.compare_arms(runs.evals[s]) for s in splits},
      "main_run_seconds_median": float(np.median(runs.seconds)),
      "main_run_flops": float(np.median(runs.flops)),
      "arm_cost": {a: {"seconds_median": float(np.median(c["seconds"])),
                       "flops": float(np.mean(c["flops"]))} for a, c in runs.arm_cost.items()},
  }
  out["doremi_cost_fraction"] = {
      "seconds": doremi_cost["seconds"] / out["main_run_seconds_median"],
      "flops": (doremi_cost["flops"] / out["main_run_flops"]) if out["main_run_flops"] else None}
  if runs.curves.get(report_split) and "natural" in evals:
    out["curves"] = {}
    for name, subset in (("all", domains), ("learnable", learnable)):
      if subset:
        series = curve_series(runs.curves[report_split], subset)
        out["curves"][name] = {"series": series, **curves.speedups(series, "natural")}
  if reference_eval is not None:
    out["excess_over_reference"] = excess_over_reference(evals, reference_eval)
  if learnable:
    out["learnable"] = subset_average(evals, learnable)
  if "natural" in evals:
    means = {a: {d: float(np.mean([r["bits_per_byte"][d] for r in by_seed.values()]))
                 for d in domains} for a, by_seed in evals.items()}
    out["domains_better_or_equal_vs_natural"] = {
        a: curves.domains_better_or_equal(means[a], means["natural"]) for a in evals
        if a != "natural"}
  return out
