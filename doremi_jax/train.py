"""Training loop for the reference, proxy (DoReMi) and main runs, driven by gin.

    python -m doremi_jax.train --gin_file=runs/proxy.gin \
        --gin.MODEL_DIR=\"runs/x/proxy\" --gin.REFERENCE_MODEL_DIR=\"runs/x/reference\"

A run writes into ``MODEL_DIR``: ``config.gin`` (operative config), orbax
``checkpoints/``, TensorBoard events, ``train_summary.json`` when finished and,
for the proxy, ``domain_weights.jsonl`` (trajectory) plus the exported mixture.
It refuses a non-empty ``MODEL_DIR`` unless ``RESUME = True``.
"""
from __future__ import annotations

if __name__ == "__main__":  # run the package module, so gin sees each configurable once
  from doremi_jax.train import console_main as _main  # pylint: disable=g-import-not-at-top
  _main()
  raise SystemExit(0)

import dataclasses
import json
import os
import re
import sys
import time
from typing import Any, Mapping, Sequence

import gin
import jax
import numpy as np

from doremi_jax import checkpoints, data, distributed, errors, export, gin_utils, metrics_writer
from doremi_jax.core import partitioning, steps
from doremi_jax.core import model as model_lib
from doremi_jax.core import train_state as ts

SUMMARY_FILE = "train_summary.json"
WEIGHTS_TRAJECTORY_FILE = "domain_weights.jsonl"


def _has_outputs(model_dir: str) -> bool:
  """True unless the dir is empty or holds only empty folders (e.g. an aborted start)."""
  for _, _, files in os.walk(model_dir):
    if files:
      return True
  return False


def check_model_dir(model_dir: str, resume: bool) -> dict | None:
  """Protects other runs' outputs; returns the summary if this run already finished."""
  summary_path = os.path.join(model_dir, SUMMARY_FILE)
  if os.path.isdir(model_dir) and _has_outputs(model_dir):
    if not resume:
      raise errors.DoremiError(
          f"model dir {model_dir!r} is not empty; pass --gin.RESUME=True to resume it "
          "or choose a new MODEL_DIR")
    if os.path.exists(summary_path):
      with open(summary_path) as f:
        return json.load(f)
  return None


def _host_metrics(metrics: Mapping[str, Any]) -> dict[str, Any]:
  return {k: np.asarray(v) for k, v in jax.device_get(dict(metrics)).items()}


_PER_PROXY_WEIGHT_KEYS = ("domain_weights", "average_domain_weights", "domain_excess")
_DIAGNOSTICS = ("weight_entropy", "min_weight", "min_weight_domain", "l1_from_uniform")


def _per_proxy(host: Mapping[str, Any], settings: Sequence[steps.DoremiSetting]
               ) -> list[dict[str, Any]]:
  """Splits a (possibly stacked) proxy step's host metrics into one dict per setting."""
  if len(settings) == 1:
    return [dict(host)]
  shared = {k: v for k, v in host.items()
            if k in ("domain_reference_loss", "tokens_per_second")}
  return [{**shared, **{k: v[i] for k, v in host.items() if k not in shared}}
          for i in range(len(settings))]


def _writer_metrics(host: Mapping[str, Any], settings) -> dict[str, Any]:
  """TensorBoard names: a sweep's metrics get a ``<setting tag>/`` prefix."""
  if len(settings) == 1:
    return dict(host)
  out = {k: host[k] for k in ("domain_reference_loss", "tokens_per_second")}
  for setting, metrics in zip(settings, _per_proxy(host, settings)):
    out.update({f"{setting.tag}/{k}": v for k, v in metrics.items() if k not in out})
  return out


def _trajectory_rows(step: int, host: Mapping[str, Any], settings, domains) -> list[str]:
  """One JSON line per proxy: weights, their average, excess and collapse diagnostics."""
  rows = []
  for setting, m in zip(settings, _per_proxy(host, settings)):
    row = {"step": step, "setting": setting.tag,
           **{k: dict(zip(domains, np.asarray(m[k]).tolist())) for k in _PER_PROXY_WEIGHT_KEYS},
           **{k: float(m[k]) for k in _DIAGNOSTICS if k != "min_weight_domain"},
           "min_weight_domain": domains[int(m["min_weight_domain"])]}
    rows.append(json.dumps(row) + "\n")
  return rows


