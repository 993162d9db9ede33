"""What ``doremi_jax.corpora.prepare`` reads: a ``--source`` spec resolved to a list of input files.

Three schemes:

  * ``pile:DIR`` (or ``pile:GLOB``): The Pile's ``*.jsonl.zst`` files; the domain is each
    line's ``meta.pile_set_name``. Files named ``val*`` / ``test*`` are the validation and
    test splits; without them every document is split by its hash.
  * ``dir:DIR``: a corpus dir in the layout of ``doremi_jax.corpus_reader``
    (``<domain>.jsonl[.gz|.zst]`` files or ``<domain>/`` folders); split by hash.
  * ``embedded``: the embedded real-text corpus, built (or found cached) first.

Every file is read whole by one worker, so the unit of parallelism is a file; the
functions here take plain strings so Beam can pickle them to any runner.
"""
from __future__ import annotations

import glob
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Iterator

from doremi_jax import errors
from doremi_jax.corpora import pile_format
from doremi_jax.data import corpus_reader
from doremi_jax.data.corpus_reader import split_of

SCHEMES = ("pile", "dir", "embedded")
PILE_SUFFIX = ".jsonl.zst"


@dataclass(frozen=True)
class InputFile:
  """One file to read: its domain (None: from each line's meta) and split (None: by hash)."""
  path: str
  domain: str | None
  split: str | None


@dataclass(frozen=True)
class SourcePlan:
  """A resolved ``--source``: the files to read and a fingerprint of each domain's input."""
  spec: str
  files: tuple[InputFile, ...]
  fingerprints: dict[str, str]  # cache key of the tokenizer trained on this source
  split_rule: str  # "hash" or "files" (Pile val*/test* files)
  root: str | None = None  # a local corpus dir: nothing may be written inside it


def _remote_files(pattern: str) -> list[str]:
  """Files of a Beam filesystem (gs://, s3://, hdfs://...) under a dir or matching a glob."""
  from apache_beam.io.filesystems import FileSystems  # pylint: disable=g-import-not-at-top
  glob_ = pattern if any(c in pattern for c in "*?[") else pattern.rstrip("/") + "/**"
  try:
    found = FileSystems.match([glob_])[0].metadata_list
  except Exception as exc:  # pylint: disable=broad-except  (each filesystem has its own)
    raise errors.DoremiError(f"cannot list {pattern!r}: {exc}") from None
  return sorted(m.path for m in found if m.path.endswith(PILE_SUFFIX))


def _open_remote_text(path: str) -> IO[str]:
  from apache_beam.io.filesystems import CompressionTypes, FileSystems  # pylint: disable=g-import-not-at-top
  raw = FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED)
  return corpus_reader.decompressed_text(raw, path)


def _pile_files(pattern: str) -> list[Path]:
  if "://" in pattern:
    return [_RemotePath(p) for p in _remote_files(pattern)]
  path = os.path.expanduser(pattern)
  if os.path.isdir(path):
    return sorted(Path(path).rglob("*" + PILE_SUFFIX))
  if any(c in path for c in "*?["):
    return sorted(Path(p) for p in glob.glob(path, recursive=True) if p.endswith(PILE_SUFFIX))
  if os.path.exists(path) and path.endswith(PILE_SUFFIX):
    return [Path(path)]
  raise errors.DoremiError(f"pile source {pattern!r} does not exist")


class _RemotePath(str):
  """A remote file name with the two Path attributes used here."""
  @property
  def name(self) -> str:
    return self.rsplit("/", 1)[-1]

  @property
  def parent(self) -> str:
    return self.rsplit("/", 1)[0]


