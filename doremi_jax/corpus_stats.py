"""A corpus dir's tokenizer and per-domain sizes (documents, characters, tokens per split).

Token counts run the documents through ``tasks_lib.tokenize_text`` - the same step a
domain Task applies - and add one EOS per document, so they are the sizes of the
tokenized Tasks. They are cached in ``<tokenizer dir>/token_counts.json`` under a key
made of the domain's sha256, the tokenizer's sha256 and the validation fraction.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Iterable, Iterator, Mapping, Sequence

import numpy as np
import seqio

from doremi_jax import corpus_reader, errors, tasks_lib, tokenizer

SplitStats = dict[str, int]  # documents, characters, tokens
DomainStats = dict[str, SplitStats]  # split -> SplitStats
COUNTS_FILE = "token_counts.json"
SPLIT_SCHEME = "train/validation/test"  # part of cache keys: the splits decide what is counted


def corpus_vocabulary(corpus_dir: str, domains: Mapping[str, Sequence[Path]],
                      fingerprints: Mapping[str, str], vocabulary: str = tokenizer.SENTENCEPIECE,
                      vocab_size: int = tokenizer.DEFAULT_VOCAB_SIZE,
                      validation_fraction: float = 0.05,
                      sample_chars: int = tokenizer.DEFAULT_SAMPLE_CHARS
                      ) -> tuple[seqio.Vocabulary, Path]:
  """(vocabulary, tokenizer dir) for a corpus; ``vocabulary`` is "sentencepiece" (trained
  on the train split and cached), "bytes", or the path of an existing ``.model``."""
  key = hashlib.sha256(json.dumps(sorted(fingerprints.items())).encode()).hexdigest()
  tok_dir = tokenizer.default_tokenizer_dir(corpus_dir, key)
  if vocabulary != tokenizer.SENTENCEPIECE:
    return tokenizer.load_vocabulary(vocabulary), tok_dir

  def documents() -> Iterator[tuple[str, str]]:
    for name, files in domains.items():
      for text in corpus_reader.iter_split(files, "train", validation_fraction):
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
  ds = tasks_lib.tokenize_text(ds.map(lambda t: {"text": t}), tasks_lib.output_features(vocab))
  ds = ds.map(lambda ex: tf.size(ex[tasks_lib.TARGETS_KEY], out_type=tf.int64)).batch(4096)
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
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
      json.dump(data, f, indent=1, sort_keys=True)
    os.replace(tmp, path)
  except OSError:
    pass  # a read-only location: counts are recomputed next time


def domain_stats(domains: Mapping[str, Sequence[Path]], fingerprints: Mapping[str, str],
                 vocab: seqio.Vocabulary, validation_fraction: float, tokenizer_dir: Path
                 ) -> dict[str, DomainStats]:
  """Per-domain, per-split sizes, computed once per (domain, tokenizer, fraction)."""
  cache_path = Path(tokenizer_dir) / COUNTS_FILE
  cache = _load_cache(cache_path)
  vocab_sha = tokenizer.vocabulary_sha256(vocab)
  out: dict[str, DomainStats] = {}
  dirty = False
  for name, files in domains.items():
    key = hashlib.sha256(
        f"{fingerprints[name]}:{vocab_sha}:{validation_fraction!r}:{SPLIT_SCHEME}".encode()
    ).hexdigest()
    stats = cache["entries"].get(key)
    if stats is None:
      stats = {split: count_tokens(corpus_reader.iter_split(files, split, validation_fraction),
                                   vocab) for split in corpus_reader.SPLITS}
      cache["entries"][key] = stats
      dirty = True
    if sum(s["documents"] for s in stats.values()) == 0:
      raise errors.DoremiError(f"domain {name!r} has no documents ({', '.join(map(str, files))})")
    out[name] = stats
  if dirty:
    _save_cache(cache_path, cache)
  return out


def token_rates(stats: Mapping[str, DomainStats], split: str = "train",
                what: str = "baseline mixture") -> dict[str, float]:
  """Mixing rates proportional to each domain's token count (validated, normalised)."""
  rates = {name: float(s[split]["tokens"]) for name, s in stats.items()}
  tasks_lib.check_rates(rates, what=f"{what} (token counts of the {split} split)")
  total = sum(rates.values())
  return {k: v / total for k, v in rates.items()}
