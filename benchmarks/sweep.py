"""Wall time of one DoReMi sweep step (P proxies stacked) vs P separate proxy steps.

    python benchmarks/sweep.py                          # vocab 512, P = 3 (make bench)
    python benchmarks/sweep.py --vocab 512 --vocab 8000 --rounds 3 --steps 10

A sweep (``DoremiConfig`` with list fields) trains P proxies in one jitted step that
shares the batch and one frozen-reference forward pass; running the P settings as
separate proxy runs pays for the reference forward P times. This measures what that
sharing buys on one CPU device, with the same tiny model as ``step_time.py``. Variants
(all compiled and warmed up first, then timed over ``--rounds`` rounds of ``--steps``
calls each, interleaved call by call in an order rotated every round so that all see the
same machine load; medians):

  plain      the plain LM step
  proxy      one single-proxy DoReMi step
  separate   P single-proxy steps (each its own DoremiConfig) called back to back
  sweep      one P-proxy sweep step
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

from doremi_jax.core import partitioning, steps  # noqa: E402
from doremi_jax.core import train_state as ts  # noqa: E402

NUM_DOMAINS = 8
NUM_BATCHES = 4  # distinct batches, cycled: enough that no call sees the previous one's input


def _variants(vocab: int, args) -> dict[str, list[bench_setup.Runner]]:
  """Each variant is a list of runners; one timed "step" calls all of them once."""
  cfg, mesh, lm, optimizer = bench_setup.tiny_model(vocab, args.untied)
  seq = args.seq

  abstract, proxy_sh = ts.state_shardings(lm, optimizer, mesh, seq, NUM_DOMAINS)
  reference = ts.init_state(lm, optimizer, mesh, seq, 1).params

  def proxy_runner(step_size: float) -> bench_setup.Runner:
    return bench_setup.Runner.fresh("proxy", lm, optimizer, mesh, seq, NUM_DOMAINS,
                                    steps.DoremiConfig(step_size=step_size), reference)

  plain = bench_setup.Runner.fresh("plain", lm, optimizer, mesh, seq, NUM_DOMAINS)
  sweep_cfg = steps.DoremiConfig(step_size=args.step_sizes)
  num = len(sweep_cfg.settings())
  _, stacked_sh = ts.stack_proxies(abstract, proxy_sh, num, mesh)
  sweep_step = steps.make_train_step("proxy", lm, optimizer, mesh, stacked_sh, NUM_DOMAINS,
                                     sweep_cfg, reference_shardings=proxy_sh.params)
  sweep_state = ts.broadcast_state(ts.init_state(lm, optimizer, mesh, seq, 0, NUM_DOMAINS),
                                   num, stacked_sh)
  return {"plain": [plain],
          "proxy": [proxy_runner(args.step_sizes[0])],
          "separate": [proxy_runner(eta) for eta in args.step_sizes],
          "sweep": [bench_setup.Runner(sweep_step, sweep_state, reference)]}


def _call(runners: list[bench_setup.Runner], batch) -> None:
  """Each runner finishes before the next starts, as separate runs would not overlap."""
  for r in runners:
    jax.block_until_ready(r(batch))


def bench_vocab(vocab: int, args) -> dict:
  variants = _variants(vocab, args)
  batches = bench_setup.random_batches(
      NUM_BATCHES, args.batch, args.seq, vocab,
      steps.batch_shardings(partitioning.make_mesh((1, 1, 1), devices=jax.devices()[:1])),
      NUM_DOMAINS)
  first, times = bench_setup.time_interleaved(
      {name: functools.partial(_call, rs) for name, rs in variants.items()},
      batches, args.rounds, args.steps)
  result = {"vocab": vocab, "first_call_s": first,
            "median_s": {n: statistics.median(t) for n, t in times.items()},
            "min_s": {n: min(t) for n, t in times.items()},
            "max_s": {n: max(t) for n, t in times.items()},
            "compiles": {n: [r.compiles() for r in rs] for n, rs in variants.items()}}
  del variants
  return result


def format_table(r: dict, args) -> str:
  p = len(args.step_sizes)
  med = r["median_s"]
  labels = {"plain": "plain step", "proxy": "single proxy step",
            "separate": f"{p} separate proxy steps", "sweep": f"sweep step (P={p})"}
  lines = [f"vocab {r['vocab']}",
           f"  {'variant':<24} {'median s':>9} {'min s':>8} {'max s':>8} {'first s':>8} "
           f"{'/proxy':>7}"]
  for n, label in labels.items():
    lines.append(f"  {label:<24} {med[n]:>9.4f} {r['min_s'][n]:>8.4f} {r['max_s'][n]:>8.4f} "
                 f"{r['first_call_s'][n]:>8.2f} {med[n] / med['proxy']:>7.2f}")
  lines.append(f"  sweep / ({p} x single proxy) = {med['sweep'] / (p * med['proxy']):.3f}; "
               f"sweep / {p} separate steps (measured) = {med['sweep'] / med['separate']:.3f}")
  n = args.stage_steps
  lines.append(f"  proxy stage of {n} steps, {p} settings: sweep {n * med['sweep']:.1f} s, "
               f"{p} separate runs {n * med['separate']:.1f} s "
               f"({p} x single proxy: {n * p * med['proxy']:.1f} s)")
  return "\n".join(lines)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--vocab", type=int, action="append",
                      help="vocabulary size (repeatable; default 512)")
  parser.add_argument("--proxies", type=int, default=3,
                      help="P: the sweep's settings, step sizes 1, 0.1, 0.01, ...")
  parser.add_argument("--steps", type=int, default=10, help="timed calls per variant per round")
  parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
  parser.add_argument("--stage-steps", type=int, default=400,
                      help="proxy-stage length for the implied wall time")
  parser.add_argument("--batch", type=int, default=16)
  parser.add_argument("--seq", type=int, default=128)
  parser.add_argument("--untied", action="store_true",
                      help="untied output layer (as gin/models/tiny.gin); default tied")
  args = parser.parse_args(argv)
  if args.proxies < 2:
    parser.error("--proxies must be >= 2 (a sweep)")
  args.step_sizes = [10.0 ** -i for i in range(args.proxies)]
  vocabs = args.vocab or [512]
  print(bench_setup.header())
  print(f"{'untied' if args.untied else 'tied'} embeddings, 2 layers d 128, batch {args.batch} x "
        f"seq {args.seq}, {NUM_DOMAINS} domains, step sizes {args.step_sizes}, "
        f"{args.rounds} rounds x {args.steps} timed calls per variant")
  bad = []
  for v in vocabs:
    r = bench_vocab(v, args)
    print(format_table(r, args), flush=True)
    bad += [f"vocab {v} {n}" for n, c in r["compiles"].items() if any(x != 1 for x in c)]
  print(f"load avg at the end {bench_setup.load_average()}")
  return bench_setup.exit_status(bad)


if __name__ == "__main__":
  sys.exit(main())
