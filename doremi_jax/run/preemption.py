"""Stopping a training run cleanly on SIGTERM (preemption) or SIGINT (Ctrl-C).

While ``Trainer.run`` runs, a signal only sets a flag; the loop reads it after each step,
writes a checkpoint of that step and raises ``errors.Preempted``. On one host the check
is an attribute read per step (nothing on the device). On several hosts every process
must stop at the same step, so they agree only at log steps (``train.log_every``), which
sync with the host anyway: one all-gather of a flag per process says whether any of them
was signalled. A signal on one host therefore stops all of them at the next log step.
"""
from __future__ import annotations

import signal
import threading

import jax
import numpy as np
from jax.experimental import multihost_utils

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopRequest:
  """``with StopRequest() as stop:`` catches the signals for the block (main thread only,
  where Python can install handlers) and restores the previous handlers afterwards."""

  def __init__(self):
    self.signum: int | None = None
    self.multihost = jax.process_count() > 1
    self._previous: dict[int, object] = {}

  def __enter__(self) -> "StopRequest":
    if threading.current_thread() is threading.main_thread():
      for sig in SIGNALS:
        self._previous[sig] = signal.signal(sig, self._handle)
    return self

  def __exit__(self, *exc) -> None:
    for sig, handler in self._previous.items():
      # None: a handler set outside Python, which cannot be put back from Python.
      signal.signal(sig, signal.SIG_DFL if handler is None else handler)
    self._previous = {}

  def _handle(self, signum, frame) -> None:
    """Later signals are ignored: the first one's checkpoint is already on its way."""
    if self.signum is None:
      self.signum = signum

  def should_stop(self, sync_point: bool) -> bool:
    """Whether to stop after this step; ``sync_point`` must be the same on every host."""
    if not self.multihost:
      return self.signum is not None
    if not sync_point:
      return False
    flags = multihost_utils.process_allgather(np.int32(self.signum or 0))
    return bool(np.any(np.asarray(flags)))

  @property
  def exit_code(self) -> int:
    """128 + the signal's number (143 SIGTERM, 130 SIGINT); 143 on a host that stops
    because another host was signalled."""
    return 128 + int(self.signum or signal.SIGTERM)
