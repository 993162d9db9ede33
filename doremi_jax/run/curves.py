"""Learning curves: steps to reach the baseline's final loss, speed-ups, domains improved.

The DoReMi paper's headline is not a final loss but a speed-up: the baseline's final
quality reached in fewer steps (2.6x on the Pile), with k of n domains better or equal.
A curve is ``{"steps": [...], "values": [...]}`` (lower is better), one per arm and seed;
a curve that never reaches the target is reported as not reached, never extrapolated.
Pure Python/numpy (no JAX), like ``comparison``, so reports rebuild from saved curves.
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from doremi_jax import errors  # noqa: E402
from doremi_jax.run.comparison import save_figure, t_interval  # noqa: E402

Curve = Mapping[str, Sequence]  # {"steps": [int, ...], "values": [float, ...]}


def _checked(steps: Sequence[int], values: Sequence[float], what: str = "curve"
             ) -> tuple[list[int], list[float]]:
  steps, values = [int(s) for s in steps], [float(v) for v in values]
  if not steps or len(steps) != len(values):
    raise errors.DoremiError(f"{what}: needs as many values as steps, at least one "
                             f"(got {len(steps)} steps, {len(values)} values)")
  if any(b <= a for a, b in zip(steps, steps[1:])):
    raise errors.DoremiError(f"{what}: steps must increase, got {steps}")
  return steps, values


def _curve(run: Curve, what: str) -> tuple[list[int], list[float]]:
  try:
    return _checked(run["steps"], run["values"], what)
  except (KeyError, TypeError):
    raise errors.DoremiError(f"{what}: expected {{'steps': [...], 'values': [...]}}") from None


def steps_to_target(steps: Sequence[int], values: Sequence[float], target: float
                    ) -> float | None:
  """The first step at which the curve is <= ``target``, linearly interpolated between the
  two evaluations around the crossing; the first evaluation's step if it is already there;
  None if no evaluation reaches it. A NaN evaluation never reaches the target, and a
  crossing right after a non-finite one is dated at the evaluation that reached it."""
  steps, values = _checked(steps, values)
  if not math.isfinite(target):
    raise errors.DoremiError(f"the target must be finite, got {target}")
  for i, (step, value) in enumerate(zip(steps, values)):
    if value <= target:
      if i == 0 or not math.isfinite(values[i - 1]):
        return float(step)
      s0, v0 = steps[i - 1], values[i - 1]  # v0 > target >= value
      return s0 + (v0 - target) / (v0 - value) * (step - s0)
  return None


def speedups(curves: Mapping[str, Mapping[Any, Curve]], baseline: str = "natural",
             confidence: float = 0.95) -> dict:
  """Per arm and seed, the step at which the arm reaches the baseline's final value on
  the same seed, and the speed-up ``baseline's final step / that step``; per arm, a
  t-interval of the speed-ups over seeds when every seed reached the target (otherwise
  only how many did: a missing seed is not imputed). A curve at the target from step 0
  has no finite speed-up (None)."""
  if baseline not in curves:
    raise errors.DoremiError(f"baseline arm {baseline!r} not among {sorted(curves)}")
  seeds = list(curves[baseline])
  if not seeds:
    raise errors.DoremiError(f"baseline arm {baseline!r} has no seeds")
  for arm, runs in curves.items():
    if set(runs) != set(seeds):
      raise errors.DoremiError(f"arm {arm!r} has seeds {sorted(map(str, runs))}, the "
                               f"baseline {sorted(map(str, seeds))}: the design is paired")
  final_step, target = {}, {}
  for seed in seeds:
    steps, values = _curve(curves[baseline][seed], f"{baseline} seed {seed}")
    if not math.isfinite(values[-1]):
      raise errors.DoremiError(f"{baseline} seed {seed}: final value {values[-1]} is not finite")
    final_step[seed], target[seed] = steps[-1], values[-1]
  reach: dict[str, dict] = {}
  speedup: dict[str, dict] = {}
  summary: dict[str, dict] = {}
  for arm, runs in curves.items():
    reach[arm] = {seed: steps_to_target(*_curve(runs[seed], f"{arm} seed {seed}"), target[seed])
                  for seed in seeds}
    speedup[arm] = {seed: final_step[seed] / s if s else None for seed, s in reach[arm].items()}
    entry = {"reached": sum(s is not None for s in reach[arm].values()), "of": len(seeds),
             "not_reached": [seed for seed in seeds if reach[arm][seed] is None]}
    values = list(speedup[arm].values())
    if all(v is not None for v in values):
      ci = t_interval(values, confidence)
      entry.update({k: ci[k] for k in ("mean", "ci_low", "ci_high", "half_width", "n")})
    else:
      entry.update(mean=None, ci_low=None, ci_high=None, half_width=None, n=0)
    summary[arm] = entry
  return {"baseline": baseline, "confidence": confidence, "target": target,
          "baseline_final_step": final_step, "steps_to_natural_final": reach,
          "speedup_vs_natural": speedup, "summary": summary}


def domains_better_or_equal(arm_final: Mapping[str, float],
                            baseline_final: Mapping[str, float]) -> dict:
  """The paper's "k of n domains better or equal": per-domain final values (means over
  seeds, lower is better) of an arm against the baseline's."""
  if not baseline_final or set(arm_final) != set(baseline_final):
    raise errors.DoremiError(f"domains differ: arm {sorted(arm_final)}, "
                             f"baseline {sorted(baseline_final)}")
  better = [d for d in baseline_final if float(arm_final[d]) <= float(baseline_final[d])]
  return {"k": len(better), "n": len(baseline_final), "domains": better}


def plot_curves(curves: Mapping[str, Mapping[Any, Curve]], path: str, title: str,
                baseline: str = "natural", ylabel: str = "validation loss (lower is better)"
                ) -> str:
  """Mean curve per arm over its seeds (at the steps every seed evaluated) with a min-max
  band, and a dashed line at the baseline's final mean: where each arm crosses it is its
  steps-to-target. Returns ``path``."""
  fig, ax = plt.subplots(figsize=(7.0, 4.5))
  for arm, runs in curves.items():
    parsed = [_curve(run, f"{arm} seed {seed}") for seed, run in runs.items()]
    if not parsed:
      continue
    common = sorted(set.intersection(*(set(steps) for steps, _ in parsed)))
    rows = np.array([[dict(zip(steps, values))[s] for s in common] for steps, values in parsed])
    line, = ax.plot(common, rows.mean(axis=0), label=f"{arm} ({len(parsed)} seeds)")
    if len(parsed) > 1:
      ax.fill_between(common, rows.min(axis=0), rows.max(axis=0), color=line.get_color(),
                      alpha=0.2, linewidth=0)
  if curves.get(baseline):
    final = np.mean([_curve(run, baseline)[1][-1] for run in curves[baseline].values()])
    ax.axhline(final, color="0.3", linestyle="--", linewidth=1,
               label=f"{baseline} final ({final:.4g})")
  ax.set_xlabel("step")
  ax.set_ylabel(ylabel)
  ax.set_title(title)
  ax.legend(fontsize=8)
  return save_figure(fig, path)
