"""Training for the reference, proxy (DoReMi) and main runs: ``train`` (gin) and ``Trainer``.

A run writes into ``MODEL_DIR`` (names in ``run/paths.py``): ``config.gin`` (operative
config; ``config.<step>.gin`` for each resumed start), orbax ``checkpoints/``, TensorBoard
events (a resumed start's hide what was logged after its checkpoint), ``train_summary.json``
when finished and, for the proxy, ``domain_weights.jsonl``
plus its averaged weights. It refuses a non-empty ``MODEL_DIR`` unless ``RESUME = True``.
SIGTERM or SIGINT during ``run`` stop it after the current step with a checkpoint of that
step (``run/preemption.py``), from which ``RESUME = True`` continues exactly.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Mapping, Sequence

import gin
import jax
import numpy as np

from doremi_jax import errors, mixtures
from doremi_jax.core import flops, partitioning, steps
from doremi_jax.core import model as model_lib
from doremi_jax.core import train_state as ts
from doremi_jax.data import seqio_input
from doremi_jax.run import (
  checkpoints,
  config,
  fingerprint,
  heldout,
  lock,
  metrics,
  paths,
  preemption,
  training_input,
)
from doremi_jax.run.proxy import ProxyExtras


@dataclasses.dataclass(frozen=True)
class RunSettings:
  """One training run, as ``train``'s gin bindings give it."""
  model_dir: str
  mixture_or_task_name: str
  task_feature_lengths: Mapping[str, int]
  train_steps: int
  kind: str = "plain"
  batch_size: int = 16
  seed: int = 0
  resume: bool = False
  reference_model_dir: str | None = None
  checkpoint_every: int = 100
  log_every: int = 10
  progress: bool = True
  export_name: str | None = None
  microbatches: int = 1
  eval_every: int | None = None  # learning curves (``run/heldout.py``); None: none
  curve_batches_per_domain: int = 2
  curve_splits: tuple[str, ...] = ("test",)

  def __post_init__(self):
    """Wrong types or ranges are one line before anything is written."""
    def positive_int(name, value):
      if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise errors.DoremiError(f"{name} must be a positive integer, got {value!r}")
    positive_int("TRAIN_STEPS", self.train_steps)
    positive_int("BATCH_SIZE", self.batch_size)
    positive_int("train.checkpoint_every", self.checkpoint_every)
    positive_int("train.log_every", self.log_every)
    positive_int("train.microbatches", self.microbatches)
    if self.eval_every is not None:
      positive_int("train.eval_every", self.eval_every)
      positive_int("train.curve_batches_per_domain", self.curve_batches_per_domain)
      if self.kind != "plain":
        raise errors.DoremiError("train.eval_every (learning curves) is for plain runs; "
                                 "a proxy run logs its per-domain losses every log_every")
    if not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0:
      raise errors.DoremiError(f"SEED must be an integer >= 0, got {self.seed!r}")
    length = dict(self.task_feature_lengths).get("targets")
    if not isinstance(length, int) or isinstance(length, bool) or length < 2:
      raise errors.DoremiError("TASK_FEATURE_LENGTHS must map 'targets' to an integer >= 2, "
                               f"got {dict(self.task_feature_lengths)!r}")


def check_model_dir(model_dir: str, resume: bool) -> dict | None:
  """Protects other runs' outputs; returns the summary if this run already finished."""
  summary_path = os.path.join(model_dir, paths.TRAIN_SUMMARY_FILE)
  if os.path.isdir(model_dir) and lock.holds_outputs(model_dir):
    if not resume:
      raise errors.DoremiError(
          f"model dir {model_dir!r} is not empty; pass --gin.RESUME=True to resume it "
          "or choose a new MODEL_DIR")
    if os.path.exists(summary_path):
      return paths.read_json(summary_path)
  return None


