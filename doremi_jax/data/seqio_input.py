"""SeqIO -> global jax.Arrays with domain ids, for one or many hosts.

Each host reads its own shard of the SeqIO dataset (``seqio.ShardInfo``), batches
``global_batch / process_count`` examples and contributes them to a global
array with ``jax.make_array_from_process_local_data``. Decoder-only features:
``inputs`` is ``targets`` shifted right (0 = BOS/pad), ``loss_mask`` marks
non-padding targets, ``domain_ids`` indexes the mixture's sorted subtasks.
"""
from __future__ import annotations

import itertools
import os
from typing import Iterable, Iterator, Mapping, Sequence

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import doremi_jax  # noqa: E402

doremi_jax.import_tensorflow_quietly()
import jax  # noqa: E402
import numpy as np  # noqa: E402
import seqio  # noqa: E402
import tensorflow as tf  # noqa: E402

from doremi_jax import errors  # noqa: E402
from doremi_jax.data import domains as domains_lib  # noqa: E402
from doremi_jax.data import grain_input, prepared_source  # noqa: E402


def _domain_lookup(domains: Sequence[str]) -> tf.lookup.StaticHashTable:
  init = tf.lookup.KeyValueTensorInitializer(
      tf.constant(list(domains)), tf.range(len(domains), dtype=tf.int32))
  return tf.lookup.StaticHashTable(init, default_value=-1)


def _local_batch(feature_lengths: Mapping[str, int], global_batch_size: int) -> int:
  """This host's share of the batch, after the checks every reader makes."""
  if "targets" not in feature_lengths:
    raise errors.DoremiError(
        f"TASK_FEATURE_LENGTHS needs a 'targets' length, got {dict(feature_lengths)}")
  n_proc = jax.process_count()
  if global_batch_size % n_proc:
    raise errors.DoremiError(f"batch size {global_batch_size} does not divide over {n_proc} hosts")
  return global_batch_size // n_proc


def _shard_info() -> seqio.ShardInfo | None:
  n_proc = jax.process_count()
  return seqio.ShardInfo(index=jax.process_index(), num_shards=n_proc) if n_proc > 1 else None


def _get_dataset(provider: seqio.Task | seqio.Mixture, feature_lengths: Mapping[str, int],
                 split: str, **get_dataset_kwargs) -> tf.data.Dataset:
  """This host's shard of ``provider``'s examples (SeqIO's own output, not batched)."""
  try:
    return provider.get_dataset(dict(feature_lengths), split=split, shard_info=_shard_info(),
                                **get_dataset_kwargs)
  except ValueError as exc:
    raise errors.DoremiError(f"{provider.name!r} split {split!r}: {exc}") from None


def carries_domain(provider: seqio.Task | seqio.Mixture) -> bool:
  """Whether every subtask labels its examples with their domain (this package's domain
  Tasks do); a user's own Tasks do not, and are sampled here (``task_sequences``)."""
  return all(domains_lib.DOMAIN_KEY in t.output_features for t in seqio.get_subtasks(provider))


def task_sequences(task: seqio.Task, feature_lengths: Mapping[str, int], split: str,
                   **get_dataset_kwargs) -> tf.data.Dataset:
  """One Task's ``{targets, domain}`` sequences of exactly the ``targets`` length.

  A domain Task of this package packs within itself. Any other Task (a user's, used as
  registered: its source, preprocessors and vocabulary) is packed here as the reference
  implementation packs: its examples' ``targets`` (trimmed by SeqIO to the length, with
  its EOS if its feature adds one) are joined and cut into full chunks, each labelled
  with the Task's name, so no ``domain`` feature is needed in it."""
  ds = _get_dataset(task, feature_lengths, split, **get_dataset_kwargs)
  if domains_lib.DOMAIN_KEY in ds.element_spec:
    return ds
  spec = ds.element_spec
  if not isinstance(spec, dict) or domains_lib.TARGETS_KEY not in spec:
    got = sorted(spec) if isinstance(spec, dict) else spec
    raise errors.DoremiError(
        f"task {task.name!r} yields {got}, with no 'targets' feature: DoReMi trains a "
        "decoder-only model on each domain's 'targets'")
  length = int(feature_lengths[domains_lib.TARGETS_KEY])
  ds = ds.map(lambda ex: tf.cast(ex[domains_lib.TARGETS_KEY], tf.int32))
  ds = ds.unbatch().batch(length, drop_remainder=True)
  return ds.map(lambda t: {domains_lib.TARGETS_KEY: t, domains_lib.DOMAIN_KEY: task.name})


def _sampled_dataset(provider: seqio.Task | seqio.Mixture, feature_lengths: Mapping[str, int],
                     split: str, seed: int | None, **get_dataset_kwargs) -> tf.data.Dataset:
  """A mixture of Tasks sampled here, as ``seqio.Mixture`` samples them, from each Task's
  ``task_sequences`` (so every example keeps the name of the Task it was drawn from)."""
  tasks = seqio.get_subtasks(provider)
  datasets = [task_sequences(t, feature_lengths, split, seed=seed, **get_dataset_kwargs)
              for t in tasks]
  if len(datasets) == 1:
    return datasets[0]
  rates = [float(provider.get_rate(t)) for t in tasks]
  return tf.data.Dataset.sample_from_datasets(datasets, weights=rates, seed=seed)


