"""Real domains plus two control domains whose DoReMi answer is known.

  * ``junk``        - strings of i.i.d. uniform characters (letters, digits, punctuation,
    space): nothing to learn beyond the character frequencies, so reference and proxy sit
    at the same entropy floor and its excess loss is ~0. It is a large share of the bytes
    (``junk_fraction``, 40% by default) so the natural (token-count) mixture favours it.
  * ``boilerplate`` - one form letter repeated, only its order number, name and date
    changed: learned in a few steps by any model, so no excess loss either.

Expected: DoReMi drops both well below uniform and raises the real (learnable) domains.
Shares are of UTF-8 bytes of document text (what bits per byte counts), over all domains.
The real domains are whole documents of an existing corpus dir (the embedded corpus by
default, ``doremi_jax.tasks.controls``) up to ``real_cap_bytes`` each, cut at line breaks
into pieces of at most ``PIECE_CHARS`` characters.
"""
from __future__ import annotations

import datetime
import json
import math
import shutil
import string
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np

from doremi_jax import errors, storage
from doremi_jax.corpora import corpus_build
from doremi_jax.corpora.synthetic_text import DOC_CHARS, _Draws
from doremi_jax.data import corpus_reader

REAL_DOMAINS = ("code", "legal", "news", "encyclopedia")
CONTROL_DOMAINS = ("junk", "boilerplate")
PIECE_CHARS = 4000  # real documents are cut at line breaks into pieces this long at most
MANIFEST = "manifest.json"
_GENERATOR = "doremi_jax.controls"
_VERSION = 1
JUNK_ALPHABET = string.ascii_letters + string.digits + string.punctuation + " "
_LETTER = (
  "Dear {name},\n"
  "Thank you for your order number {number}, placed on {date}. Your package has been "
  "shipped and should arrive within five business days. If any item is missing or "
  "damaged, please reply to this letter and quote your order number.\n"
  "We appreciate your business and look forward to serving you again.\n"
  "Sincerely,\nThe Customer Service Team")
_NAMES = ("Alice Moreau", "Bob Okafor", "Carla Nguyen", "David Kim", "Elena Petrova",
          "Farid Haddad", "Grace Liu", "Hugo Svensson", "Ines Duarte", "Jamal Brooks",
          "Kaori Tanaka", "Lena Fischer", "Marco Rossi", "Nadia Benali", "Oscar Lindqvist",
          "Priya Raman")
_FIRST_DATE = datetime.date(2020, 1, 1)


def _utf8_len(text: str) -> int:
  return len(text.encode("utf-8"))


def _junk_docs(rng: np.random.Generator, target_bytes: int) -> list[str]:
  """Documents of i.i.d. uniform characters, DOC_CHARS long (the last cut to fit)."""
  d, alphabet = _Draws(rng), np.frombuffer(JUNK_ALPHABET.encode("ascii"), np.uint8)
  docs, left = [], target_bytes
  while left > 0:
    n = min(left, d.length(*DOC_CHARS))
    docs.append(alphabet[rng.integers(0, len(alphabet), n)].tobytes().decode("ascii"))
    left -= n
  return docs


def _boilerplate_docs(rng: np.random.Generator, target_bytes: int) -> list[str]:
  """One form letter a document, with a counting order number, a name and a date."""
  d, docs, left = _Draws(rng), [], target_bytes
  while left > 0:
    i = len(docs)
    date = _FIRST_DATE + datetime.timedelta(days=i % 3650)
    docs.append(_LETTER.format(name=d.pick(_NAMES), number=100_000 + i,
                               date=date.strftime("%B %d, %Y").replace(" 0", " ")))
    left -= _utf8_len(docs[-1])
  return docs


def _check(real_domains: Sequence[str], real_cap_bytes: int, junk_fraction: float,
           boilerplate_fraction: float, seed: int) -> None:
  if not real_domains or len(set(real_domains)) != len(real_domains):
    raise errors.DoremiError(f"real_domains must be distinct names, got {list(real_domains)}")
  if clash := sorted(set(real_domains) & set(CONTROL_DOMAINS)):
    raise errors.DoremiError(f"real domain(s) {clash} clash with the control domains")
  if isinstance(real_cap_bytes, bool) or not isinstance(real_cap_bytes, int) or real_cap_bytes <= 0:
    raise errors.DoremiError(f"real_cap_bytes must be a positive integer, got {real_cap_bytes!r}")
  for name, f in (("junk_fraction", junk_fraction), ("boilerplate_fraction", boilerplate_fraction)):
    if not (isinstance(f, (int, float)) and math.isfinite(f) and 0 <= f < 1):
      raise errors.DoremiError(f"{name} must be in [0, 1), got {f!r}")
  if junk_fraction + boilerplate_fraction >= 1:
    raise errors.DoremiError(f"junk_fraction + boilerplate_fraction must be < 1, got "
                             f"{junk_fraction} + {boilerplate_fraction}")
  if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
    raise errors.DoremiError(f"seed must be a non-negative integer, got {seed!r}")


