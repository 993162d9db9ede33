"""The experiment report: markdown + PNG plots written next to ``summary.json``."""
from __future__ import annotations

import json
import os
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from doremi_jax import mixture_files, tables  # noqa: E402
from doremi_jax.run import comparison, paths, size_report  # noqa: E402
from doremi_jax.run.comparison import short_names  # noqa: E402


def _trajectories(experiment_dir: str, rounds: list[dict[str, Any]]
                  ) -> list[tuple[str, list[dict[str, Any]]]]:
  """(title, rows) per round and DoReMi setting, from the proxies' trajectory files."""
  panels = []
  for rnd in rounds:
    path = paths.trajectory_file(os.path.join(paths.round_dir(experiment_dir, rnd["round"]),
                                              "proxy"))
    with open(path) as f:
      rows = [json.loads(line) for line in f]
    for setting in dict.fromkeys(r.get("setting", "") for r in rows):
      panels.append((f"round {rnd['round']} {setting}".strip(),
                     [r for r in rows if r.get("setting", "") == setting]))
  return panels


def _plot_trajectory(experiment_dir: str, panels, domains: list[str]) -> str:
  fig, axes = plt.subplots(2, len(panels), figsize=(5 * len(panels), 7), squeeze=False)
  for col, (title, rows) in enumerate(panels):
    ax, diag = axes[0][col], axes[1][col]
    steps = [r["step"] for r in rows]
    for d, label in zip(domains, short_names(domains)):
      line, = ax.plot(steps, [r["domain_weights"][d] for r in rows], alpha=0.5, label=label)
      ax.plot(steps, [r["average_domain_weights"][d] for r in rows], color=line.get_color(),
              linestyle="--")
    ax.set_title(f"{title}: weights (dashed: average)", fontsize=9)
    ax.set_ylabel("weight")
    if "weight_entropy" in rows[0]:
      diag.plot(steps, [r["weight_entropy"] / np.log(len(domains)) for r in rows],
                label="entropy / log k")
      diag.plot(steps, [r["min_weight"] * len(domains) for r in rows], label="min weight x k")
      diag.set_ylim(0, 1.05)
    diag.set_xlabel("proxy step")
    diag.legend(fontsize=7)
  axes[0][0].legend(fontsize=7)
  out = os.path.join(experiment_dir, "domain_weights_trajectory.png")
  fig.tight_layout()
  fig.savefig(out, dpi=90)
  plt.close(fig)
  return out


def _plot_bars(path: str, domains: list[str], series: dict[str, list[float]], title: str,
               ylabel: str) -> str:
  x = np.arange(len(domains))
  width = 0.8 / len(series)
  fig, ax = plt.subplots(figsize=(max(6, 0.8 * len(domains) + 2), 4))
  for i, (name, values) in enumerate(series.items()):
    ax.bar(x + i * width - 0.4 + width / 2, values, width, label=name)
  ax.set_xticks(x, short_names(domains), rotation=30, ha="right")
  ax.set_title(title)
  ax.set_ylabel(ylabel)
  ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return path


def _weight_columns(result: dict[str, Any]) -> dict[str, dict[str, float]]:
  cols = {"natural": result["baseline_weights"]}
  if len(result["rounds"]) > 1:
    cols.update({f"round {r['round']}": r["average_domain_weights"] for r in result["rounds"]})
  cols.update(result.get("arm_weights", {}))
  cols.update({arm: v["weights"] for arm, v in result["doremi_arms"].items()})
  return cols


def _proxy_params(result: dict[str, Any]) -> int | None:
  return result["rounds"][-1].get("proxy_model", {}).get("non_embedding_params")


def summary_text(result: dict[str, Any]) -> str:
  """What ``make demo`` prints: the weights, then the arms compared over seeds."""
  domains = result["domains"]
  cols = _weight_columns(result)
  rows = [[d] + [f"{cols[c][d]:.4f}" for c in cols] for d in domains]
  lines = ["", "domain weights:", tables.text(["domain", *cols], rows)]
  if "comparison" in result:
    for label, size in result["sizes"].items():
      lines += size_report.text(label, size, result, _proxy_params(result))
    lines += ["", f"DoReMi arm chosen on {result['selection']}: {result['selected_arm']}"]
  if result.get("report"):
    lines += ["", f"report: {result['report']}"]
  return "\n".join(lines)


def write_report(experiment_dir: str, result: dict[str, Any]) -> str:
  domains = result["domains"]
  rounds = result["rounds"]
  panels = _trajectories(experiment_dir, rounds)
  traj = _plot_trajectory(experiment_dir, panels, domains)
  cols = _weight_columns(result)
  bars = _plot_bars(os.path.join(experiment_dir, "domain_weights.png"), domains,
                    {c: [w[d] for d in domains] for c, w in cols.items()},
                    "Domain weights", "weight")
  tok = result["tokenizer"]
  md = [f"# DoReMi report: `{os.path.basename(experiment_dir)}`", "",
        f"Tokenizer: `{tok.get('type')}` (vocab {tok.get('vocab_size')}); seeds "
        f"{result['seeds']}.", "", "## Domain weights", ""]
  rows = [[d] + [f"{cols[c][d]:.4f}" for c in cols] for d in domains]
  if len(rounds) > 1:
    rows.append(["L1 change vs previous round", ""] + [f"{r['l1_change']:.4f}" for r in rounds])
  md += tables.markdown_lines(["domain", *cols], rows)
  md += ["", "Collapse diagnostics at the last proxy step (entropy in nats; log k = "
         f"{np.log(len(domains)):.3f}):", ""]
  md += tables.markdown_lines(["proxy", "entropy", "smallest weight", "domain"], [
      [title, f"{r[-1]['weight_entropy']:.3f}", f"{r[-1]['min_weight']:.4f}",
       r[-1]["min_weight_domain"]] for title, r in panels if "weight_entropy" in r[-1]])
  md += ["", f"![domain weights]({os.path.basename(bars)})", "",
         f"![weights over proxy steps]({os.path.basename(traj)})", ""]
  if "comparison" in result:
    split = result["report_split"]
    plot = comparison.plot_comparison(result["comparison"][split],
                                      os.path.join(experiment_dir, "comparison.png"))
    md += [f"DoReMi arm chosen on {result['selection']}: **{result['selected_arm']}**. "
           f"Every number below is on the `{split}` split, which no choice looked at.", ""]
    md += ["", f"![comparison]({os.path.basename(plot)})", ""]
    for label, size in result["sizes"].items():
      md += size_report.markdown(experiment_dir, label, size, result, _proxy_params(result))
  md += ["## Exports", ""] + [f"- {k}: `{os.path.relpath(v, experiment_dir)}`"
                              for k, v in result["export"].items()]
  if "maxtext" not in result["export"]:  # streamed domains: MaxText has no files to read
    streamed = mixture_files.streamed_domains(result["doremi_weights"])
    md += [f"- maxtext: {mixture_files.maxtext_needs_prepared(streamed)}"]
  path = os.path.join(experiment_dir, paths.REPORT_FILE)
  with open(path, "w") as f:
    f.write("\n".join(md) + "\n")
  return path
