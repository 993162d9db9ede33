"""A run's fingerprint: every setting and input that decides its result, recorded at its
first start (``fingerprint.json``) and compared whenever the run dir is used again.

Resuming, or reusing a finished stage, with any difference is refused with one line that
names the first differing entry, unless the user consents to it by name
(``--gin.RESUME_IGNORE_CHANGES='["make_optimizer.learning_rate"]'``; a prefix such as
``"data"`` covers all its entries). Settings that only change how a run reports or saves
(``NOT_RESULT``) are left out. Entries:

  * ``train.*``: the run's own settings (mixture, steps, batch, seed, reference, ...);
  * ``TransformerConfig.*``, ``make_optimizer.*`` and, for a proxy, ``DoremiConfig.*``:
    defaults plus gin bindings, as the run resolves them;
  * ``data.<task>``: for a prepared domain, a sha256 of its manifest entry (its shards'
    sha256s) and the tokenizer's; otherwise the task's registration (registrar, arguments,
    tokenizer sha256, corpus fingerprint);
  * ``mixture``: the normalised rates of the mixture it trains on;
  * ``code.version``: the package version (a release that changes results bumps it).
"""
from __future__ import annotations

import dataclasses
import inspect
import json
import os
from typing import Any, Mapping, Sequence

import gin
import seqio

import doremi_jax
from doremi_jax import errors, mixtures, storage
from doremi_jax.core import model as model_lib
from doremi_jax.core import steps
from doremi_jax.core import train_state as ts
from doremi_jax.data.prepared_source import PreparedDataSource

FILE = "fingerprint.json"
NOT_RESULT = ("model_dir", "resume", "checkpoint_every", "log_every", "progress", "export_name",
              "ignore_changes", "microbatches",  # microbatches: exact accumulation
              "eval_every", "curve_batches_per_domain",  # learning curves only read the model
              "curve_splits", "allow_unfinished_reference")


def _plain(value: Any) -> Any:
  """A JSON value that compares equal after a round trip (tuples become lists)."""
  return json.loads(json.dumps(value, default=repr, sort_keys=True))


def _resolved(fn, name: str) -> dict[str, Any]:
  """A configurable's keyword defaults overridden by its gin bindings."""
  values = {p.name: p.default for p in inspect.signature(fn).parameters.values()
            if p.default is not inspect.Parameter.empty}
  values.update(gin.get_bindings(name))
  return {f"{name}.{k}": _plain(v) for k, v in sorted(values.items())}


def _data(provider: seqio.Task | seqio.Mixture) -> dict[str, Any]:
  out = {}
  for task in seqio.get_subtasks(provider):
    source = task.source
    if isinstance(source, PreparedDataSource):  # the domain's shards (with sha256s), tokenizer
      out[f"data.{task.name}"] = f"prepared {source.corpus.domain_digest(source.domain)}"
    else:
      out[f"data.{task.name}"] = _plain(mixtures.spec_of(task.name))
  return out


def of_run(settings: Mapping[str, Any], provider: seqio.Task | seqio.Mixture,
           model_config: model_lib.TransformerConfig,
           doremi_config: steps.DoremiConfig | None = None) -> dict[str, Any]:
  """The fingerprint of a run with these ``train`` settings (``RunSettings`` as a dict),
  model and, for a proxy, DoReMi config on ``provider``."""
  fp: dict[str, Any] = {f"train.{k}": _plain(v) for k, v in settings.items()
                        if k not in NOT_RESULT}
  model = dataclasses.asdict(model_config)
  fp.update({f"TransformerConfig.{k}": _plain(v) for k, v in sorted(model.items())})
  fp.update(_resolved(ts.make_optimizer, "make_optimizer"))
  if settings.get("kind") in ("proxy", "online"):
    doremi = dataclasses.asdict(doremi_config)
    for key, default in (("use_reference", True), ("average_start", 0)):
      if doremi[key] == default:
        del doremi[key]  # the defaults: runs from before these settings still match
    fp.update({f"DoremiConfig.{k}": _plain(v) for k, v in sorted(doremi.items())})
  fp.update(_data(provider))  # before the mixture: edited data also changes natural rates
  fp["mixture"] = _plain(mixtures.mixture_rates(provider))
  fp["code.version"] = doremi_jax.__version__
  return fp


def _consented(key: str, ignore: Sequence[str]) -> bool:
  return any(key == name or key.startswith(name + ".") for name in ignore)


def _short(value: Any) -> str:
  text = json.dumps(value, sort_keys=True)
  return text if len(text) <= 80 else text[:77] + "..."


def check(model_dir: str, fp: Mapping[str, Any], ignore: Sequence[str] = ()) -> list[str]:
  """Refuses (one line) a run dir recorded with another fingerprint; returns the consented
  differences. A run dir without a record (written before fingerprints) is accepted."""
  path = os.path.join(model_dir, FILE)
  if not os.path.exists(path):
    return []
  try:
    with open(path, encoding="utf-8") as f:
      old = json.load(f)
  except ValueError:
    raise errors.DoremiError(f"{path} is not valid JSON; restore it or use a new MODEL_DIR"
                             ) from None
  changed = [k for k in list(old) + [k for k in fp if k not in old] if old.get(k) != fp.get(k)]
  refused = [k for k in changed if not _consented(k, ignore)]
  if refused:
    key = refused[0]
    raise errors.DoremiError(
        f"{model_dir} was trained with {key} = {_short(old.get(key))}, this start has "
        f"{_short(fp.get(key))} ({len(refused)} setting(s) differ: {', '.join(refused)}); use "
        f"a new MODEL_DIR, or consent with --gin.RESUME_IGNORE_CHANGES='{json.dumps(refused)}'")
  return changed


def record(model_dir: str, fp: Mapping[str, Any]) -> None:
  storage.write_atomic(os.path.join(model_dir, FILE), json.dumps(fp, indent=1) + "\n")
