"""What a DoReMi proxy run adds to a plain one: the frozen reference, the sweep settings
(several proxies stacked in one step), the weight trajectory and the averaged weights.

A proxy run writes its averaged weights as one weights JSON per setting
(``MODEL_DIR/export/<name>.json``, with metadata); the other export formats are written
from that file by ``mixture_files.write_formats`` (the train CLI, the pipeline or
``python -m doremi_jax.export``).
"""
from __future__ import annotations

import dataclasses
import datetime
import json
import math
import os
import sys
from typing import Any, Mapping, Sequence

import jax
import numpy as np

from doremi_jax import errors, mixture_files, mixtures
from doremi_jax.core import steps
from doremi_jax.core import train_state as ts
from doremi_jax.run import checkpoints, heldout, paths

_SHARED_KEYS = ("domain_reference_loss", "tokens_per_second")
_PER_PROXY_WEIGHT_KEYS = ("domain_weights", "average_domain_weights", "domain_excess")
_DIAGNOSTICS = ("weight_entropy", "min_weight", "l1_from_uniform")


def check_reference_run(reference_model_dir: str, domains: Sequence[str],
                        allow_unfinished: bool = False) -> None:
  """A proxy's reference must be a finished plain run over the same domains (a proxy run,
  or one stopped part way, would give other weights, silently)."""
  step = checkpoints.require_checkpoint(reference_model_dir)
  summary_path = os.path.join(reference_model_dir, paths.TRAIN_SUMMARY_FILE)
  if not os.path.exists(summary_path):
    if allow_unfinished:
      return
    raise errors.DoremiError(
        f"REFERENCE_MODEL_DIR {reference_model_dir!r} has not finished training (latest "
        f"checkpoint: step {step}, no {paths.TRAIN_SUMMARY_FILE}); resume it with RESUME=True, "
        "or consent with --gin.train.allow_unfinished_reference=True")
  summary = paths.read_json(summary_path)
  if summary.get("kind") != "plain":
    raise errors.DoremiError(
        f"REFERENCE_MODEL_DIR {reference_model_dir!r} is a {summary.get('kind')} run; give "
        "the reference run (trained with runs/reference.gin)")
  theirs = summary.get("domains")
  if theirs is not None and sorted(theirs) != sorted(domains):
    raise errors.DoremiError(
        f"REFERENCE_MODEL_DIR {reference_model_dir!r} was trained on domains {sorted(theirs)}, "
        f"this proxy has {sorted(domains)}; train the reference on this experiment's domains")


