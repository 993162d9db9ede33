"""Tokens/s of the prepared-data grain input vs what the training step consumes; resume cost.

    python benchmarks/input_pipeline.py                     # embedded corpus, vocab 2048
    python benchmarks/input_pipeline.py --json /tmp/input.json --proxy-batches 20

Prepares the embedded corpus (``doremi-corpus prepare --source=embedded``) at sequence
lengths 128 and 1024 into ``--work`` (reused when present), then on this host:

  * input alone: ``grain_input.MixtureInput`` with the natural mixture, batches read
    through ``batches_from`` (grain threads), at the demo shape (16 x 128) and the
    280M-proxy shape (512 x 1024, one host's batch);
  * the step: the demo model's plain and DoReMi proxy steps at 16 x 128 (one CPU device),
    as tokens/s;
  * the loop: the real training loop (``run.trainer.Trainer.run``: input, logging every
    20 steps, checkpoints every 200, progress bar) of a demo reference run vs the same
    compiled step called back to back on one fixed batch, in steps/s;
  * resume: seconds from building the input to its first batch at step 10 vs 100,000.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import statistics
import sys
import time
from types import SimpleNamespace

os.environ.setdefault("JAX_PLATFORMS", "cpu")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax  # noqa: E402
import step_time  # noqa: E402  (benchmarks/step_time.py: the bare step benchmark)

from doremi_jax import storage  # noqa: E402
from doremi_jax.core import model as model_lib  # noqa: E402
from doremi_jax.corpora import prepare
from doremi_jax.data import grain_input, prepared_corpus  # noqa: E402
from doremi_jax.run import config, settings, trainer  # noqa: E402


def build_corpus(work: str, length: int, vocab: int) -> prepared_corpus.PreparedCorpus:
  out = os.path.join(work, f"embedded_L{length}_V{vocab}")
  if not os.path.exists(os.path.join(out, prepared_corpus.MANIFEST)):
    model = os.path.join(work, f"embedded_L128_V{vocab}", "tokenizer", f"spm_{vocab}.model")
    t0 = time.perf_counter()
    prepare.prepare("embedded", out, model=model if os.path.exists(model) else None,
                    vocab_size=vocab, sequence_length=length)
    print(f"prepared {out} in {time.perf_counter() - t0:.1f}s", flush=True)
  return prepared_corpus.load(out)


def input_tokens_per_s(corpus, batch: int, batches: int, threads: int) -> dict:
  source = grain_input.MixtureInput(corpus, corpus.natural_weights(), batch, seed=0,
                                    num_threads=threads)
  it = source.batches_from(0)
  for _ in range(3):
    next(it)
  t0 = time.perf_counter()
  for _ in range(batches):
    next(it)
  seconds = time.perf_counter() - t0
  tokens = batches * batch * corpus.sequence_length
  return {"batch": batch, "length": corpus.sequence_length, "batches": batches,
          "seconds": seconds, "tokens_per_s": tokens / seconds,
          "batches_per_s": batches / seconds}


class _TimedTrainer(trainer.Trainer):
  """Records when each step is dispatched."""

  def do_step(self, step: int):
    self.times.append(time.perf_counter())
    return super().do_step(step)


def loop_vs_bare(corpus, vocab: int, n: int, work: str) -> dict:
  """The training loop's steps/s vs its own compiled step on a fixed batch (bare)."""
  from doremi_jax.tasks import prepared as prepared_tasks  # pylint: disable=g-import-not-at-top
  config.configure(["models/tiny.gin", "runs/base.gin"], [f"VOCAB_SIZE = {vocab}"])
  prepared_tasks.register_prepared(corpus.root, prefix="bench")
  model_dir = os.path.join(work, f"loop_{os.getpid()}")
  run_settings = settings.RunSettings(model_dir, "bench_natural", {"targets": 128}, n + 5,
                                      checkpoint_every=200, log_every=20, progress=True)
  run = _TimedTrainer(run_settings, model_lib.TransformerConfig())
  run.times = []
  fixed = next(run.batches)
  state = run.state
  for _ in range(3):
    state, _ = run.step_fn(state, fixed)
  jax.block_until_ready(state)
  t0 = time.perf_counter()
  for _ in range(n):
    state, _ = run.step_fn(state, fixed)
  jax.block_until_ready(state)
  bare = (time.perf_counter() - t0) / n
  run.state = state  # the step donates its input state
  run.run()  # n + 5 steps from the start; the first 5 are not timed
  loop = (time.perf_counter() - run.times[5]) / n
  shutil.rmtree(model_dir)
  return {"bare_steps_per_s": 1 / bare, "loop_steps_per_s": 1 / loop, "loop/bare": bare / loop,
          "steps": n}


