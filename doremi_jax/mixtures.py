"""Mixture weights: validation, normalisation, distance, SeqIO registration, provenance.

Every weight dict that enters the package passes through ``check_weights`` (weights read
or received, which must already sum to 1) or ``normalise`` (rates of any scale). Mixtures
are registered here, with the tokenizer they were found with recorded next to them.

How to re-register a mixture's domains in another process is kept as data: each
registrar records a ``spec`` (registrar, its keyword arguments, which of them are data
paths, the tokenizer and its sha256) for the tasks it registers; ``apply_specs`` replays
specs. Data paths under the data root (``storage.data_root()``) are stored relative to it,
so an export made on one machine imports on another where the corpus lives elsewhere.
"""
from __future__ import annotations

import glob
import importlib
import math
import os
from typing import Any, Callable, Iterable, Mapping, Sequence

import doremi_jax

doremi_jax.import_tensorflow_quietly()  # TF's start-up lines would precede one-line errors
import seqio  # noqa: E402

from doremi_jax import errors, storage  # noqa: E402

# Weights must sum to 1 within this: float32 averages drift by ~1e-6, published tables by 1e-4.
SUM_TOLERANCE = 1e-3
DATA_ROOT_MARK = "$" + storage.DATA_ROOT_ENV


def check_weights(weights: Mapping[str, float], what: str = "domain weights",
                  domains: Sequence[str] | None = None,
                  tolerance: float = SUM_TOLERANCE) -> dict[str, float]:
  """Weights must be finite, >= 0, sum to 1 within ``tolerance`` and (given ``domains``)
  name exactly those domains; otherwise a one-line error."""
  weights = {k: float(v) for k, v in weights.items()}
  if not weights:
    raise errors.DoremiError(f"{what}: no domains")
  bad = {k: v for k, v in weights.items() if not math.isfinite(v) or v < 0}
  if bad:
    raise errors.DoremiError(f"{what}: weights must be finite and >= 0, got {bad}")
  total = sum(weights.values())
  if abs(total - 1.0) > tolerance:
    raise errors.DoremiError(f"{what}: weights sum to {total:.6f}, not 1")
  if domains is not None:
    unknown, missing = sorted(set(weights) - set(domains)), sorted(set(domains) - set(weights))
    if unknown or missing:
      raise errors.DoremiError(f"{what} names unknown domains {unknown} and lacks {missing}; it "
                               "must name exactly the experiment's tasks")
  return weights


def normalise(rates: Mapping[str, float], domains: Sequence[str] | None = None,
              what: str = "mixture") -> dict[str, float]:
  """Rates divided by their sum, in ``domains`` order; negative, non-finite or all-zero
  rates are a one-line error."""
  domains = list(rates) if domains is None else list(domains)
  values = {d: float(rates[d]) for d in domains}
  bad = {k: v for k, v in values.items() if not (0.0 <= v < math.inf)}
  if bad:
    raise errors.DoremiError(f"{what}: mixing rates must be finite and >= 0, got {bad}")
  total = sum(values.values())
  if total <= 0.0:
    raise errors.DoremiError(f"{what}: mixing rates are all zero (or there are no tasks)")
  return {d: v / total for d, v in values.items()}


def l1_distance(a: Mapping[str, float], b: Mapping[str, float], domains: Sequence[str]) -> float:
  """Sum over ``domains`` of |a - b| (a domain missing from one side counts as 0)."""
  return float(sum(abs(a.get(d, 0.0) - b.get(d, 0.0)) for d in domains))


Provider = seqio.Task | seqio.Mixture


def provider(name_or_provider: str | Provider) -> Provider:
  """The SeqIO Task or Mixture of that name (a one-line error lists the registered ones)."""
  if not isinstance(name_or_provider, str):
    return name_or_provider
  return errors.require_mixture_or_task(name_or_provider)


def domain_names(mixture: str | Provider) -> list[str]:
  """Domains of a mixture in a fixed order: SeqIO's sorted subtask names."""
  return [t.name for t in seqio.get_subtasks(provider(mixture))]


