"""What online DoReMi costs over training the main model alone: the online step (main step
+ proxy forward/backward + frozen reference forward, one jitted step) against the plain
main step, measured side by side, with the FLOPs ratio the arithmetic predicts beside it.

    python benchmarks/online_overhead.py                    # three main sizes, micro proxy
    python benchmarks/online_overhead.py --rounds 2 --steps 3 --main 20m

On one CPU device, interleaved call by call (``bench_setup.time_interleaved``). The proxy
and reference are ``micro`` (gin/models/micro.gin: 2 layers, d=64); the main models are
``micro`` (1x, the demo's first size), ``tiny`` (gin/models/tiny.gin, ~4x) and ``20m``
(6 layers, d=512). Main batch 16 x 128; the proxy's batch ``--proxy-batch`` (default 64,
the demo's: 8 sequences per domain of 8). ``host`` is the per-step host work the online
input adds (reading the current weights and allocating the batch's rows,
``data/online_input.py``; reading the rows costs what any prepared batch costs,
benchmarks/input_pipeline.py).
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import bench_setup  # noqa: E402
import jax  # noqa: E402
import numpy as np  # noqa: E402

from doremi_jax.core import flops, partitioning, steps  # noqa: E402
from doremi_jax.core import model as model_lib  # noqa: E402
from doremi_jax.data import online_input  # noqa: E402
from doremi_jax.run import settings as settings_lib  # noqa: E402
from doremi_jax.run import step_builder  # noqa: E402

NUM_DOMAINS = 8
SIZES = {"micro": dict(num_layers=2, emb_dim=64, num_heads=2, head_dim=32, mlp_dim=256),
         "tiny": dict(num_layers=2, emb_dim=128, num_heads=4, head_dim=32, mlp_dim=512),
         "20m": dict(num_layers=6, emb_dim=512, num_heads=8, head_dim=64, mlp_dim=1536)}


def _config(name: str, vocab: int) -> model_lib.TransformerConfig:
  return model_lib.TransformerConfig(vocab_size=vocab, tied_embeddings=False, **SIZES[name])


def bench(main_name: str, args) -> dict:
  seq, batch = args.seq, 16
  main_cfg, proxy_cfg = _config(main_name, args.vocab), _config("micro", args.vocab)
  mesh = partitioning.make_mesh((1, 1, 1), devices=jax.devices()[:1])

  def settings(kind):
    return settings_lib.RunSettings(
        model_dir="unused", mixture_or_task_name="unused", task_feature_lengths={"targets": seq},
        train_steps=10_000, kind=kind, batch_size=batch, reference_model_dir="unused",
        online_proxy_mixture="unused", online_proxy_batch_size=args.proxy_batch)

  doremi = steps.DoremiConfig(step_size=args.step_size)
  online = step_builder.build(settings("online"), NUM_DOMAINS, main_cfg, doremi, mesh,
                              proxy_cfg)
  online_step = online.step
  state = {"online": online.init_model_state(0)}
  reference = step_builder.build(settings("proxy"), NUM_DOMAINS, proxy_cfg, doremi,
                                 mesh).init_model_state(1).params
  built_plain = step_builder.build(settings("plain"), NUM_DOMAINS, main_cfg, mesh=mesh)
  plain = bench_setup.Runner(built_plain.step, built_plain.init_model_state(0))
  shard = steps.batch_shardings(mesh)
  main_batches = bench_setup.random_batches(4, batch, seq, args.vocab, shard, NUM_DOMAINS)
  proxy_batches = bench_setup.random_batches(4, args.proxy_batch, seq, args.vocab, shard,
                                             NUM_DOMAINS, seed=1)
  rows = online_input.RowAllocator(NUM_DOMAINS, batch)
  host_seconds = []

  def call_online(pair):
    t0 = time.perf_counter()
    weights = np.asarray(state["online"].domains.proxy.domains.weights)  # the host sync
    rows.next_rows(weights)
    host_seconds.append(time.perf_counter() - t0)
    state["online"], metrics = online_step(state["online"], reference, *pair)
    jax.block_until_ready(metrics)

  calls = {"plain": lambda pair: jax.block_until_ready(plain(pair[0])), "online": call_online}
  first, times = bench_setup.time_interleaved(calls, list(zip(main_batches, proxy_batches)),
                                              args.rounds, args.steps)
  med = {k: statistics.median(t) for k, t in times.items()}
  main_flops = flops.train_flops_per_token(main_cfg, seq) * batch
  extra = flops.proxy_flops_per_token(proxy_cfg, seq) * args.proxy_batch
  return {"main": main_name, "main_params": main_cfg.num_params(),
          "proxy_params": proxy_cfg.num_params(), "proxy_batch": args.proxy_batch,
          "median_s": med, "first_call_s": first,
          "paired": bench_setup.paired_ratio(times["online"], times["plain"]),
          "flops_ratio": (main_flops + extra) / main_flops,
          "host_ms": 1e3 * statistics.median(host_seconds),
          "compiles": {"plain": plain.compiles(),
                       "online": bench_setup.Runner(online_step, None).compiles()}}


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--main", choices=tuple(SIZES), action="append",
                      help="main model sizes (repeatable; default all three)")
  parser.add_argument("--vocab", type=int, default=2048, help="the embedded corpus's")
  parser.add_argument("--proxy-batch", type=int, default=64)
  parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
  parser.add_argument("--steps", type=int, default=4, help="timed calls per variant per round")
  parser.add_argument("--seq", type=int, default=128)
  parser.add_argument("--step-size", type=float, default=1.0)
  args = parser.parse_args(argv)
  if args.rounds * args.steps < 3:
    parser.error("--rounds x --steps must be >= 3")
  print(bench_setup.header())
  print(f"{args.rounds} rounds x {args.steps} timed calls per variant, interleaved; "
        f"{NUM_DOMAINS} domains, main batch 16 x {args.seq}, proxy batch {args.proxy_batch} "
        f"(micro proxy and reference), vocab {args.vocab}")
  print(f"{'main':>6} {'params':>8} {'plain s':>8} {'online s':>9} {'online/plain':>12} "
        f"{'paired':>7} {'flops ratio':>11} {'host ms':>8}")
  bad = []
  for name in args.main or list(SIZES):
    r = bench(name, args)
    med = r["median_s"]
    print(f"{name:>6} {r['main_params'] / 1e6:>7.2f}M {med['plain']:>8.4f} {med['online']:>9.4f} "
          f"{med['online'] / med['plain']:>12.3f} {r['paired']:>7.3f} {r['flops_ratio']:>11.3f} "
          f"{r['host_ms']:>8.3f}", flush=True)
    bad += [f"{name} {k}" for k, c in r["compiles"].items() if c != 1]
  print("paired: median of call-by-call ratios to the plain step; flops ratio: (main train + "
        "proxy train + reference forward) / main train, core/flops.py")
  return bench_setup.exit_status(bad)


if __name__ == "__main__":
  raise SystemExit(main())
