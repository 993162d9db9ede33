"""A deterministic, checkpointable training input over a prepared corpus, built on grain.

Batch ``t`` is a pure function of (prepared corpus, mixture weights, seed, t):

  * **rows -> domains**: the rows of the global batch stream repeat a fixed pattern of
    ``M = batch_size * window_batches`` rows (``row_pattern``, about 2**18 rows) in which
    every prefix of ``r`` rows holds each domain ``d`` within one row of ``w_d r``; after
    ``j`` whole windows the error is below ``j + 1`` rows (< 1 row per 2**18). The
    pattern is the same on every host; a row's domain is looked up, never replayed;
  * **domain -> sequence**: the ``n``-th row given to domain ``d`` reads element ``n`` of
    ``grain.MapDataset.source(d).shuffle(seed_d)``: a fresh permutation each epoch,
    computed by index (no permutation is stored, no data is replayed).

So resuming at step 100,000 costs what starting at step 0 costs (the state is the step),
and each host reads only its ``global_batch / process_count`` rows of every global batch:
1 host and N hosts see the same global batches. Batches are numpy dicts laid out like
``doremi_jax.data``: ``inputs`` (targets shifted right with 0), ``targets``,
``loss_mask`` (targets > 0, float32) and ``domain_ids`` (int32 index into ``domains``).
"""
from __future__ import annotations

import functools
import hashlib
import heapq
from typing import Iterator, Mapping, Sequence

import numpy as np

from doremi_jax import errors
from doremi_jax.data.prepared_corpus import PreparedCorpus

DEFAULT_WINDOW_ROWS = 1 << 18
_LAST_STEP = 1 << 62


def normalized(weights: Sequence[float]) -> np.ndarray:
  w = np.asarray(weights, np.float64)
  if w.ndim != 1 or not len(w) or not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
    raise errors.DoremiError(f"mixture weights must be finite, >= 0 and not all 0, got {list(w)}")
  return w / w.sum()


@functools.lru_cache(maxsize=16)
def row_pattern(weights: tuple[float, ...], rows: int) -> tuple[np.ndarray, np.ndarray]:
  """(domain of each row, how many earlier rows of that domain) for one window of rows.

  Tijdeman's chairman assignment: row r goes to the domain behind its quota
  (w_d r > n_d) whose next row is due first ((n_d + 1 - 1/(2K-2)) / w_d). Every prefix of
  the window then holds each domain within one row of w_d r (Tijdeman, 1980). Two heaps
  (domains not yet behind, by when they fall behind; domains behind, by due time) make
  it O(rows log K).
  """
  w = normalized(weights).tolist()
  live = [d for d, x in enumerate(w) if x > 0]
  lag = 1.0 - 1.0 / (2 * len(live) - 2) if len(live) > 1 else 0.5
  taken = [0] * len(w)
  waiting = [(0.0, d) for d in live]
  heapq.heapify(waiting)
  behind: list[tuple[float, int]] = []
  domain = np.empty(rows, np.int32)
  rank = np.empty(rows, np.int64)
  for r in range(1, rows + 1):
    while waiting and waiting[0][0] < r:
      d = heapq.heappop(waiting)[1]
      heapq.heappush(behind, ((taken[d] + lag) / w[d], d))
    d = heapq.heappop(behind if behind else waiting)[1]
    domain[r - 1], rank[r - 1] = d, taken[d]
    taken[d] += 1
    heapq.heappush(waiting, (taken[d] / w[d], d))
  return domain, rank


def domain_seed(seed: int, domain: str) -> int:
  """A per-domain shuffle seed: adding or dropping a domain leaves the others' orders."""
  return int.from_bytes(hashlib.sha256(f"{seed}:{domain}".encode()).digest()[:4], "big")


def model_features(targets: np.ndarray, domain_ids: np.ndarray) -> dict[str, np.ndarray]:
  """The decoder-only batch layout of ``doremi_jax.data``."""
  targets = np.asarray(targets, np.int32)
  inputs = np.zeros_like(targets)
  inputs[:, 1:] = targets[:, :-1]
  return {"inputs": inputs, "targets": targets, "loss_mask": (targets > 0).astype(np.float32),
          "domain_ids": np.asarray(domain_ids, np.int32)}


def check_hosts(global_batch_size: int, process_index: int, process_count: int) -> None:
  """A global batch splits evenly over the hosts, and this host is one of them."""
  if not 0 <= process_index < process_count:
    raise errors.DoremiError(f"process_index {process_index} not in [0, {process_count})")
  if global_batch_size <= 0 or global_batch_size % process_count:
    raise errors.DoremiError(f"batch size {global_batch_size} does not divide over "
                             f"{process_count} hosts")


