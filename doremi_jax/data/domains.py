"""DoReMi domains as SeqIO Tasks (mixtures over them: ``doremi_jax.mixtures``).

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
import importlib
from typing import Callable, Sequence

import doremi_jax
from doremi_jax import errors

doremi_jax.import_tensorflow_quietly()
import seqio  # noqa: E402
import tensorflow as tf  # noqa: E402

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


def _is_text(spec) -> bool:
  """A string per example (a scalar, or of unknown rank as a generator may declare it)."""
  return (isinstance(spec, tf.TensorSpec) and spec.dtype == tf.string
          and spec.shape.rank in (0, None))


def as_documents(dataset: tf.data.Dataset, task: str, text_key: str) -> tf.data.Dataset:
  """Lines of text (``seqio.TextLineDataSource``: one document a line) become
  ``{text_key: line}``; a source that yields neither fails with one line, before tf.data
  would raise a TypeError from inside the tokenizer's traced map."""
  spec = dataset.element_spec
  if _is_text(spec):
    return dataset.map(lambda line: {text_key: line})
  if isinstance(spec, dict) and _is_text(spec.get(text_key)):
    return dataset
  got = sorted(spec) if isinstance(spec, dict) else spec
  raise errors.DoremiError(
      f"domain task {task!r}: its source must yield {{{text_key!r}: <string>}} examples (or "
      f"lines of text), got {got}; pass text_key= or tokenized=True to register_domain_task")


def register_domain_task(name: str, source: seqio.DataSource, vocabulary: seqio.Vocabulary,
                         tokenized: bool = False, replace: bool = True,
                         text_key: str = "text") -> seqio.Task:
  """Registers one domain as a Task over a pre-tokenized source or a text source whose
  documents sit in field ``text_key`` (or are its lines, as a ``TextLineDataSource``'s)."""
  pre: list[Callable] = []
  if not tokenized:
    pre.append(functools.partial(as_documents, task=name, text_key=text_key))
    if text_key != "text":
      pre.append(functools.partial(seqio.preprocessors.rekey, key_map={"text": text_key}))
    pre.append(tokenize_text)
  pre.append(functools.partial(pack_within_domain, domain=name))
  if replace and name in seqio.TaskRegistry.names():
    seqio.TaskRegistry.remove(name)
  return seqio.TaskRegistry.add(name, source=source, preprocessors=pre,
                                output_features=output_features(vocabulary),
                                metric_fns=[])


def import_task_modules(modules: Sequence[str]) -> None:
  """Imports, by name, the modules that register a user's Tasks when imported (t5x's
  ``MIXTURE_OR_TASK_MODULE``); one that cannot be imported is one line."""
  for name in modules:
    try:
      importlib.import_module(name)
    except ImportError as exc:
      raise errors.DoremiError(f"cannot import task module {name!r}: {exc}; put its folder "
                               "on PYTHONPATH") from None