class ProxyExtras:
  """The proxy's additions to a Trainer; set up once, before any output is written."""

  def __init__(self, model_dir: str, reference_model_dir: str, provider,
               domains: Sequence[str], export_name: str | None, batch_size: int,
               doremi_config: steps.DoremiConfig, allow_unfinished_reference: bool = False):
    check_reference_run(reference_model_dir, domains, allow_unfinished_reference)
    warn_if_few_sequences(mixtures.mixture_rates(provider), batch_size)
    self.model_dir, self.reference_model_dir = model_dir, os.path.abspath(reference_model_dir)
    self.provider, self.domains = provider, list(domains)
    self.config = doremi_config
    self.settings = self.config.settings()
    self.export_name = export_name or mixture_files.export_name(provider.name, "doremi")
    self.reference_params = None
    self._trajectory = None

  @property
  def stacked(self) -> bool:
    return len(self.settings) > 1

  def start(self, state, shardings, single_abstract, start_step: int, write: bool):
    """Every sweep proxy starts from the same init; loads the reference; opens the
    trajectory, cut back to ``start_step`` (the restored checkpoint's step)."""
    if self.stacked and not start_step:
      state = ts.broadcast_state(state, len(self.settings), shardings)
    self.reference_params = checkpoints.restore_params(self.reference_model_dir,
                                                       single_abstract.params)
    if write:
      path = paths.trajectory_file(self.model_dir)
      heldout.drop_rows_after(path, start_step)
      self._trajectory = open(path, "a")
    return state

  def per_proxy(self, host: Mapping[str, Any]) -> list[dict[str, Any]]:
    """A (possibly stacked) step's host metrics, one dict per setting."""
    if not self.stacked:
      return [dict(host)]
    shared = {k: v for k, v in host.items() if k in _SHARED_KEYS}
    return [{**shared, **{k: v[i] for k, v in host.items() if k not in shared}}
            for i in range(len(self.settings))]

  def writer_metrics(self, host: Mapping[str, Any]) -> dict[str, Any]:
    """TensorBoard names: a sweep's metrics get a ``<setting tag>/`` prefix."""
    if not self.stacked:
      return dict(host)
    out = {k: host[k] for k in _SHARED_KEYS}
    for setting, metrics in zip(self.settings, self.per_proxy(host)):
      out.update({f"{setting.tag}/{k}": v for k, v in metrics.items() if k not in out})
    return out

  def log(self, step: int, host: Mapping[str, Any]) -> None:
    """One trajectory line per proxy: weights, their average, excess and diagnostics."""
    if self._trajectory is None:
      return
    for setting, m in zip(self.settings, self.per_proxy(host)):
      row = {"step": step, "setting": setting.tag,
             **{k: dict(zip(self.domains, np.asarray(m[k]).tolist()))
                for k in _PER_PROXY_WEIGHT_KEYS},
             **{k: float(m[k]) for k in _DIAGNOSTICS},
             "min_weight_domain": self.domains[int(m["min_weight_domain"])]}
      self._trajectory.write(json.dumps(row) + "\n")
    self._trajectory.flush()

  def close(self) -> None:
    """On disk before the run's last checkpoint is reported (a preempted VM may go next)."""
    if self._trajectory is not None:
      self._trajectory.flush()
      os.fsync(self._trajectory.fileno())
      self._trajectory.close()
      self._trajectory = None

  def results(self, state, train_steps: int, write: bool) -> dict[str, Any]:
    """The summary's proxy part; writes each setting's averaged weights as a weights JSON."""
    ds = jax.device_get(state.domains)
    k = len(self.domains)
    average = np.asarray(ds.average).reshape(len(self.settings), k)
    final = np.asarray(ds.weights).reshape(len(self.settings), k)
    proxies = []
    for i, setting in enumerate(self.settings):
      avg = mixtures.normalise(dict(zip(self.domains, average[i].tolist())), what=setting.tag)
      _warn_if_collapsed(setting, avg)
      entry = {"setting": dataclasses.asdict(setting), "tag": setting.tag,
               "average_domain_weights": avg,
               "final_domain_weights": dict(zip(self.domains, final[i].tolist()))}
      if write:
        name = (mixture_files.export_name(self.export_name, setting.tag) if self.stacked
                else self.export_name)
        path = os.path.join(self.model_dir, paths.EXPORT_SUBDIR, name + ".json")
        entry["export"] = {"json": mixture_files.write_weights(
            path, name, avg, self._metadata(setting, train_steps))}
      proxies.append(entry)
    out = {"proxies": proxies, "doremi": dataclasses.asdict(self.config),
           "reference_model_dir": self.reference_model_dir}
    if not self.stacked:  # a single proxy's results also sit at the top level
      out.update({k: v for k, v in proxies[0].items()
                  if k in ("average_domain_weights", "final_domain_weights", "export")})
    return out

  def _metadata(self, setting: steps.DoremiSetting, train_steps: int) -> dict[str, Any]:
    return {
        "method": "DoReMi (Xie et al. 2023), average of domain weights over "
                  + (f"the proxy steps after {self.config.average_start}"
                     if self.config.average_start else "all proxy steps"),
        "steps": train_steps, "step_size": setting.step_size, "smoothing": setting.smoothing,
        "estimator": setting.estimator, "objective": self.config.objective,
        "use_reference": setting.use_reference,
        "average_start": self.config.average_start,
        "proxy_mixture": self.provider.name, "proxy_run": self.model_dir,
        "reference_run": self.reference_model_dir,
        "tokenizer": mixtures.tokenizer_record(self.provider),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


MIN_SEQUENCES_PER_DOMAIN = 8


def warn_if_few_sequences(rates: Mapping[str, float], batch_size: int,
                          minimum: int = MIN_SEQUENCES_PER_DOMAIN) -> str | None:
  """One warning line when the proxy's mixture gives some domain fewer than ``minimum``
  sequences per step on average: its excess is then mostly sampling noise, and only a tiny
  step size survives (the paper's proxy saw ~23 sequences of each domain per step)."""
  low = {d: r * batch_size for d, r in rates.items() if r * batch_size < minimum}
  if not low:
    return None
  fewest = min(low, key=low.get)
  needed = int(math.ceil(minimum / rates[fewest]))
  line = (f"warning: proxy batch {batch_size} gives {len(low)} domain(s) fewer than {minimum} "
          f"sequences per step on average ({fewest}: {low[fewest]:.1f}); a batch of "
          f"{needed} gives every domain {minimum} (pipeline.proxy_batch_size, or BATCH_SIZE "
          "of the proxy run)")
  print(line, file=sys.stderr, flush=True)
  return line


def _warn_if_collapsed(setting: steps.DoremiSetting, average: Mapping[str, float]) -> None:
  floor = 1.0 / (10 * len(average))
  low = {d: w for d, w in average.items() if w < floor}
  if low:
    listed = ", ".join(f"{d} {w:.4f}" for d, w in sorted(low.items(), key=lambda kv: kv[1]))
    print(f"warning: proxy {setting.tag}: averaged weight below 1/(10k) = {floor:.4f} for "
          f"{listed}: the weights collapsed; try a smaller step size or a larger batch",
          file=sys.stderr, flush=True)


def write_export_formats(model_dir: str, summary: dict[str, Any]) -> dict[str, Any]:
  """Every export format next to each weights JSON of a finished proxy run; records the
  paths in ``train_summary.json`` (what ``python -m doremi_jax.train`` leaves behind)."""
  for proxy in summary.get("proxies", []):
    if "export" in proxy:
      proxy["export"] = mixture_files.write_formats(proxy["export"]["json"])
  if len(summary.get("proxies", [])) == 1 and "export" in summary["proxies"][0]:
    summary["export"] = summary["proxies"][0]["export"]
  paths.write_json(os.path.join(model_dir, paths.TRAIN_SUMMARY_FILE), summary)
  return summary