def mixture_rates(mixture: str | Provider) -> dict[str, float]:
  """Normalised sampling rates of a mixture, keyed by task name."""
  found = provider(mixture)
  if isinstance(found, seqio.Task):
    return {found.name: 1.0}
  return normalise({t.name: float(found.get_rate(t)) for t in found.tasks}, what=found.name)


def register_mixture(name: str, rates: Mapping[str, float] | Sequence[tuple[str, float]]
                     ) -> seqio.Mixture:
  """Registers (or replaces) a Mixture over domain Tasks after validating its rates."""
  rates = normalise(dict(rates), what=name)
  for task in rates:
    errors.require_task(task)
  if name in seqio.MixtureRegistry.names():
    seqio.MixtureRegistry.remove(name)
  return seqio.MixtureRegistry.add(name, list(rates.items()))


def register_uniform_mixture(name: str, tasks: Iterable[str]) -> seqio.Mixture:
  return register_mixture(name, {t: 1.0 for t in tasks})


# --------------------------------------------------------------------- tokenizer record
def describe_vocabulary(vocab: seqio.Vocabulary) -> dict[str, Any]:
  """Type, size and (SentencePiece) model path + sha256: weights are tokenizer-specific."""
  info: dict[str, Any] = {"type": type(vocab).__name__, "vocab_size": int(vocab.vocab_size)}
  path = getattr(vocab, "sentencepiece_model_file", None)
  if path:
    info["path"] = portable_path(path)
    info["sha256"] = storage.file_sha256(path) if os.path.exists(path) else None
  return info


def tokenizer_record(mixture: str | Provider) -> dict[str, Any]:
  return describe_vocabulary(provider(mixture).output_features["targets"].vocabulary)


def check_same_tokenizer(recorded: Mapping[str, Any] | None, mixture: str | Provider) -> None:
  """Fails when weights were found with another tokenizer than the mixture uses."""
  if not recorded:
    return
  current = tokenizer_record(mixture)
  diff = {k: (recorded.get(k), current.get(k)) for k in ("type", "vocab_size", "sha256")
          if recorded.get(k) is not None and recorded.get(k) != current.get(k)}
  if diff:
    raise errors.DoremiError(
        f"tokenizer mismatch: the weights were found with {recorded.get('type')} "
        f"(vocab {recorded.get('vocab_size')}, sha256 {str(recorded.get('sha256'))[:12]}) but "
        f"{provider(mixture).name!r} uses {current.get('type')} (vocab "
        f"{current.get('vocab_size')}, sha256 {str(current.get('sha256'))[:12]}); DoReMi weights "
        "are tokenizer-specific")


# --------------------------------------------------------------------- provenance as data
_SPECS: dict[str, dict[str, Any]] = {}  # task name -> the spec that registered it


def portable_path(path: str) -> str:
  """``$DOREMI_DATA_ROOT/<relative>`` for a path under the data root, else the absolute path."""
  path, root = os.path.abspath(os.path.expanduser(path)), os.path.abspath(storage.data_root())
  if path == root or path.startswith(root + os.sep):
    return DATA_ROOT_MARK + path[len(root):]
  return path


def local_path(path: str) -> str:
  """The inverse of ``portable_path`` on this machine."""
  if path.startswith(DATA_ROOT_MARK):
    return str(storage.data_root()) + path[len(DATA_ROOT_MARK):]
  return path


def record_spec(task_names: Sequence[str], registrar: Callable, kwargs: Mapping[str, Any],
                path_args: Sequence[str] = (), data: Mapping[str, str] | None = None) -> None:
  """Remembers how ``task_names`` were registered: ``registrar(**kwargs)`` (JSON-able);
  ``data``: fingerprints of the files read (a run's fingerprint includes them)."""
  kwargs = dict(kwargs)
  for arg in path_args:
    if kwargs.get(arg) not in (None, "bytes", "sentencepiece"):
      kwargs[arg] = portable_path(kwargs[arg])
  spec = {"registrar": f"{registrar.__module__}.{registrar.__name__}", "kwargs": kwargs,
          "paths": [a for a in path_args if a in kwargs],
          "tokenizer": tokenizer_record(task_names[0]) if task_names else None}
  if data:
    spec["data"] = dict(sorted(data.items()))
  for name in task_names:
    _SPECS[name] = spec


