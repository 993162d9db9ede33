"""Any corpus directory as DoReMi domains: one SeqIO Task per domain plus two Mixtures.

    register_corpus("/data/my_corpus", prefix="mine")
    # -> tasks mine_<domain> (train/validation), mixtures mine_baseline, mine_uniform

Layouts (see ``doremi_jax.corpus_reader``): ``DIR/<domain>.jsonl[.gz|.zst]`` files with
a ``text`` field, or ``DIR/<domain>/`` folders of ``.jsonl``/``.txt`` files. Documents
are split per document (hash of the text, ``validation_fraction``), tokenized with a
SentencePiece model trained on the train split (or bytes), EOS-joined and packed within
their domain. The baseline mixture's rates are the domains' train token counts.

Documents are streamed from the files by a ``seqio.FunctionDataSource`` on every pass:
fine for corpora of tens to hundreds of MB; cache the Tasks (``seqio`` cache) for more.

With gin (``gin/experiments/corpus.gin``), importing this module registers the corpus
named by ``CORPUS_DIR`` (plus ``CORPUS_PREFIX``, ``VOCABULARY``, ``TOKENIZER_VOCAB_SIZE``,
``VALIDATION_FRACTION``, ``TOKENIZER_SAMPLE_CHARS``; ``VOCAB_SIZE`` is checked
against the tokenizer).
"""
from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import seqio
import tensorflow as tf

from doremi_jax import corpus_reader, corpus_stats, errors, gin_utils, tasks_lib, tokenizer


def _dataset_fn(files: Sequence[Path], validation_fraction: float):
  def dataset_fn(split: str, shuffle_files: bool, seed: int | None = None) -> tf.data.Dataset:
    def gen() -> Iterator[str]:
      yield from corpus_reader.iter_split(files, split, validation_fraction)

    ds = tf.data.Dataset.from_generator(gen, output_signature=tf.TensorSpec([], tf.string))
    if shuffle_files:  # mixes neighbouring documents; seqio then shuffles packed chunks
      ds = ds.shuffle(256, seed=seed)
    return ds.map(lambda t: {"text": t})

  return dataset_fn


def register_text_domain(name: str, source: seqio.DataSource, vocab: seqio.Vocabulary,
                         text_key: str = "text") -> seqio.Task:
  """A domain Task over a text source whose documents sit in field ``text_key``."""
  if text_key == "text":
    return tasks_lib.register_domain_task(name, source, vocab)
  if name in seqio.TaskRegistry.names():
    seqio.TaskRegistry.remove(name)
  return seqio.TaskRegistry.add(
      name, source=source, output_features=tasks_lib.output_features(vocab), metric_fns=[],
      preprocessors=[functools.partial(seqio.preprocessors.rekey, key_map={"text": text_key}),
                     tasks_lib.tokenize_text,
                     functools.partial(tasks_lib.pack_within_domain, domain=name)])


def _statement(fn: str, *args, **kwargs) -> str:
  parts = [repr(a) for a in args] + [f"{k}={v!r}" for k, v in kwargs.items()]
  return f"import tasks.corpus; tasks.corpus.{fn}({', '.join(parts)})"


def register_corpus(corpus_dir: str, prefix: str = "corpus",
                    vocabulary: str = tokenizer.SENTENCEPIECE,
                    vocab_size: int = tokenizer.DEFAULT_VOCAB_SIZE,
                    validation_fraction: float = 0.05, baseline_name: str | None = None,
                    uniform_name: str | None = None,
                    sample_chars: int = tokenizer.DEFAULT_SAMPLE_CHARS) -> list[str]:
  """Registers ``<prefix>_<domain>`` Tasks, ``<prefix>_baseline`` (train token counts)
  and ``<prefix>_uniform``; returns the task names, sorted.

  ``vocabulary``: "sentencepiece" (a ``vocab_size`` model trained on the train split,
  cached), "bytes", or the path of an existing SentencePiece ``.model``.
  """
  corpus_dir = os.path.abspath(os.path.expanduser(corpus_dir))
  if vocabulary not in (tokenizer.SENTENCEPIECE, tokenizer.BYTES):
    vocabulary = os.path.abspath(os.path.expanduser(vocabulary))
  prefix = corpus_reader.sanitize(prefix)
  domains = corpus_reader.discover(corpus_dir)
  fps = corpus_reader.corpus_fingerprints(domains, corpus_dir)
  vocab, tok_dir = corpus_stats.corpus_vocabulary(
      corpus_dir, domains, fps, vocabulary, vocab_size, validation_fraction, sample_chars)
  stats = corpus_stats.domain_stats(domains, fps, vocab, validation_fraction, tok_dir)
  baseline_name = baseline_name or f"{prefix}_baseline"
  uniform_name = uniform_name or f"{prefix}_uniform"
  rates = corpus_stats.token_rates(stats, what=baseline_name)
  names: dict[str, str] = {}
  for domain, files in domains.items():
    source = seqio.FunctionDataSource(
        _dataset_fn(files, validation_fraction), splits=corpus_reader.SPLITS,
        num_input_examples={s: stats[domain][s]["documents"] for s in corpus_reader.SPLITS})
    names[domain] = register_text_domain(f"{prefix}_{domain}", source, vocab).name
  tasks_lib.register_mixture(baseline_name, {names[d]: r for d, r in rates.items()})
  tasks_lib.register_uniform_mixture(uniform_name, names.values())
  tasks_lib.record_provenance(names.values(), _statement(
      "register_corpus", corpus_dir, prefix=prefix, vocabulary=vocabulary,
      vocab_size=vocab_size, validation_fraction=validation_fraction,
      baseline_name=baseline_name, uniform_name=uniform_name, sample_chars=sample_chars))
  return sorted(names.values())


