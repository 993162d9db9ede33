"""Training for the reference, proxy (DoReMi) and main runs: ``train(RunSettings)`` and ``Trainer``.

A run writes into ``MODEL_DIR`` (names in ``run/paths.py``): ``config.gin`` (operative
config; ``config.<step>.gin`` for each resumed start), orbax ``checkpoints/``, TensorBoard
events (a resumed start's hide what was logged after its checkpoint), ``train_summary.json``
when finished and, for the proxy, ``domain_weights.jsonl``
plus its averaged weights. It refuses a non-empty ``MODEL_DIR`` unless ``RESUME = True``.
SIGTERM or SIGINT during ``run`` stop it after the current step with a checkpoint of that
step (``run/preemption.py``), from which ``RESUME = True`` continues exactly.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
from typing import Any

import jax
import numpy as np

from doremi_jax import errors, mixtures
from doremi_jax.core import flops, steps
from doremi_jax.core import model as model_lib
from doremi_jax.data import seqio_input
from doremi_jax.run import (
  checkpoints,
  config,
  fingerprint,
  heldout,
  lock,
  metrics,
  online,
  paths,
  preemption,
  step_builder,
  training_input,
)
from doremi_jax.run.proxy import ProxyExtras
from doremi_jax.run.settings import RunSettings


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

  def __init__(self, run: RunSettings, model_config: model_lib.TransformerConfig,
               doremi_config: steps.DoremiConfig | None = None,
               proxy_config: model_lib.TransformerConfig | None = None):
    self.run_settings = run
    self.is_writer = jax.process_index() == 0
    # Validate everything cheap before writing anything, so a failed start leaves no trace.
    self.provider = mixtures.provider(run.mixture_or_task_name)  # the one registry lookup
    self.model_config = model_config
    seqio_input.check_vocabulary(self.provider, model_config.vocab_size)
    self.domains = mixtures.domain_names(self.provider)
    self.proxy = (ProxyExtras(run.model_dir, run.reference_model_dir, self.provider,
                              self.domains, run.export_name, run.batch_size, doremi_config,
                              run.allow_unfinished_reference)
                  if run.kind == "proxy" else None)
    self.online = (online.OnlineRun(run, self.provider, self.domains, doremi_config)
                   if run.kind == "online" else None)
    if self.online:
      self.proxy = self.online.extras  # the trajectory, logs and averaged weights
    self.built = step_builder.build(run, len(self.domains), model_config, doremi_config,
                                    proxy_config=proxy_config)
    built, self.mesh = self.built, self.built.mesh
    self.seq_len = run.sequence_length
    self.prepared_input = None if self.online else training_input.mixture_input(
        self.provider, self.domains, self.seq_len, run.batch_size, run.seed,
        run.domain_schedule, run.train_steps)  # None: not prepared data
    os.makedirs(run.model_dir, exist_ok=True)
    self.step_fn = built.step
    self.checkpointer = checkpoints.Checkpointer(run.model_dir, run.checkpoint_every)
    latest = self.checkpointer.latest_step() if run.resume else None
    # The last log before the checkpoint: a run resumed at its last step still reports it.
    self.last: dict[str, Any] | None = None
    if latest is not None:
      if self.is_writer:
        self.checkpointer.check_writable()
      self.state, latest = self.checkpointer.restore_latest_intact(built.state,
                                                                   move_aside=self.is_writer)
      self.last = self.checkpointer.metadata(latest).get("last_log")
    else:
      self.state = built.init_model_state(run.seed)
    self.start = latest or 0
    if self.online:
      self.state = self.online.start(self.state, built, self.start, write=self.is_writer)
      self.batches, self.input_kind = None, "grain online"
    elif self.proxy:
      self.state = self.proxy.start(self.state, built.state_shardings, built.model_state,
                                    self.start, write=self.is_writer)
    if self.is_writer:
      config.write_operative_config(paths.config_file(run.model_dir, self.start))
    if not self.online:
      self.batches, self.input_kind = training_input.training_batches(
          self.prepared_input, self.provider, self.domains, run.task_feature_lengths,
          run.batch_size, run.seed, self.start, built.batch_shardings)
    self.writer = metrics.MetricsWriter(run.model_dir, self.domains, enabled=self.is_writer,
                                        resumed_from=self.start if run.resume else None)
    self.curves = None
    if run.eval_every is not None:
      held = heldout.HeldOut(built.lm, self.mesh, built.model_shardings.params, built.rules,
                             self.provider, self.domains, run.task_feature_lengths,
                             run.batch_size)
      self.curves = heldout.Curves(held, run.model_dir, run.curve_splits,
                                   run.curve_batches_per_domain, self.start, self.is_writer)
    self.throughput = metrics.Throughput(self.start, run.batch_size * self.seq_len)

  def do_step(self, step: int):
    """One training step (asynchronous: metrics stay on device; an online run waits for
    the previous step's weights to draw its batch)."""
    if self.online:
      main, proxy_batch = self.online.next_batches(self.state)
      self.state, step_metrics = self.step_fn(self.state, self.proxy.reference_params, main,
                                              proxy_batch)
      return step_metrics
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
    if self.online:
      return self.online.flops(cfg, self.built.online.model_config, self.seq_len,
                               self.run_settings.batch_size, self.run_settings.train_steps)
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
    if self.online:
      out.update(self.online.results(self.state, run.train_steps, write=self.is_writer))
    elif self.proxy:
      out.update(self.proxy.results(self.state, run.train_steps, write=self.is_writer))
    if self.is_writer:
      paths.write_json(os.path.join(run.model_dir, paths.TRAIN_SUMMARY_FILE), out)
    return out


def train(run: RunSettings) -> dict[str, Any]:
  """Trains one model (``run.kind``: "plain" for a reference or main run, "proxy" for
  DoReMi, "online" for a main run with its proxy); its model and DoReMi configs are built
  here, once, from gin (an online proxy's model from its reference run)."""
  if run.kind == "proxy" and not run.reference_model_dir:
    raise errors.DoremiError("a proxy run needs REFERENCE_MODEL_DIR (the trained reference run)")
  model_config = model_lib.TransformerConfig()
  doremi_config = steps.DoremiConfig() if run.kind in ("proxy", "online") else None
  proxy_config = (online.reference_model_config(run.reference_model_dir)
                  if run.kind == "online" else None)
  existed = os.path.isdir(run.model_dir)
  fresh = not (existed and lock.holds_outputs(run.model_dir))
  writer, set_up = jax.process_index() == 0, False
  try:
    with lock.RunLock(run.model_dir, "MODEL_DIR", enabled=writer):
      finished = check_model_dir(run.model_dir, run.resume)
      fp = fingerprint.of_run(dataclasses.asdict(run),
                              mixtures.provider(run.mixture_or_task_name), model_config,
                              doremi_config)
      changed = fingerprint.check(run.model_dir, fp, list(run.ignore_changes))
      if changed:
        print(f"warning: {run.model_dir}: resuming with changed {', '.join(changed)} "
              "(RESUME_IGNORE_CHANGES)", flush=True)
      if finished is not None and finished.get("steps") == run.train_steps and not changed:
        return finished
      try:
        trainer = Trainer(run, model_config, doremi_config, proxy_config)
        if writer:
          fingerprint.record(run.model_dir, fp)
      except BaseException:  # a failed set-up of a new run leaves no half-started dir
        if fresh and writer:
          lock.clear_outputs(run.model_dir)
        raise
      set_up = True
      return trainer.run()
  finally:
    if not set_up and fresh and writer and not existed:
      with contextlib.suppress(OSError):  # only if empty: the lock went with the release
        os.rmdir(run.model_dir)


def train_from_gin() -> dict[str, Any]:
  """The run the parsed gin config describes (``train.*``), as the CLI and the pipeline
  start it."""
  return train(config.build_configured(RunSettings, "train"))