def spec_of(task_name: str) -> dict[str, Any] | None:
  """How a task was registered (``record_spec``), or None."""
  return _SPECS.get(task_name)


def registration_specs(task_names: Iterable[str]) -> list[dict[str, Any]]:
  """The distinct specs (in first-use order) that register the given tasks."""
  out: list[dict[str, Any]] = []
  for name in task_names:
    spec = _SPECS.get(name)
    if spec is None:
      raise errors.DoremiError(
          f"task {name!r} was not registered by a doremi_jax registrar, so an export cannot "
          "re-register it; register it through one (see doremi_jax/tasks)")
    if spec not in out:
      out.append(spec)
  return out


def apply_specs(specs: Sequence[Mapping[str, Any]]) -> list[str]:
  """Re-registers domains from specs: imports each registrar, resolves its data paths
  under this machine's data root, calls it, and checks the tokenizer by sha256."""
  names: list[str] = []
  for spec in specs:
    module_name, _, fn_name = spec["registrar"].rpartition(".")
    try:
      registrar = getattr(importlib.import_module(module_name), fn_name)
    except (ImportError, AttributeError) as exc:
      raise errors.DoremiError(f"cannot find registrar {spec['registrar']!r}: {exc}") from None
    kwargs = dict(spec["kwargs"])
    for arg in spec.get("paths", ()):
      kwargs[arg] = local_path(kwargs[arg])
      _require_data(spec["kwargs"][arg], kwargs[arg])
    registered = list(registrar(**kwargs))
    if registered:
      check_same_tokenizer(spec.get("tokenizer"), registered[0])
      _check_same_data(spec, registered)
    names += registered
  return names


def _require_data(recorded: str, path: str) -> None:
  """The data an export names must be where it says; a moved corpus names the fix."""
  if (not isinstance(path, str) or path in ("bytes", "sentencepiece") or os.path.exists(path)
      or glob.glob(path)):  # a Pile spec may hold a glob of files
    return
  if recorded.startswith(DATA_ROOT_MARK):
    raise errors.DoremiError(
        f"the data this mixture was made over is not at {path!r} (${storage.DATA_ROOT_ENV} is "
        f"{storage.data_root()}); set {storage.DATA_ROOT_ENV} to the folder that holds "
        f"{recorded[len(DATA_ROOT_MARK):].lstrip('/')!r} now")
  raise errors.DoremiError(
      f"the data this mixture was made over is not at {path!r} (moved?); put it back, or keep "
      f"corpora under ${storage.DATA_ROOT_ENV} so exports find them wherever it points")


def _check_same_data(spec: Mapping[str, Any], registered: Sequence[str]) -> None:
  """Domains re-registered for an export must hold the data it was made over (a prepared
  domain's shards by sha256): another corpus with the same domain names is refused."""
  recorded, now = spec.get("data") or {}, (spec_of(registered[0]) or {}).get("data") or {}
  differ = sorted(k for k in recorded if k in now and recorded[k] != now[k])
  if differ:
    where = spec["kwargs"].get("prepared_dir") or spec["kwargs"]
    raise errors.DoremiError(
        f"the mixture was exported over other data than {local_path(str(where))!r} holds now "
        f"(domains {', '.join(differ[:4])}{' ...' if len(differ) > 4 else ''} differ); "
        f"point ${storage.DATA_ROOT_ENV} at the corpus it was made over, or export again")


def register_exported(name: str, weights: Mapping[str, float], specs: Sequence[Mapping[str, Any]],
                      tokenizer: Mapping[str, Any] | None = None) -> seqio.Mixture:
  """What an exported mixture runs: its domains from specs (when not registered yet), then
  the mixture, refused if its tasks now use another tokenizer than the weights were found with."""
  if any(task not in seqio.TaskRegistry.names() for task in weights):
    apply_specs(specs)
  mixture = register_mixture(name, check_weights(weights, what=name))
  check_same_tokenizer(tokenizer, mixture)
  return mixture
