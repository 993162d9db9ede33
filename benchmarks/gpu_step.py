"""Throughput and MFU of our plain and DoReMi proxy steps on one GPU, bf16, 120M and 280M.

    python benchmarks/gpu_step.py --measure-matmul-peak --json /tmp/gpu_step.json
    python benchmarks/gpu_step.py --smoke --json /tmp/smoke.json   # CPU: tiny model, seconds

The steps are the trainer's (``core.steps.make_train_step``, built on a fresh state by
``bench_setup.Runner.fresh``) on synthetic uniform tokens: gin/models/120m.gin and 280m.gin
(read as plain bindings, gin not parsed: bf16 compute, f32 parameters and AdamW), sequence
1024, attention ``xla`` vs ``cudnn``, remat off vs the config's policy. Each cell (model,
batch, attention, remat) runs in its own process, plain then proxy, so device memory's
``peak_bytes_in_use`` belongs to that cell (the proxy's figure is the process's peak after
both). The first call compiles; ``--warmup`` calls in all are untimed, then ``--steps``
timed calls up to ``block_until_ready`` (benchmarks/peers/protocol.py); the median is
reported. ``--budget-s`` bounds the whole run: cells run most wanted first
(``gpu_flops.plan``) and one that would not finish is reported as skipped.
``--measure-matmul-peak`` times a large bf16 matrix product in its own process first, so
MFU is given against the data sheet (989 TFLOP/s) and the peak measured in the same run.
FLOPs per token: ``gpu_flops.FLOP_FORMULA``. benchmarks/gpu_check.sh is the prepared
device run; its ``--cpu-smoke`` mode is a default test.
"""
from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "peers"))
# Workers alone touch the device; 0.9 of its memory for JAX's pool, not the default 0.75.
os.environ.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.9")

import bench_setup  # noqa: E402
import gpu_flops  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import protocol  # noqa: E402  (benchmarks/peers/protocol.py)

from doremi_jax.core import model as model_lib  # noqa: E402
from doremi_jax.core import partitioning, steps  # noqa: E402
from doremi_jax.core import train_state as ts  # noqa: E402

NUM_DOMAINS = 22  # the Pile's
BATCHES = {"120m": (16, 32, 64), "280m": (8, 16, 32), "tiny": (2,)}
KINDS = ("plain", "proxy")


def model_config(spec: dict) -> model_lib.TransformerConfig:
  fields = gpu_flops.read_model_gin(spec["model"], spec["vocab"])
  fields.update(attention_implementation=spec["attention"], remat_policy=spec["remat"])
  return model_lib.TransformerConfig(**fields)


def config_policy(model: str, vocab: int) -> str:
  """The remat policy the model's gin file sets ("none" when it sets none)."""
  return model_lib.TransformerConfig(**gpu_flops.read_model_gin(model, vocab)).block_remat_policy()


def peak_bytes() -> dict:
  """The device allocator's peak and limit; None where the backend keeps no stats (CPU)."""
  stats = jax.devices()[0].memory_stats() or {}
  return {"peak_bytes": stats.get("peak_bytes_in_use"), "bytes_limit": stats.get("bytes_limit")}


def one_line(e: BaseException) -> str:
  return (f"{type(e).__name__}: " + (str(e).strip().splitlines() or [""])[0])[:400]


def time_cell(spec: dict) -> dict:
  """Plain, then proxy, in this process; an error (out of memory, a refused kernel) is a
  result of its step, and a failed plain step skips the proxy."""
  cfg = model_config(spec)
  mesh = partitioning.make_mesh((1, 1, 1), devices=jax.devices()[:1])
  lm, optimizer, seq = model_lib.TransformerLM(cfg), ts.make_optimizer(10_000), spec["seq"]
  batches = bench_setup.random_batches(spec["warmup"] + spec["steps"], spec["batch"], seq,
                                       cfg.vocab_size, steps.batch_shardings(mesh), NUM_DOMAINS)
  out = {"num_params": cfg.num_params(), "device": str(jax.devices()[0]),
         "device_kind": jax.devices()[0].device_kind,
         "dtype": cfg.dtype, "param_dtype": cfg.param_dtype}
  for kind in KINDS:
    if kind == "proxy" and out["plain"]["status"] != "ok":
      out[kind] = {"status": "skipped", "error": "plain step failed"}
      continue
    try:
      reference = ts.init_state(lm, optimizer, mesh, seq, 1).params if kind == "proxy" else None
      runner = bench_setup.Runner.fresh(kind, lm, optimizer, mesh, seq, NUM_DOMAINS,
                                        reference=reference)
      result = protocol.time_calls(lambda i: runner(batches[i]), spec["warmup"], spec["steps"])
      out[kind] = dict(result, status="ok", compiles=runner.compiles(), **peak_bytes())
    except Exception as e:  # noqa: BLE001  (reported per step; the next cell goes on)
      out[kind] = {"status": "error", "error": one_line(e)}
    reference = runner = None
    gc.collect()
  return out