def resume_seconds(corpus, steps_to_try, repeats: int) -> dict[int, float]:
  """Median seconds from nothing (no cached row pattern) to the first batch, per step;
  the steps alternate so load changes hit both alike."""
  times: dict[int, list[float]] = {s: [] for s in steps_to_try}
  for _ in range(repeats):
    for step in steps_to_try:
      grain_input.row_pattern.cache_clear()
      t0 = time.perf_counter()
      source = grain_input.MixtureInput(corpus, corpus.natural_weights(), 16, seed=0)
      next(source.batches_from(step))
      times[step].append(time.perf_counter() - t0)
  return {s: statistics.median(t) for s, t in times.items()}


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--work", default=str(storage.cache_root() / "input_bench"))
  ap.add_argument("--vocab", type=int, default=2048)
  ap.add_argument("--demo-batches", type=int, default=400)
  ap.add_argument("--proxy-batches", type=int, default=10)
  ap.add_argument("--threads", type=int, default=1, help="grain read threads")
  ap.add_argument("--steps", type=int, default=20, help="timed steps (step benchmarks)")
  ap.add_argument("--loop-steps", type=int, default=200, help="timed steps of the loop")
  ap.add_argument("--json", metavar="PATH")
  args = ap.parse_args(argv)
  demo_corpus = build_corpus(args.work, 128, args.vocab)
  proxy_corpus = build_corpus(args.work, 1024, args.vocab)
  demo = input_tokens_per_s(demo_corpus, 16, args.demo_batches, args.threads)
  proxy = input_tokens_per_s(proxy_corpus, 512, args.proxy_batches, args.threads)
  step_args = SimpleNamespace(untied=True, warmup=2, steps=args.steps, batch=16, seq=128)
  bare = step_time.bench_vocab(args.vocab, step_args)
  step_tokens = {k: 16 * 128 / bare[k]["median_s"] for k in ("plain", "proxy")}
  loop = loop_vs_bare(demo_corpus, args.vocab, args.loop_steps, args.work)
  resume = resume_seconds(demo_corpus, (10, 100_000), 5)
  result = {
      "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="minutes"),
      "machine": f"{platform.machine()}, {os.cpu_count()} CPUs", "load": os.getloadavg(),
      "jax": jax.__version__, "command": " ".join(["benchmarks/input_pipeline.py"] +
                                                  (argv or sys.argv[1:])),
      "input_demo": demo, "input_proxy_shape": proxy, "step_tokens_per_s": step_tokens,
      "loop": loop, "resume_first_batch_s": resume,
      "resume_ratio": resume[100_000] / resume[10]}
  print(f"{'shape':>12} {'input tok/s':>12} {'plain step tok/s':>17} {'proxy step tok/s':>17} "
        f"{'input/plain':>11} {'input/proxy':>11}")
  print(f"{'16 x 128':>12} {demo['tokens_per_s']:12,.0f} {step_tokens['plain']:17,.0f} "
        f"{step_tokens['proxy']:17,.0f} {demo['tokens_per_s'] / step_tokens['plain']:11.1f} "
        f"{demo['tokens_per_s'] / step_tokens['proxy']:11.1f}")
  print(f"{'512 x 1024':>12} {proxy['tokens_per_s']:12,.0f} {'(not measured)':>17}")
  print(f"reference run: bare step {loop['bare_steps_per_s']:.2f} steps/s, training loop "
        f"{loop['loop_steps_per_s']:.2f} steps/s ({loop['loop/bare']:.2f} of bare, "
        f"{loop['steps']} steps; target >= 0.90)")
  print(f"resume: first batch at step 10 {resume[10]:.3f}s, at step 100,000 "
        f"{resume[100_000]:.3f}s, ratio {result['resume_ratio']:.2f} (target < 1.5)")
  if args.json:
    with open(args.json, "w", encoding="utf-8") as f:
      json.dump(result, f, indent=1)
  return 0 if result["resume_ratio"] < 1.5 else 1


if __name__ == "__main__":
  sys.exit(main())
