"""Orbax checkpoints of the train state, with params as their own item.

Params are a separate item so a DoReMi proxy (or an evaluator) can restore a
reference model's parameters alone, without knowing its optimizer. Orbax decides when
to save (``save_interval_steps``) and which steps exist (``latest_step``).
"""
from __future__ import annotations

import logging
import os
import re
import sys
import tempfile
import threading
import time
import traceback
from typing import Any

import orbax.checkpoint as ocp

from doremi_jax import errors
from doremi_jax.core.train_state import TrainState
from doremi_jax.run import paths

_ITEMS = ("params", "state")


def _rest(state: TrainState) -> dict[str, Any]:
  return {"step": state.step, "opt_state": state.opt_state, "domains": state.domains}


class Checkpointer:
  """Saves every ``save_interval_steps`` steps (and the last one), keeps ``max_to_keep``."""

  def __init__(self, model_dir: str, save_interval_steps: int = 1, max_to_keep: int = 2):
    # Orbax's default policy adds a save at the first step of a fresh run; ours saves on the
    # interval only (and the last step, forced by the caller).
    policy = ocp.checkpoint_managers.FixedIntervalPolicy(save_interval_steps)
    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                           save_decision_policy=policy)
    self.manager = ocp.CheckpointManager(paths.checkpoint_dir(model_dir), options=options,
                                         item_names=_ITEMS)
    self.interval = save_interval_steps
    self._in_flight: int | None = None  # the step whose background write may still fail
    logging.getLogger("absl").addFilter(_not_a_write_failure)  # once: filters are a set
    _drop_closed_loop_echoes()

  def due(self, step: int) -> bool:
    """Whether ``save(step)`` would save without ``force``."""
    return step % self.interval == 0

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def save(self, step: int, state: TrainState, force: bool = False,
           metadata: dict[str, Any] | None = None) -> bool:
    """Saves when ``step`` is on the interval (or ``force``, e.g. the last step);
    ``metadata`` (JSON) is kept with the step (``metadata(step)``)."""
    self._wait()  # the previous step's background write: its failure names that step
    try:
      saved = self.manager.save(step, args=ocp.args.Composite(
          params=ocp.args.StandardSave(state.params),
          state=ocp.args.StandardSave(_rest(state))), force=force,
          custom_metadata=metadata)
    except (OSError, ValueError) as exc:
      raise self._write_error(step, exc) from None
    if saved:
      self._in_flight = step
    return saved

  def metadata(self, step: int) -> dict[str, Any]:
    """What ``save`` kept with ``step`` (empty for checkpoints written without any)."""
    return dict(self.manager.metadata(step).custom_metadata or {})

  def check_writable(self) -> None:
    """At a resume, before any work: a checkpoints dir that cannot take a new file is one
    line now, not a save that fails (and is retried) after the first interval."""
    directory = str(self.manager.directory)
    try:
      os.makedirs(directory, exist_ok=True)
      fd, probe = tempfile.mkstemp(prefix=".write-probe-", dir=directory)
      os.close(fd)
      os.remove(probe)
    except OSError as exc:
      raise errors.DoremiError(f"cannot write checkpoints under {directory}: {exc.strerror}; "
                               "fix the permissions (or free space) and resume again") from None

  def restore_latest_intact(self, abstract_state: TrainState, move_aside: bool = True
                            ) -> tuple[TrainState, int]:
    """The newest checkpoint that restores, with its step. A damaged newer one (files
    missing or cut short) is moved aside to ``MODEL_DIR/damaged_checkpoints/<step>`` with
    one ``warning:`` line, so the run goes on from the intact one and can save that step
    again; none intact is one line."""
    damaged = []
    for step in sorted(self.manager.all_steps(), reverse=True):
      try:
        state = self.restore(abstract_state, step)
      except Exception as exc:  # pylint: disable=broad-except  (orbax/tensorstore: many types)
        damaged.append((step, " ".join(str(exc).split())[:90] or type(exc).__name__))
        continue
      for bad, why in damaged:
        if move_aside:  # one process (multi-host: the first) moves, every one restores
          self._move_aside(bad)
        print(f"warning: checkpoint {bad} under {self.manager.directory} is damaged ({why}); "
              f"moved to {paths.DAMAGED_DIR}/{bad}, resuming from checkpoint {step}",
              file=sys.stderr, flush=True)
      return state, step
    listed = "; ".join(f"checkpoint {s}: {why}" for s, why in damaged[:1])
    listed += f" (and {len(damaged) - 1} more)" if len(damaged) > 1 else ""
    raise errors.DoremiError(f"no intact checkpoint under {self.manager.directory} ({listed}); "
                             "restore the files, or start over in a new MODEL_DIR")

  def _move_aside(self, step: int) -> None:
    directory = str(self.manager.directory)
    target = os.path.join(os.path.dirname(directory), paths.DAMAGED_DIR, str(step))
    os.makedirs(os.path.dirname(target), exist_ok=True)
    if os.path.exists(target):
      target += f".{int(time.time())}"
    os.rename(os.path.join(directory, str(step)), target)
    self.manager.reload()

  def restore(self, abstract_state: TrainState, step: int | None = None) -> TrainState:
    step = self.latest_step() if step is None else step
    out = self.manager.restore(step, args=ocp.args.Composite(
        params=ocp.args.StandardRestore(abstract_state.params),
        state=ocp.args.StandardRestore(_rest(abstract_state))))
    rest = out["state"]
    return TrainState(step=rest["step"], params=out["params"], opt_state=rest["opt_state"],
                      domains=rest["domains"])

  def _wait(self) -> None:
    try:
      self.manager.wait_until_finished()
    except (OSError, ValueError) as exc:
      raise self._write_error(self._in_flight, exc) from None
    finally:
      self._in_flight = None

  def close(self) -> None:
    try:
      self._wait()
    finally:
      self.manager.close()

  def _write_error(self, step: int | None, exc: Exception) -> Exception:
    """A failed write (disk full, read-only, quota; tensorstore reports them as ValueError)
    as one line; orbax never publishes a partial step, so the latest one stays usable."""
    _join_background_writes()
    text = str(exc)
    why = re.search(r"Failed to write [^:]*: ([^\[\]]+?)\s*(\[|$)", text)
    if why is None and not isinstance(exc, OSError):
      return exc  # not a write failure: let it surface as it is
    reason = why.group(1) if why else (exc.strerror or text)
    what = f"checkpoint {step}" if step is not None else "a checkpoint"
    latest = self.latest_step()
    then = (f"resume with RESUME=True from checkpoint {latest}" if latest is not None else
            "run again with RESUME=True (no checkpoint was written: it starts over)")
    return errors.DoremiError(f"cannot write {what} under {self.manager.directory}: {reason}; "
                              f"free space (or fix the permissions) and {then}")