def _proxy_results(state, settings, domains, doremi_cfg, model_dir, train_steps,
                   reference_model_dir, mixture_or_task_name, export_name) -> list[dict[str, Any]]:
  """Averaged weights of every proxy (exported), with a warning line for starved domains."""
  ds = jax.device_get(state.domains)
  average = np.asarray(ds.average).reshape(len(settings), len(domains))
  final = np.asarray(ds.weights).reshape(len(settings), len(domains))
  floor = 1.0 / (10 * len(domains))
  out = []
  for i, setting in enumerate(settings):
    avg = dict(zip(domains, average[i].tolist()))
    low = {d: w for d, w in avg.items() if w < floor}
    if low:
      listed = ", ".join(f"{d} {w:.4f}" for d, w in sorted(low.items(), key=lambda kv: kv[1]))
      print(f"warning: proxy {setting.tag}: averaged weight below 1/(10k) = {floor:.4f} for "
            f"{listed}: the weights collapsed; try a smaller step size or a larger batch",
            file=sys.stderr, flush=True)
    entry = {"setting": dataclasses.asdict(setting), "tag": setting.tag,
             "average_domain_weights": avg,
             "final_domain_weights": dict(zip(domains, final[i].tolist()))}
    if jax.process_index() == 0:
      name = export_name or re.sub(r"\W", "_", f"{mixture_or_task_name}_doremi")
      if len(settings) > 1:
        name = re.sub(r"\W", "_", f"{name}_{setting.tag}")
      entry["export"] = export.export_from_proxy(
          model_dir, avg, train_steps, setting, doremi_cfg.objective, reference_model_dir,
          mixture_or_task_name, name=name)
    out.append(entry)
  return out


