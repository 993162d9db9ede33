"""A training run's settings: one frozen dataclass, configured by gin under the name
``train`` (``--gin.train.batch_size=8``, ``train.kind = "proxy"`` in ``gin/runs/*.gin``),
validated once when it is built and passed down as an object: the trainer, the
fingerprint and the compile check all read it, and its defaults are written only here."""
from __future__ import annotations

import dataclasses
import os
from typing import Mapping

import gin

from doremi_jax import errors
from doremi_jax.run import config

# plain: a reference or main run; proxy: DoReMi; online: a main run whose mixture a proxy
# updates every step (core/online.py)
KINDS = ("plain", "proxy", "online")


def _positive_int(name: str, value) -> None:
  if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
    raise errors.DoremiError(f"{name} must be a positive integer, got {value!r}")


@gin.configurable("train")
@dataclasses.dataclass(frozen=True)
class RunSettings:
  """One training run. ``microbatches``: the global batch in that many micro-batches
  inside the one jitted step (exact accumulation, for memory). ``eval_every``: every that
  many steps (and at the last) a plain run appends per-domain metrics on the first
  ``curve_batches_per_domain`` batches of each split of ``curve_splits`` to
  ``curve_<split>.jsonl`` (learning curves, ``run/heldout.py``). ``ignore_changes``
  (``RESUME_IGNORE_CHANGES``): fingerprint entries allowed to differ from the run dir's
  record when it is resumed or reused (``run/fingerprint.py``)."""
  model_dir: str = gin.REQUIRED
  mixture_or_task_name: str = gin.REQUIRED
  task_feature_lengths: Mapping[str, int] = gin.REQUIRED
  train_steps: int = gin.REQUIRED
  kind: str = "plain"
  batch_size: int = 16
  seed: int = 0
  resume: bool = False
  reference_model_dir: str | None = None
  # A proxy may use a reference run that has not finished (no train_summary.json) only
  # with this consent: its weights would come from a partly trained reference.
  allow_unfinished_reference: bool = False
  # A schedule JSON (data/scheduled_input.py): the domain weights change over the run
  # (prepared data only); MIXTURE_OR_TASK_NAME still names the domains and evaluation.
  domain_schedule: str | None = None
  # Online DoReMi (kind "online"): the proxy's mixture (the uniform one, as a DoReMi
  # proxy's) and batch size (default batch_size); the proxy's model is the reference run's.
  online_proxy_mixture: str | None = None
  online_proxy_batch_size: int | None = None
  checkpoint_every: int = 100
  log_every: int = 10
  progress: bool = True
  export_name: str | None = None
  microbatches: int = 1
  eval_every: int | None = None
  curve_batches_per_domain: int = 2
  curve_splits: tuple[str, ...] = ("test",)
  ignore_changes: tuple[str, ...] = ()

  def __post_init__(self):
    """Wrong types or ranges are one line before anything is written."""
    for field in dataclasses.fields(self):
      if getattr(self, field.name) is gin.REQUIRED:
        raise errors.DoremiError(f"missing required gin value: train.{field.name} "
                                 f"(pass --gin.train.{field.name}=...)")
    if self.kind not in KINDS:
      raise errors.DoremiError(f"train.kind must be one of {KINDS}, got {self.kind!r}")
    if self.kind == "online":
      if not self.reference_model_dir or not self.online_proxy_mixture:
        raise errors.DoremiError("an online run needs train.reference_model_dir (a trained "
                                 "reference run) and train.online_proxy_mixture (e.g. the "
                                 "uniform mixture)")
      if self.online_proxy_batch_size is not None:
        _positive_int("train.online_proxy_batch_size", self.online_proxy_batch_size)
    _positive_int("TRAIN_STEPS", self.train_steps)
    _positive_int("BATCH_SIZE", self.batch_size)
    _positive_int("train.checkpoint_every", self.checkpoint_every)
    _positive_int("train.log_every", self.log_every)
    _positive_int("train.microbatches", self.microbatches)
    if self.eval_every is not None:
      _positive_int("train.eval_every", self.eval_every)
      _positive_int("train.curve_batches_per_domain", self.curve_batches_per_domain)
      if self.kind == "proxy":
        raise errors.DoremiError("train.eval_every (learning curves) is for main runs; "
                                 "a proxy run logs its per-domain losses every log_every")
    if not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0:
      raise errors.DoremiError(f"SEED must be an integer >= 0, got {self.seed!r}")
    if not isinstance(self.task_feature_lengths, Mapping):
      raise errors.DoremiError("TASK_FEATURE_LENGTHS must be a mapping like {'targets': 128}, "
                               f"got {self.task_feature_lengths!r}")
    length = dict(self.task_feature_lengths).get("targets")
    if not isinstance(length, int) or isinstance(length, bool) or length < 2:
      raise errors.DoremiError("TASK_FEATURE_LENGTHS must map 'targets' to an integer >= 2, "
                               f"got {dict(self.task_feature_lengths)!r}")
    set_ = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731 (frozen)
    set_("model_dir", os.path.abspath(self.model_dir))
    set_("task_feature_lengths", dict(self.task_feature_lengths))
    set_("curve_splits", tuple(self.curve_splits))
    set_("ignore_changes", tuple(self.ignore_changes))

  @property
  def sequence_length(self) -> int:
    return int(self.task_feature_lengths["targets"])


def check_batch(batch_size: int, microbatches: int, data_shards: int) -> None:
  """The one batch-divisibility check (the trainer's and the compile check's)."""
  if batch_size % (data_shards * microbatches):
    raise errors.DoremiError(
        f"train.microbatches={microbatches}: batch size {batch_size} does not divide into "
        f"{microbatches} micro-batch(es) over the mesh's {data_shards} data shards (batch "
        "size must be a multiple of microbatches x data shards; make_mesh.mesh_shape sets "
        "the mesh)")


def bound_setting(name: str):
  """What gin would give ``train.<name>`` (the default above when unbound), for code that
  reads one setting without building a run (e.g. the pipeline's UniMax token budget)."""
  default = {f.name: f.default for f in dataclasses.fields(RunSettings)}[name]
  return config.bound_value(f"train.{name}", default)
