"""A corpus dir's tokenizer and per-domain sizes (documents, characters, tokens per split).

Token counts run the documents through ``domains.tokenize_text`` - the same step a
domain Task applies - and add one EOS per document, so they are the sizes of the
tokenized Tasks. They are cached in ``<tokenizer dir>/token_counts.json`` under a key
made of the domain's sha256, the tokenizer's sha256 and the validation fraction.
"""
from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Iterable, Iterator, Mapping, Sequence

import numpy as np
import seqio

from doremi_jax import errors, storage
from doremi_jax.data import corpus_reader, domains, tokenizer

SplitStats = dict[str, int]  # documents, characters, tokens
DomainStats = dict[str, SplitStats]  # split -> SplitStats
COUNTS_FILE = "token_counts.json"
SPLIT_SCHEME = "train/validation/test"  # part of cache keys: the splits decide what is counted


def corpus_vocabulary(corpus_dir: str, domains: Mapping[str, Sequence[Path]],
                      fingerprints: Mapping[str, str], vocabulary: str = tokenizer.SENTENCEPIECE,
                      vocab_size: int = tokenizer.DEFAULT_VOCAB_SIZE,
                      validation_fraction: float = 0.05,
                      sample_chars: int = tokenizer.DEFAULT_SAMPLE_CHARS,
                      skip_bad_lines: bool = False) -> tuple[seqio.Vocabulary, Path]:
  """(vocabulary, tokenizer dir) for a corpus; ``vocabulary`` is "sentencepiece" (trained
  on the train split and cached), "bytes", or the path of an existing ``.model``."""
  bad = corpus_reader.BadLines() if skip_bad_lines else None  # counted by domain_stats
  key = hashlib.sha256(json.dumps(sorted(fingerprints.items())).encode()).hexdigest()
  tok_dir = tokenizer.default_tokenizer_dir(corpus_dir, key)
  if vocabulary != tokenizer.SENTENCEPIECE:
    return tokenizer.load_vocabulary(vocabulary), tok_dir

  def documents() -> Iterator[tuple[str, str]]:
    for name, files in domains.items():
      for text in corpus_reader.iter_split(files, "train", validation_fraction, bad):
        yield name, text

  path = tokenizer.ensure_sentencepiece(
      tok_dir, vocab_size, fingerprints, documents, sample_chars,
      settings={"validation_fraction": validation_fraction, "splits": SPLIT_SCHEME})
  return tokenizer.load_vocabulary(path), tok_dir


def count_tokens(texts: Iterable[str], vocab: seqio.Vocabulary) -> SplitStats:
  """Documents, characters and tokens (one EOS per document included) of ``texts``."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  chars = [0]
  failure: list[errors.DoremiError] = []

  def gen() -> Iterator[str]:
    try:
      for text in texts:
        chars[0] += len(text)
        yield text
    except errors.DoremiError as exc:  # e.g. a bad JSON line: keep it one line, not a TF error
      failure.append(exc)
      raise

  ds = tf.data.Dataset.from_generator(gen, output_signature=tf.TensorSpec([], tf.string))
  ds = domains.tokenize_text(ds.map(lambda t: {"text": t}), domains.output_features(vocab))
  ds = ds.map(lambda ex: tf.size(ex[domains.TARGETS_KEY], out_type=tf.int64)).batch(4096)
  docs = tokens = 0
  try:
    for sizes in ds.as_numpy_iterator():
      docs += len(sizes)
      tokens += int(np.sum(sizes)) + len(sizes)
  except tf.errors.OpError:
    if failure:
      raise failure[0] from None
    raise
  return {"documents": docs, "characters": chars[0], "tokens": tokens}


def _load_cache(path: Path) -> dict:
  try:
    data = json.loads(path.read_text("utf-8"))
    return data if data.get("version") == 1 else {"version": 1, "entries": {}}
  except (OSError, ValueError, AttributeError):
    return {"version": 1, "entries": {}}


def _save_cache(path: Path, data: dict) -> None:
  try:
    storage.write_atomic(path, json.dumps(data, indent=1, sort_keys=True))
  except OSError:
    pass  # a read-only location: counts are recomputed next time


def domain_stats(domains: Mapping[str, Sequence[Path]], fingerprints: Mapping[str, str],
                 vocab: seqio.Vocabulary, validation_fraction: float, tokenizer_dir: Path,
                 skip_bad_lines: bool = False) -> dict[str, DomainStats]:
  """Per-domain, per-split sizes, computed once per (domain, tokenizer, fraction). When
  skipping bad lines, their count per file is kept with the sizes (``bad_lines`` of the
  cache) and printed as one warning line per file, on every call."""
  cache_path = Path(tokenizer_dir) / COUNTS_FILE
  cache = _load_cache(cache_path)
  vocab_sha = tokenizer.vocabulary_sha256(vocab)
  out: dict[str, DomainStats] = {}
  dirty = False
  for name, files in domains.items():
    key = hashlib.sha256(
        f"{fingerprints[name]}:{vocab_sha}:{validation_fraction!r}:{SPLIT_SCHEME}"
        f"{':skip_bad_lines' if skip_bad_lines else ''}".encode()).hexdigest()
    stats = cache["entries"].get(key)
    if stats is None:
      # Every split reads every line: each split counts them, the train split's count is kept.
      bad = {s: corpus_reader.BadLines() for s in corpus_reader.SPLITS} if skip_bad_lines else {}
      stats = {split: count_tokens(corpus_reader.iter_split(files, split, validation_fraction,
                                                            bad.get(split)), vocab)
               for split in corpus_reader.SPLITS}
      cache["entries"][key] = stats
      if bad:
        cache.setdefault("bad_lines", {})[key] = bad["train"].files
      dirty = True
    for line in corpus_reader.warnings(cache.get("bad_lines", {}).get(key, {})):
      print(line, file=sys.stderr, flush=True)
    if sum(s["documents"] for s in stats.values()) == 0:
      raise errors.DoremiError(f"domain {name!r} has no documents ({', '.join(map(str, files))})")
    out[name] = stats
  if dirty:
    _save_cache(cache_path, cache)
  return out


def token_counts(stats: Mapping[str, DomainStats], split: str = "train") -> dict[str, float]:
  """Each domain's token count in ``split``: the baseline mixture's rates, before
  ``mixtures.normalise`` validates and normalises them."""
  return {name: float(s[split]["tokens"]) for name, s in stats.items()}