@gin.configurable
def train(model_dir: str = gin.REQUIRED, mixture_or_task_name: str = gin.REQUIRED,
          task_feature_lengths: Mapping[str, int] = gin.REQUIRED,
          train_steps: int = gin.REQUIRED, kind: str = "plain", batch_size: int = 16,
          seed: int = 0, resume: bool = False, reference_model_dir: str | None = None,
          checkpoint_every: int = 100, log_every: int = 10, progress: bool = True,
          export_name: str | None = None) -> dict[str, Any]:
  """Trains one model; ``kind`` is "plain" (reference/main) or "proxy" (DoReMi)."""
  gin_utils.check_required(MODEL_DIR=model_dir, MIXTURE_OR_TASK_NAME=mixture_or_task_name,
                           TASK_FEATURE_LENGTHS=task_feature_lengths, TRAIN_STEPS=train_steps)
  if kind not in ("plain", "proxy"):
    raise errors.DoremiError(f"train.kind must be 'plain' or 'proxy', got {kind!r}")
  if kind == "proxy":
    gin_utils.check_required(REFERENCE_MODEL_DIR=reference_model_dir)
    if not reference_model_dir:
      raise errors.DoremiError("a proxy run needs REFERENCE_MODEL_DIR (the trained reference run)")
  if not isinstance(train_steps, int) or train_steps <= 0:
    raise errors.DoremiError(f"TRAIN_STEPS must be a positive integer, got {train_steps!r}")
  model_dir = os.path.abspath(model_dir)
  finished = check_model_dir(model_dir, resume)
  if finished is not None and finished.get("steps") == train_steps:
    return finished
  # Validate everything cheap before writing anything, so a failed start leaves no trace.
  cfg = model_lib.TransformerConfig()
  data.check_vocabulary(mixture_or_task_name, cfg.vocab_size)
  domains = data.domains_of(mixture_or_task_name)
  if kind == "proxy":
    checkpoints.require_checkpoint(reference_model_dir)
  os.makedirs(model_dir, exist_ok=True)
  mesh = partitioning.make_mesh()
  rules = partitioning.logical_axis_rules()
  data_shards = partitioning.batch_size_divisor(mesh, rules)
  if batch_size % data_shards:
    raise errors.DoremiError(f"batch size {batch_size} does not divide over the mesh's "
                             f"{data_shards} data shards")
  seq_len = int(task_feature_lengths["targets"])
  lm = model_lib.TransformerLM(cfg)
  optimizer = ts.make_optimizer(train_steps)
  num_domain_state = len(domains) if kind == "proxy" else None
  abstract, shardings = ts.state_shardings(lm, optimizer, mesh, seq_len, num_domain_state, rules)
  single_abstract, single_shardings = abstract, shardings
  doremi_cfg = steps.DoremiConfig() if kind == "proxy" else None
  settings = doremi_cfg.settings() if kind == "proxy" else []
  if len(settings) > 1:
    abstract, shardings = ts.stack_proxies(abstract, shardings, len(settings), mesh, rules)
  step_fn = steps.make_train_step(kind, lm, optimizer, mesh, shardings, len(domains),
                                  doremi_cfg, rules, reference_shardings=single_shardings.params)

  ckpt = checkpoints.Checkpointer(model_dir)
  start = ckpt.latest_step() if resume else None
  if start is not None:
    state = ckpt.restore(abstract, start)
  else:
    start = 0
    state = ts.init_state(lm, optimizer, mesh, seq_len, seed, num_domain_state, rules=rules,
                          shardings=single_shardings)
    if len(settings) > 1:  # every proxy of a sweep starts from the same init
      state = ts.broadcast_state(state, len(settings), shardings)
  reference_params = None
  if kind == "proxy":
    reference_params = checkpoints.restore_params(reference_model_dir, single_abstract.params)
  if jax.process_index() == 0:
    gin_utils.write_operative_config(os.path.join(model_dir, "config.gin"))

  ds = data.seqio_dataset(mixture_or_task_name, task_feature_lengths, "train", batch_size,
                          domains, shuffle=True, seed=seed, skip_batches=start)
  batches = data.global_batches(ds, steps.batch_shardings(mesh, rules))
  writer = metrics_writer.MetricsWriter(model_dir, domains, enabled=jax.process_index() == 0)
  trajectory = (open(os.path.join(model_dir, WEIGHTS_TRAJECTORY_FILE), "a")
                if kind == "proxy" and jax.process_index() == 0 else None)
  bar = metrics_writer.progress_bar(start, train_steps, enabled=progress)
  tokens_per_step = batch_size * seq_len
  t0, last = time.time(), None
  try:
    for step in range(start, train_steps):
      try:
        batch = next(batches)
      except StopIteration:
        raise errors.DoremiError(f"{mixture_or_task_name!r} ran out of training data at step "
                                 f"{step}") from None
      args = (state, reference_params, batch) if kind == "proxy" else (state, batch)
      state, metrics = step_fn(*args)
      done = step + 1
      if done % log_every == 0 or done == train_steps:
        host = _host_metrics(metrics)  # the only host sync, once per log interval
        if not np.all(np.isfinite(host["loss"])):
          raise errors.DoremiError(f"loss is nan or inf ({host['loss']}) at step {done}; the "
                                   "last checkpoint is kept; lower the learning rate")
        elapsed = time.time() - t0
        host["tokens_per_second"] = np.asarray((done - start) * tokens_per_step / elapsed)
        writer.write(done, _writer_metrics(host, settings) if settings else host)
        if trajectory is not None:
          trajectory.writelines(_trajectory_rows(done, host, settings, domains))
          trajectory.flush()
        bar.set_postfix(loss=f"{float(np.mean(host['loss'])):.3f}",
                        tok_s=f"{float(host['tokens_per_second']):.0f}")
        last = host
      bar.update(1)
      if done % checkpoint_every == 0 or done == train_steps:
        ckpt.save(done, state)
    ckpt.wait()
  finally:
    bar.close()
    writer.close()
    if trajectory is not None:
      trajectory.close()
    ckpt.close()

  summary: dict[str, Any] = {
      "kind": kind, "steps": train_steps, "mixture_or_task_name": mixture_or_task_name,
      "domains": domains, "batch_size": batch_size, "sequence_length": seq_len,
      "seed": seed, "model": {"num_params": cfg.num_params(), **cfg.__dict__},
      "final_loss": np.asarray(last["loss"]).tolist() if last else None,
      "tokens_per_second": float(last["tokens_per_second"]) if last else None,
      "wall_seconds": time.time() - t0,
  }
  if kind == "proxy":
    proxies = _proxy_results(state, settings, domains, doremi_cfg, model_dir, train_steps,
                             reference_model_dir, mixture_or_task_name, export_name)
    summary.update({"proxies": proxies, "doremi": dataclasses.asdict(doremi_cfg),
                    "reference_model_dir": os.path.abspath(reference_model_dir)})
    if len(proxies) == 1:  # a single proxy's results also sit at the top level
      summary.update({k: v for k, v in proxies[0].items()
                      if k in ("average_domain_weights", "final_domain_weights", "export")})
  if jax.process_index() == 0:
    with open(os.path.join(model_dir, SUMMARY_FILE), "w") as f:
      json.dump(summary, f, indent=2)
  return summary


@gin.configurable
def import_task_modules(modules: Sequence[str] = ()) -> None:
  """Imports modules that register SeqIO Tasks/Mixtures (t5x's ``--gin.tasks`` idea)."""
  import importlib  # pylint: disable=g-import-not-at-top
  for name in modules:
    if name.endswith(".py"):  # an exported mixture module, by path
      export.load_module(name)
      continue
    module = sys.modules.get(name)
    if module is not None and hasattr(module, "register_from_gin"):
      module.register_from_gin()  # already imported: re-read this config's gin macros
      continue
    try:
      importlib.import_module(name)
    except ImportError as exc:
      raise errors.DoremiError(f"cannot import task module {name!r}: {exc}") from None


@errors.exit_on_user_error
def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
  distributed.maybe_initialize()
  args = gin_utils.parse_args(sys.argv[1:] if argv is None else argv,
                              "Train a reference, DoReMi proxy or main model.")
  gin_utils.configure(args.gin_file, args.bindings, args.gin_search_paths)
  gin_utils.call_configured(import_task_modules)
  return gin_utils.call_configured(train)


def console_main() -> None:
  main()

