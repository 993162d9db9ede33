"""Any corpus directory as DoReMi domains: one SeqIO Task per domain plus two Mixtures.

    register_corpus("/data/my_corpus", prefix="mine")
    # -> tasks mine_<domain> (train/validation/test), mixtures mine_baseline, mine_uniform

Layouts (see ``doremi_jax.data.corpus_reader``): ``DIR/<domain>.jsonl[.gz|.zst]`` files
with a ``text`` field, or ``DIR/<domain>/`` folders of ``.jsonl``/``.txt`` files. Documents
are split per document (hash of the text, ``validation_fraction``), tokenized with a
SentencePiece model trained on the train split (or bytes), EOS-joined and packed within
their domain. The baseline mixture's rates are the domains' train token counts.

Documents are streamed from the files by a ``seqio.FunctionDataSource`` on every pass:
fine for corpora of tens to hundreds of MB; cache the Tasks (``seqio`` cache) for more.

Registrars are gin configurables with explicit arguments; importing this module
registers nothing. ``gin/experiments/corpus.gin`` binds ``register_corpus`` from macros
(``CORPUS_DIR``, ``CORPUS_PREFIX``, ``VOCABULARY``, ``TOKENIZER_VOCAB_SIZE``, ...) and
lists it in ``register_tasks.registrars``.
"""
from __future__ import annotations

import os
from typing import Callable, Iterator, Mapping

import gin
import seqio
import tensorflow as tf

from doremi_jax import errors, mixtures
from doremi_jax.data import corpus_reader, corpus_stats, domains, tokenizer

TOKENIZER_ARGS = ("vocabulary", "vocab_size", "validation_fraction", "sample_chars")


def text_dataset_fn(documents: Callable[[str], Iterator[str]]):
  """A ``seqio.FunctionDataSource`` function over ``documents(split)``, re-read every pass."""
  def dataset_fn(split: str, shuffle_files: bool, seed: int | None = None) -> tf.data.Dataset:
    ds = tf.data.Dataset.from_generator(lambda: documents(split),
                                        output_signature=tf.TensorSpec([], tf.string))
    if shuffle_files:  # mixes neighbouring documents; seqio then shuffles packed chunks
      ds = ds.shuffle(256, seed=seed)
    return ds.map(lambda t: {"text": t})

  return dataset_fn


def resolve_vocabulary(vocabulary: str) -> str:
  """"sentencepiece" and "bytes" as they are; a ``.model`` path made absolute."""
  if vocabulary in (tokenizer.SENTENCEPIECE, tokenizer.BYTES):
    return vocabulary
  return os.path.abspath(os.path.expanduser(vocabulary))


def check_model_vocab(task_name: str, model_vocab_size: int | None) -> None:
  """The model's ``VOCAB_SIZE`` (when given) must hold every id of the task's tokenizer."""
  if model_vocab_size is not None:
    vocab = errors.require_task(task_name).output_features[domains.TARGETS_KEY].vocabulary
    tokenizer.check_vocab_matches(int(model_vocab_size), vocab)


