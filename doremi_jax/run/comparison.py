"""Seed-paired comparison of mixtures ("arms"): t intervals, paired differences, table, plot.

Every arm is trained with the same seeds, so arm-minus-baseline differences are taken per
seed before the interval: seed-to-seed noise shared by both arms cancels out. Pure
Python/numpy/scipy (no JAX) so reports can be rebuilt from saved evaluations anywhere.
"""
from __future__ import annotations

import math
import os
from typing import Any, Iterable, Mapping

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from scipy import stats  # noqa: E402

from doremi_jax import errors, tables  # noqa: E402

METRICS = ("log_perplexity", "bits_per_byte")
SUMMARY_METRICS = ("average_log_perplexity", "worst_log_perplexity",
                   "average_bits_per_byte", "worst_bits_per_byte")
_LABELS = {"average_log_perplexity": "avg log-ppl", "worst_log_perplexity": "worst log-ppl",
           "average_bits_per_byte": "avg bits/byte", "worst_bits_per_byte": "worst bits/byte"}


def _finite_or_none(x: float) -> float | None:
  """JSON has no NaN/inf: undefined statistics are stored as ``None``."""
  return float(x) if math.isfinite(x) else None


def t_interval(values: Iterable[float], confidence: float = 0.95) -> dict[str, Any]:
  """Student-t interval for the mean over seeds; bounds are ``None`` with a single seed."""
  vals = [float(v) for v in values]
  n = len(vals)
  if n == 0:
    raise errors.DoremiError("t_interval needs at least one value")
  if not 0.0 < confidence < 1.0:
    raise errors.DoremiError(f"confidence must be in (0, 1), got {confidence}")
  mean = float(np.mean(vals))
  half = math.nan
  if n > 1:
    sem = float(np.std(vals, ddof=1)) / math.sqrt(n)
    half = float(stats.t.ppf((1.0 + confidence) / 2.0, n - 1)) * sem
  return {"mean": _finite_or_none(mean), "ci_low": _finite_or_none(mean - half),
          "ci_high": _finite_or_none(mean + half), "half_width": _finite_or_none(half),
          "n": n, "values": vals}


def _seed_order(seed: Any) -> tuple:
  text = str(seed)
  try:
    return (0, int(text), text)
  except ValueError:
    return (1, 0, text)


def _validate(evals: Mapping[str, Mapping[Any, Mapping[str, Any]]]) -> tuple[list, list[str]]:
  """Checks the paired design (same seeds, same domains everywhere); returns (seeds, domains)."""
  if not evals:
    raise errors.DoremiError("no arms to compare")
  first_arm = next(iter(evals))
  seeds = sorted(evals[first_arm], key=_seed_order)
  if not seeds:
    raise errors.DoremiError(f"arm {first_arm!r} has no evaluated seeds")
  seed_keys = {str(s) for s in seeds}
  domains: list[str] | None = None
  for arm, by_seed in evals.items():
    keys = {str(s) for s in by_seed}
    if keys != seed_keys or len(by_seed) != len(seeds):
      raise errors.DoremiError(
          f"arm {arm!r} has seeds {sorted(keys, key=_seed_order)} but arm {first_arm!r} has "
          f"{sorted(seed_keys, key=_seed_order)}: the comparison needs the same seeds for "
          "every arm")
    for seed, result in by_seed.items():
      for metric in METRICS:
        if not isinstance(result.get(metric), Mapping) or not result[metric]:
          raise errors.DoremiError(f"evaluation of arm {arm!r} seed {seed} has no {metric!r}")
        got = sorted(result[metric])
        if domains is None:
          domains = got
        if got != domains:
          raise errors.DoremiError(
              f"evaluation of arm {arm!r} seed {seed} has {metric} domains {got}, "
              f"expected {domains}")
        bad = [d for d, v in result[metric].items() if not math.isfinite(float(v))]
        if bad:
          raise errors.DoremiError(
              f"evaluation of arm {arm!r} seed {seed} has non-finite {metric} for {bad}")
  return seeds, domains


def _seed_summary(result: Mapping[str, Any], domains: list[str]) -> dict[str, Any]:
  """Average and worst domain of one model, recomputed from its per-domain values."""
  lp = [float(result["log_perplexity"][d]) for d in domains]
  bpb = [float(result["bits_per_byte"][d]) for d in domains]
  return {"average_log_perplexity": float(np.mean(lp)), "worst_log_perplexity": max(lp),
          "worst_domain": domains[int(np.argmax(lp))],
          "average_bits_per_byte": float(np.mean(bpb)), "worst_bits_per_byte": max(bpb),
          "worst_bits_per_byte_domain": domains[int(np.argmax(bpb))]}