def _not_a_write_failure(record: logging.LogRecord) -> bool:
  """Orbax logs a failed background write with its traceback before the failure reaches
  ``save``/``close``, which report it as one line; this drops that log record."""
  exc = record.exc_info[1] if record.exc_info else None
  return not (isinstance(exc, (OSError, ValueError)) and "Failed to write" in str(exc))


def _join_background_writes(timeout_s: float = 120.0) -> None:
  """Orbax reports a save's first failed write while the save's other background threads
  still wait for theirs; left running, they fail at interpreter exit ("cannot schedule new
  futures after shutdown") and log a traceback after the error line. Joined here, they end
  with the write failure itself, which ``_not_a_write_failure`` drops. (``Thread.join``
  itself: orbax's override re-raises the thread's failure, already reported.)"""
  deadline = time.monotonic() + timeout_s
  for thread in threading.enumerate():
    if type(thread).__module__.startswith("orbax.") and thread is not threading.current_thread():
      threading.Thread.join(thread, max(0.0, deadline - time.monotonic()))


def _closed_loop_echo(unraisable: Any) -> bool:
  """After a write fails, orbax closes the asyncio loop of that save while tensorstore
  still has writes of it in flight; each one finishing calls the closed loop from C++,
  which reports "Event loop is closed" through ``sys.unraisablehook`` with a traceback
  that starts in ``call_soon_threadsafe``. Those are echoes of the failure that
  ``save``/``close`` report in one line; orbax gives no way to wait for them."""
  exc = unraisable.exc_value
  frames = traceback.extract_tb(unraisable.exc_traceback)
  return (isinstance(exc, RuntimeError) and str(exc) == "Event loop is closed"
          and unraisable.object is None and bool(frames)
          and frames[0].name == "call_soon_threadsafe")


def _drop_closed_loop_echoes() -> None:
  """Wraps ``sys.unraisablehook`` (once) so that only those echoes are dropped."""
  previous = sys.unraisablehook
  if getattr(previous, "drops_closed_loop_echoes", False):
    return

  def hook(unraisable):
    if not _closed_loop_echo(unraisable):
      previous(unraisable)

  hook.drops_closed_loop_echoes = True
  sys.unraisablehook = hook


def _reader(model_dir: str) -> ocp.CheckpointManager:
  """A manager over another run's checkpoints that must exist (one-line error otherwise)."""
  directory = paths.checkpoint_dir(model_dir)
  if os.path.isdir(directory):
    manager = ocp.CheckpointManager(directory, item_names=_ITEMS,
                                    options=ocp.CheckpointManagerOptions(create=False))
    if manager.latest_step() is not None:
      return manager
    manager.close()
  raise errors.DoremiError(f"no checkpoints under {directory!r} (has that run been trained?)")


def restore_params(model_dir: str, abstract_params: Any) -> Any:
  """Parameters of another run's latest checkpoint (e.g. the DoReMi reference), into the
  given shardings; a one-line error if it has none or they do not fit."""
  with _reader(model_dir) as manager:
    step, directory = manager.latest_step(), manager.directory
    try:
      out = manager.restore(step, args=ocp.args.Composite(
          params=ocp.args.StandardRestore(abstract_params)))
    except (ValueError, KeyError) as exc:
      raise errors.DoremiError(
          f"checkpoint {directory}/{step} does not match this model (different size or "
          f"vocabulary?): {str(exc).splitlines()[0]}") from None
  return out["params"]


def require_checkpoint(model_dir: str) -> int:
  """The latest finished step of another run, or a one-line error if it has none."""
  with _reader(model_dir) as manager:
    return manager.latest_step()
