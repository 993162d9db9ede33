"""A prepared corpus (the output of ``doremi-corpus prepare``): its manifest and its shards.

    corpus = prepared_corpus.load("/data/pile_prepared")
    corpus.natural_weights()            # train token counts, normalised
    seqs = corpus.sequences("pile_cc")  # random access: len(seqs), seqs[i] -> int32[L]

No TensorFlow here: SeqIO Tasks (``prepared_tasks``) and the grain input
(``grain_input``) both read the shards through this module.
"""
from __future__ import annotations

import hashlib
import json
import os
from typing import Iterator, Sequence

import numpy as np

from doremi_jax import errors, storage
from doremi_jax.data import example_records

MANIFEST = "manifest.json"
SPLITS = ("train", "validation", "test")
# 2: a record is a tf.train.Example, the ids an int64 list under "text" (what MaxText's
# grain input reads); 1 (still read): the ids as little-endian int32.
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)


PARALLEL_READ_MIN = 128  # fewer records are read one by one: a parallel read costs ~0.25 ms a call


class DomainSequences:
  """One domain's packed sequences of one split, in shard order, by index."""

  def __init__(self, paths: Sequence[str], sequence_length: int,
               version: int = FORMAT_VERSION):
    self.paths = list(paths)
    self.sequence_length = sequence_length
    self.version = version
    self._source = None
    if self.paths:
      from array_record.python import array_record_data_source  # pylint: disable=g-import-not-at-top
      self._source = array_record_data_source.ArrayRecordDataSource(self.paths)

  def __len__(self) -> int:
    return 0 if self._source is None else len(self._source)

  def __iter__(self) -> Iterator[np.ndarray]:
    """All sequences in order, read a few hundred at a time."""
    for start in range(0, len(self), 256):
      yield from self.__getitems__(range(start, min(start + 256, len(self))))

  def __getitem__(self, index: int) -> np.ndarray:
    if self._source is None:
      raise IndexError("no sequences in this split")
    return self.read_rows([index])[0]

  def _getitems(self, indices: Sequence[int]) -> list[np.ndarray]:
    """Many records at once, decoded in one pass: grain's batched-read protocol
    (``SupportsBatchedReadRandomAccessDataSource``), which ``MapDataset._getitems`` uses."""
    return list(self.read_rows(indices))

  __getitems__ = _getitems  # the name ArrayRecord and PyTorch-style readers use

  def read_rows(self, indices: Sequence[int]) -> np.ndarray:
    """``[len(indices), sequence_length]`` int32, decoded in one vectorised pass."""
    if not len(indices):
      return np.zeros((0, self.sequence_length), np.int32)
    if len(indices) < PARALLEL_READ_MIN:
      records = [self._source[int(i)] for i in indices]
    else:
      records = self._source.__getitems__([int(i) for i in indices])
    if self.version == 1:
      return np.frombuffer(b"".join(records), "<i4").astype(np.int32).reshape(
          len(records), self.sequence_length)
    return example_records.decode_rows(records, self.sequence_length)


