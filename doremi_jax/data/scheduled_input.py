"""A prepared mixture whose weights follow a schedule over the training steps (DoReMi's
weights at each fraction of the proxy's run, instead of their average).

Batch ``t`` stays a pure function of (corpus, schedule, seed, t): the schedule is a list of
segments ``(first step, weights)``; inside a segment rows are assigned to domains by that
segment's fixed pattern (``grain_input.row_pattern``), and a domain's draw numbers go on
from where the earlier segments left them (each segment's rows per domain are counted,
not replayed), so no sequence is read twice before its domain's epoch ends, resuming is
exact, and every host reads only its own rows.
"""
from __future__ import annotations

import json
from typing import Any, Mapping, Sequence

import numpy as np

from doremi_jax import errors
from doremi_jax.data import grain_input
from doremi_jax.data.prepared_corpus import PreparedCorpus

FORMAT = "doremi-jax domain schedule v1"


def read_schedule(path: str, train_steps: int) -> list[tuple[int, dict[str, float]]]:
  """A schedule JSON (``{"segments": [{"start_fraction", "weights"}, ...]}``) as
  (first step, weights) for a run of ``train_steps``; a bad file is one line."""
  try:
    with open(path, encoding="utf-8") as f:
      payload = json.load(f)
    segments = payload["segments"]
    out = [(int(round(float(s["start_fraction"]) * train_steps)), dict(s["weights"]))
           for s in segments]
  except (OSError, ValueError, KeyError, TypeError) as exc:
    raise errors.DoremiError(f"domain schedule {path!r} cannot be read ({exc}); write it with "
                             "doremi_jax.data.scheduled_input.write_schedule") from None
  if not out or out[0][0] != 0 or any(b[0] < a[0] for a, b in zip(out, out[1:])):
    raise errors.DoremiError(f"domain schedule {path!r}: segments must start at fraction 0 "
                             "and be in order")
  return out


def write_schedule(path: str, segments: Sequence[tuple[float, Mapping[str, float]]],
                   metadata: Mapping[str, Any] | None = None) -> None:
  from doremi_jax import storage  # pylint: disable=g-import-not-at-top
  payload = {"format": FORMAT, "metadata": dict(metadata or {}),
             "segments": [{"start_fraction": float(f), "weights": dict(w)} for f, w in segments]}
  storage.write_atomic(path, json.dumps(payload, indent=1) + "\n")


def schedule_from_trajectory(rows: Sequence[Mapping[str, Any]], segments: int
                             ) -> list[tuple[float, dict[str, float]]]:
  """``segments`` equal fractions of a proxy's run, each the mean of the weights the
  proxy logged inside it (the smoothing), as (start fraction, weights)."""
  steps = np.asarray([r["step"] for r in rows], np.float64)
  if not len(rows) or segments < 1:
    raise errors.DoremiError("a domain schedule needs a proxy trajectory and >= 1 segment")
  last = steps.max()
  domains = sorted(rows[0]["domain_weights"])
  out = []
  for k in range(segments):
    lo, hi = last * k / segments, last * (k + 1) / segments
    inside = [r for r, s in zip(rows, steps) if lo < s <= hi or (k == 0 and s <= hi)]
    inside = inside or [min(rows, key=lambda r: abs(r["step"] - hi))]
    mean = {d: float(np.mean([r["domain_weights"][d] for r in inside])) for d in domains}
    total = sum(mean.values())
    out.append((k / segments, {d: v / total for d, v in mean.items()}))
  return out


class ScheduledMixtureInput(grain_input.MixtureInput):
  """``MixtureInput`` whose weights change at the schedule's steps."""

  def __init__(self, corpus: PreparedCorpus, schedule: Sequence[tuple[int, Mapping[str, float]]],
               global_batch_size: int, seed: int = 0, domains: Sequence[str] | None = None,
               **kwargs):
    union = {}
    for _, weights in schedule:
      for d, w in weights.items():
        union[d] = union.get(d, 0.0) + float(w) / len(schedule)
    super().__init__(corpus, union, global_batch_size, seed=seed, domains=domains, **kwargs)
    self.starts = np.asarray([s for s, _ in schedule], np.int64) * self.global_batch_size
    self._segments = []
    offset = np.zeros(len(self.domains), np.int64)
    for i, (_, weights) in enumerate(schedule):
      w = grain_input.normalized([float(weights.get(d, 0.0)) for d in self.domains])
      domain, rank = grain_input.row_pattern(tuple(w.tolist()), self.window_rows)
      counts = np.bincount(domain, minlength=len(self.domains))
      self._segments.append((domain, rank, counts, offset.copy()))
      if i + 1 < len(schedule):
        rows = int(self.starts[i + 1] - self.starts[i])
        whole, part = divmod(rows, self.window_rows)
        offset += whole * counts + np.bincount(domain[:part], minlength=len(self.domains))

  def rows(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
    r = np.arange(start, stop, dtype=np.int64)
    segment = np.searchsorted(self.starts, r, side="right") - 1
    domain, draw = np.empty_like(r, np.int32), np.empty_like(r)
    for s in np.unique(segment):
      pattern, rank, counts, offset = self._segments[int(s)]
      mine = segment == s
      window, pos = np.divmod(r[mine] - self.starts[s], self.window_rows)
      d = pattern[pos]
      domain[mine], draw[mine] = d, offset[d] + window * counts[d] + rank[pos]
    return domain, draw
