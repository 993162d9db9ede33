"""The Pile's format: its 22 domain names, the paper's weight tables, its files and lines.

Shared by the on-the-fly Tasks (``doremi_jax.tasks.pile``) and the Beam preparation
(``doremi_jax.corpora.prepare_sources``).
"""
from __future__ import annotations

import glob
import os
from pathlib import Path
from typing import IO, Callable, Iterator, Sequence

from doremi_jax import errors
from doremi_jax.data import corpus_reader

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


def iter_pile(files: Sequence[Path], opener: Callable[[Path], IO[str]] = corpus_reader.open_text,
              bad: corpus_reader.BadLines | None = None) -> Iterator[tuple[str, str]]:
  """(pile_set_name, text) for each non-empty document; ``opener`` reads a file as text
  (local by default; the Beam job passes its remote-filesystem reader); ``bad``: skip and
  count bad lines instead of stopping at the first."""
  for path in files:
    for lineno, obj in corpus_reader.iter_json_lines(path, opener, bad):
      text, meta = obj.get("text"), obj.get("meta") or {}
      name = meta.get("pile_set_name") if isinstance(meta, dict) else None
      if not isinstance(text, str) or not isinstance(name, str):
        corpus_reader.reject(path, lineno, "expected 'text' and 'meta.pile_set_name'", bad)
      elif text.strip():
        yield name, text