def seqio_dataset(provider: seqio.Task | seqio.Mixture, feature_lengths: Mapping[str, int],
                  split: str, global_batch_size: int, domains: Sequence[str], shuffle: bool = True,
                  seed: int | None = 0, skip_batches: int = 0) -> tf.data.Dataset:
  """This host's endless training batches of ``{inputs, targets, loss_mask, domain_ids}``
  as a tf.data pipeline (evaluation reads finite data with ``eval_batches``)."""
  _local_batch(feature_lengths, global_batch_size)
  if carries_domain(provider):
    ds = _get_dataset(provider, feature_lengths, split, shuffle=shuffle, seed=seed,
                      num_epochs=None)
  else:
    ds = _sampled_dataset(provider, feature_lengths, split, seed, shuffle=shuffle,
                          num_epochs=None)
  table = _domain_lookup(domains)

  def to_model_features(ex):
    targets = ex["targets"]
    return {
        "targets": targets,
        "inputs": tf.concat([tf.zeros([1], targets.dtype), targets[:-1]], axis=0),
        "loss_mask": tf.cast(targets > 0, tf.float32),
        "domain_ids": table.lookup(ex[domains_lib.DOMAIN_KEY]),
    }

  ds = seqio.utils.trim_and_pad_dataset(ds, {"targets": int(feature_lengths["targets"])})
  ds = ds.map(to_model_features, num_parallel_calls=tf.data.AUTOTUNE)
  ds = ds.batch(global_batch_size // jax.process_count(), drop_remainder=True)
  if skip_batches:
    ds = ds.skip(skip_batches)
  return ds.prefetch(tf.data.AUTOTUNE)


def _examples(task: seqio.Task, feature_lengths: Mapping[str, int], split: str,
              global_batch_size: int, limit: int | None) -> Iterator[tuple[np.ndarray, str]]:
  """(targets, domain) of this host's examples of ``split`` in order, at most ``limit``.

  A prepared domain's rows come straight from its shards, as its SeqIO source would yield
  them (host ``i`` of ``n`` takes rows ``i, i + n, ...``, as ``seqio.ShardInfo`` does)."""
  source = prepared_source.prepared_source(task)
  if source is None:
    _local_batch(feature_lengths, global_batch_size)
    ds = task_sequences(task, feature_lengths, split, shuffle=False, seed=None, num_epochs=1)
    if limit:
      ds = ds.take(limit)
    for ex in ds.as_numpy_iterator():
      yield ex["targets"], ex[domains_lib.DOMAIN_KEY].decode()
    return
  if split not in source.splits:
    raise errors.DoremiError(f"{task.name!r} split {split!r}: not one of {source.splits}")
  rows = source.corpus.sequences(source.domain, split)
  index = range(jax.process_index(), len(rows), jax.process_count())[:limit or None]
  for start in range(0, len(index), 256):
    for row in rows.read_rows(index[start:start + 256]):
      yield row, task.name


def eval_batches(task: seqio.Task, feature_lengths: Mapping[str, int], split: str,
                 global_batch_size: int, domains: Sequence[str],
                 max_batches: int | None = None) -> Iterator[dict[str, np.ndarray]]:
  """This host's batches of one domain Task's ``split``, unshuffled and once, as numpy:
  at most ``max_batches``, the last one padded with masked rows (``loss_mask`` 0).

  Built in numpy, not as a tf.data pipeline: a short run evaluates every domain of two
  splits many times, and tracing a pipeline's maps cost more than reading its batches."""
  local_batch = _local_batch(feature_lengths, global_batch_size)
  length = int(feature_lengths["targets"])
  ids = {d: i for i, d in enumerate(domains)}
  examples = _examples(task, feature_lengths, split, global_batch_size,
                       max_batches * local_batch if max_batches else None)
  while True:
    chunk = list(itertools.islice(examples, local_batch))
    if not chunk:
      return
    targets = np.zeros((local_batch, length), np.int32)
    domain_ids = np.zeros(local_batch, np.int32)
    for row, (tokens, domain) in enumerate(chunk):
      tokens = tokens[:length]
      targets[row, :len(tokens)] = tokens
      domain_ids[row] = ids.get(domain, -1)
    yield grain_input.model_features(targets, domain_ids)


def global_batches(local_batches: Iterable[Mapping[str, np.ndarray]],
                   shardings: Mapping[str, jax.sharding.Sharding],
                   copy: bool = False) -> Iterator[dict[str, jax.Array]]:
  """Turns each host-local numpy batch into sharded global arrays (async device put).

  ``copy=True`` for batches that are kept: tf.data may reuse a yielded array's memory,
  which a CPU device array can share, so a kept batch would change under us."""
  for local in local_batches:
    if (local["domain_ids"] < 0).any():
      raise errors.DoremiError(
          "a batch holds an example whose domain is not in the run's domain list")
    yield {k: jax.make_array_from_process_local_data(shardings[k],
                                                     np.array(v) if copy else np.asarray(v))
           for k, v in local.items()}


def check_vocabulary(provider: seqio.Task | seqio.Mixture, model_vocab_size: int) -> int:
  """The mixture's vocabulary must fit the model's embedding table."""
  vocab = provider.output_features["targets"].vocabulary
  size = int(vocab.vocab_size)
  if size > model_vocab_size:
    raise errors.DoremiError(
        f"vocabulary mismatch: {provider.name!r} has {size} tokens but the model's "
        f"vocab_size is {model_vocab_size}")
  return size

