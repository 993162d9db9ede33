"""Will the paper's steps fit a pod? The compile check for the 8B main step and the 280M
proxy step at the paper's batch (512 x 1024 tokens, vocabulary 32000), one table.

    python benchmarks/pod_fit.py                     # every row (TPU rows need libtpu)
    python benchmarks/pod_fit.py --only cpu          # the simulated-CPU rows only

Each row is ``python -m doremi_jax.compile_check`` in its own process (a process picks its
device count once). TPU rows need libtpu importable next to jax (``pip install
'jax[tpu]==<pinned jax>'`` or a ``--target`` dir on PYTHONPATH); without it they are
listed as not run. Prints a Markdown table of GiB per device.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile

PAPER = ["--gin.VOCAB_SIZE=32000", "--gin.BATCH_SIZE=512",
         "--gin.TASK_FEATURE_LENGTHS={'targets': 1024}", "--gin.make_mesh.mesh_shape=(1, -1, 1)"]
MAIN_8B = ["--gin_file=models/8b.gin", "--gin_file=runs/main.gin"]
PROXY_280M = ["--gin_file=models/280m.gin", "--gin_file=runs/proxy.gin"]
CHUNKED = ["--gin.TransformerConfig.chunk_train_logits=True"]  # trained loss's logits chunked
NO_SAVED_DOTS = ["--gin.TransformerConfig.remat_policy='nothing_saveable'"]  # full recompute
# (label, topology, gin args, micro-batches)
ROWS = [
    ("8B main", "v5p-512", MAIN_8B, 1), ("8B main", "v4-512", MAIN_8B, 1),
    ("8B main", "v5e-256", MAIN_8B, 1), ("8B main", "cpu:256", MAIN_8B, 1),
    ("280M proxy", "v4-32", PROXY_280M, 1), ("280M proxy", "v5e-16", PROXY_280M, 1),
    ("280M proxy", "v5e-16", PROXY_280M, 4), ("280M proxy", "v4-128", PROXY_280M, 1),
    ("280M proxy, chunked logits", "v4-32", PROXY_280M + CHUNKED, 1),
    ("280M proxy, chunked logits, nothing_saveable", "v5e-16",
     PROXY_280M + CHUNKED + NO_SAVED_DOTS, 1),
    ("280M proxy", "cpu:16", PROXY_280M, 1), ("280M proxy", "cpu:64", PROXY_280M, 1),
]
GIB = 2 ** 30


def _run(topology: str, gin_args: list[str], microbatches: int, out: str) -> dict | str:
  argv = [sys.executable, "-m", "doremi_jax.compile_check", f"--topology={topology}",
          *gin_args, *PAPER, f"--gin.train.microbatches={microbatches}", f"--json={out}"]
  proc = subprocess.run(argv, capture_output=True, text=True, timeout=1200)
  if proc.returncode != 0:
    return (proc.stderr.strip().splitlines() or ["failed"])[-1]
  with open(out) as f:
    return json.load(f)


def _row(label: str, topology: str, microbatches: int, r: dict | str) -> str:
  if isinstance(r, str):
    return f"| {label} | {topology} | {microbatches} | - | - | - | - | - | - | {r} |"
  per, c = r["per_device"], r["compiler"]
  mesh = "({data}, {fsdp}, {model})".format(**r["mesh"])
  state = [f"{per[k] / GIB:.2f}" if per[k] else "-"
           for k in ("parameters", "optimizer_state", "reference_parameters")]
  temps = f"{c['temporaries'] / GIB:.2f}" if c else "refused"
  total = f"{c['total'] / GIB:.2f}" if c else "-"
  verdicts = "; ".join(
      f"{'fits' if v['fits'] else 'NOT'} {name}"
      + (f" {v['used_fraction']:.0%}" if v["used_fraction"] is not None else "")
      for name, v in r["fits"].items())
  if r["compiler_refused"]:
    verdicts += f" ({r['compiler_refused'].split(': ', 1)[-1]})"
  return (f"| {label} | {topology} ({r['backend']}) | {microbatches} | {mesh} | "
          f"{' | '.join(state)} | {temps} | {total} | {verdicts} |")


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--only", choices=("cpu", "tpu"), help="only these rows")
  args = parser.parse_args()
  has_tpu = importlib.util.find_spec("libtpu") is not None
  print("| step | topology (backend) | micro-batches | mesh (data, fsdp, model) | params | "
        "Adam | reference | temporaries | total | verdict |")
  print("|---|---|---:|---|---:|---:|---:|---:|---:|---|")
  with tempfile.TemporaryDirectory() as tmp:
    for i, (label, topology, gin_args, m) in enumerate(ROWS):
      is_cpu = topology.startswith("cpu:")
      if args.only and args.only != ("cpu" if is_cpu else "tpu"):
        continue
      if not is_cpu and not has_tpu:
        print(_row(label, topology, m, "not run: libtpu is not installed"), flush=True)
        continue
      print(_row(label, topology, m, _run(topology, gin_args, m, os.path.join(tmp, f"{i}.json"))),
            flush=True)


if __name__ == "__main__":
  main()