def _read_real(real_corpus_dir: Path, domain: str, cap_bytes: int) -> list[str]:
  path = real_corpus_dir / f"{domain}.jsonl"
  if not path.is_file():
    raise errors.DoremiError(f"real corpus {real_corpus_dir} has no {path.name}")
  docs = corpus_build.take_capped(corpus_reader.iter_documents([path]), cap_bytes)
  if not docs:
    raise errors.DoremiError(f"{path} holds no documents")
  return [piece for doc in docs for piece in _pieces(doc, PIECE_CHARS)]


def _pieces(doc: str, max_chars: int) -> list[str]:
  """A document cut at line breaks into pieces of at most ``max_chars`` (a longer line
  stays whole): the split by document hash then gives a domain of a few dozen long files
  (sympy's modules, Wikipedia articles) its share of validation and test text."""
  pieces, lines, size = [], [], -1
  for line in doc.split("\n"):
    if lines and size + 1 + len(line) > max_chars:
      pieces.append("\n".join(lines))
      lines, size = [], -1
    lines.append(line)
    size += 1 + len(line)
  pieces.append("\n".join(lines))
  return [p for p in pieces if p.strip()]


def _ours(out: Path) -> bool:
  """A dir this module wrote (any settings), so it may be replaced."""
  try:
    return json.loads((out / MANIFEST).read_text("utf-8"))["settings"]["generator"] == _GENERATOR
  except (OSError, ValueError, KeyError, TypeError):
    return False


def _cached(out: Path, settings: dict) -> bool:
  """A finished write of the same settings and inputs whose files are intact."""
  try:
    manifest = json.loads((out / MANIFEST).read_text("utf-8"))
    if manifest.get("settings") != settings:
      return False
    return all(storage.file_sha256(out / f"{name}.jsonl") == entry["sha256"]
               for name, entry in manifest["domains"].items())
  except (OSError, ValueError, KeyError, TypeError):
    return False


def write_controls_corpus(out_dir: str, real_corpus_dir: str,
                          real_domains: Sequence[str] = REAL_DOMAINS,
                          real_cap_bytes: int = 1_000_000, junk_fraction: float = 0.4,
                          boilerplate_fraction: float = 0.1, seed: int = 0) -> str:
  """Writes ``out_dir/<domain>.jsonl`` for the real domains, ``junk`` and ``boilerplate``,
  plus ``manifest.json``; returns ``out_dir`` (absolute). Same arguments and inputs, same
  bytes; a finished write of them is left alone, any other is replaced as a whole."""
  real_domains = tuple(real_domains)
  _check(real_domains, real_cap_bytes, junk_fraction, boilerplate_fraction, seed)
  out = Path(out_dir).expanduser().absolute()
  real_dir = Path(real_corpus_dir).expanduser().absolute()
  sources = {}
  for domain in real_domains:
    try:
      sources[domain] = storage.file_sha256(real_dir / f"{domain}.jsonl")
    except OSError:
      raise errors.DoremiError(f"real corpus {real_dir} has no {domain}.jsonl") from None
  settings = {"generator": _GENERATOR, "version": _VERSION, "seed": seed,
              "real_domains": list(real_domains), "piece_chars": PIECE_CHARS,
              "real_cap_bytes": real_cap_bytes, "junk_fraction": float(junk_fraction),
              "boilerplate_fraction": float(boilerplate_fraction), "sources": sources}
  if _cached(out, settings):
    return str(out)
  if out.exists() and any(out.iterdir()) and not _ours(out):
    raise errors.DoremiError(f"{out} is not empty and holds no controls corpus; "
                             "write the controls corpus to a dir of its own")
  texts = {d: _read_real(real_dir, d, real_cap_bytes) for d in real_domains}
  real_bytes = sum(_utf8_len(t) for docs in texts.values() for t in docs)
  total = real_bytes / (1.0 - junk_fraction - boilerplate_fraction)
  texts["junk"] = _junk_docs(np.random.default_rng([seed, 0]), round(junk_fraction * total))
  texts["boilerplate"] = _boilerplate_docs(np.random.default_rng([seed, 1]),
                                           round(boilerplate_fraction * total))
  try:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))
  except OSError as exc:
    raise errors.DoremiError(f"cannot create {out}: {exc.strerror or exc}") from None
  try:
    domains, written = {}, sum(_utf8_len(t) for docs in texts.values() for t in docs)
    for name, docs in texts.items():
      path = tmp / f"{name}.jsonl"
      with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.writelines(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in docs)
      text_bytes = sum(_utf8_len(t) for t in docs)
      domains[name] = {"role": "real" if name in real_domains else name,
                       "documents": len(docs), "text_bytes": text_bytes,
                       "share": text_bytes / written, "sha256": storage.file_sha256(path)}
    manifest = {"settings": settings, "domains": domains}
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n", "utf-8")
    storage.replace_dir(tmp, out)
  except OSError as exc:
    raise errors.DoremiError(f"cannot write {out}: {exc.strerror or exc}") from None
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
  return str(out)
