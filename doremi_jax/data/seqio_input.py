"""SeqIO -> global jax.Arrays with domain ids, for one or many hosts.

Each host reads its own shard of the SeqIO dataset (``seqio.ShardInfo``), batches
``global_batch / process_count`` examples and contributes them to a global
array with ``jax.make_array_from_process_local_data``. Decoder-only features:
``inputs`` is ``targets`` shifted right (0 = BOS/pad), ``loss_mask`` marks
non-padding targets, ``domain_ids`` indexes the mixture's sorted subtasks.
"""
from __future__ import annotations

import os
from typing import Iterator, Mapping, Sequence

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import doremi_jax  # noqa: E402

doremi_jax.import_tensorflow_quietly()
import jax  # noqa: E402
import numpy as np  # noqa: E402
import seqio  # noqa: E402
import tensorflow as tf  # noqa: E402

from doremi_jax import errors  # noqa: E402
from doremi_jax.data import domains as domains_lib  # noqa: E402


def _domain_lookup(domains: Sequence[str]) -> tf.lookup.StaticHashTable:
  init = tf.lookup.KeyValueTensorInitializer(
      tf.constant(list(domains)), tf.range(len(domains), dtype=tf.int32))
  return tf.lookup.StaticHashTable(init, default_value=-1)


def _pad_batch(batch: dict[str, tf.Tensor], size: int) -> dict[str, tf.Tensor]:
  """Pads a short final batch to ``size`` rows; padded rows have ``loss_mask`` 0."""
  def pad(x):
    missing = size - tf.shape(x)[0]
    padded = tf.pad(x, [[0, missing]] + [[0, 0]] * (len(x.shape) - 1))
    return tf.ensure_shape(padded, [size] + x.shape[1:].as_list())
  return {k: pad(v) for k, v in batch.items()}


def seqio_dataset(provider: seqio.Task | seqio.Mixture, feature_lengths: Mapping[str, int],
                  split: str, global_batch_size: int, domains: Sequence[str], shuffle: bool = True,
                  seed: int | None = 0, num_epochs: int | None = None,
                  skip_batches: int = 0) -> tf.data.Dataset:
  """This host's batches of ``{inputs, targets, loss_mask, domain_ids}`` as a tf.data pipeline."""
  if "targets" not in feature_lengths:
    raise errors.DoremiError(
        f"TASK_FEATURE_LENGTHS needs a 'targets' length, got {dict(feature_lengths)}")
  n_proc = jax.process_count()
  if global_batch_size % n_proc:
    raise errors.DoremiError(f"batch size {global_batch_size} does not divide over {n_proc} hosts")
  shard = seqio.ShardInfo(index=jax.process_index(), num_shards=n_proc) if n_proc > 1 else None
  try:
    ds = provider.get_dataset(dict(feature_lengths), split=split, shuffle=shuffle, seed=seed,
                              num_epochs=num_epochs, shard_info=shard)
  except ValueError as exc:
    raise errors.DoremiError(f"{provider.name!r} split {split!r}: {exc}") from None
  if domains_lib.DOMAIN_KEY not in ds.element_spec:
    raise errors.DoremiError(
        f"{provider.name!r} examples carry no '{domains_lib.DOMAIN_KEY}' feature; "
        "register domains with doremi_jax.data.domains.register_domain_task")
  length = int(feature_lengths["targets"])
  table = _domain_lookup(domains)

  def to_model_features(ex):
    targets = ex["targets"]
    return {
        "targets": targets,
        "inputs": tf.concat([tf.zeros([1], targets.dtype), targets[:-1]], axis=0),
        "loss_mask": tf.cast(targets > 0, tf.float32),
        "domain_ids": table.lookup(ex[domains_lib.DOMAIN_KEY]),
    }

  ds = seqio.utils.trim_and_pad_dataset(ds, {"targets": length})
  ds = ds.map(to_model_features, num_parallel_calls=tf.data.AUTOTUNE)
  local_batch = global_batch_size // n_proc
  if num_epochs is None:
    ds = ds.batch(local_batch, drop_remainder=True)
  else:  # finite (evaluation) data: keep the last partial batch, padded with masked rows
    ds = ds.batch(local_batch).map(lambda b: _pad_batch(b, local_batch))
  if skip_batches:
    ds = ds.skip(skip_batches)
  return ds.prefetch(tf.data.AUTOTUNE)


def global_batches(ds: tf.data.Dataset, shardings: Mapping[str, jax.sharding.Sharding],
                   copy: bool = False) -> Iterator[dict[str, jax.Array]]:
  """Turns each host-local numpy batch into sharded global arrays (async device put).

  ``copy=True`` for batches that are kept: tf.data may reuse a yielded array's memory,
  which a CPU device array can share, so a kept batch would change under us."""
  for local in ds.as_numpy_iterator():
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