def domain_sources(corpus: PreparedCorpus, domains: Sequence[str], split: str, seed: int,
                   used: Sequence[int], why_needed) -> dict:
  """Domain index -> its sequences as ``grain.MapDataset.source(...).shuffle(seed_d)``
  (a fresh permutation each epoch, by index) for each index in ``used``; a used domain
  with no sequence is one line (``why_needed(name)`` says why it is used)."""
  import grain  # pylint: disable=g-import-not-at-top
  out = {}
  for i in used:
    d = domains[i]
    seqs = corpus.sequences(d, split)
    if not len(seqs):
      raise errors.DoremiError(
          f"domain {d!r} {why_needed(d)} but no {split} sequences (its text is "
          f"shorter than one {corpus.sequence_length}-token sequence); give it more text, "
          "merge it into a related domain, or prepare with a shorter --sequence_length")
    out[i] = grain.MapDataset.source(seqs).shuffle(seed=domain_seed(seed, d))
  return out


def read_rows(sources: Mapping[int, object], domain: np.ndarray, draw: np.ndarray,
              sequence_length: int) -> dict[str, np.ndarray]:
  """The batch of rows (domain index, draw number): each domain's rows in one batched
  read and decode."""
  targets = np.zeros((len(domain), sequence_length), np.int32)
  for d in np.unique(domain):
    rows = np.flatnonzero(domain == d)
    targets[rows] = np.stack(sources[int(d)]._getitems(draw[rows].tolist()))  # pylint: disable=protected-access
  return model_features(targets, domain)


class MixtureInput:
  """Global batches of a weighted mixture of a prepared corpus's domains, by step.

  One read thread by default: a batch costs well under a millisecond, and more threads
  only take cores from XLA (on 2 cores, 2 threads cost the loop ~8% of its steps/s;
  ``benchmarks/input_pipeline.py``)."""

  def __init__(self, corpus: PreparedCorpus, weights: Mapping[str, float],
               global_batch_size: int, seed: int = 0, domains: Sequence[str] | None = None,
               split: str = "train", process_index: int = 0, process_count: int = 1,
               window_batches: int | None = None, num_threads: int = 1, prefetch: int = 2):
    self.domains = list(domains if domains is not None else sorted(weights))
    unknown = sorted(set(weights) - set(self.domains))
    if unknown:
      raise errors.DoremiError(f"weights name domains {unknown} missing from {self.domains}")
    check_hosts(global_batch_size, process_index, process_count)
    self.corpus, self.seed, self.split = corpus, int(seed), split
    self.global_batch_size = int(global_batch_size)
    self.local_batch_size = self.global_batch_size // process_count
    self.process_index, self.process_count = process_index, process_count
    self.window_batches = window_batches or max(1, -(-DEFAULT_WINDOW_ROWS // global_batch_size))
    self.weights = normalized([float(weights.get(d, 0.0)) for d in self.domains])
    self._pattern_domain, self._pattern_rank = row_pattern(
        tuple(self.weights.tolist()), self.window_batches * self.global_batch_size)
    self.counts = np.bincount(self._pattern_domain, minlength=len(self.domains))
    self._sources = domain_sources(corpus, self.domains, split, self.seed,
                                   [i for i in range(len(self.domains)) if self.counts[i]],
                                   lambda d: f"has weight {weights[d]:.3g}")
    self._threads, self._prefetch = num_threads, prefetch
    self._sequence_length = corpus.sequence_length

  @property
  def window_rows(self) -> int:
    return self.window_batches * self.global_batch_size

  def rows(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
    """(domain index, draw number within its domain) of global rows [start, stop)."""
    r = np.arange(start, stop, dtype=np.int64)
    window, pos = np.divmod(r, self.window_rows)
    domain = self._pattern_domain[pos]
    return domain, window * self.counts[domain] + self._pattern_rank[pos]

  def host_rows(self, step: int) -> tuple[np.ndarray, np.ndarray]:
    start = step * self.global_batch_size + self.process_index * self.local_batch_size
    return self.rows(start, start + self.local_batch_size)

  def host_batch(self, step: int) -> dict[str, np.ndarray]:
    """This host's slice of global batch ``step``."""
    domain, draw = self.host_rows(int(step))
    return read_rows(self._sources, domain, draw, self._sequence_length)

  def dataset(self):
    """A ``grain.MapDataset`` whose element ``t`` is this host's batch ``t``."""
    import grain  # pylint: disable=g-import-not-at-top
    return grain.MapDataset.range(_LAST_STEP).map(self.host_batch)

  def batches_from(self, step: int = 0) -> "BatchIterator":
    """Batches ``step, step + 1, ...`` read ahead by grain threads; nothing is replayed."""
    return BatchIterator(self, step)


class BatchIterator:
  """Iterates host batches; its checkpoint state is ``{"step": next step}``."""

  def __init__(self, source: MixtureInput, step: int):
    import grain  # pylint: disable=g-import-not-at-top
    if step < 0:
      raise errors.DoremiError(f"step must be >= 0, got {step}")
    self.step = int(step)
    options = grain.ReadOptions(num_threads=source._threads,  # pylint: disable=protected-access
                                prefetch_buffer_size=source._prefetch)  # pylint: disable=protected-access
    self._it = iter(source.dataset()[self.step:].to_iter_dataset(options))

  def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
    return self

  def __next__(self) -> dict[str, np.ndarray]:
    batch = next(self._it)
    self.step += 1
    return batch

  def get_state(self) -> dict[str, int]:
    return {"step": self.step}
