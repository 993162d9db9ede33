"""What the benchmarks share: the brief's tiny model on one CPU device, random batches,
stateful step runners and timing interleaved call by call (so all see the same load)."""
from __future__ import annotations

import datetime
import os
import platform
import statistics
import sys
import time
from typing import Any, Callable

import jax
import numpy as np

from doremi_jax.core import model as model_lib
from doremi_jax.core import partitioning, steps
from doremi_jax.core import train_state as ts


def tiny_model(vocab: int, untied: bool, mlp_activations: tuple[str, ...] | None = None):
  """(config, mesh, model, optimizer): 2 layers, d=128, 4 heads, mlp 512, f32, on the first
  device; ``mlp_activations`` None is our default SwiGLU, ("gelu",) the peers' GPT-2 MLP."""
  cfg = model_lib.TransformerConfig(
      vocab_size=vocab, num_layers=2, emb_dim=128, num_heads=4, head_dim=32, mlp_dim=512,
      mlp_activations=mlp_activations, tied_embeddings=not untied, dtype="float32",
      param_dtype="float32")
  mesh = partitioning.make_mesh((1, 1, 1), devices=jax.devices()[:1])
  return cfg, mesh, model_lib.TransformerLM(cfg), ts.make_optimizer(10_000)


def random_batches(n: int, batch: int, seq: int, vocab: int, shardings, num_domains: int,
                   seed: int = 0):
  """``n`` device batches of uniform tokens, rows cycling over ``num_domains`` domains."""
  rng = np.random.default_rng(seed)
  out = []
  for _ in range(n):
    targets = rng.integers(1, vocab, size=(batch, seq), dtype=np.int32)
    host = {"targets": targets,
            "inputs": np.concatenate([np.zeros((batch, 1), np.int32), targets[:, :-1]], 1),
            "loss_mask": np.ones((batch, seq), np.float32),
            "domain_ids": (np.arange(batch) % num_domains).astype(np.int32)}
    out.append({k: jax.device_put(v, shardings[k]) for k, v in host.items()})
  return out


def exit_status(recompiled: list) -> int:
  """1 (with one ``error:`` line) when a step function compiled more than once, else 0."""
  if recompiled:
    print(f"error: a step function compiled more than once ({', '.join(map(str, recompiled))})",
          file=sys.stderr)
    return 1
  return 0


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


def load_average() -> str:
  return ", ".join(f"{x:.1f}" for x in os.getloadavg())


def header() -> str:
  """Date (UTC), machine, jax and load average: the first line of a benchmark's output."""
  date = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
  return (f"{date}  {cpu_model()}, {os.cpu_count()} CPUs  jax {jax.__version__} "
          f"({jax.devices()[0]})  load avg {load_average()}")


class Runner:
  """A step function and the state it donates and replaces on every call."""

  def __init__(self, step, state, reference=None):
    self.step, self.state, self.reference = step, state, reference

  def __call__(self, batch):
    args = (self.state, batch) if self.reference is None else (self.state, self.reference, batch)
    self.state, metrics = self.step(*args)
    return self.state, metrics

  def compiles(self) -> int:
    return self.step.jitted._cache_size()  # pylint: disable=protected-access

  @classmethod
  def fresh(cls, kind: str, lm, optimizer, mesh, seq: int, num_domains: int,
            doremi_config: steps.DoremiConfig | None = None, reference=None) -> "Runner":
    """A plain or (single) proxy step on a seed-0 state; a proxy trains against ``reference``."""
    proxy = kind == "proxy"
    domain_state = num_domains if proxy else None
    _, shardings = ts.state_shardings(lm, optimizer, mesh, seq, domain_state)
    step = steps.make_train_step(kind, lm, optimizer, mesh, shardings, num_domains,
                                 (doremi_config or steps.DoremiConfig()) if proxy else None)
    return cls(step, ts.init_state(lm, optimizer, mesh, seq, 0, domain_state),
               reference if proxy else None)


def time_interleaved(calls: dict[str, Callable[[Any], None]], batches: list, rounds: int,
                     steps: int) -> tuple[dict[str, float], dict[str, list[float]]]:
  """``(first-call seconds, timed seconds)`` per name. Each call is compiled and warmed up
  by two untimed calls, then all are timed call by call, in an order rotated every round;
  every variant gets the same batch at the same position. A call must block until done."""
  first = {}
  for name, call in calls.items():
    t0 = time.perf_counter()
    call(batches[0])
    first[name] = time.perf_counter() - t0
    call(batches[1 % len(batches)])
  times = {name: [] for name in calls}
  names, n = list(calls), 0
  for rnd in range(rounds):
    order = names[rnd % len(names):] + names[:rnd % len(names)]
    for _ in range(steps):
      batch = batches[n % len(batches)]
      n += 1
      for name in order:
        t0 = time.perf_counter()
        calls[name](batch)
        times[name].append(time.perf_counter() - t0)
  return first, times


def paired_ratio(a: list[float], b: list[float]) -> float:
  """Median of ``a[i] / b[i]``: interleaved neighbours saw about the same load, so this is
  steadier on a busy machine than the ratio of the medians."""
  return statistics.median(x / y for x, y in zip(a, b))
