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
import datetime
import os
import platform
import statistics
import sys
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import bench_setup  # noqa: E402
import jax  # noqa: E402

from doremi_jax.core import partitioning, steps  # noqa: E402
from doremi_jax.core import train_state as ts  # noqa: E402

NUM_DOMAINS = 8
NUM_BATCHES = 4  # distinct batches, cycled: enough that no call sees the previous one's input


def cpu_model() -> str:
  """The CPU's model name (platform.processor() is empty on most Linux machines)."""
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine()


class _Runner:
  """A step function and the state it donates and replaces on every call."""

  def __init__(self, step, state, reference=None):
    self.step, self.state, self.reference = step, state, reference

  def __call__(self, batch):
    args = (self.state, batch) if self.reference is None else (self.state, self.reference, batch)
    self.state, metrics = self.step(*args)
    return self.state, metrics

  def compiles(self) -> int:
    return self.step.jitted._cache_size()  # pylint: disable=protected-access


def _variants(vocab: int, args) -> dict[str, list[_Runner]]:
  """Each variant is a list of runners; one timed "step" calls all of them once."""
  cfg, mesh, lm, optimizer = bench_setup.tiny_model(vocab, args.untied)
  seq = args.seq

  _, plain_sh = ts.state_shardings(lm, optimizer, mesh, seq, None)
  abstract, proxy_sh = ts.state_shardings(lm, optimizer, mesh, seq, NUM_DOMAINS)
  reference = ts.init_state(lm, optimizer, mesh, seq, 1).params

  def proxy_runner(step_size: float) -> _Runner:
    step = steps.make_train_step("proxy", lm, optimizer, mesh, proxy_sh, NUM_DOMAINS,
                                 steps.DoremiConfig(step_size=step_size))
    return _Runner(step, ts.init_state(lm, optimizer, mesh, seq, 0, NUM_DOMAINS), reference)

  plain = _Runner(steps.make_train_step("plain", lm, optimizer, mesh, plain_sh, NUM_DOMAINS),
                  ts.init_state(lm, optimizer, mesh, seq, 0))
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
          "sweep": [_Runner(sweep_step, sweep_state, reference)]}


def _call(runners: list[_Runner], batch) -> None:
  """Each runner finishes before the next starts, as separate runs would not overlap."""
  for r in runners:
    jax.block_until_ready(r(batch))


def bench_vocab(vocab: int, args) -> dict:
  variants = _variants(vocab, args)
  batches = bench_setup.random_batches(
      NUM_BATCHES, args.batch, args.seq, vocab,
      steps.batch_shardings(partitioning.make_mesh((1, 1, 1), devices=jax.devices()[:1])),
      NUM_DOMAINS)
  first = {}
  for name, runners in variants.items():  # compile, then one more untimed call
    t0 = time.perf_counter()
    _call(runners, batches[0])
    first[name] = time.perf_counter() - t0
    _call(runners, batches[1])
  times = {name: [] for name in variants}
  names = list(variants)
  calls = 0
  for rnd in range(args.rounds):
    order = names[rnd % len(names):] + names[:rnd % len(names)]
    for _ in range(args.steps):
      batch = batches[calls % NUM_BATCHES]
      calls += 1
      for name in order:
        t0 = time.perf_counter()
        _call(variants[name], batch)
        times[name].append(time.perf_counter() - t0)
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
  date = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
  print(f"{date}  {cpu_model()}, {os.cpu_count()} CPUs  jax {jax.__version__} "
        f"({jax.devices()[0]})  load avg {', '.join(f'{x:.1f}' for x in os.getloadavg())}")
  print(f"{'untied' if args.untied else 'tied'} embeddings, 2 layers d 128, batch {args.batch} x "
        f"seq {args.seq}, {NUM_DOMAINS} domains, step sizes {args.step_sizes}, "
        f"{args.rounds} rounds x {args.steps} timed calls per variant")
  bad = []
  for v in vocabs:
    r = bench_vocab(v, args)
    print(format_table(r, args), flush=True)
    bad += [f"vocab {v} {n}" for n, c in r["compiles"].items() if any(x != 1 for x in c)]
  print(f"load avg at the end {', '.join(f'{x:.1f}' for x in os.getloadavg())}")
  return bench_setup.exit_status(bad)


if __name__ == "__main__":
  sys.exit(main())