def measure_matmul(n: int, reps: int = 10, per_rep: int = 10) -> dict:
  """bf16 ``[n, n] @ [n, n]`` on random data (zeros run faster), two inputs alternating:
  median over ``reps`` of a back-to-back batch of ``per_rep`` products, and the relative
  error of 256 rows against float32 (a wrong product must not pass as fast)."""
  ka, kb, kc = jax.random.split(jax.random.key(0), 3)
  a = [jax.random.normal(k, (n, n), jnp.bfloat16) for k in (ka, kb)]
  b = jax.random.normal(kc, (n, n), jnp.bfloat16)
  matmul = jax.jit(jnp.matmul)
  rows = min(n, 256)
  got = matmul(a[0], b)[:rows].astype(jnp.float32)
  ref = jnp.matmul(a[0][:rows].astype(jnp.float32), b.astype(jnp.float32))
  rel_err = float(jnp.linalg.norm(got - ref) / jnp.linalg.norm(ref))
  jax.block_until_ready(matmul(a[1], b))
  times = []
  for _ in range(reps):
    t0 = time.perf_counter()
    jax.block_until_ready([matmul(a[i % 2], b) for i in range(per_rep)])
    times.append((time.perf_counter() - t0) / per_rep)
  median = statistics.median(times)
  return {"status": "ok", "n": n, "median_s": median, "tflops": 2 * n**3 / median / 1e12,
          "rel_err_vs_f32": rel_err, "times_s": times, "device": str(jax.devices()[0]),
          "device_kind": jax.devices()[0].device_kind}


def run_worker(argv: list[str], timeout_s: float, env: dict) -> dict:
  """A fresh process of this script; its last JSON line, or a status and one-line error.
  Its stderr is passed on to ours (the log) once it ends."""
  cmd = [sys.executable, os.path.abspath(__file__), *argv]
  try:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=max(timeout_s, 1), env=env)
  except subprocess.TimeoutExpired as e:
    sys.stderr.write(e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes)
                     else e.stderr or "")
    return {"status": "timeout", "error": f"killed after {timeout_s:.0f} s (budget)"}
  sys.stderr.write(proc.stderr)
  lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
  if proc.returncode or not lines:
    tail = (proc.stderr.strip().splitlines() or ["no output"])[-1][:400]
    return {"status": "error", "error": f"exit {proc.returncode}: {tail}"}
  return json.loads(lines[-1])


def derive(cell: dict, seq: int, vocab: int, measured_tflops: float | None) -> None:
  """Adds throughput, FLOPs and MFU to each timed step of ``cell``, and proxy/plain."""
  cfg = model_config(dict(cell, vocab=vocab))
  for kind in KINDS:
    r = cell.get(kind)
    if r and r.get("status") == "ok":
      r.update(gpu_flops.throughput(r["median_s"], cell["batch"], seq,
                                    gpu_flops.flops_per_token(cfg, seq, kind), measured_tflops))
  ok = all(cell.get(k, {}).get("status") == "ok" for k in KINDS)
  cell["proxy_over_plain"] = cell["proxy"]["median_s"] / cell["plain"]["median_s"] if ok else None
  cell["proxy_over_plain_limit"] = gpu_flops.PROXY_OVER_PLAIN_LIMIT


def format_table(cells: list[dict]) -> str:
  head = (f"{'model':>5} {'batch':>5} {'attn':>5} {'remat':>32} {'kind':>5} {'step ms':>8} "
          f"{'tok/s':>9} {'TFLOP/s':>7} {'MFU989':>6} {'MFUmeas':>7} {'peak GiB':>8} "
          f"{'first s':>7} {'px/pl':>5}")
  lines = [head]
  for c in cells:
    for kind in KINDS:
      r = c.get(kind) or {"status": c.get("status"), "error": c.get("error")}
      key = (f"{c['model']:>5} {c['batch']:>5} {c['attention']:>5} {c['remat']:>32} "
             f"{kind:>5} ")
      if r.get("status") != "ok":
        lines.append(key + f"{r.get('status')}: {r.get('error')}")
        continue
      peak = f"{r['peak_bytes'] / 2**30:.1f}" if r.get("peak_bytes") else "-"
      meas = f"{r['mfu_measured']:.3f}" if r.get("mfu_measured") is not None else "-"
      ratio = (f"{c['proxy_over_plain']:.3f}" if kind == "proxy" and c.get("proxy_over_plain")
               else "")
      lines.append(key + f"{r['median_s'] * 1e3:8.2f} {r['tokens_per_s']:9.0f} "
                   f"{r['model_tflops']:7.1f} {r['mfu_datasheet']:6.3f} {meas:>7} {peak:>8} "
                   f"{r['first_call_s']:7.1f} {ratio:>5}")
  return "\n".join(lines)


def write_json(path: str | None, meta: dict, cells: list[dict], t_start: float) -> None:
  if path:
    meta["wall_s"] = time.perf_counter() - t_start
    with open(path, "w") as f:
      json.dump({"meta": meta, "cells": cells}, f, indent=2)


def worker(args) -> int:
  if args.worker == "matmul":
    result = measure_matmul(args.matmul_n)
  else:
    result = time_cell(json.loads(args.spec))
  print(json.dumps(result), flush=True)
  return 0


