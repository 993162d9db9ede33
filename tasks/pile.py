"""The Pile's 22 domains from local ``*.jsonl.zst`` files, plus the paper's weight tables.

    register_pile("/data/pile")  # or a glob: "/data/pile/train/0[0-3].jsonl.zst"

Each line is ``{"text": ..., "meta": {"pile_set_name": <domain>}}``. Files whose name
starts with ``val`` are the validation split and ``test*`` files the test split; without
them, documents are split by hash like any corpus (``VALIDATION_FRACTION``).
Every domain Task scans all files and keeps its own documents, so this suits local
slices of the Pile; for all of it, cache the Tasks with SeqIO first.

Registered: ``pile_<domain>`` Tasks, ``pile_baseline`` (the paper's baseline weights),
``pile_doremi_280m`` (the paper's DoReMi 280M weights) and ``pile_uniform``. With gin,
``gin/experiments/pile.gin`` binds ``register_pile.pile_dir`` to ``PILE_DIR``.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import gin
import seqio

from doremi_jax import mixtures
from doremi_jax.corpora.pile_format import (  # noqa: F401  (re-exported)
  NAMED_MIXTURES,
  PILE_BASELINE_WEIGHTS,
  PILE_DOMAINS,
  PILE_DOREMI_280M_WEIGHTS,
  iter_pile,
  pile_files,
  split_files,
)
from doremi_jax.data import corpus_reader, corpus_stats, domains, tokenizer
from doremi_jax.tasks import corpus, prepared

PREFIX = "pile"


def task_name(domain: str, prefix: str = PREFIX) -> str:
  """``"Gutenberg (PG-19)"`` -> ``"pile_gutenberg_pg_19"``."""
  return f"{prefix}_{corpus_reader.sanitize(domain)}"


def iter_domain(splits: dict[str, list[Path]], domain: str, split: str,
                validation_fraction: float) -> Iterator[str]:
  """One domain's documents of one split."""
  by_hash = not splits["validation"]
  for name, text in iter_pile(splits["train"] if by_hash else splits[split]):
    if name == domain and (not by_hash or
                           corpus_reader.split_of(text, validation_fraction) == split):
      yield text


@gin.configurable
def register_pile(pile_dir: str = gin.REQUIRED, prefix: str = PREFIX,
                  vocabulary: str = tokenizer.SENTENCEPIECE,
                  vocab_size: int = tokenizer.DEFAULT_VOCAB_SIZE,
                  validation_fraction: float = 0.05,
                  sample_chars: int = tokenizer.DEFAULT_SAMPLE_CHARS,
                  model_vocab_size: int | None = None) -> list[str]:
  """Registers the 22 domain Tasks and the published mixtures; returns task names."""
  pile_dir = os.path.abspath(os.path.expanduser(pile_dir))
  vocabulary = corpus.resolve_vocabulary(vocabulary)
  prefix = corpus_reader.sanitize(prefix)
  files = pile_files(pile_dir)
  splits = split_files(files)
  root = Path(os.path.commonpath([str(f.parent) for f in files]))
  # Size + mtime, not content: hashing the whole Pile at every start would take hours.
  fp = corpus_reader.fingerprint(splits["train"], root, content=False)
  if vocabulary == tokenizer.SENTENCEPIECE:
    def documents() -> Iterator[tuple[str, str]]:
      for name, text in iter_pile(splits["train"]):
        if splits["validation"] or corpus_reader.split_of(text, validation_fraction) == "train":
          yield name, text

    model = tokenizer.ensure_sentencepiece(
        tokenizer.default_tokenizer_dir(str(root), fp), vocab_size,
        {d: fp for d in PILE_DOMAINS}, documents, sample_chars,
        settings={"validation_fraction": validation_fraction,
                  "splits": corpus_stats.SPLIT_SCHEME})
    vocab = tokenizer.load_vocabulary(model)
  else:
    vocab = tokenizer.load_vocabulary(vocabulary)
  names = []
  for domain in PILE_DOMAINS:
    source = seqio.FunctionDataSource(corpus.text_dataset_fn(
        lambda split, d=domain: iter_domain(splits, d, split, validation_fraction)),
        splits=corpus_reader.SPLITS)
    names.append(domains.register_domain_task(task_name(domain, prefix), source, vocab).name)
  for suffix, table in NAMED_MIXTURES.items():
    mixtures.register_mixture(f"{prefix}_{suffix}",
                               {task_name(d, prefix): w for d, w in table.items()})
  mixtures.register_uniform_mixture(f"{prefix}_uniform", names)
  names = sorted(names)
  mixtures.record_spec(names, register_pile, dict(
      pile_dir=pile_dir, prefix=prefix, vocabulary=vocabulary, vocab_size=vocab_size,
      validation_fraction=validation_fraction, sample_chars=sample_chars),
      path_args=("pile_dir", "vocabulary"), data={"train_files": fp})
  corpus.check_model_vocab(names[0], model_vocab_size)
  return names


@gin.configurable
def register_pile_prepared(prepared_dir: str = gin.REQUIRED, prefix: str = PREFIX,
                           model_vocab_size: int | None = None) -> list[str]:
  """The Pile prepared by ``doremi-corpus prepare --source=pile:DIR``: its domain Tasks,
  ``<prefix>_natural`` (its train token counts), ``<prefix>_uniform`` and the paper's
  ``<prefix>_baseline`` / ``<prefix>_doremi_280m`` over the domains it holds."""
  names = prepared.register_prepared(prepared_dir, prefix, model_vocab_size=model_vocab_size)
  held = set(names)
  for suffix, table in NAMED_MIXTURES.items():
    rates = {task_name(d, prefix): w for d, w in table.items() if task_name(d, prefix) in held}
    if rates:
      mixtures.register_mixture(f"{prefix}_{suffix}", rates)
  return names
