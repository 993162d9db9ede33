"""Per-domain held-out loss of a model's params: the sums behind ``evaluate`` (a whole
split, once, after training) and the learning curves (a fixed subset, every
``train.eval_every`` steps, inside the training loop).

Domains are the SeqIO subtasks, each read unshuffled from the split, as t5x evaluates.
"""
from __future__ import annotations

import json
import math
import os
from typing import Any, Mapping, Sequence

import jax
import numpy as np

from doremi_jax import errors
from doremi_jax.core import partitioning, steps
from doremi_jax.data import seqio_input, tokenizer


class HeldOut:
  """The compiled eval step, the tokens' byte lengths and the domains' batches of a split."""

  def __init__(self, model, mesh, params_shardings, rules, provider, domains: Sequence[str],
               lengths: Mapping[str, int], batch_size: int):
    self.domains, self.lengths, self.batch_size = list(domains), dict(lengths), batch_size
    self.eval_step = steps.make_eval_step(model, mesh, params_shardings, len(self.domains), rules)
    self.shardings = steps.batch_shardings(mesh, rules)
    vocab = provider.output_features["targets"].vocabulary
    self.token_bytes = jax.device_put(tokenizer.token_byte_lengths(vocab),
                                      partitioning.replicated(mesh))

  def batches(self, split: str, max_batches_per_domain: int | None, keep: bool = False):
    """Each domain's batches of ``split`` in order (at most ``max_batches_per_domain``);
    ``keep``: batches that outlive the iteration (``seqio_input.global_batches``)."""
    for domain in self.domains:
      local = seqio_input.eval_batches(errors.require_task(domain), self.lengths, split,
                                       self.batch_size, self.domains, max_batches_per_domain)
      yield from seqio_input.global_batches(local, self.shardings, copy=keep)

  def sums(self, params, batches) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-domain summed NLL (nats), token counts and UTF-8 bytes over ``batches``."""
    sums, counts, nbytes = (np.zeros(len(self.domains)) for _ in range(3))
    for batch in batches:
      s, c, b = self.eval_step(params, batch, self.token_bytes)
      sums += np.asarray(s)
      counts += np.asarray(c)
      nbytes += np.asarray(b)
    return sums, counts, nbytes

  def metrics(self, sums, counts, nbytes, split: str) -> dict[str, Any]:
    """Log-perplexity and bits per byte per domain, with their averages and worst domain."""
    empty = [d for d, c in zip(self.domains, counts) if c == 0]
    if empty:
      raise errors.DoremiError(
          f"no {split} tokens for domain(s) {empty} (split too small for one batch of "
          f"{self.batch_size} x {self.lengths['targets']} tokens?)")
    log_ppl = dict(zip(self.domains, (sums / counts).tolist()))
    bpb = dict(zip(self.domains, (sums / (math.log(2) * np.maximum(nbytes, 1))).tolist()))
    return {
        "split": split, "log_perplexity": log_ppl,
        "tokens": dict(zip(self.domains, counts.tolist())),
        "average_log_perplexity": float(np.mean(list(log_ppl.values()))),
        "worst_log_perplexity": float(max(log_ppl.values())),
        "worst_domain": max(log_ppl, key=log_ppl.get),
        "bits_per_byte": bpb, "bytes": dict(zip(self.domains, nbytes.tolist())),
        "average_bits_per_byte": float(np.mean(list(bpb.values()))),
        "worst_bits_per_byte": float(max(bpb.values())),
        "worst_bits_per_byte_domain": max(bpb, key=bpb.get),
    }


def curve_file(model_dir: str, split: str) -> str:
  return os.path.join(model_dir, f"curve_{split}.jsonl")


class Curves:
  """Learning curves: every ``eval_every`` steps, per-domain metrics on the first
  ``batches_per_domain`` batches of each split (read once, kept on device), one JSON line
  per evaluation in ``curve_<split>.jsonl``. Rows past a resumed checkpoint are dropped,
  so a resumed run's curve equals an uninterrupted one's."""

  def __init__(self, heldout: HeldOut, model_dir: str, splits: Sequence[str],
               batches_per_domain: int, start_step: int, write: bool):
    self.heldout, self.splits, self.write = heldout, list(splits), write
    self.data = {s: list(heldout.batches(s, batches_per_domain, keep=True))
                 for s in self.splits}
    self.files = {s: curve_file(model_dir, s) for s in self.splits}
    if write:
      for path in self.files.values():
        drop_rows_after(path, start_step)

  def evaluate(self, step: int, params) -> None:
    for split in self.splits:
      row = {"step": step, **self.heldout.metrics(*self.heldout.sums(params, self.data[split]),
                                                  split)}
      if self.write:
        with open(self.files[split], "a") as f:
          f.write(json.dumps(row) + "\n")
          f.flush()
          os.fsync(f.fileno())


def read_curve(model_dir: str, split: str) -> list[dict[str, Any]]:
  path = curve_file(model_dir, split)
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.endswith("\n")]


def drop_rows_after(path: str, step: int) -> None:
  """Drops a JSON-lines file's rows past ``step`` (and a half-written last row): a run
  killed after writing them but before their checkpoint writes them again on resume."""
  if not os.path.exists(path):
    return
  with open(path) as f:
    lines = f.readlines()
  keep = []
  for line in lines:
    try:
      if line.endswith("\n") and json.loads(line)["step"] <= step:
        keep.append(line)
    except ValueError:
      pass
  if len(keep) < len(lines):
    with open(path + ".tmp", "w") as f:
      f.writelines(keep)
    os.replace(path + ".tmp", path)
