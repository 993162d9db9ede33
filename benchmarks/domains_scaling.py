"""Proxy step time as the number of domains grows (4, 22, 64, 256) at the same tokens per batch.

    python benchmarks/domains_scaling.py               # vocab 512 (make bench)
    python benchmarks/domains_scaling.py --domains 4 --domains 256 --rounds 2 --steps 5

The DoReMi math (per-domain sums, excess, weight update, averaging, the weighted loss)
should cost next to nothing beside the model, whatever the number of domains: the target
is at most 5% growth from 4 to 256 domains. One proxy step per domain count, on the brief's
tiny model (2 layers, d=128, f32, batch 16 x seq 128, one CPU device), timed interleaved
call by call (``bench_setup.time_interleaved``); medians. A second table times the DoReMi
math alone (the same functions the step calls, on fixed token losses) to show its share.
"""
from __future__ import annotations

import argparse
import functools
import os
import statistics
import sys

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import bench_setup  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from doremi_jax.core import doremi, steps  # noqa: E402
from doremi_jax.core import train_state as ts  # noqa: E402

TARGET = 1.05


def bench(vocab: int, domain_counts: list[int], args) -> dict:
  _, mesh, lm, optimizer = bench_setup.tiny_model(vocab, untied=False)
  seq, batch = args.seq, args.batch
  reference = ts.init_state(lm, optimizer, mesh, seq, 1).params
  runners, batches = {}, {}
  for k in domain_counts:
    runners[k] = bench_setup.Runner.fresh("proxy", lm, optimizer, mesh, seq, k,
                                          reference=reference)
    # The same tokens for every k; only the domain ids (rows cycling over k) differ.
    batches[k] = bench_setup.random_batches(4, batch, seq, vocab, steps.batch_shardings(mesh), k)

  def call(k, i):
    jax.block_until_ready(runners[k](batches[k][i]))

  first, times = bench_setup.time_interleaved(
      {k: functools.partial(call, k) for k in domain_counts}, list(range(4)), args.rounds,
      args.steps)
  med = {k: statistics.median(t) for k, t in times.items()}
  base = domain_counts[0]
  return {"vocab": vocab, "median_s": med, "min_s": {k: min(t) for k, t in times.items()},
          "paired": {k: bench_setup.paired_ratio(t, times[base]) for k, t in times.items()},
          "first_call_s": first, "compiles": {k: r.compiles() for k, r in runners.items()}}


def _math(k: int):
  """The proxy step's DoReMi math for ``k`` domains, given both models' token losses."""
  def fn(proxy_tl, reference_tl, ids, mask, weights, average):
    estimates, counts = doremi.excess_estimates(proxy_tl, reference_tl, ids, mask, k)
    used = doremi.observed_excess(jnp.zeros(k), estimates[0], counts)
    new = doremi.update_domain_weights(weights, used, 1.0, 1e-3)
    coefficients = doremi.loss_coefficients(new, counts)
    loss, grad = jax.value_and_grad(doremi.coefficient_loss)(proxy_tl, ids, mask, coefficients)
    means = [doremi.per_domain_mean_loss(x, ids, mask, k)[0] for x in (proxy_tl, reference_tl)]
    return (loss, grad, means, doremi.average_weights(average, new, 2),
            doremi.weight_diagnostics(new))
  return jax.jit(fn)


def bench_math(domain_counts: list[int], args) -> dict[int, float]:
  rng = np.random.default_rng(0)
  tl = [jnp.asarray(rng.uniform(2, 8, (args.batch, args.seq)), jnp.float32) for _ in range(2)]
  mask = jnp.ones((args.batch, args.seq), jnp.float32)
  calls = {}
  for k in domain_counts:
    fn, w = _math(k), jnp.full((k,), 1.0 / k)
    ids = jnp.asarray(np.arange(args.batch) % k, jnp.int32)
    calls[k] = functools.partial(lambda _, fn=fn, ids=ids, w=w: jax.block_until_ready(
        fn(tl[0], tl[1], ids, mask, w, w)))
  _, times = bench_setup.time_interleaved(calls, [None], args.rounds, args.steps * 5)
  return {k: statistics.median(t) for k, t in times.items()}


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--domains", type=int, action="append",
                      help="domain counts (repeatable; default 4 22 64 256)")
  parser.add_argument("--vocab", type=int, default=512)
  parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
  parser.add_argument("--steps", type=int, default=10, help="timed calls per count per round")
  parser.add_argument("--batch", type=int, default=16)
  parser.add_argument("--seq", type=int, default=128)
  args = parser.parse_args(argv)
  counts = sorted(set(args.domains or [4, 22, 64, 256]))
  print(bench_setup.header())
  print(f"proxy step, tied embeddings, vocab {args.vocab}, batch {args.batch} x seq {args.seq}, "
        f"{args.rounds} rounds x {args.steps} timed calls per count, interleaved")
  r = bench(args.vocab, counts, args)
  med, base = r["median_s"], r["median_s"][counts[0]]
  print(f"{'domains':>7} {'median s':>9} {'min s':>8} {'first s':>8} {'vs ' + str(counts[0]):>7} "
        f"{'paired':>7}")
  for k in counts:
    print(f"{k:>7} {med[k]:>9.4f} {r['min_s'][k]:>8.4f} {r['first_call_s'][k]:>8.2f} "
          f"{med[k] / base:>7.3f} {r['paired'][k]:>7.3f}")
  print(f"growth {counts[0]} -> {counts[-1]} domains: {med[counts[-1]] / base:.3f} (medians), "
        f"{r['paired'][counts[-1]]:.3f} (paired: median of call-by-call ratios); "
        f"target <= {TARGET}")
  math = bench_math(counts, args)
  print("the DoReMi math alone (excess, update, weighted loss and its gradient, metrics):")
  for k in counts:
    print(f"{k:>7} {math[k] * 1e3:>8.3f} ms  {math[k] / med[k]:>7.2%} of the step")
  print(f"load avg at the end {bench_setup.load_average()}")
  return bench_setup.exit_status([f"{k} domains" for k, c in r["compiles"].items() if c != 1])


if __name__ == "__main__":
  sys.exit(main())
