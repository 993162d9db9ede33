"""The timing protocol every contender of benchmarks/step_time.py follows, in its own process.

Imported by our own worker and by the peer harnesses (which run in the peers' venvs, so this
module needs nothing but jax): the first call compiles, ``warmup - 1`` more are untimed, then
``steps`` calls are each timed up to ``jax.block_until_ready`` of everything the step returned.
"""
from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time

MODEL = {"layers": 2, "d_model": 128, "heads": 4, "head_dim": 32, "mlp": 512,
         "batch": 16, "seq": 128, "dtype": "float32"}


def time_calls(call, warmup: int, steps: int) -> dict:
  """Times ``call(i)`` (which returns the step's outputs) with the protocol above."""
  import jax
  t0 = time.perf_counter()
  jax.block_until_ready(call(0))
  first = time.perf_counter() - t0
  for i in range(1, warmup):
    jax.block_until_ready(call(i))
  times = []
  for i in range(steps):
    t0 = time.perf_counter()
    jax.block_until_ready(call(warmup + i))
    times.append(time.perf_counter() - t0)
  return summarize(first, times, warmup)


def summarize(first: float, times: list[float], warmup: int) -> dict:
  """Median (what is compared), spread, and the first call (compile included)."""
  return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times),
          "first_call_s": first, "timed_steps": len(times), "warmup": warmup,
          "times_s": times}


def emit(result: dict) -> None:
  """Prints the result as the last line of stdout, with what identifies the process."""
  import jax
  result = dict(result, jax=jax.__version__, device=str(jax.devices()[0]),
                num_devices=len(jax.devices()), python=platform.python_version(),
                pid=os.getpid(), load_average=os.getloadavg())
  sys.stdout.flush()
  print(json.dumps(result), flush=True)


def add_args(parser) -> None:
  """The flags every contender's process takes."""
  parser.add_argument("--vocab", type=int, required=True)
  parser.add_argument("--steps", type=int, default=10)
  parser.add_argument("--warmup", type=int, default=2)
  parser.add_argument("--batch", type=int, default=MODEL["batch"])
  parser.add_argument("--seq", type=int, default=MODEL["seq"])