class PreparedCorpus:
  """The manifest of a prepared dir plus helpers that resolve its relative paths."""

  def __init__(self, root: str, manifest: dict):
    self.root = root
    self.manifest = manifest
    self._cache: dict[tuple[str, str], DomainSequences] = {}

  @property
  def domains(self) -> list[str]:
    return sorted(self.manifest["domains"])

  @property
  def version(self) -> int:
    return int(self.manifest["version"])

  @property
  def sequence_length(self) -> int:
    return int(self.manifest["sequence_length"])

  def split_info(self, domain: str, split: str) -> dict:
    if domain not in self.manifest["domains"]:
      raise errors.DoremiError(f"unknown domain {domain!r}; {self.root} has {self.domains}")
    if split not in SPLITS:
      raise errors.DoremiError(f"unknown split {split!r}; choose from {SPLITS}")
    return self.manifest["domains"][domain][split]

  def shard_paths(self, domain: str, split: str = "train") -> list[str]:
    return [os.path.join(self.root, s["path"]) for s in self.split_info(domain, split)["shards"]]

  def shard_pattern(self, domain: str, split: str = "train") -> str:
    """A glob matching exactly the split's shards (for readers that take patterns)."""
    shards = self.split_info(domain, split)["shards"]
    of = shards[0]["path"].rsplit("-of-", 1)[-1] if shards else "*.array_record"
    return os.path.join(self.root, domain, f"{split}-*-of-{of}")

  def domain_digest(self, domain: str) -> str:
    """A sha256 of what a domain's batches are made of: its shards (by their sha256s), the
    tokenizer and the sequence length; the same wherever the dir lives."""
    entry = {"domain": self.manifest["domains"][domain], "tokenizer": self.manifest["tokenizer"],
             "sequence_length": self.manifest["sequence_length"]}
    return hashlib.sha256(json.dumps(entry, sort_keys=True).encode()).hexdigest()

  def num_sequences(self, domain: str, split: str = "train") -> int:
    return int(self.split_info(domain, split)["sequences"])

  def sequences(self, domain: str, split: str = "train") -> DomainSequences:
    key = (domain, split)
    if key not in self._cache:
      self._cache[key] = DomainSequences(self.shard_paths(domain, split), self.sequence_length,
                                         self.version)
    return self._cache[key]

  def token_counts(self, split: str = "train") -> dict[str, int]:
    return {d: int(self.split_info(d, split)["tokens"]) for d in self.domains}

  def natural_weights(self, split: str = "train") -> dict[str, float]:
    """Each domain's share of the split's tokens: the ``natural`` mixture."""
    counts = self.token_counts(split)
    total = sum(counts.values())
    if total <= 0:
      raise errors.DoremiError(f"{self.root}: the {split} split has no tokens")
    return {d: c / total for d, c in counts.items()}

  def tokenizer_path(self) -> str | None:
    """The SentencePiece model inside the prepared dir; None for byte ids."""
    path = self.manifest["tokenizer"].get("path")
    return os.path.join(self.root, path) if path else None

  def vocabulary(self):
    """The seqio vocabulary the shards were tokenized with (imports TensorFlow)."""
    from doremi_jax.data import tokenizer  # pylint: disable=g-import-not-at-top
    return tokenizer.load_vocabulary(self.tokenizer_path() or tokenizer.BYTES)

  def verify(self) -> None:
    """Checks every shard's and the tokenizer's sha256 against the manifest."""
    wanted = [(s["path"], s["sha256"]) for d in self.domains for sp in SPLITS
              for s in self.split_info(d, sp)["shards"]]
    tok = self.manifest["tokenizer"]
    if tok.get("path"):
      wanted.append((tok["path"], tok["sha256"]))
    for rel, digest in wanted:
      if storage.file_sha256(os.path.join(self.root, rel)) != digest:
        raise errors.DoremiError(f"{self.root}/{rel}: sha256 differs from the manifest")


def load(prepared_dir: str) -> PreparedCorpus:
  """Reads ``prepared_dir/manifest.json``; a missing or foreign dir is a one-line error."""
  root = os.path.abspath(os.path.expanduser(prepared_dir))
  path = os.path.join(root, MANIFEST)
  try:
    with open(path, encoding="utf-8") as f:
      manifest = json.load(f)
  except FileNotFoundError:
    raise errors.DoremiError(f"{prepared_dir!r} is not a prepared corpus (no {MANIFEST}); "
                             "run doremi-corpus prepare first") from None
  except ValueError as exc:
    raise errors.DoremiError(f"{path}: not valid JSON ({exc})") from None
  if manifest.get("version") not in READABLE_VERSIONS or "domains" not in manifest:
    raise errors.DoremiError(f"{path}: unsupported prepared-corpus manifest "
                             f"(version {manifest.get('version')!r}); prepare it again with "
                             "doremi-corpus prepare")
  return PreparedCorpus(root, manifest)