def parse_args(argv):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--models", default="120m,280m", help="gin/models names, comma-separated")
  parser.add_argument("--batches", help="batch sizes for every model (default: per model, "
                      f"{BATCHES})")
  parser.add_argument("--attention", default="cudnn,xla", help="implementations, first wanted most")
  parser.add_argument("--remat", default="policy,none",
                      help="'policy' (the gin file's), 'none', or core.model.REMAT_POLICIES names")
  parser.add_argument("--seq", type=int, default=1024)
  parser.add_argument("--vocab", type=int, default=32000, help="as benchmarks/pod_fit.py")
  parser.add_argument("--steps", type=int, default=10, help="timed steps per step kind")
  parser.add_argument("--warmup", type=int, default=2, help="untimed calls (the first compiles)")
  parser.add_argument("--budget-s", type=float, default=420.0, help="wall-clock bound, all cells")
  parser.add_argument("--measure-matmul-peak", action="store_true")
  parser.add_argument("--matmul-n", type=int, default=8192)
  parser.add_argument("--smoke", action="store_true", help="CPU: gin/models/tiny.gin, seq 64, "
                      "batch 2, 2 timed steps, xla attention, vocab 256, a 256 matmul")
  parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
  parser.add_argument("--worker", choices=("cell", "matmul"), help=argparse.SUPPRESS)
  parser.add_argument("--spec", help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args.smoke:
    args.models, args.attention, args.seq, args.steps, args.vocab = "tiny", "xla", 64, 2, 256
    args.batches, args.measure_matmul_peak, args.matmul_n = "2", True, 256
  return args


def main(argv=None) -> int:
  args = parse_args(argv)
  if args.worker:
    return worker(args)
  t_start = time.perf_counter()
  names = args.models.split(",")
  models = {m: tuple(int(b) for b in args.batches.split(",")) if args.batches else BATCHES[m]
            for m in names}
  remats = {m: tuple(dict.fromkeys(config_policy(m, args.vocab) if r == "policy" else r
                                   for r in args.remat.split(","))) for m in names}
  cells = [dict(c, status="pending")
           for c in gpu_flops.plan(models, tuple(args.attention.split(",")), remats)]
  env = dict(os.environ)
  cache = None if "JAX_COMPILATION_CACHE_DIR" in env else tempfile.mkdtemp(prefix="gpu_step_")
  env.setdefault("JAX_COMPILATION_CACHE_DIR", cache)  # a cell's two state inits: one compile
  left = lambda: args.budget_s - (time.perf_counter() - t_start)  # noqa: E731
  matmul = None
  if args.measure_matmul_peak:
    matmul = run_worker(["--worker", "matmul", "--matmul-n", str(args.matmul_n)], left(), env)
    print(f"matmul {args.matmul_n}: {matmul.get('tflops', matmul.get('error'))} TFLOP/s",
          file=sys.stderr, flush=True)
  measured = matmul.get("tflops") if matmul else None
  meta = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
          "command": " ".join(["benchmarks/gpu_step.py"] + (argv or sys.argv[1:])),
          "jax": jax.__version__, "host": f"{bench_setup.cpu_model()}, {os.cpu_count()} CPUs",
          "seq": args.seq, "vocab": args.vocab, "num_domains": NUM_DOMAINS,
          "steps": args.steps, "warmup": args.warmup, "budget_s": args.budget_s,
          "flop_formula": gpu_flops.FLOP_FORMULA, "datasheet_tflops": gpu_flops.DATASHEET_TFLOPS,
          "measured_tflops": measured, "matmul": matmul}
  done = []
  for cell in cells:
    why = gpu_flops.budget_verdict(cell, done, left())
    if why:
      cell.update(status="skipped", error=why)
      continue
    spec = dict(cell, seq=args.seq, vocab=args.vocab, steps=args.steps, warmup=args.warmup)
    t0 = time.perf_counter()
    result = run_worker(["--worker", "cell", "--spec", json.dumps(spec)], left(), env)
    cell.update(result, wall_s=time.perf_counter() - t0,
                status="ok" if "plain" in result else result.get("status"))
    derive(cell, args.seq, args.vocab, measured)
    done.append(cell)
    print("\n".join(format_table([cell]).splitlines()[1:]), file=sys.stderr, flush=True)
    write_json(args.json, meta, cells, t_start)  # after every cell: a killed run keeps these
  meta["device"] = (matmul or {}).get("device_kind") or next(
      (c["device_kind"] for c in cells if "device_kind" in c), "-")
  write_json(args.json, meta, cells, t_start)
  print(f"{meta['date']}  jax {meta['jax']}  device {meta['device']}"
        f"  seq {args.seq}  vocab {args.vocab}  matmul peak "
        f"{f'{measured:.3g}' if measured else '-'} TFLOP/s (data sheet 989)")
  print(format_table(cells))
  if cache:
    shutil.rmtree(cache, ignore_errors=True)
  # A step out of memory or a cell the budget cut is a result; a worker that broke is not.
  broken = [c for c in cells if c.get("status") == "error"]
  return 1 if broken or (matmul and matmul.get("status") != "ok") else 0


if __name__ == "__main__":
  sys.exit(main())
