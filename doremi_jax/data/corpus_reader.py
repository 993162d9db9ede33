"""Reads a corpus directory of domains: layout discovery, documents, splits, fingerprints.

Two layouts, mixable in one directory (the domain name is the file or folder name):

  * ``DIR/<domain>.jsonl`` (or ``.jsonl.gz`` / ``.jsonl.zst``): one JSON object a line,
    the document in its ``text`` field;
  * ``DIR/<domain>/`` holding ``.jsonl`` (optionally ``.gz``/``.zst``) and ``.txt`` files,
    where a ``.txt`` file is one document.

Documents are streamed from disk each time they are read; the split of a document
is ``split_of(text)`` (a hash of its text), so it never changes.
Names ending in ``.json`` (the embedded corpus's ``manifest.json``), hidden entries and
the ``tokenizer/`` folder this package writes are not domains.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import re
import zlib
from pathlib import Path
from typing import IO, Callable, Iterator, Mapping, Sequence

from doremi_jax import errors, storage

SPLITS = ("train", "validation", "test")
JSONL_SUFFIXES = (".jsonl", ".jsonl.gz", ".jsonl.zst")
TEXT_SUFFIXES = (".txt",)
TOKENIZER_DIRNAME = "tokenizer"


def sanitize(name: str) -> str:
  """A valid SeqIO task-name part: lower case, runs of other characters become ``_``."""
  out = re.sub(r"[^0-9a-z]+", "_", name.lower()).strip("_")
  if not out:
    raise errors.DoremiError(f"domain name {name!r} has no letters or digits")
  return out


def _strip_suffix(name: str, suffixes: Sequence[str]) -> str | None:
  for suffix in suffixes:
    if name.endswith(suffix) and len(name) > len(suffix):
      return name[: -len(suffix)]
  return None


def _check_readable(path: Path) -> None:
  """A corpus file that is a broken or looping link, or cannot be read, is one line."""
  try:
    os.stat(path)
    readable = os.access(path, os.R_OK)
  except OSError as exc:
    raise errors.DoremiError(f"corpus file {str(path)!r} cannot be read ({exc.strerror}); fix "
                             "or remove it") from None
  if not readable:
    raise errors.DoremiError(f"corpus file {str(path)!r} cannot be read (permission denied); "
                             "fix its permissions or remove it")


def _doc_files(folder: Path) -> list[Path]:
  found = []
  for p in folder.rglob("*"):  # one walk: links checked, documents kept
    if p.name.startswith("."):
      continue
    if p.is_symlink():
      _check_readable(p)
    if p.is_file() and (_strip_suffix(p.name, JSONL_SUFFIXES)
                        or _strip_suffix(p.name, TEXT_SUFFIXES)):
      found.append(p)
  return sorted(found)


def discover(corpus_dir: str) -> dict[str, list[Path]]:
  """Domain name (sanitised) -> its files, sorted by name; fails on empty or bad dirs."""
  root = Path(corpus_dir).expanduser()
  if not root.is_dir():
    raise errors.DoremiError(f"corpus dir {corpus_dir!r} does not exist or is not a directory")
  found: dict[str, list[Path]] = {}
  origin: dict[str, str] = {}
  for entry in sorted(root.iterdir()):
    if entry.name.startswith("."):
      continue
    if entry.is_dir():
      if entry.name == TOKENIZER_DIRNAME and not _doc_files(entry):
        continue
      raw, files = entry.name, _doc_files(entry)
      if not files:
        raise errors.DoremiError(
            f"domain {raw!r} has no documents: {entry} holds no .jsonl/.txt files")
    elif (raw := _strip_suffix(entry.name, JSONL_SUFFIXES)) is not None:
      _check_readable(entry)
      files = [entry]
    else:
      continue
    name = sanitize(raw)
    if name in found:
      raise errors.DoremiError(f"domains {origin[name]!r} and {entry.name!r} in {corpus_dir} "
                               f"both map to the task name {name!r}; rename one")
    found[name], origin[name] = files, entry.name
  if not found:
    raise errors.DoremiError(
        f"corpus dir {corpus_dir!r} has no domain files (expected <domain>.jsonl[.gz|.zst] "
        "files or <domain>/ folders of .jsonl/.txt files)")
  return found


class TruncatedFile(Exception):
  """A compressed file ends inside a frame (cut short by a copy or a download)."""


class CorruptZstd(Exception):
  """Bytes that zstandard cannot decode (its message says why)."""


class _ZstdFrames(io.RawIOBase):
  """Decompresses concatenated zstandard frames and, unlike ``stream_reader``, raises
  ``TruncatedFile`` when the file ends inside a frame instead of stopping short."""

  def __init__(self, raw: IO[bytes]):
    import zstandard  # pylint: disable=g-import-not-at-top
    self._new, self._error = zstandard.ZstdDecompressor().decompressobj, zstandard.ZstdError
    self._file, self._frame, self._pending = raw, None, b""

  def readable(self) -> bool:
    return True

  def readinto(self, buffer) -> int:
    while not self._pending:
      chunk = self._file.read(1 << 20)
      if not chunk:
        if self._frame is not None and not self._frame.eof:
          raise TruncatedFile()
        return 0
      while chunk:
        if self._frame is None or self._frame.eof:
          self._frame = self._new()
        try:
          self._pending += self._frame.decompress(chunk)
        except self._error as exc:
          raise CorruptZstd(str(exc)) from None
        chunk = self._frame.unused_data if self._frame.eof else b""
    n = min(len(buffer), len(self._pending))
    buffer[:n], self._pending = self._pending[:n], self._pending[n:]
    return n

  def close(self) -> None:
    self._file.close()
    super().close()


def decompressed_text(raw: IO[bytes], name: str) -> IO[str]:
  """A binary stream of a plain, gzip or zstandard file as UTF-8 text (bad bytes replaced)."""
  if name.endswith(".gz"):
    raw = gzip.GzipFile(fileobj=raw)
  elif name.endswith(".zst"):
    raw = io.BufferedReader(_ZstdFrames(raw))
  return io.TextIOWrapper(raw, encoding="utf-8", errors="replace")


def open_text(path: Path) -> IO[str]:
  return decompressed_text(open(path, "rb"), path.name)


def _lines(path: Path, opener: Callable[[Path], IO[str]] = open_text
           ) -> Iterator[tuple[int, str]]:
  """Numbered lines; a truncated or corrupt compressed file is a one-line error naming the
  last complete line (never a silently short read)."""
  lineno = 0
  try:
    with opener(path) as f:
      for lineno, line in enumerate(f, 1):
        yield lineno, line
  except (TruncatedFile, EOFError, gzip.BadGzipFile, zlib.error) as exc:
    why = "truncated" if isinstance(exc, (TruncatedFile, EOFError)) else f"corrupt ({exc})"
    raise errors.DoremiError(f"{path}: compressed data {why} after line {lineno}; fetch the "
                             "file again") from None
  except CorruptZstd as exc:
    raise errors.DoremiError(f"{path}: corrupt zstandard data after line {lineno} ({exc}); "
                             "fetch the file again") from None


class BadLines:
  """Counts, per file, lines that are not a JSON object holding the document, when the
  user chose to skip them (``skip_bad_lines``); without one a bad line is an error.
  Undecodable bytes are not bad lines (they read as U+FFFD), and a truncated or corrupt
  compressed file stays an error: what follows the cut is lost, not one line."""

  def __init__(self):
    self.files: dict[str, dict] = {}  # path -> {"lines": n, "first": "line k: why"}

  def add(self, path: Path | str, lineno: int, why: str) -> None:
    entry = self.files.setdefault(str(path), {"lines": 0, "first": f"line {lineno}: {why}"})
    entry["lines"] += 1

  def merge(self, files: dict[str, dict]) -> None:
    for path, entry in files.items():
      mine = self.files.setdefault(path, {"lines": 0, "first": entry["first"]})
      mine["lines"] += entry["lines"]


def warnings(files: dict[str, dict]) -> list[str]:
  """One line per file with skipped lines (``BadLines.files`` or where it was recorded)."""
  return [f"warning: {path}: skipped {e['lines']} bad line(s) (first at {e['first']})"
          for path, e in sorted(files.items())]


def reject(path: Path | str, lineno: int, why: str, bad: BadLines | None) -> None:
  """A bad line: counted when skipping, else a one-line error naming file and line."""
  if bad is None:
    raise errors.DoremiError(f"{path}:{lineno}: {why}; fix or remove that line, or skip bad "
                             "lines (prepare --skip_bad_lines, gin SKIP_BAD_LINES = True)")
  bad.add(path, lineno, why)


def iter_json_lines(path: Path, opener: Callable[[Path], IO[str]] = open_text,
                    bad: BadLines | None = None) -> Iterator[tuple[int, dict]]:
  """(line number, object) for each non-blank line; a bad line is a one-line error, or
  skipped and counted in ``bad``."""
  for lineno, line in _lines(path, opener):
    if not line.strip():
      continue
    try:
      obj = json.loads(line)
    except ValueError as exc:
      reject(path, lineno, f"not valid JSON ({exc})", bad)
      continue
    if not isinstance(obj, dict):
      reject(path, lineno, f"expected a JSON object, got {type(obj).__name__}", bad)
      continue
    yield lineno, obj


def iter_documents(files: Sequence[Path], text_key: str = "text",
                   bad: BadLines | None = None) -> Iterator[str]:
  """Every non-empty document of a domain, in file order."""
  for path in files:
    if _strip_suffix(path.name, TEXT_SUFFIXES) is not None:
      text = "".join(line for _, line in _lines(path))
      if text.strip():
        yield text
      continue
    for lineno, obj in iter_json_lines(path, bad=bad):
      text = obj.get(text_key)
      if not isinstance(text, str):
        reject(path, lineno, f"no string field {text_key!r}", bad)
      elif text.strip():
        yield text


def split_of(text: str, validation_fraction: float = 0.05) -> str:
  """Return "validation", "test" or "train" for ``text``, stably across runs and machines.

  The first 8 bytes of sha1(text) as a fraction u in [0, 1) decide: u < f is validation,
  f <= u < 2f is test, the rest is train (f = ``validation_fraction``, at most 0.5). So
  each held-out split gets a fraction f of the documents, and a document never moves.
  """
  if not 0.0 <= validation_fraction <= 0.5:
    raise ValueError(f"validation_fraction must be in [0, 0.5], got {validation_fraction}")
  unit = int.from_bytes(hashlib.sha1(text.encode("utf-8")).digest()[:8], "big") / 2.0**64
  if unit < validation_fraction:
    return "validation"
  return "test" if unit < 2 * validation_fraction else "train"


def iter_split(files: Sequence[Path], split: str, validation_fraction: float,
               bad: BadLines | None = None) -> Iterator[str]:
  """The documents of one split (``train`` or ``validation``)."""
  if split not in SPLITS:
    raise errors.DoremiError(f"unknown split {split!r}; choose from {SPLITS}")
  for text in iter_documents(files, bad=bad):
    if split_of(text, validation_fraction) == split:
      yield text


def fingerprint(files: Sequence[Path], root: Path, content: bool = True) -> str:
  """sha256 over a domain's files: relative names + content sha256 (or size and mtime
  when ``content`` is False, for corpora too large to hash on every start)."""
  h = hashlib.sha256()
  for path in files:
    st = path.stat()
    part = storage.file_sha256(path) if content else f"{st.st_size}:{st.st_mtime_ns}"
    h.update(f"{os.path.relpath(path, root)}\0{part}\n".encode())
  return h.hexdigest()


def corpus_fingerprints(domains: Mapping[str, Sequence[Path]], root: str,
                        content: bool = True) -> dict[str, str]:
  return {d: fingerprint(files, Path(root).expanduser(), content) for d, files in domains.items()}


def select(domains: Mapping[str, list[Path]], names: Sequence[str] | None) -> dict[str, list[Path]]:
  """The named domains (all when ``names`` is empty); an unknown name is an error."""
  if not names:
    return dict(domains)
  unknown = [n for n in names if n not in domains]
  if unknown:
    raise errors.DoremiError(f"unknown domain(s) {unknown}; this corpus has {sorted(domains)}")
  return {n: domains[n] for n in names}
