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

import glob
import os
from pathlib import Path
from typing import Iterator, Sequence

import gin
import seqio

from doremi_jax import errors, mixtures
from doremi_jax.data import corpus_reader, corpus_stats, domains, tokenizer
from doremi_jax.tasks import corpus

PREFIX = "pile"
# Published weights (DoReMi paper; figures in doremi_reference.md). Each column sums
# to 1.0001 as published (rounding); mixtures are normalised when registered.
PILE_BASELINE_WEIGHTS: dict[str, float] = {
    "Pile-CC": 0.1121, "PubMed Central": 0.1071, "Books3": 0.0676, "OpenWebText2": 0.1247,
    "ArXiv": 0.1052, "Github": 0.0427, "FreeLaw": 0.0386, "StackExchange": 0.0929,
    "USPTO Backgrounds": 0.0420, "PubMed Abstracts": 0.0845, "Gutenberg (PG-19)": 0.0199,
    "OpenSubtitles": 0.0124, "Wikipedia (en)": 0.0919, "DM Mathematics": 0.0198,
    "Ubuntu IRC": 0.0074, "BookCorpus2": 0.0044, "EuroParl": 0.0043, "HackerNews": 0.0075,
    "YoutubeSubtitles": 0.0042, "PhilPapers": 0.0027, "NIH ExPorter": 0.0052,
    "Enron Emails": 0.0030,
}
PILE_DOREMI_280M_WEIGHTS: dict[str, float] = {
    "Pile-CC": 0.6057, "PubMed Central": 0.0046, "Books3": 0.0224, "OpenWebText2": 0.1019,
    "ArXiv": 0.0036, "Github": 0.0179, "FreeLaw": 0.0043, "StackExchange": 0.0153,
    "USPTO Backgrounds": 0.0036, "PubMed Abstracts": 0.0113, "Gutenberg (PG-19)": 0.0072,
    "OpenSubtitles": 0.0047, "Wikipedia (en)": 0.0699, "DM Mathematics": 0.0018,
    "Ubuntu IRC": 0.0093, "BookCorpus2": 0.0061, "EuroParl": 0.0062, "HackerNews": 0.0134,
    "YoutubeSubtitles": 0.0502, "PhilPapers": 0.0274, "NIH ExPorter": 0.0063,
    "Enron Emails": 0.0070,
}
PILE_DOMAINS: tuple[str, ...] = tuple(PILE_BASELINE_WEIGHTS)
NAMED_MIXTURES = {"baseline": PILE_BASELINE_WEIGHTS, "doremi_280m": PILE_DOREMI_280M_WEIGHTS}


def task_name(domain: str, prefix: str = PREFIX) -> str:
  """``"Gutenberg (PG-19)"`` -> ``"pile_gutenberg_pg_19"``."""
  return f"{prefix}_{corpus_reader.sanitize(domain)}"


def pile_files(pile_dir: str) -> list[Path]:
  """The ``*.jsonl.zst`` files under a directory (recursively) or matching a glob."""
  path = os.path.expanduser(pile_dir)
  if os.path.isdir(path):
    files = sorted(Path(path).rglob("*.jsonl.zst"))
  else:
    files = sorted(Path(p) for p in glob.glob(path, recursive=True) if p.endswith(".jsonl.zst"))
  if not files:
    raise errors.DoremiError(f"no Pile *.jsonl.zst files at {pile_dir!r}")
  return files


def split_files(files: Sequence[Path]) -> dict[str, list[Path]]:
  """train/validation/test files (``val*``, ``test*``); without ``val*`` files every split
  is taken from the train files by document hash (``corpus_reader.split_of``)."""
  val = [f for f in files if f.name.startswith("val")]
  test = [f for f in files if f.name.startswith("test")]
  train = [f for f in files if f not in val and f not in test]
  if not train:
    raise errors.DoremiError("no Pile training files (only val*/test* files found)")
  if val and not test:
    raise errors.DoremiError("Pile val* files without test* files: add the test files, or "
                             "remove both to split the train files by document hash")
  return {"train": train, "validation": val, "test": test}


def iter_pile(files: Sequence[Path]) -> Iterator[tuple[str, str]]:
  """(pile_set_name, text) for each document."""
  for path in files:
    for lineno, obj in corpus_reader.iter_json_lines(path):
      text, meta = obj.get("text"), obj.get("meta") or {}
      name = meta.get("pile_set_name") if isinstance(meta, dict) else None
      if not isinstance(text, str) or not isinstance(name, str):
        raise errors.DoremiError(f"{path}:{lineno}: expected 'text' and 'meta.pile_set_name'")
      if text.strip():
        yield name, text


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
      path_args=("pile_dir", "vocabulary"))
  corpus.check_model_vocab(names[0], model_vocab_size)
  return names
