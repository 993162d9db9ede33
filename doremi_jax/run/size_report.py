"""The report's part for each main model size: the arms compared, speed to natural's final
loss, per-domain excess over the reference and what DoReMi cost, as markdown for
``report.md`` and as text for the terminal (what ``make demo`` prints)."""
from __future__ import annotations

import os
from typing import Any, Mapping

from doremi_jax import tables
from doremi_jax.run import comparison, curves
from doremi_jax.run.comparison import short_names


def _num(x: float | None, digits: int = 3) -> str:
  return "n/a" if x is None else f"{x:.{digits}f}"


def _ci(ci: Mapping[str, Any], digits: int = 4) -> str:
  return (f"{ci['mean']:+.{digits}f} [{_num(ci['ci_low'], digits)}, "
          f"{_num(ci['ci_high'], digits)}]")


def heading(label: str, size: Mapping[str, Any], proxy_params: int | None) -> str:
  model = size["model"]
  ratio = (f", {model['non_embedding_params'] / proxy_params:.1f}x the proxy's"
           if proxy_params and model.get("non_embedding_params") else "")
  return (f"size {label}: {size.get('model_gin') or 'the experiment model'}, "
          f"{model['num_params'] / 1e6:.2f}M parameters "
          f"({model.get('non_embedding_params', 0) / 1e6:.2f}M non-embedding{ratio})")


def speedup_rows(size: Mapping[str, Any], which: str = "all") -> list[list[str]]:
  """arm | steps to natural's final per seed | speed-up [CI] | reached."""
  found = size.get("curves", {}).get(which)
  if not found:
    return []
  rows = []
  for arm, entry in found["summary"].items():
    if arm == found["baseline"]:
      continue
    reached = found["steps_to_natural_final"][arm]
    per_seed = " ".join("not reached" if v is None else f"{v:.0f}" for v in reached.values())
    speed = ("n/a" if entry["mean"] is None else
             f"{entry['mean']:.2f}x [{_num(entry['ci_low'], 2)}, {_num(entry['ci_high'], 2)}]")
    rows.append([arm, per_seed, speed, f"{entry['reached']}/{entry['of']}"])
  return rows


def cost_line(size: Mapping[str, Any], cost: Mapping[str, float]) -> str:
  frac = size["doremi_cost_fraction"]
  flops = "" if frac["flops"] is None else f", {frac['flops']:.2f}x its estimated FLOPs"
  return (f"DoReMi's stages (reference + proxy): {cost['seconds']:.0f} s and "
          f"{cost['flops']:.3g} FLOPs = {frac['seconds']:.2f}x one main run's seconds "
          f"({size['main_run_seconds_median']:.0f} s, median){flops}")


def learnable_rows(size: Mapping[str, Any]) -> list[list[str]]:
  found = size.get("learnable")
  if not found:
    return []
  return [[arm, f"{e['average']['mean']:.4f} ± {_num(e['average']['half_width'], 4)}",
           *[_ci(e["paired_difference"][b]) if b in e["paired_difference"] else "-"
             for b in ("natural", "uniform")]] for arm, e in found["arms"].items()]


def excess_rows(size: Mapping[str, Any], domains: list[str]) -> tuple[list[str], list[list[str]]]:
  found = size.get("excess_over_reference")
  if not found:
    return [], []
  arms = list(found)
  rows = [[d] + [f"{found[a]['bits_per_byte'][d]['mean']:+.3f}" for a in arms] for d in domains]
  rows.append(["**worst excess**"] + [f"{found[a]['worst']['mean']:+.3f} "
                                      f"({short_names(domains)[domains.index(found[a]['worst_domain'])]})"
                                      for a in arms])
  return ["domain"] + arms, rows


def markdown(experiment_dir: str, label: str, size: Mapping[str, Any], result: Mapping[str, Any],
             proxy_params: int | None) -> list[str]:
  split = result["report_split"]
  md = [f"## Main models, {heading(label, size, proxy_params)}", ""]
  md += comparison.comparison_markdown(size["comparison"][split])
  rows = learnable_rows(size)
  if rows:
    md += ["", f"### Learnable domains only ({', '.join(result['learnable_domains'])}: the "
           f"controls left out), average bits/byte, {split}", ""]
    md += tables.markdown_lines(["arm", "mean ± CI", "Δ vs natural [CI]", "Δ vs uniform [CI]"],
                                rows)
  for which in ("all", "learnable"):
    rows = speedup_rows(size, which)
    if rows:
      md += ["", f"### Steps to natural's final {which}-domain average ({split} curves; "
             "linear interpolation between evaluations; speed-up = natural's steps / the "
             "arm's, per seed, 95% CI)", ""]
      md += tables.markdown_lines(["arm", "steps per seed", "speed-up", "reached"], rows)
  better = size.get("domains_better_or_equal_vs_natural", {})
  if better:
    md += ["", "Domains better or equal to natural (means over seeds, as the paper counts): "
           + "; ".join(f"{a} {v['k']}/{v['n']}" for a, v in better.items()) + "."]
  header, rows = excess_rows(size, list(result["domains"]))
  if rows:
    md += ["", f"### Excess over the reference (bits/byte, main model - reference, {split}, "
           "mean over seeds): DoReMi's objective is the worst row", ""]
    md += tables.markdown_lines(header, rows)
  md += ["", cost_line(size, result["doremi_cost"]) + "."]
  found = size.get("curves", {}).get("all")
  if found:
    name = f"curves_{label or 'main'}.png"
    curves.plot_curves(found["series"], os.path.join(experiment_dir, name),
                       f"size {label or 'main'}: {split} average bits/byte",
                       ylabel=f"{split} bits per byte (lower is better)")
    md += ["", f"![learning curves]({name})"]
  return md + [""]


def text(label: str, size: Mapping[str, Any], result: Mapping[str, Any],
         proxy_params: int | None) -> list[str]:
  split = result["report_split"]
  lines = ["", f"== main models, {heading(label, size, proxy_params)}",
           comparison.comparison_table(size["comparison"][split])]
  rows = learnable_rows(size)
  if rows:
    lines += ["", "learnable domains (controls left out), average bits/byte:",
              tables.text(["arm", "mean ± CI", "Δ vs natural", "Δ vs uniform"], rows)]
  rows = speedup_rows(size)
  if rows:
    lines += ["", f"steps to natural's final average ({split} curves):",
              tables.text(["arm", "steps per seed", "speed-up vs natural", "reached"], rows)]
  lines.append(cost_line(size, result["doremi_cost"]))
  return lines
