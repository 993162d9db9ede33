"""Orbax checkpoints of the train state, with params as their own item.

Params are a separate item so a DoReMi proxy (or an evaluator) can restore a
reference model's parameters alone, without knowing its optimizer.
"""
from __future__ import annotations

import os
from typing import Any

import orbax.checkpoint as ocp

from doremi_jax import errors
from doremi_jax.core.train_state import TrainState

CHECKPOINT_SUBDIR = "checkpoints"


def _rest(state: TrainState) -> dict[str, Any]:
  return {"step": state.step, "opt_state": state.opt_state, "domains": state.domains}


class Checkpointer:
  """Saves every ``save_every`` steps (and on demand), keeps the newest ``max_to_keep``."""

  def __init__(self, model_dir: str, max_to_keep: int = 2):
    self.directory = os.path.join(os.path.abspath(model_dir), CHECKPOINT_SUBDIR)
    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True)
    self.manager = ocp.CheckpointManager(self.directory, options=options,
                                         item_names=("params", "state"))

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def save(self, step: int, state: TrainState) -> bool:
    """Saves now (the caller decides when: every ``checkpoint_every`` steps and at the end)."""
    return self.manager.save(step, args=ocp.args.Composite(
        params=ocp.args.StandardSave(state.params),
        state=ocp.args.StandardSave(_rest(state))), force=True)

  def restore(self, abstract_state: TrainState, step: int | None = None) -> TrainState:
    step = self.latest_step() if step is None else step
    out = self.manager.restore(step, args=ocp.args.Composite(
        params=ocp.args.StandardRestore(abstract_state.params),
        state=ocp.args.StandardRestore(_rest(abstract_state))))
    rest = out["state"]
    return TrainState(step=rest["step"], params=out["params"], opt_state=rest["opt_state"],
                      domains=rest["domains"])

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.close()


def require_checkpoint(model_dir: str) -> int:
  """The latest finished step of another run, or a one-line error if it has none."""
  directory = os.path.join(os.path.abspath(model_dir), CHECKPOINT_SUBDIR)
  steps = sorted(int(d) for d in (os.listdir(directory) if os.path.isdir(directory) else [])
                 if d.isdigit())
  if not steps:
    raise errors.DoremiError(f"no checkpoints under {directory!r} (has that run been trained?)")
  return steps[-1]


def restore_params(model_dir: str, abstract_params: Any, step: int | None = None) -> Any:
  """Parameters of another run (e.g. the DoReMi reference), into the given shardings."""
  directory = os.path.join(os.path.abspath(model_dir), CHECKPOINT_SUBDIR)
  step = require_checkpoint(model_dir) if step is None else step
  with ocp.CheckpointManager(directory, item_names=("params", "state")) as manager:
    try:
      out = manager.restore(step, args=ocp.args.Composite(
          params=ocp.args.StandardRestore(abstract_params)))
    except (ValueError, KeyError) as exc:
      raise errors.DoremiError(
          f"checkpoint {directory}/{step} does not match this model (different size or "
          f"vocabulary?): {str(exc).splitlines()[0]}") from None
  return out["params"]
