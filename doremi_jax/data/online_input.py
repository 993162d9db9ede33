"""The main model's input in online DoReMi: batch ``t`` drawn with the domain weights the
proxy holds at step ``t``, which the previous step computed.

Batch ``t`` is a pure function of (prepared corpus, the weights of steps 0..t, seed, t):

  * **rows per domain** (``allocate``): domain ``d``'s rows so far follow the running sum
    of ``w_d(s) * batch_size`` over the steps so far; each step gives every domain the
    whole part of what it is owed and the rows left to the largest remainders (ties to
    the lower index), so every domain stays within a row or two of its running target;
  * **which sequences**: domain ``d``'s ``n``-th row ever reads element ``n`` of its
    shuffled source, as ``grain_input`` does (no sequence twice before its epoch ends).

The weights of every step are in the run's checkpoint (``core/online.py``), so a resumed
run replays the row counts from them (no data read) and reads exactly the batches the
uninterrupted run read. Hosts compute the same global rows and read their own slice of
them, so 1 host and N hosts see the same global batches.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from doremi_jax import errors
from doremi_jax.data import grain_input
from doremi_jax.data.prepared_corpus import PreparedCorpus


def allocate(owed: np.ndarray, batch_size: int) -> np.ndarray:
  """Rows per domain for one step given what each domain is owed (its running target
  minus the rows it has had; sums to ``batch_size``): whole parts first, then the rows
  left (or taken back) by remainder."""
  owed = np.asarray(owed, np.float64)
  counts = np.floor(np.maximum(owed, 0.0)).astype(np.int64)
  left = batch_size - int(counts.sum())
  order = np.lexsort((np.arange(len(owed)), -(owed - counts)))  # largest remainder first
  while left > 0:
    for d in order[:left]:
      counts[d] += 1
    left = batch_size - int(counts.sum())
  while left < 0:  # an over-served domain owed < 0 can leave the floors above the batch
    d = min((i for i in range(len(owed)) if counts[i] > 0), key=lambda i: (owed[i] - counts[i], i))
    counts[d] -= 1
    left += 1
  return counts


class RowAllocator:
  """The global rows of each step's batch given its weights; its state is the running
  target and the rows each domain has had, which ``replay`` rebuilds from the weights of
  the steps already trained (a resumed run's checkpoint)."""

  def __init__(self, num_domains: int, global_batch_size: int):
    self.global_batch_size = int(global_batch_size)
    self.step = 0
    self.target = np.zeros(num_domains, np.float64)
    self.taken = np.zeros(num_domains, np.int64)

  def _counts(self, weights) -> np.ndarray:
    w = grain_input.normalized(np.asarray(weights, np.float64))
    if len(w) != len(self.taken):
      raise errors.DoremiError(f"{len(w)} weights for {len(self.taken)} domains")
    self.target += w * self.global_batch_size
    return allocate(self.target - self.taken, self.global_batch_size)

  def replay(self, trajectory) -> None:
    """The state after the steps whose weights are the rows of ``trajectory``."""
    for weights in np.asarray(trajectory):
      self.taken += self._counts(weights)
      self.step += 1

  def next_rows(self, weights) -> tuple[np.ndarray, np.ndarray]:
    """(domain index, draw number) of the next global batch's rows, domains in order; the
    state moves on by one step."""
    counts = self._counts(weights)
    domain = np.repeat(np.arange(len(counts), dtype=np.int32), counts)
    block_start = np.repeat(np.cumsum(counts) - counts, counts)
    draw = np.repeat(self.taken, counts) + np.arange(self.global_batch_size) - block_start
    self.taken += counts
    self.step += 1
    return domain, draw


class OnlineMixtureInput:
  """Global batches of a prepared corpus whose mixture is given step by step
  (``next_batch(weights)``); ``rows`` (a ``RowAllocator``) is its whole state."""

  def __init__(self, corpus: PreparedCorpus, domains: Sequence[str], global_batch_size: int,
               seed: int = 0, split: str = "train", process_index: int = 0,
               process_count: int = 1):
    grain_input.check_hosts(global_batch_size, process_index, process_count)
    self.domains = list(domains)
    self.local_batch_size = int(global_batch_size) // process_count
    self.process_index = process_index
    self._sequence_length = corpus.sequence_length
    self._sources = grain_input.domain_sources(
        corpus, self.domains, split, int(seed), range(len(self.domains)),
        lambda d: "is in an online DoReMi run (any domain may be drawn)")
    self.rows = RowAllocator(len(self.domains), global_batch_size)

  def replay(self, trajectory) -> None:
    self.rows.replay(trajectory)

  def next_batch(self, weights) -> dict[str, np.ndarray]:
    """This host's slice of the next global batch, drawn with ``weights``."""
    domain, draw = self.rows.next_rows(weights)
    mine = slice(self.process_index * self.local_batch_size,
                 (self.process_index + 1) * self.local_batch_size)
    return grain_input.read_rows(self._sources, domain[mine], draw[mine],
                                 self._sequence_length)