class Trainer:
  """Sets a run up once (mesh, shardings, step function, checkpointer, input, writers);
  ``run`` loops ``do_step`` and writes the summary."""

  def __init__(self, run: RunSettings):
    self.run_settings = run
    self.is_writer = jax.process_index() == 0
    # Validate everything cheap before writing anything, so a failed start leaves no trace.
    self.provider = mixtures.provider(run.mixture_or_task_name)  # the one registry lookup
    self.model_config = model_lib.TransformerConfig()
    seqio_input.check_vocabulary(self.provider, self.model_config.vocab_size)
    self.domains = mixtures.domain_names(self.provider)
    self.proxy = (ProxyExtras(run.model_dir, run.reference_model_dir, self.provider,
                              self.domains, run.export_name, run.batch_size)
                  if run.kind == "proxy" else None)
    self.mesh = partitioning.make_mesh()
    rules = partitioning.logical_axis_rules()
    data_shards = partitioning.batch_size_divisor(self.mesh, rules)
    if run.batch_size % data_shards:
      raise errors.DoremiError(f"batch size {run.batch_size} does not divide over the mesh's "
                               f"{data_shards} data shards")
    if run.batch_size % (data_shards * run.microbatches):
      raise errors.DoremiError(
          f"train.microbatches={run.microbatches}: batch size {run.batch_size} does not split "
          f"into {run.microbatches} micro-batches that divide over the mesh's {data_shards} "
          "data shards (batch size must be a multiple of microbatches x data shards)")
    self.seq_len = int(run.task_feature_lengths["targets"])
    self.prepared_input = training_input.mixture_input(  # None: not prepared data
        self.provider, self.domains, self.seq_len, run.batch_size, run.seed)
    os.makedirs(run.model_dir, exist_ok=True)
    lm = model_lib.TransformerLM(self.model_config)
    optimizer = ts.make_optimizer(run.train_steps)
    num_domain_state = len(self.domains) if self.proxy else None
    single_abstract, single_shardings = ts.state_shardings(
        lm, optimizer, self.mesh, self.seq_len, num_domain_state, rules)
    abstract, shardings = single_abstract, single_shardings
    if self.proxy:
      abstract, shardings = self.proxy.stack(abstract, shardings, self.mesh, rules)
    self.step_fn = steps.make_train_step(
        run.kind, lm, optimizer, self.mesh, shardings, len(self.domains),
        self.proxy.config if self.proxy else None, rules,
        reference_shardings=single_shardings.params, microbatches=run.microbatches)
    self.checkpointer = checkpoints.Checkpointer(run.model_dir, run.checkpoint_every)
    latest = self.checkpointer.latest_step() if run.resume else None
    self.start = latest or 0
    # The last log before the checkpoint: a run resumed at its last step still reports it.
    self.last: dict[str, Any] | None = None
    if latest is not None:
      self.state = self.checkpointer.restore(abstract, latest)
      self.last = self.checkpointer.metadata(latest).get("last_log")
    else:
      self.state = ts.init_state(lm, optimizer, self.mesh, self.seq_len, run.seed,
                                 num_domain_state, rules=rules, shardings=single_shardings)
    if self.proxy:
      self.state = self.proxy.start(self.state, shardings, single_abstract, self.start,
                                    write=self.is_writer)
    if self.is_writer:
      config.write_operative_config(paths.config_file(run.model_dir, self.start))
    self.batches, self.input_kind = training_input.training_batches(
        self.prepared_input, self.provider, self.domains, run.task_feature_lengths,
        run.batch_size, run.seed, self.start, steps.batch_shardings(self.mesh, rules))
    self.writer = metrics.MetricsWriter(run.model_dir, self.domains, enabled=self.is_writer,
                                        resumed_from=self.start if run.resume else None)
    self.curves = None
    if run.eval_every is not None:
      held = heldout.HeldOut(lm, self.mesh, single_shardings.params, rules, self.provider,
                             self.domains, run.task_feature_lengths, run.batch_size)
      self.curves = heldout.Curves(held, run.model_dir, run.curve_splits,
                                   run.curve_batches_per_domain, self.start, self.is_writer)
    self.throughput = metrics.Throughput(self.start, run.batch_size * self.seq_len)

  def do_step(self, step: int):
    """One training step (asynchronous: metrics stay on device)."""
    try:
      batch = next(self.batches)
    except StopIteration:
      raise errors.DoremiError(f"{self.provider.name!r} ran out of training data at step "
                               f"{step}") from None
    if self.proxy:
      self.state, step_metrics = self.step_fn(self.state, self.proxy.reference_params, batch)
    else:
      self.state, step_metrics = self.step_fn(self.state, batch)
    return step_metrics

  def log(self, step: int, step_metrics) -> None:
    """The only host sync, once per log interval: NaN check, TensorBoard, trajectory."""
    host = {k: np.asarray(v) for k, v in jax.device_get(dict(step_metrics)).items()}
    if not np.all(np.isfinite(host["loss"])):
      bad = ~np.isfinite(np.asarray(host["domain_loss"])).reshape(-1, len(self.domains))
      names = [d for i, d in enumerate(self.domains) if bad[:, i].any()] or ["none by itself"]
      raise errors.DoremiError(
          f"loss is nan or inf at step {step} (non-finite domain losses: {', '.join(names)}); "
          f"the last checkpoint (step {self.checkpointer.latest_step()}) is kept; lower "
          "the learning rate")
    host["tokens_per_second"] = np.asarray(self.throughput.tokens_per_second(step))
    self.writer.write(step, self.proxy.writer_metrics(host) if self.proxy else host)
    if self.proxy:
      self.proxy.log(step, host)
    self.last = host

  def save(self, step: int, force: bool) -> bool:
    """A checkpoint (on the interval, or forced) that keeps the last log with it."""
    if not (force or self.checkpointer.due(step)):
      return False
    last_log = None if self.last is None else {
        "loss": np.asarray(self.last["loss"]).tolist(),
        "tokens_per_second": float(self.last["tokens_per_second"])}
    return self.checkpointer.save(step, self.state, force=force,
                                  metadata={"last_log": last_log})

  def run(self) -> dict[str, Any]:
    """Trains to ``train_steps``; on SIGTERM/SIGINT checkpoints the step it is in and raises
    ``errors.Preempted`` once that checkpoint (and the trajectory) are on disk."""
    run = self.run_settings
    bar = metrics.progress_bar(self.start, run.train_steps, enabled=run.progress)
    with preemption.StopRequest() as stop:  # until the summary is written
      try:
        for step in range(self.start + 1, run.train_steps + 1):
          step_metrics = self.do_step(step - 1)
          logged = step % run.log_every == 0 or step == run.train_steps
          if logged:
            self.log(step, step_metrics)
            bar.set_postfix(loss=f"{float(np.mean(self.last['loss'])):.3f}",
                            tok_s=f"{float(self.last['tokens_per_second']):.0f}")
          bar.update(1)
          if self.curves and (step % run.eval_every == 0 or step == run.train_steps):
            self.curves.evaluate(step, self.state.params)
          saved = self.save(step, force=step == run.train_steps)
          if step < run.train_steps and stop.should_stop(sync_point=logged):
            if not saved:
              self.save(step, force=True)
            raise errors.Preempted(step, stop.exit_code)
      finally:
        bar.close()
        self.writer.close()
        self.checkpointer.close()  # waits for the last save to finish
        if self.proxy:
          self.proxy.close()
      return self.summary()

  def _flops(self) -> float:
    """All steps' estimated FLOPs (``core/flops.py``): a proxy sweep counts every proxy
    and the one shared reference forward."""
    cfg, tokens = self.model_config, self.run_settings.batch_size * self.seq_len
    per_token = (flops.proxy_flops_per_token(cfg, self.seq_len, len(self.proxy.settings))
                 if self.proxy else flops.train_flops_per_token(cfg, self.seq_len))
    return float(per_token * tokens * self.run_settings.train_steps)

  def summary(self) -> dict[str, Any]:
    run, last = self.run_settings, self.last
    out: dict[str, Any] = {
        "kind": run.kind, "steps": run.train_steps, "model_dir": run.model_dir,
        "mixture_or_task_name": run.mixture_or_task_name, "domains": self.domains,
        "batch_size": run.batch_size, "sequence_length": self.seq_len, "seed": run.seed,
        "input": self.input_kind,
        "model": {"num_params": self.model_config.num_params(),
                  "non_embedding_params": flops.non_embedding_params(self.model_config),
                  **self.model_config.__dict__},
        "estimated_flops": self._flops(),
        "final_loss": np.asarray(last["loss"]).tolist() if last else None,
        "tokens_per_second": float(last["tokens_per_second"]) if last else None,
        "wall_seconds": self.throughput.seconds(),
    }
    if self.proxy:
      out.update(self.proxy.results(self.state, run.train_steps, write=self.is_writer))
    if self.is_writer:
      paths.write_json(os.path.join(run.model_dir, paths.TRAIN_SUMMARY_FILE), out)
    return out


