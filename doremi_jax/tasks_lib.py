"""Helpers to register DoReMi domains as SeqIO Tasks and Mixtures.

Every domain Task emits two features:
  * ``targets``: int32 token ids, packed *within* the domain (documents joined
    with EOS, then cut into fixed-length chunks), so each sequence has exactly
    one domain, as in the reference implementation;
  * ``domain``: a scalar string, the Task's name. It survives ``Mixture``
    sampling (Mixtures keep only output features), so a training loop can map
    it to a domain id without any side channel.
"""
from __future__ import annotations

import functools
from typing import Callable, Iterable, Mapping, Sequence

import doremi_jax  # noqa: E402
doremi_jax.import_tensorflow_quietly()
import seqio
import tensorflow as tf

from doremi_jax import errors

DOMAIN_KEY = "domain"
TARGETS_KEY = "targets"


def output_features(vocabulary: seqio.Vocabulary) -> dict[str, seqio.Feature]:
  """The two features every domain Task emits (EOS is added while packing)."""
  return {
      TARGETS_KEY: seqio.Feature(vocabulary, add_eos=False, dtype=tf.int32, rank=1),
      DOMAIN_KEY: seqio.Feature(
          seqio.PassThroughVocabulary(size=0), add_eos=False, required=False,
          dtype=tf.string, rank=0),
  }


def tokenize_text(dataset: tf.data.Dataset, output_features) -> tf.data.Dataset:
  """Maps ``{"text": str}`` to ``{"targets": int32 ids}`` with the Task's vocabulary."""
  vocab = output_features[TARGETS_KEY].vocabulary

  def _tok(ex):
    return {TARGETS_KEY: tf.cast(vocab.encode_tf(ex["text"]), tf.int32)}

  return dataset.map(_tok, num_parallel_calls=tf.data.AUTOTUNE)


@seqio.map_over_dataset
def _append_eos(ex, eos_id: int):
  return {TARGETS_KEY: tf.concat([ex[TARGETS_KEY], [eos_id]], axis=0)}


def pack_within_domain(dataset: tf.data.Dataset, sequence_length, output_features,
                       domain: str) -> tf.data.Dataset:
  """Concatenates documents (EOS after each) and cuts fixed-length chunks.

  Runs after the per-document shuffle so chunks mix documents; the trailing
  partial chunk is dropped so every example has exactly ``length`` tokens.
  """
  vocab = output_features[TARGETS_KEY].vocabulary
  eos_id = vocab.eos_id if vocab.eos_id is not None else 1
  length = (sequence_length or {}).get(TARGETS_KEY) or 128
  ds = _append_eos(dataset, eos_id=eos_id)
  ds = ds.map(lambda ex: ex[TARGETS_KEY]).unbatch().batch(length, drop_remainder=True)
  return ds.map(lambda t: {TARGETS_KEY: t, DOMAIN_KEY: tf.constant(domain)})


def register_domain_task(name: str, source: seqio.DataSource, vocabulary: seqio.Vocabulary,
                         tokenized: bool = False, replace: bool = True) -> seqio.Task:
  """Registers one domain as a Task (text or pre-tokenized source)."""
  pre: list[Callable] = [] if tokenized else [tokenize_text]
  pre.append(functools.partial(pack_within_domain, domain=name))
  if replace and name in seqio.TaskRegistry.names():
    seqio.TaskRegistry.remove(name)
  return seqio.TaskRegistry.add(name, source=source, preprocessors=pre,
                                output_features=output_features(vocabulary),
                                metric_fns=[])


def check_rates(rates: Mapping[str, float], what: str = "mixture") -> None:
  """Rejects negative, non-finite or all-zero mixing rates with a one-line error."""
  bad = {k: v for k, v in rates.items() if not (float(v) >= 0.0 and float(v) < float("inf"))}
  if bad:
    raise errors.DoremiError(f"{what}: mixing rates must be finite and >= 0, got {bad}")
  if not rates or sum(float(v) for v in rates.values()) <= 0.0:
    raise errors.DoremiError(f"{what}: mixing rates are all zero (or there are no tasks)")


def register_mixture(name: str, rates: Mapping[str, float] | Sequence[tuple[str, float]],
                     replace: bool = True) -> seqio.Mixture:
  """Registers a Mixture over domain Tasks after validating its rates."""
  rates = dict(rates)
  check_rates(rates, what=name)
  for task in rates:
    errors.require_task(task)
  if replace and name in seqio.MixtureRegistry.names():
    seqio.MixtureRegistry.remove(name)
  return seqio.MixtureRegistry.add(name, [(t, float(r)) for t, r in rates.items()])


def register_uniform_mixture(name: str, tasks: Iterable[str]) -> seqio.Mixture:
  return register_mixture(name, {t: 1.0 for t in tasks})


def domain_names(mixture_or_task_name: str) -> list[str]:
  """Domains of a mixture in a fixed order: SeqIO's sorted subtask names."""
  provider = errors.require_mixture_or_task(mixture_or_task_name)
  return [t.name for t in seqio.get_subtasks(provider)]


def mixture_rates(mixture_or_task_name: str) -> dict[str, float]:
  """Normalised sampling rates of a mixture, keyed by task name."""
  provider = errors.require_mixture_or_task(mixture_or_task_name)
  if isinstance(provider, seqio.Task):
    return {provider.name: 1.0}
  rates = {t.name: float(provider.get_rate(t)) for t in provider.tasks}
  total = sum(rates.values())
  return {k: v / total for k, v in rates.items()}


# Python statements that re-register each domain Task in a fresh process; exported
# mixture modules start with them (part of the registry, like the registries themselves).
_PROVENANCE: dict[str, str] = {}


def record_provenance(task_names: Iterable[str], statement: str) -> None:
  for name in task_names:
    _PROVENANCE[name] = statement


def registration_statements(task_names: Iterable[str]) -> list[str]:
  """Unique statements (in first-use order) that register the given tasks."""
  out: list[str] = []
  for name in task_names:
    stmt = _PROVENANCE.get(name)
    if stmt is None:
      raise errors.DoremiError(
          f"task {name!r} was not registered through doremi_jax (no way to re-register it in "
          "an exported module); register it with doremi_jax.tasks_lib.record_provenance")
    if stmt not in out:
      out.append(stmt)
  return out
