"""The excess_ema study of docs/study.md (issue 18): does a running average of each
domain's excess (``DoremiConfig.excess_ema``) do for a small proxy batch what a larger
batch does?

    python docs/excess_ema_study.py                       # the controls experiment
    python docs/excess_ema_study.py --experiment experiments/study.gin --out runs/ema_embedded

One reference (the experiment's) and, per proxy seed (train.seed: init and data order),
two proxy sweeps that see the same tokens: ``large`` (150 steps of 64 sequences, the
study's) and ``small`` (600 steps of 16), the small one with and without a running
average (decay 0.9), at each step size and at a quarter of it (four times the updates
at equal tokens: the same expected drift of the log-weights). Finished runs are reused.
Printed: per setting, the averaged weights of each domain (mean [95% CI] over seeds),
how far apart the seeds land (mean pairwise L1), and the L1 distance to the large
batch's mean weights at the step size with the same expected drift.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import sys

import numpy as np

from doremi_jax.run import comparison, config, paths, registry, stages

STEP_SIZES = [1.0, 0.1]  # eta = 0.01 barely moves the weights at either batch
LARGE = dict(batch=64, steps=150)
SMALL = dict(batch=16, steps=600)
DECAY = 0.9


def sweep_bindings(step_sizes, decays, batch: int, seed: int) -> list[str]:
  return [f"BATCH_SIZE = {batch}", f"train.seed = {seed}", "train.log_every = 5",
          f"DoremiConfig.step_size = {list(step_sizes)}",
          f"DoremiConfig.excess_ema = {list(decays)}", "DoremiConfig.use_reference = True"]


def run(args) -> dict:
  registry.register_configurables()
  runner = stages.Stages([args.experiment], [], "")
  runner.configure("runs/base.gin", ["MODEL_DIR = ''", "TRAIN_STEPS = 1",
                                     "MIXTURE_OR_TASK_NAME = ''"])
  natural = config.bound_value("pipeline.baseline_mixture", None)
  uniform = config.bound_value("pipeline.uniform_mixture", None)
  ref_steps = config.bound_value("pipeline.reference_steps", None)
  out = os.path.abspath(args.out)
  ref_dir = os.path.join(out, "reference")
  ref = runner.train("runs/reference.gin", ref_dir, ref_steps,
                     [f"BASELINE_MIXTURE = {natural!r}"])
  small_etas = sorted(STEP_SIZES + [e / 4 for e in STEP_SIZES], reverse=True)
  runs = {}
  for seed in args.seeds:
    for name, shape, etas, decays in (("large", LARGE, STEP_SIZES, [0.0]),
                                      ("small", SMALL, small_etas, [0.0, DECAY])):
      model_dir = os.path.join(out, f"{name}_seed{seed}")
      summary = runner.train("runs/proxy.gin", model_dir, shape["steps"],
                             [f"UNIFORM_MIXTURE = {uniform!r}",
                              f"REFERENCE_MODEL_DIR = {ref_dir!r}",
                              f"EXPORT_NAME = 'ema_{name}_seed{seed}'",
                              *sweep_bindings(etas, decays, shape["batch"], seed)])
      for proxy in summary["proxies"]:
        key = (name, proxy["setting"]["step_size"], proxy["setting"]["excess_ema"])
        runs.setdefault(key, {})[seed] = {
            "weights": proxy["average_domain_weights"],
            "roughness": roughness(model_dir, proxy["tag"])}
      runs.setdefault(("seconds", name), {})[seed] = summary["wall_seconds"]
  return {"reference_seconds": ref["wall_seconds"], "runs": runs, "out": out}


def roughness(model_dir: str, tag: str) -> float:
  """Mean L1 change of the (current) weights between logged steps, per step."""
  rows = [json.loads(line) for line in open(paths.trajectory_file(model_dir))]
  rows = [r for r in rows if r["setting"] == tag]
  w = np.array([list(r["domain_weights"].values()) for r in rows])
  s = np.array([r["step"] for r in rows], float)
  return float(np.mean(np.abs(np.diff(w, axis=0)).sum(1) / np.diff(s)))


def _vec(weights: dict, domains: list[str]) -> np.ndarray:
  return np.array([weights[d] for d in domains])


def _ci(values, digits=3) -> str:
  c = comparison.t_interval(values)
  return f"{c['mean']:.{digits}f} [{c['ci_low']:.{digits}f}, {c['ci_high']:.{digits}f}]"


def report(result: dict) -> None:
  runs = result["runs"]
  first = next(v for k, v in runs.items() if k[0] == "large")
  domains = sorted(next(iter(first.values()))["weights"])
  large_mean = {eta: np.mean([_vec(r["weights"], domains) for r in runs[("large", eta, 0.0)]
                              .values()], axis=0) for eta in STEP_SIZES}
  header = (["proxy batch", "eta", "ema"] + [d.split("_", 1)[-1] for d in domains]
            + ["seed spread (L1)", "L1 to large batch (same drift)", "roughness / step"])
  rows = []
  for (name, eta, decay), seeds in sorted(
      ((k, v) for k, v in runs.items() if k[0] != "seconds"),
      key=lambda kv: (kv[0][0], -kv[0][1], kv[0][2])):
    vecs = [_vec(r["weights"], domains) for r in seeds.values()]
    spread = np.mean([np.abs(a - b).sum() for a, b in itertools.combinations(vecs, 2)])
    # A small batch takes 4x the updates at equal tokens: eta/4 drifts as the large eta.
    target = eta if name == "large" else eta * 4
    to_large = (_ci([np.abs(v - large_mean[target]).sum() for v in vecs])
                if target in large_mean and name != "large" else "")
    shape = LARGE if name == "large" else SMALL
    rows.append([f"{shape['steps']} x {shape['batch']}", f"{eta:g}", f"{decay:g}"]
                + [_ci([v[i] for v in vecs]) for i in range(len(domains))]
                + [f"{spread:.3f}", to_large,
                   _ci([r["roughness"] for r in seeds.values()], 4)])
  print("| " + " | ".join(header) + " |")
  print("|" + "---|" * 3 + "---:|" * (len(header) - 3))
  for row in rows:
    print("| " + " | ".join(row) + " |")
  secs = {k[1]: v for k, v in runs.items() if k[0] == "seconds"}
  print(f"\n(uniform = {1 / len(domains):.3f}; reference {result['reference_seconds']:.0f} s; "
        + "; ".join(f"{n} sweep {np.mean(list(s.values())):.0f} s per seed"
                    for n, s in secs.items()) + f"; runs under {result['out']})")


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--experiment", default="experiments/study_controls.gin")
  parser.add_argument("--out", default="runs/ema_controls")
  parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
  args = parser.parse_args(argv)
  report(run(args))


if __name__ == "__main__":
  sys.exit(main())