def _resolve_pile(spec: str, pattern: str) -> SourcePlan:
  files = _pile_files(pattern)
  if not files:
    raise errors.DoremiError(f"no Pile *{PILE_SUFFIX} files at {pattern!r}")
  fixed = {f: ("validation" if f.name.startswith("val") else
               "test" if f.name.startswith("test") else None) for f in files}
  by_files = any(s is not None for s in fixed.values())
  if by_files and not all(s in fixed.values() for s in ("validation", "test", None)):
    raise errors.DoremiError(
        "Pile files: need train files plus both val* and test* files, or train files only "
        "(then documents are split by hash)")
  train = [f for f in files if fixed[f] is None]
  if isinstance(files[0], _RemotePath):  # names only: listing sizes of remote files is slow
    fp = hashlib.sha256("\n".join(train).encode()).hexdigest()
  else:  # size + mtime, not content: hashing all of the Pile every run would take hours
    root = Path(os.path.commonpath([str(f.parent) for f in files]))
    fp = corpus_reader.fingerprint(train, root, content=False)
  items = tuple(InputFile(str(f), None, fixed[f] or ("train" if by_files else None))
                for f in files)
  return SourcePlan(spec, items, {corpus_reader.sanitize(d): fp for d in pile_format.PILE_DOMAINS},
                    "files" if by_files else "hash")


def _resolve_dir(spec: str, corpus_dir: str) -> SourcePlan:
  domains = corpus_reader.discover(corpus_dir)
  files = tuple(InputFile(str(p), name, None) for name, paths in domains.items() for p in paths)
  return SourcePlan(spec, files, corpus_reader.corpus_fingerprints(domains, corpus_dir), "hash",
                    os.path.abspath(os.path.expanduser(corpus_dir)))


def resolve(spec: str) -> SourcePlan:
  """``pile:DIR``, ``dir:DIR`` or ``embedded`` -> the files to read."""
  scheme, _, rest = spec.partition(":")
  if scheme not in SCHEMES or (scheme == "embedded") != (rest == ""):
    raise errors.DoremiError(f"unknown source {spec!r}; use pile:DIR, dir:DIR or embedded")
  if scheme == "pile":
    return _resolve_pile(spec, rest)
  if scheme == "dir":
    return _resolve_dir(spec, rest)
  from doremi_jax.corpora import corpus_build  # pylint: disable=g-import-not-at-top
  built = corpus_build.embedded_corpus_dir()
  corpus_build.build_corpus(built)
  return _resolve_dir(spec, built)


def _pile_lines(path: str, bad: corpus_reader.BadLines | None
                ) -> Iterator[tuple[str, str]]:
  files, opener = ([path], _open_remote_text) if "://" in path else ([Path(path)],
                                                                     corpus_reader.open_text)
  for name, text in pile_format.iter_pile(files, opener, bad):
    yield corpus_reader.sanitize(name), text


def read_file(item: InputFile, validation_fraction: float,
              bad: corpus_reader.BadLines | None = None) -> Iterator[tuple[str, str, str]]:
  """(domain, split, text) for every non-empty document of one input file; ``bad``:
  skip and count bad lines instead of stopping at the first."""
  if item.domain is None:
    docs = _pile_lines(item.path, bad)
  else:
    docs = ((item.domain, t) for t in corpus_reader.iter_documents([Path(item.path)], bad=bad))
  for domain, text in docs:
    yield domain, item.split or split_of(text, validation_fraction), text


def train_documents(plan: SourcePlan, validation_fraction: float,
                    bad: corpus_reader.BadLines | None = None) -> Iterator[tuple[str, str]]:
  """(domain, text) of the train split in file order: what a tokenizer is trained on."""
  for item in plan.files:
    if item.split in (None, "train"):
      for domain, split, text in read_file(item, validation_fraction, bad):
        if split == "train":
          yield domain, text


def document_key(text: str) -> int:
  """A 64-bit hash of a document, independent of the split hash (bytes 8..16 of sha1):
  it picks the document's shard and its place inside the shard."""
  return int.from_bytes(hashlib.sha1(text.encode("utf-8")).digest()[8:16], "big")
