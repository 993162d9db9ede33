"""Wall time per step of the plain LM step and the DoReMi proxy step, side by side.

    python benchmarks/step_time.py                  # vocab 50257 and 512 (make bench)
    python benchmarks/step_time.py --vocab 512 --steps 20 --json /tmp/bench.json

One CPU device; the brief's model (2 layers, d=128, 4 heads x 32, mlp 512, f32) on
batch 16 x seq 128. Each step function is compiled once (checked), warmed up, then timed
over ``--steps`` calls with ``jax.block_until_ready``; the median is reported. Peer
figures are constants from the project brief (measured earlier on the same 2-core CPU
machine), not measured here.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import bench_setup  # noqa: E402
import jax  # noqa: E402

from doremi_jax.core import steps  # noqa: E402
from doremi_jax.core import train_state as ts  # noqa: E402

NUM_DOMAINS = 4
# Seconds per step, from the project brief (levanter / nanodo on this 2-core CPU machine).
PEERS = {
    50257: {"levanter_doremi": 2.10, "levanter_plain": 1.61, "nanodo_plain": 1.92},
    512: {"levanter_doremi": 0.120, "levanter_plain": 0.098, "nanodo_plain": 0.127},
}
TARGETS = {"proxy/plain": 1.3, "proxy/levanter": 0.8}


def _time(fn, args_for, n_warmup: int, n_steps: int) -> tuple[float, float, list[float]]:
  """(first-call seconds incl. compile, median seconds, all timed seconds)."""
  t0 = time.perf_counter()
  jax.block_until_ready(fn(*args_for(0)))
  first = time.perf_counter() - t0
  for i in range(1, n_warmup):
    jax.block_until_ready(fn(*args_for(i)))
  times = []
  for i in range(n_steps):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args_for(n_warmup + i)))
    times.append(time.perf_counter() - t0)
  return first, statistics.median(times), times


def bench_vocab(vocab: int, args) -> dict:
  cfg, mesh, lm, optimizer = bench_setup.tiny_model(vocab, args.untied)
  n = args.warmup + args.steps
  batches = bench_setup.random_batches(n, args.batch, args.seq, vocab, steps.batch_shardings(mesh),
                                       NUM_DOMAINS)
  result = {"vocab": vocab, "num_params": cfg.num_params()}
  for kind in ("plain", "proxy"):
    num_domain_state = NUM_DOMAINS if kind == "proxy" else None
    _, shardings = ts.state_shardings(lm, optimizer, mesh, args.seq, num_domain_state)
    step = steps.make_train_step(kind, lm, optimizer, mesh, shardings, NUM_DOMAINS,
                                 steps.DoremiConfig() if kind == "proxy" else None)
    holder = {"state": ts.init_state(lm, optimizer, mesh, args.seq, 0, num_domain_state)}
    reference = (ts.init_state(lm, optimizer, mesh, args.seq, 1).params
                 if kind == "proxy" else None)

    def call(batch, step=step, holder=holder, kind=kind, reference=reference):
      a = (holder["state"], reference, batch) if kind == "proxy" else (holder["state"], batch)
      holder["state"], metrics = step(*a)
      return holder["state"], metrics

    first, median, times = _time(call, lambda i: (batches[i],), args.warmup, args.steps)
    result[kind] = {"median_s": median, "min_s": min(times), "max_s": max(times),
                    "first_call_s": first, "timed_steps": len(times),
                    "compiles": step.jitted._cache_size()}  # pylint: disable=protected-access
    del holder
  peers = PEERS.get(vocab)
  plain, proxy = result["plain"]["median_s"], result["proxy"]["median_s"]
  result["ratios"] = {"proxy/plain": proxy / plain}
  if peers:
    result["peers_from_brief_s"] = peers
    result["ratios"].update({"proxy/levanter": proxy / peers["levanter_doremi"],
                             "plain/levanter_plain": plain / peers["levanter_plain"],
                             "plain/nanodo": plain / peers["nanodo_plain"]})
  return result


def format_table(results: list[dict]) -> str:
  lines = [f"{'vocab':>6} {'plain s':>9} {'proxy s':>9} {'proxy/plain':>11} "
           f"{'proxy/levanter':>14} {'plain/lev-plain':>15} {'plain/nanodo':>12} {'compiles':>8}"]
  for r in results:
    ra = r["ratios"]
    f = lambda k: f"{ra[k]:.2f}" if k in ra else "-"  # noqa: E731
    lines.append(f"{r['vocab']:>6} {r['plain']['median_s']:>9.4f} {r['proxy']['median_s']:>9.4f} "
                 f"{f('proxy/plain'):>11} {f('proxy/levanter'):>14} "
                 f"{f('plain/levanter_plain'):>15} {f('plain/nanodo'):>12} "
                 f"{r['plain']['compiles']}/{r['proxy']['compiles']:<6}")
  lines.append(f"targets: proxy/plain <= {TARGETS['proxy/plain']}, "
               f"proxy/levanter <= {TARGETS['proxy/levanter']}")
  lines.append("peer seconds (constants from the project brief, not measured by this script): "
               + "; ".join(f"vocab {v}: " + ", ".join(f"{k} {s}" for k, s in p.items())
                           for v, p in PEERS.items()))
  return "\n".join(lines)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--vocab", type=int, action="append",
                      help="vocabulary size (repeatable; default 50257 and 512)")
  parser.add_argument("--steps", type=int, default=10, help="timed steps per function (>= 10)")
  parser.add_argument("--warmup", type=int, default=2, help="untimed calls (the 1st compiles)")
  parser.add_argument("--batch", type=int, default=16)
  parser.add_argument("--seq", type=int, default=128)
  parser.add_argument("--untied", action="store_true",
                      help="untied output layer (as gin/models/tiny.gin); default tied, as the "
                      "peers")
  parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
  args = parser.parse_args(argv)
  if args.steps < 10:
    parser.error("--steps must be >= 10")
  vocabs = args.vocab or [50257, 512]
  results = [bench_vocab(v, args) for v in vocabs]
  meta = {"date": datetime.datetime.now().isoformat(timespec="seconds"),
          "machine": f"{platform.machine()} {os.cpu_count()} CPUs, {platform.processor() or ''}",
          "device": str(jax.devices()[0]), "jax": jax.__version__,
          "load_average": os.getloadavg(), "batch": args.batch, "seq": args.seq,
          "tied_embeddings": not args.untied, "steps": args.steps, "warmup": args.warmup}
  print(f"output layer: {'untied' if args.untied else 'tied'} embeddings, batch {args.batch} x "
        f"seq {args.seq}, {args.steps} timed steps")
  print(format_table(results))
  print(f"{meta['date']}  {meta['machine']}  jax {meta['jax']}  "
        f"load avg {', '.join(f'{x:.1f}' for x in meta['load_average'])}")
  bad = [f"vocab {r['vocab']}" for r in results for k in ("plain", "proxy")
         if r[k]["compiles"] != 1]
  if args.json:
    with open(args.json, "w") as f:
      json.dump({"meta": meta, "results": results}, f, indent=2)
  return bench_setup.exit_status(bad)


if __name__ == "__main__":
  sys.exit(main())
