"""TensorBoard scalars (per-domain metrics split by domain name), throughput, progress bar."""
from __future__ import annotations

import logging
import os
import time
from typing import Any, Mapping, Sequence

import numpy as np
import tqdm

from doremi_jax.run import paths

# A non-finite metric is reported by the training loop as a one-line error, not by tensorboardX.
logging.getLogger("tensorboardX").setLevel(logging.ERROR)


class MetricsWriter:
  """Writes scalars; a ``[k]`` metric becomes ``<name>/<domain>`` for each domain.

  A start resumed from step ``resumed_from`` writes a new event file that begins with a
  purge marker at ``resumed_from + 1`` (``SessionLog.START``): TensorBoard then hides what
  an earlier start logged after that checkpoint, so no step appears twice; the older
  files themselves are kept."""

  def __init__(self, model_dir: str, domains: Sequence[str], enabled: bool = True,
               resumed_from: int | None = None):
    self.domains = list(domains)
    self._writer = None
    if enabled:
      from tensorboardX import SummaryWriter  # only the writing process needs it
      resumed = {} if resumed_from is None else {
          "purge_step": resumed_from + 1, "filename_suffix": f".from_step_{resumed_from}"}
      self._writer = SummaryWriter(os.path.join(model_dir, paths.TENSORBOARD_SUBDIR), **resumed)

  def write(self, step: int, metrics: Mapping[str, Any]) -> None:
    if self._writer is None:
      return
    for name, value in metrics.items():
      value = np.asarray(value)
      if value.ndim == 0:
        self._writer.add_scalar(name, float(value), step)
      elif value.shape == (len(self.domains),):
        for domain, v in zip(self.domains, value.tolist()):
          self._writer.add_scalar(f"{name}/{domain}", float(v), step)
    self._writer.flush()

  def close(self) -> None:
    if self._writer is not None:
      self._writer.close()


class Throughput:
  """Tokens per second since the run (or its resumption) started."""

  def __init__(self, start_step: int, tokens_per_step: int):
    self.start_step, self.tokens_per_step, self.t0 = start_step, tokens_per_step, time.time()

  def tokens_per_second(self, step: int) -> float:
    return (step - self.start_step) * self.tokens_per_step / max(time.time() - self.t0, 1e-9)

  def seconds(self) -> float:
    return time.time() - self.t0


def progress_bar(start: int, total: int, enabled: bool = True) -> tqdm.tqdm:
  return tqdm.tqdm(initial=start, total=total, disable=not enabled, unit="step",
                   dynamic_ncols=True, leave=False)