@gin.configurable
def register_corpus(corpus_dir: str = gin.REQUIRED, prefix: str = "corpus",
                    vocabulary: str = tokenizer.SENTENCEPIECE,
                    vocab_size: int = tokenizer.DEFAULT_VOCAB_SIZE,
                    validation_fraction: float = 0.05, baseline_name: str | None = None,
                    uniform_name: str | None = None,
                    sample_chars: int = tokenizer.DEFAULT_SAMPLE_CHARS,
                    model_vocab_size: int | None = None,
                    skip_bad_lines: bool = False) -> list[str]:
  """Registers ``<prefix>_<domain>`` Tasks, ``<prefix>_baseline`` (train token counts)
  and ``<prefix>_uniform``; returns the task names, sorted.

  ``vocabulary``: "sentencepiece" (a ``vocab_size`` model trained on the train split,
  cached), "bytes", or the path of an existing SentencePiece ``.model``.
  ``skip_bad_lines`` (``SKIP_BAD_LINES``): lines that are not a JSON object with the
  document are skipped, and counted per file in one warning line each, instead of being
  an error.
  """
  corpus_dir = os.path.abspath(os.path.expanduser(corpus_dir))
  vocabulary = resolve_vocabulary(vocabulary)
  prefix = corpus_reader.sanitize(prefix)
  found = corpus_reader.discover(corpus_dir)
  fps = corpus_reader.corpus_fingerprints(found, corpus_dir)
  vocab, tok_dir = corpus_stats.corpus_vocabulary(
      corpus_dir, found, fps, vocabulary, vocab_size, validation_fraction, sample_chars,
      skip_bad_lines)
  stats = corpus_stats.domain_stats(found, fps, vocab, validation_fraction, tok_dir,
                                    skip_bad_lines)
  baseline_name = baseline_name or f"{prefix}_baseline"
  uniform_name = uniform_name or f"{prefix}_uniform"
  rates = mixtures.normalise(corpus_stats.token_counts(stats),
                             what=f"{baseline_name} (token counts of the train split)")
  names: dict[str, str] = {}
  for domain, paths in found.items():
    # Skipped lines are counted (and reported) by domain_stats, not on every pass.
    source = seqio.FunctionDataSource(
        text_dataset_fn(lambda split, p=paths: corpus_reader.iter_split(
            p, split, validation_fraction,
            corpus_reader.BadLines() if skip_bad_lines else None)),
        splits=corpus_reader.SPLITS,
        num_input_examples={s: stats[domain][s]["documents"] for s in corpus_reader.SPLITS})
    names[domain] = domains.register_domain_task(f"{prefix}_{domain}", source, vocab).name
  mixtures.register_mixture(baseline_name, {names[d]: r for d, r in rates.items()})
  mixtures.register_uniform_mixture(uniform_name, names.values())
  task_names = sorted(names.values())
  mixtures.record_spec(task_names, register_corpus, dict(
      corpus_dir=corpus_dir, prefix=prefix, vocabulary=vocabulary, vocab_size=vocab_size,
      validation_fraction=validation_fraction, baseline_name=baseline_name,
      uniform_name=uniform_name, sample_chars=sample_chars,
      **({"skip_bad_lines": True} if skip_bad_lines else {})),
      path_args=("corpus_dir", "vocabulary"), data=fps)
  check_model_vocab(task_names[0], model_vocab_size)
  return task_names


@gin.configurable
def register_tfds_domain(name: str = gin.REQUIRED, tfds_name: str = gin.REQUIRED,
                         text_key: str = "text", vocabulary: str = tokenizer.BYTES,
                         splits: Mapping[str, str] | None = None,
                         tfds_data_dir: str | None = None) -> list[str]:
  """A TFDS dataset (``"name/config:version"``) as one domain; ``splits`` maps our split
  names to TFDS's (default train/validation/test). ``vocabulary``: "bytes" or a ``.model``
  path. Nothing is downloaded until the Task's data is read. Returns ``[task name]``."""
  vocabulary = resolve_vocabulary(vocabulary)
  vocab = tokenizer.load_vocabulary(vocabulary)
  splits = dict(splits or {"train": "train", "validation": "validation", "test": "test"})
  source = seqio.TfdsDataSource(tfds_name, tfds_data_dir=tfds_data_dir, splits=splits)
  task = domains.register_domain_task(corpus_reader.sanitize(name), source, vocab,
                                      text_key=text_key)
  mixtures.record_spec([task.name], register_tfds_domain, dict(
      name=name, tfds_name=tfds_name, text_key=text_key, vocabulary=vocabulary, splits=splits,
      tfds_data_dir=tfds_data_dir), path_args=("vocabulary",))
  return [task.name]


def register_generated(registrar: Callable, corpus_dir: str, prefix: str,
                       settings: Mapping[str, object], tokenizer_args: Mapping[str, object],
                       model_vocab_size: int | None) -> list[str]:
  """A corpus written by code (embedded, synthetic text) registered like any corpus dir,
  with ``registrar(**settings, **tokenizer_args)`` recorded as the way to rebuild it."""
  names = register_corpus(corpus_dir, prefix, model_vocab_size=model_vocab_size,
                          **tokenizer_args)
  mixtures.record_spec(names, registrar, {**settings, **tokenizer_args},
                       path_args=("corpus_dir", "vocabulary"),
                       data=(mixtures.spec_of(names[0]) or {}).get("data"))
  return names


def tokenizer_kwargs(vocabulary: str, vocab_size: int, validation_fraction: float,
                     sample_chars: int) -> dict[str, object]:
  return dict(zip(TOKENIZER_ARGS, (resolve_vocabulary(vocabulary), vocab_size,
                                   validation_fraction, sample_chars)))

