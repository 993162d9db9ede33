"""A domain of a prepared corpus as a SeqIO data source (no preprocessing at train time).

``PreparedDataSource`` keeps its corpus and domain, so the training input can read a
mixture of prepared Tasks by index through grain (``run/training_input.py``) instead of
streaming it through tf.data.
"""
from __future__ import annotations

from typing import Iterator

import doremi_jax

doremi_jax.import_tensorflow_quietly()
import numpy as np  # noqa: E402
import seqio  # noqa: E402
import tensorflow as tf  # noqa: E402

from doremi_jax.data import domains, prepared_corpus  # noqa: E402


def _dataset_fn(corpus: prepared_corpus.PreparedCorpus, domain: str, task_name: str):
  length = corpus.sequence_length

  def dataset_fn(split: str, shuffle_files: bool, seed: int | None = None) -> tf.data.Dataset:
    paths = corpus.shard_paths(domain, split)
    if shuffle_files:  # shard order only; seqio shuffles the sequences themselves
      paths = [paths[i] for i in np.random.default_rng(seed).permutation(len(paths))]

    def gen() -> Iterator[np.ndarray]:
      for path in paths:
        yield from prepared_corpus.DomainSequences([path], length, corpus.version)

    ds = tf.data.Dataset.from_generator(gen, output_signature=tf.TensorSpec([length], tf.int32))
    return ds.map(lambda t: {domains.TARGETS_KEY: t, domains.DOMAIN_KEY: task_name})

  return dataset_fn


class PreparedDataSource(seqio.FunctionDataSource):
  """A domain's shards as a SeqIO source. It keeps the corpus and domain (the grain input
  reads them) and, like SeqIO's file sources, a file pattern per split (the MaxText export
  lists it)."""

  def __init__(self, corpus: prepared_corpus.PreparedCorpus, domain: str, task_name: str):
    super().__init__(_dataset_fn(corpus, domain, task_name), splits=prepared_corpus.SPLITS,
                     num_input_examples={s: corpus.num_sequences(domain, s)
                                         for s in prepared_corpus.SPLITS})
    self.corpus, self.domain = corpus, domain
    self._split_to_filepattern = {s: corpus.shard_pattern(domain, s)
                                  for s in prepared_corpus.SPLITS}


def prepared_source(task: seqio.Task) -> PreparedDataSource | None:
  source = task.source
  return source if isinstance(source, PreparedDataSource) else None
