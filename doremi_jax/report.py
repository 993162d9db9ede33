"""The experiment report: markdown + PNG plots written next to ``summary.json``."""
from __future__ import annotations

import json
import os
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from doremi_jax import train as train_lib  # noqa: E402

REPORT_FILE = "report.md"


def _short(domains: list[str]) -> list[str]:
  """Drops a prefix shared by all domain names (e.g. ``synthetic_``) for readable labels."""
  prefix = os.path.commonprefix(domains)
  prefix = prefix[: prefix.rfind("_") + 1] if "_" in prefix else ""
  return [d[len(prefix):] or d for d in domains]


def _plot_trajectory(experiment_dir: str, rounds: list[dict[str, Any]], domains: list[str]) -> str:
  fig, axes = plt.subplots(1, len(rounds), figsize=(6 * len(rounds), 4), squeeze=False)
  for ax, rnd in zip(axes[0], rounds):
    path = os.path.join(experiment_dir, f"round_{rnd['round']}", "proxy",
                        train_lib.WEIGHTS_TRAJECTORY_FILE)
    with open(path) as f:
      rows = [json.loads(line) for line in f]
    steps = [r["step"] for r in rows]
    for d, label in zip(domains, _short(domains)):
      line, = ax.plot(steps, [r["domain_weights"][d] for r in rows], alpha=0.5, label=label)
      ax.plot(steps, [r["average_domain_weights"][d] for r in rows], color=line.get_color(),
              linestyle="--")
    ax.set_title(f"round {rnd['round']}: domain weights (dashed: running average)")
    ax.set_xlabel("proxy step")
    ax.set_ylabel("weight")
  axes[0][0].legend(fontsize=7)
  out = os.path.join(experiment_dir, "domain_weights_trajectory.png")
  fig.tight_layout()
  fig.savefig(out, dpi=100)
  plt.close(fig)
  return out


def _plot_bars(path: str, domains: list[str], series: dict[str, list[float]], title: str,
               ylabel: str) -> str:
  x = np.arange(len(domains))
  width = 0.8 / len(series)
  fig, ax = plt.subplots(figsize=(max(6, 0.8 * len(domains) + 2), 4))
  for i, (name, values) in enumerate(series.items()):
    ax.bar(x + i * width - 0.4 + width / 2, values, width, label=name)
  ax.set_xticks(x, _short(domains), rotation=30, ha="right")
  ax.set_title(title)
  ax.set_ylabel(ylabel)
  ax.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return path


def summary_text(result: dict[str, Any]) -> str:
  """The table ``make demo`` prints: worst/average log-ppl, baseline vs DoReMi, + weights."""
  domains = result["domains"]
  lines = ["", "domain weights (baseline -> DoReMi):"]
  for d in domains:
    lines.append(f"  {d:<32} {result['baseline_weights'][d]:.4f} -> "
                 f"{result['doremi_weights'][d]:.4f}")
  if "main" in result:
    m = result["main"]
    lines += ["", f"{'held-out log-ppl':<20}{'baseline':>10}{'doremi':>10}",
              f"{'average':<20}{m['baseline']['average_log_perplexity']:>10.3f}"
              f"{m['doremi']['average_log_perplexity']:>10.3f}",
              f"{'worst':<20}{m['baseline']['worst_log_perplexity']:>10.3f}"
              f"{m['doremi']['worst_log_perplexity']:>10.3f}"]
  if result.get("report"):
    lines += ["", f"report: {result['report']}"]
  return "\n".join(lines)


def write_report(experiment_dir: str, result: dict[str, Any]) -> str:
  domains = result["domains"]
  rounds = result["rounds"]
  traj = _plot_trajectory(experiment_dir, rounds, domains)
  bars = _plot_bars(os.path.join(experiment_dir, "domain_weights.png"), domains,
                    {"baseline": [result["baseline_weights"][d] for d in domains],
                     **{f"DoReMi round {r['round']}": [r["average_domain_weights"][d] for d in domains]
                        for r in rounds}},
                    "Domain weights", "weight")
  md = [f"# DoReMi report: `{os.path.basename(experiment_dir)}`", "",
        f"Tokenizer: `{result['tokenizer'].get('type')}` (vocab {result['tokenizer'].get('vocab_size')}).",
        "", "## Domain weights per round", "",
        "| domain | baseline | " + " | ".join(f"round {r['round']}" for r in rounds) + " |",
        "|---|---:|" + "---:|" * len(rounds)]
  for d in domains:
    md.append(f"| {d} | {result['baseline_weights'][d]:.4f} | " +
              " | ".join(f"{r['average_domain_weights'][d]:.4f}" for r in rounds) + " |")
  md.append("| L1 change vs previous | | " + " | ".join(f"{r['l1_change']:.4f}" for r in rounds) + " |")
  md += ["", f"![domain weights]({os.path.basename(bars)})", "",
         f"![weights over proxy steps]({os.path.basename(traj)})", ""]
  if "main" in result:
    main = result["main"]
    ppl = _plot_bars(os.path.join(experiment_dir, "log_perplexity.png"), domains,
                     {k: [v["log_perplexity"][d] for d in domains] for k, v in main.items()},
                     "Held-out log-perplexity of the main models (lower is better)",
                     "nats / token")
    md += ["## Main models: held-out log-perplexity (nats/token)", "",
           "| domain | main on baseline | main on DoReMi |", "|---|---:|---:|"]
    for d in domains:
      md.append(f"| {d} | {main['baseline']['log_perplexity'][d]:.3f} | "
                f"{main['doremi']['log_perplexity'][d]:.3f} |")
    for key in ("average", "worst"):
      md.append(f"| **{key}** | **{main['baseline'][key + '_log_perplexity']:.3f}** | "
                f"**{main['doremi'][key + '_log_perplexity']:.3f}** |")
    md += ["", f"![log-perplexity]({os.path.basename(ppl)})", ""]
  md += ["## Exports", ""] + [f"- {k}: `{os.path.relpath(v, experiment_dir)}`"
                              for k, v in result["export"].items()]
  path = os.path.join(experiment_dir, REPORT_FILE)
  with open(path, "w") as f:
    f.write("\n".join(md) + "\n")
  return path
