"""What the DoReMi proxy step costs over the plain LM step, against the arithmetic limit 4/3.

    python benchmarks/step_overhead.py                 # tiny at vocab 512 and 50257, ~20M model
    python benchmarks/step_overhead.py --model tiny --vocab 512 --rounds 2 --steps 3

A plain step is one forward and one backward (~3 forward units); the proxy adds the frozen
reference's forward (~1 unit), so proxy / plain -> 4/3 when everything else (excess, weight
update) is free. On one CPU device, interleaved call by call (``bench_setup.time_interleaved``):

  plain        the plain LM step
  proxy        the proxy step, reference forward in the model's dtype (float32 here)
  proxy_bf16   the same with ``DoremiConfig.reference_dtype = "bfloat16"``

Both proxies start from the same state and see the same batches, so the largest absolute
difference of their averaged domain weights after all timed steps (``--step-size``, the
paper's 1.0 by default) says what the bfloat16 reference changes. Models: ``tiny`` (the
brief's 2 layers, d=128, 4 heads x 32, MLP 512, f32, batch 16 x seq 128) and ``20m``
(6 layers, d=512, 8 heads x 64, MLP 1536, f32, vocab 512, batch 8 x seq 128).
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
import numpy as np  # noqa: E402

from doremi_jax.core import model as model_lib  # noqa: E402
from doremi_jax.core import steps  # noqa: E402
from doremi_jax.core import train_state as ts  # noqa: E402

NUM_DOMAINS = 4
TWENTY_M = dict(num_layers=6, emb_dim=512, num_heads=8, head_dim=64, mlp_dim=1536,
                tied_embeddings=True)


def _setup(name: str, vocab: int):
  """(config, mesh, model, optimizer, batch size)."""
  cfg, mesh, lm, optimizer = bench_setup.tiny_model(vocab, untied=False)
  if name == "tiny":
    return cfg, mesh, lm, optimizer, 16
  cfg = model_lib.TransformerConfig(vocab_size=vocab, **TWENTY_M)
  return cfg, mesh, model_lib.TransformerLM(cfg), optimizer, 8


def bench(name: str, vocab: int, args) -> dict:
  cfg, mesh, lm, optimizer, batch = _setup(name, vocab)
  seq = args.seq
  reference = ts.init_state(lm, optimizer, mesh, seq, 1).params
  runners = {"plain": bench_setup.Runner.fresh("plain", lm, optimizer, mesh, seq, NUM_DOMAINS)}
  for key, dtype in (("proxy", None), ("proxy_bf16", "bfloat16")):
    dcfg = steps.DoremiConfig(step_size=args.step_size, reference_dtype=dtype)
    runners[key] = bench_setup.Runner.fresh("proxy", lm, optimizer, mesh, seq, NUM_DOMAINS,
                                            dcfg, reference)
  batches = bench_setup.random_batches(4, batch, seq, vocab, steps.batch_shardings(mesh),
                                       NUM_DOMAINS)

  def call(runner, b):
    jax.block_until_ready(runner(b))

  first, times = bench_setup.time_interleaved(
      {k: functools.partial(call, r) for k, r in runners.items()}, batches, args.rounds,
      args.steps)
  averages = {k: np.asarray(runners[k].state.domains.average) for k in ("proxy", "proxy_bf16")}
  num_params = sum(x.size for x in jax.tree.leaves(reference))
  med = {k: statistics.median(t) for k, t in times.items()}
  return {"model": name, "vocab": vocab, "batch": batch, "num_params": int(num_params),
          "median_s": med, "first_call_s": first,
          "paired": {k: bench_setup.paired_ratio(times[k], times["plain"]) for k in times},
          "steps_per_proxy": int(runners["proxy"].state.step),
          "max_abs_average_diff": float(np.max(np.abs(averages["proxy"]
                                                      - averages["proxy_bf16"]))),
          "compiles": {k: r.compiles() for k, r in runners.items()}}


def format_row(r: dict) -> str:
  med = r["median_s"]
  return (f"{r['model']:>5} {r['vocab']:>6} {r['num_params'] / 1e6:>7.1f}M {r['batch']:>5} "
          f"{med['plain']:>8.4f} {med['proxy']:>8.4f} {med['proxy_bf16']:>9.4f} "
          f"{med['proxy'] / med['plain']:>11.3f} {med['proxy_bf16'] / med['plain']:>10.3f} "
          f"{r['paired']['proxy']:>7.3f} {r['paired']['proxy_bf16']:>7.3f} "
          f"{r['max_abs_average_diff']:>13.2e}")


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--model", choices=("tiny", "20m"), action="append",
                      help="repeatable; default both")
  parser.add_argument("--vocab", type=int, action="append",
                      help="tiny's vocabulary sizes (repeatable; default 512 and 50257); "
                      "20m uses 512")
  parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
  parser.add_argument("--steps", type=int, default=4, help="timed calls per variant per round")
  parser.add_argument("--seq", type=int, default=128)
  parser.add_argument("--step-size", type=float, default=1.0, help="DoReMi eta (the paper's 1)")
  args = parser.parse_args(argv)
  if args.rounds * args.steps < 3:
    parser.error("--rounds x --steps must be >= 3")
  configs = [("tiny", v) for v in (args.vocab or [512, 50257])
             if "tiny" in (args.model or ["tiny"])]
  configs += [("20m", 512)] if "20m" in (args.model or ["20m"]) else []
  print(bench_setup.header())
  print(f"{args.rounds} rounds x {args.steps} timed calls per variant, interleaved; "
        f"{NUM_DOMAINS} domains, eta {args.step_size:g}; limit proxy/plain = 4/3 = 1.333")
  print(f"{'model':>5} {'vocab':>6} {'params':>8} {'batch':>5} {'plain s':>8} {'proxy s':>8} "
        f"{'proxy16 s':>9} {'proxy/plain':>11} {'p16/plain':>10} {'paired':>7} {'p16 pr':>7} "
        f"{'avg w diff':>13}")
  bad = []
  for name, vocab in configs:
    r = bench(name, vocab, args)
    print(format_row(r), flush=True)
    bad += [f"{name} {vocab} {k}" for k, c in r["compiles"].items() if c != 1]
  print("paired, p16 pr: median of call-by-call ratios to the plain step (steadier under load)")
  print(f"avg w diff: max |average weights (f32 reference) - (bf16 reference)| after "
        f"{args.rounds * args.steps + 2} proxy steps; load avg at the end "
        f"{bench_setup.load_average()}")
  return bench_setup.exit_status(bad)


if __name__ == "__main__":
  sys.exit(main())