def compare_arms(evals: Mapping[str, Mapping[Any, Mapping[str, Any]]],
                 baselines: Iterable[str] = ("natural", "uniform"),
                 confidence: float = 0.95) -> dict[str, Any]:
  """Per-arm t intervals over seeds and seed-paired differences against each baseline arm."""
  seeds, domains = _validate(evals)
  splits = sorted({str(r.get("split")) for by_seed in evals.values() for r in by_seed.values()})
  if len(splits) > 1:
    raise errors.DoremiError(f"evaluations mix splits {splits}: compare one split at a time")
  present = [b for b in baselines if b in evals]

  def lookup(arm: str) -> dict[str, Mapping[str, Any]]:
    return {str(s): r for s, r in evals[arm].items()}

  per_seed = {arm: {str(s): _seed_summary(lookup(arm)[str(s)], domains) for s in seeds}
              for arm in evals}

  def series(arm: str, metric: str, domain: str | None = None) -> np.ndarray:
    if domain is None:
      return np.array([per_seed[arm][str(s)][metric] for s in seeds])
    return np.array([float(lookup(arm)[str(s)][metric][domain]) for s in seeds])

  def intervals(values_of) -> dict[str, Any]:
    out: dict[str, Any] = {m: {d: t_interval(values_of(m, d), confidence) for d in domains}
                           for m in METRICS}
    out.update({m: t_interval(values_of(m, None), confidence) for m in SUMMARY_METRICS})
    return out

  arms: dict[str, Any] = {}
  for arm in evals:
    entry = {"per_seed": per_seed[arm]}
    entry.update(intervals(lambda m, d, a=arm: series(a, m, d)))
    entry["paired_difference"] = {}
    for base in present:
      if base == arm:
        continue
      diff = intervals(lambda m, d, a=arm, b=base: series(a, m, d) - series(b, m, d))
      bpb = diff["bits_per_byte"]
      diff["domains_better"] = [d for d in domains
                                if bpb[d]["ci_high"] is not None and bpb[d]["ci_high"] < 0]
      diff["domains_worse"] = [d for d in domains
                               if bpb[d]["ci_low"] is not None and bpb[d]["ci_low"] > 0]
      entry["paired_difference"][base] = diff
    arms[arm] = entry
  split = next(iter(next(iter(evals.values())).values())).get("split")
  return {"split": split, "seeds": list(seeds), "domains": list(domains),
          "confidence": confidence, "baselines": present, "arms": arms}


def best_arm(result: Mapping[str, Any], metric: str = "average_bits_per_byte",
             candidates: Iterable[str] | None = None) -> str:
  """The candidate arm with the lowest mean ``metric`` (ties go to the first name in order)."""
  if metric not in SUMMARY_METRICS:
    raise errors.DoremiError(f"unknown metric {metric!r} (choose from {list(SUMMARY_METRICS)})")
  names = list(result["arms"]) if candidates is None else list(candidates)
  missing = [a for a in names if a not in result["arms"]]
  if missing or not names:
    raise errors.DoremiError(
        f"candidate arms {missing or names} not in the comparison (have {list(result['arms'])})")
  return min(names, key=lambda a: result["arms"][a][metric]["mean"])


def _num(x: float | None, digits: int = 4) -> str:
  return "n/a" if x is None else f"{x:.{digits}f}"


def _pm(ci: Mapping[str, Any]) -> str:
  return f"{_num(ci['mean'])} ± {_num(ci['half_width'])}"


def _diff(ci: Mapping[str, Any]) -> str:
  return f"{ci['mean']:+.4f} [{_num(ci['ci_low'])}, {_num(ci['ci_high'])}]"


def comparison_table(result: Mapping[str, Any]) -> str:
  """Terminal table: per-seed values, mean ± CI half-width and paired differences per arm."""
  pct = f"{result['confidence'] * 100:g}%"
  bases = result.get("baselines", [])
  lines = [f"split {result['split']}: {len(result['seeds'])} seeds {result['seeds']}, "
           f"{len(result['domains'])} domains, mean ± {pct} CI half-width, "
           f"Δ = arm - baseline [{pct} CI] (lower is better)"]
  for unit, avg, worst in (("bits per byte", "average_bits_per_byte", "worst_bits_per_byte"),
                           ("log-perplexity (nats/token)", "average_log_perplexity",
                            "worst_log_perplexity")):
    header = ["arm", "per-seed average", "average", "worst domain"] + [f"Δ vs {b}" for b in bases]
    rows = []
    for arm, entry in result["arms"].items():
      seeds = " ".join(_num(entry["per_seed"][str(s)][avg], 3) for s in result["seeds"])
      diffs = entry["paired_difference"]
      rows.append([arm, seeds, _pm(entry[avg]), _pm(entry[worst])]
                  + [_diff(diffs[b][avg]) if b in diffs else "-" for b in bases])
    lines += ["", unit] + tables.text(header, rows).split("\n")
  lines.append("")
  for arm, entry in result["arms"].items():
    for base, diff in entry["paired_difference"].items():
      better = ", ".join(diff["domains_better"]) or "none"
      worse = ", ".join(diff["domains_worse"]) or "none"
      lines.append(f"{arm} vs {base} (bits/byte, beyond the CI): better {better}; worse {worse}")
  return "\n".join(lines)