@gin.configurable
def train(model_dir: str = gin.REQUIRED, mixture_or_task_name: str = gin.REQUIRED,
          task_feature_lengths: Mapping[str, int] = gin.REQUIRED,
          train_steps: int = gin.REQUIRED, kind: str = "plain", batch_size: int = 16,
          seed: int = 0, resume: bool = False, reference_model_dir: str | None = None,
          checkpoint_every: int = 100, log_every: int = 10, progress: bool = True,
          export_name: str | None = None, ignore_changes: Sequence[str] = (),
          microbatches: int = 1, eval_every: int | None = None,
          curve_batches_per_domain: int = 2,
          curve_splits: Sequence[str] = ("test",)) -> dict[str, Any]:
  """Trains one model; ``kind`` is "plain" (reference/main) or "proxy" (DoReMi).

  ``microbatches``: the global batch is processed in that many micro-batches inside the one
  jitted step (exact gradient accumulation, for memory; see ``core/steps.py``).

  ``eval_every``: every that many steps (and at the last), a plain run appends per-domain
  metrics on the first ``curve_batches_per_domain`` batches of each split of
  ``curve_splits`` to ``curve_<split>.jsonl``: the learning curves behind steps-to-target.

  ``ignore_changes`` (``RESUME_IGNORE_CHANGES``): fingerprint entries allowed to differ
  from the run dir's record when resuming or reusing it (``run/fingerprint.py``)."""
  if kind not in ("plain", "proxy"):
    raise errors.DoremiError(f"train.kind must be 'plain' or 'proxy', got {kind!r}")
  if kind == "proxy" and not reference_model_dir:
    raise errors.DoremiError("a proxy run needs REFERENCE_MODEL_DIR (the trained reference run)")
  model_dir = os.path.abspath(model_dir)
  if not isinstance(task_feature_lengths, Mapping):
    raise errors.DoremiError("TASK_FEATURE_LENGTHS must be a mapping like {'targets': 128}, "
                             f"got {task_feature_lengths!r}")
  run = RunSettings(model_dir, mixture_or_task_name, dict(task_feature_lengths), train_steps,
                    kind, batch_size, seed, resume, reference_model_dir, checkpoint_every,
                    log_every, progress, export_name, microbatches, eval_every=eval_every,
                    curve_batches_per_domain=curve_batches_per_domain,
                    curve_splits=tuple(curve_splits))
  with lock.RunLock(model_dir, "MODEL_DIR", enabled=jax.process_index() == 0):
    finished = check_model_dir(model_dir, resume)
    fp = fingerprint.of_run(dataclasses.asdict(run), mixtures.provider(mixture_or_task_name))
    changed = fingerprint.check(model_dir, fp, list(ignore_changes))
    if changed:
      print(f"warning: {model_dir}: resuming with changed {', '.join(changed)} "
            "(RESUME_IGNORE_CHANGES)", flush=True)
    if finished is not None and finished.get("steps") == train_steps and not changed:
      return finished
    trainer = Trainer(run)
    if jax.process_index() == 0:
      fingerprint.record(model_dir, fp)
    return trainer.run()