def register_tfds_domain(name: str, tfds_name: str, text_key: str = "text",
                         vocabulary: str = tokenizer.BYTES,
                         splits: Mapping[str, str] | None = None,
                         tfds_data_dir: str | None = None) -> seqio.Task:
  """A TFDS dataset (``"name/config:version"``) as one domain; ``splits`` maps our split
  names to TFDS's (default train/validation/test). ``vocabulary``: "bytes" or a ``.model`` path.
  Nothing is downloaded until the Task's data is read."""
  if vocabulary != tokenizer.BYTES:
    vocabulary = os.path.abspath(os.path.expanduser(vocabulary))
  vocab = tokenizer.load_vocabulary(vocabulary)
  splits = dict(splits or {"train": "train", "validation": "validation", "test": "test"})
  source = seqio.TfdsDataSource(tfds_name, tfds_data_dir=tfds_data_dir, splits=splits)
  task = register_text_domain(corpus_reader.sanitize(name), source, vocab, text_key)
  tasks_lib.record_provenance([task.name], _statement(
      "register_tfds_domain", name, tfds_name, text_key=text_key, vocabulary=vocabulary,
      splits=splits, tfds_data_dir=tfds_data_dir))
  return task


def register_from_gin(corpus_dir: str | None = None, prefix: str | None = None) -> list[str]:
  """Registers the corpus the gin macros describe (``CORPUS_DIR`` etc.); checks that
  ``VOCAB_SIZE`` (the model's) holds the tokenizer's ids."""
  corpus_dir = corpus_dir or gin_utils.macro_value("CORPUS_DIR")
  prefix = prefix or gin_utils.macro_value("CORPUS_PREFIX", "corpus")
  vocabulary, vocab_size, fraction, sample_chars = gin_settings()
  names = register_corpus(corpus_dir, prefix, vocabulary, vocab_size, fraction,
                          sample_chars=sample_chars)
  check_model_vocab(names[0])
  return names


def gin_settings() -> tuple[str, int, float, int]:
  """(vocabulary, tokenizer vocab size, validation fraction, sample chars) from gin."""
  model_vocab = gin_utils.macro_value("VOCAB_SIZE", None)
  return (gin_utils.macro_value("VOCABULARY", tokenizer.SENTENCEPIECE),
          int(gin_utils.macro_value("TOKENIZER_VOCAB_SIZE",
                                    model_vocab or tokenizer.DEFAULT_VOCAB_SIZE)),
          float(gin_utils.macro_value("VALIDATION_FRACTION", 0.05)),
          int(gin_utils.macro_value("TOKENIZER_SAMPLE_CHARS", tokenizer.DEFAULT_SAMPLE_CHARS)))


def check_model_vocab(task_name: str) -> None:
  """``VOCAB_SIZE`` (if bound) must cover the task's tokenizer."""
  model_vocab = gin_utils.macro_value("VOCAB_SIZE", None)
  if model_vocab is not None:
    vocab = errors.require_task(task_name).output_features[tasks_lib.TARGETS_KEY].vocabulary
    tokenizer.check_vocab_matches(int(model_vocab), vocab)


if gin_utils.macro_is_bound("CORPUS_DIR"):
  register_from_gin()