def _md_ci(ci: Mapping[str, Any]) -> str:
  return f"[{_num(ci['ci_low'])}, {_num(ci['ci_high'])}]"


def comparison_markdown(result: Mapping[str, Any]) -> list[str]:
  """``report.md`` section: per-arm summary, paired differences, per-domain bits per byte."""
  pct = f"{result['confidence'] * 100:g}%"
  lines = [f"## Mixture comparison ({result['split']} split)", "",
           f"{len(result['seeds'])} seeds per arm ({', '.join(map(str, result['seeds']))}); "
           f"{pct} Student-t intervals over seeds. Log-perplexity in nats/token; "
           "averages are uniform over domains; worst is the per-seed maximum over domains.", ""]
  header = ["arm", "seeds"]
  for m in SUMMARY_METRICS:
    header += [_LABELS[m], f"{pct} CI"]
  rows = []
  for arm, entry in result["arms"].items():
    row = [arm, str(entry[SUMMARY_METRICS[0]]["n"])]
    for m in SUMMARY_METRICS:
      row += [_num(entry[m]["mean"]), _md_ci(entry[m])]
    rows.append(row)
  lines += tables.markdown_lines(header, rows)
  for base in result.get("baselines", []):
    rows = []
    for arm, entry in result["arms"].items():
      diff = entry["paired_difference"].get(base)
      if diff is None:
        continue
      rows.append([arm] + [f"{diff[m]['mean']:+.4f} {_md_ci(diff[m])}" for m in SUMMARY_METRICS]
                  + [", ".join(diff["domains_better"]) or "-",
                     ", ".join(diff["domains_worse"]) or "-"])
    if rows:
      lines += ["", f"### Paired difference vs `{base}` (arm - {base}, lower is better)", ""]
      header = (["arm"] + [f"Δ {_LABELS[m]} [{pct} CI]" for m in SUMMARY_METRICS]
                + ["better (bits/byte)", "worse (bits/byte)"])
      lines += tables.markdown_lines(header, rows)
  arms = list(result["arms"])
  rows = [[d] + [_pm(result["arms"][a]["bits_per_byte"][d]) for a in arms]
          for d in result["domains"]]
  rows.append(["**average**"] + [_pm(result["arms"][a]["average_bits_per_byte"]) for a in arms])
  lines += ["", f"### Bits per byte by domain (mean ± {pct} CI half-width)", ""]
  lines += tables.markdown_lines(["domain"] + arms, rows)
  return lines


def short_names(domains: list[str]) -> list[str]:
  """Drops a prefix shared by all domain names (e.g. ``synthetic_``) for readable labels."""
  prefix = os.path.commonprefix(domains)
  prefix = prefix[: prefix.rfind("_") + 1] if "_" in prefix else ""
  return [d[len(prefix):] or d for d in domains]


def plot_comparison(result: Mapping[str, Any], path: str) -> str:
  """Grouped bars of per-domain (and average) bits per byte per arm, CI half-width error bars."""
  domains = list(result["domains"])
  arms = list(result["arms"])
  labels = short_names(domains) + ["average"]
  x = np.arange(len(labels))
  width = 0.8 / len(arms)
  fig, ax = plt.subplots(figsize=(max(6.0, 1.2 * len(labels) + 0.3 * len(arms)), 4.5))
  for i, arm in enumerate(arms):
    entry = result["arms"][arm]
    cis = [entry["bits_per_byte"][d] for d in domains] + [entry["average_bits_per_byte"]]
    err = [c["half_width"] or 0.0 for c in cis]
    ax.bar(x + (i - (len(arms) - 1) / 2) * width, [c["mean"] for c in cis], width,
           yerr=err, capsize=3, label=arm)
  ax.set_xticks(x)
  ax.set_xticklabels(labels, rotation=30, ha="right")
  ax.set_ylabel("bits per byte (lower is better)")
  ax.set_title(f"{result['split']} split: mean over {len(result['seeds'])} seeds, "
               f"{result['confidence'] * 100:g}% CI")
  ax.legend(fontsize=8)
  return save_figure(fig, path)


def save_figure(fig, path: str, dpi: int = 100) -> str:
  """Writes a figure (its folder made if missing) and frees it; returns ``path``."""
  if os.path.dirname(path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
  fig.tight_layout()
  fig.savefig(path, dpi=dpi)
  plt.close(fig)
  return path
