"""A real-text corpus with a known DoReMi answer, generated deterministically in code.

Four domains, written as ``<domain>.jsonl`` (a ``text`` field a line) so they take the
real path: corpus dir -> SentencePiece tokenizer -> SeqIO Tasks
(``doremi_jax.tasks.synthetic_text``).

  * ``random``     - words of random letters and digits: nothing to learn beyond the
    character frequencies, so reference and proxy both sit at the entropy floor.
  * ``constant``   - one sentence repeated, its number changed in 1 line of 50: learned
    in a few steps by any model.
  * ``grammar``    - sentences of a small probabilistic grammar over ~330 made-up words
    (number agreement, verbs selecting their objects, nouns their adjectives, a tense
    and a cast per document): learnable, a tiny model keeps improving for long.
  * ``arithmetic`` - worksheets of whole times/plus tables in order: learnable by memorising.

DoReMi should give ``random`` and ``constant`` low weight (no excess loss to chase) and
``grammar`` and ``arithmetic`` high weight. The learnable domains are also the larger
ones, so the token-count baseline mixture favours them too.

    python -m doremi_jax.corpora.synthetic_text OUT_DIR [--seed N] [--scale X]
"""
from __future__ import annotations

import argparse
import bisect
import hashlib
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from doremi_jax import errors

DOMAINS = ("random", "constant", "grammar", "arithmetic")
# Characters per domain at scale 1 (random strings tokenize at ~1 token per character,
# the grammar at ~3: the learnable domains need the most text to lead in tokens).
BASE_CHARS = {"random": 150_000, "constant": 250_000, "grammar": 600_000,
              "arithmetic": 600_000}
DOC_CHARS = (200, 2000)  # target length of a document; short ones likelier (mean ~800)
MIN_DOCS = 8  # per domain, whatever the scale: every split needs documents
MAX_SCALE = 100.0
MANIFEST = "manifest.json"
_VERSION = 1
_ALNUM = "abcdefghijklmnopqrstuvwxyz0123456789"
_CONSTANT = "the lighthouse keeper counted {} ships before dawn."


class _Draws:
  """Uniform floats drawn in blocks: Python-speed scalar draws, same stream everywhere."""

  def __init__(self, rng: np.random.Generator):
    self._rng, self._buf, self._i = rng, [], 0

  def u(self) -> float:
    if self._i == len(self._buf):
      self._buf, self._i = self._rng.random(1 << 14).tolist(), 0
    self._i += 1
    return self._buf[self._i - 1]

  def coin(self, p: float) -> bool:
    return self.u() < p

  def between(self, lo: int, hi: int) -> int:
    """An integer in [lo, hi]."""
    return lo + int(self.u() * (hi - lo + 1))

  def pick(self, seq: Sequence):
    return seq[int(self.u() * len(seq))]

  def length(self, lo: int, hi: int) -> int:
    """A document length in [lo, hi], skewed short (u**2: exact arithmetic, unlike exp)."""
    u = self.u()
    return lo + int(u * u * (hi - lo))


class _Zipf:
  """Words drawn with probability proportional to 1 / rank: a few common, a long tail."""

  def __init__(self, words: Sequence[str]):
    self.words = list(words)
    self._cum = np.cumsum(1.0 / np.arange(1, len(words) + 1)).tolist()

  def __call__(self, d: _Draws) -> str:
    return self.words[bisect.bisect_right(self._cum, d.u() * self._cum[-1])]


# ----------------------------------------------------------------------------- grammar
_ONSETS = "b br c cl d dr f fl g gr h j k l m n p pl r s sk sp t th tr v w z".split()
_VOWELS = "a e i o u ai ea oo ou".split()
_CODAS = ["", "", "", "n", "r", "l", "m", "nd", "ck", "t", "p", "g"]  # no final s
_NOUN_CLASSES = ("agent", "thing", "place", "idea")
_PREPOSITIONS = {"in": "place", "near": "place", "under": "place", "behind": "place",
                 "across": "place", "with": "thing", "about": "idea"}
_DETERMINERS = ({False: ["the", "a", "this", "every"], True: ["the", "some", "these", "many"]})
_FUNCTION_WORDS = {"a", "an", "and", "it", "they", "the", "this", "these", "some", "many",
                   "every", *_PREPOSITIONS}


class _Grammar:
  """A lexicon of made-up words and the rules that tie them together."""

  def __init__(self, d: _Draws):
    words = self._coin_words(d, 160 + 80 + 60 + 24)
    nouns, words = words[:160], words[160:]
    self.nouns = {c: _Zipf(nouns[i * 40:(i + 1) * 40]) for i, c in enumerate(_NOUN_CLASSES)}
    self.verbs = _Zipf(words[:80])
    adjectives, adverbs = words[80:140], [w + "ly" for w in words[140:]]
    self.noun_adjectives = {n: [d.pick(adjectives) for _ in range(4)] for n in nouns}
    self.verb_object = {v: d.pick(_NOUN_CLASSES[1:]) for v in self.verbs.words}
    self.verb_adverbs = {v: [d.pick(adverbs) for _ in range(3)] for v in self.verbs.words}
    self.prepositions = _Zipf(list(_PREPOSITIONS))

  @staticmethod
  def _coin_words(d: _Draws, n: int) -> list[str]:
    seen, out = set(_FUNCTION_WORDS), []
    while len(out) < n:
      syllables = 1 + (d.u() > 0.3) + (d.u() > 0.75)
      word = "".join(d.pick(_ONSETS) + d.pick(_VOWELS) for _ in range(syllables))
      word += d.pick(_CODAS)
      if word not in seen:
        seen.add(word)
        out.append(word)
    return out

  def noun_phrase(self, d: _Draws, noun: str, plural: bool) -> list[str]:
    r = d.u()
    adjectives = self.noun_adjectives[noun][:0 if r < 0.55 else 1 if r < 0.9 else 2]
    det = d.pick(_DETERMINERS[plural])
    words = adjectives + [noun + "s" if plural else noun]
    if det == "a" and words[0][0] in "aeiou":
      det = "an"
    return [det] + words

  def verb_phrase(self, d: _Draws, plural: bool, past: bool) -> list[str]:
    verb = self.verbs(d)
    form = verb + ("ed" if past else "" if plural else "s")
    words = [form] + ([d.pick(self.verb_adverbs[verb])] if d.coin(0.25) else [])
    obj = self.nouns[self.verb_object[verb]](d)
    return words + self.noun_phrase(d, obj, d.coin(0.3))

  def sentence(self, d: _Draws, cast: Sequence[str], past: bool) -> str:
    plural = d.coin(0.4)
    subject = d.pick(cast) if d.coin(0.6) else self.nouns["agent"](d)
    words = self.noun_phrase(d, subject, plural) + self.verb_phrase(d, plural, past)
    if d.coin(0.35):
      prep = self.prepositions(d)
      words += [prep] + self.noun_phrase(d, self.nouns[_PREPOSITIONS[prep]](d), d.coin(0.3))
    if d.coin(0.25):
      words[-1] += ","
      words += ["and", "they" if plural else "it"] + self.verb_phrase(d, plural, past)
    text = " ".join(words) + "."
    return text[0].upper() + text[1:]

  def document(self, d: _Draws, length: int) -> str:
    cast, past = [self.nouns["agent"](d) for _ in range(2)], d.coin(0.5)
    lines, n = [], -1
    while n < length:
      line = " ".join(self.sentence(d, cast, past) for _ in range(d.between(1, 4)))
      lines.append(line)
      n += len(line) + 1
    return "\n".join(lines)


# ----------------------------------------------------------------------------- other domains
def _lines_doc(make_line: Callable[[], str], length: int, first: Sequence[str] = ()) -> str:
  lines = list(first)
  n = sum(len(x) + 1 for x in lines) - 1  # == len("\n".join(lines))
  while n < length:
    lines.append(make_line())
    n += len(lines[-1]) + 1
  return "\n".join(lines)


def _random_doc(d: _Draws, length: int) -> str:
  def word() -> str:
    return "".join(d.pick(_ALNUM) for _ in range(d.between(2, 9)))

  return _lines_doc(lambda: " ".join(word() for _ in range(d.between(6, 14))), length)


def _constant_doc(d: _Draws, length: int) -> str:
  return _lines_doc(lambda: _CONSTANT.format(d.between(0, 99) if d.coin(1 / 50) else 12), length)


def _table(d: _Draws) -> str:
  """A whole times or plus table in order (``7 * 1 = 7`` ... ``7 * 12 = 84``): each line
  follows from the one before, so the domain is learnable, but only by memorising facts."""
  if d.coin(0.5):
    a = d.between(1, 12)
    rows = [f"{a} * {b} = {a * b}" for b in range(1, 13)]
    return "\n".join([f"the {a} times table"] + rows)
  a = d.between(0, 99)
  rows = [f"{a} + {b} = {a + b}" for b in range(1, 13)]
  return "\n".join([f"adding to {a}"] + rows)


def _arithmetic_doc(d: _Draws, length: int) -> str:
  return _lines_doc(lambda: _table(d), length, [f"worksheet {d.between(1, 99)}"])


_MAKERS = {"random": _random_doc, "constant": _constant_doc, "arithmetic": _arithmetic_doc}


# ----------------------------------------------------------------------------- corpus
def _check(seed: int, scale: float) -> None:
  if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
    raise errors.DoremiError(f"seed must be a non-negative integer, got {seed!r}")
  if not (isinstance(scale, (int, float)) and math.isfinite(scale) and 0 < scale <= MAX_SCALE):
    raise errors.DoremiError(f"scale must be in (0, {MAX_SCALE:g}], got {scale!r}")


def generate(seed: int = 0, scale: float = 1.0) -> dict[str, list[str]]:
  """Domain -> documents. Each domain has its own stream, so a larger ``scale`` only
  appends documents."""
  _check(seed, scale)
  out: dict[str, list[str]] = {}
  for index, name in enumerate(DOMAINS):
    d = _Draws(np.random.default_rng([int(seed), index]))
    make = _Grammar(d).document if name == "grammar" else _MAKERS[name]
    target, docs, chars = round(BASE_CHARS[name] * scale), [], 0
    while chars < target or len(docs) < MIN_DOCS:
      docs.append(make(d, d.length(*DOC_CHARS)))
      chars += len(docs[-1])
    out[name] = docs
  return out


def _write_if_changed(path: Path, data: bytes) -> None:
  """Atomic write (tmp + replace); an identical file is left alone (mtime kept)."""
  try:
    if path.is_file() and path.stat().st_size == len(data) and path.read_bytes() == data:
      return
  except OSError:
    pass
  fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
  try:
    with os.fdopen(fd, "wb") as f:
      f.write(data)
    os.replace(tmp, path)
  except BaseException:
    Path(tmp).unlink(missing_ok=True)
    raise


def write_corpus(out_dir: str, seed: int = 0, scale: float = 1.0) -> dict[str, int]:
  """Writes ``out_dir/<domain>.jsonl`` plus ``manifest.json`` (settings and sha256s);
  returns characters per domain. Same seed and scale, same bytes."""
  texts = generate(seed, scale)
  out = Path(out_dir).expanduser()
  try:
    out.mkdir(parents=True, exist_ok=True)
  except OSError as exc:
    raise errors.DoremiError(f"cannot create corpus dir {out}: {exc.strerror or exc}") from None
  ours = {f"{name}.jsonl" for name in DOMAINS}
  foreign = sorted(p.name for p in out.iterdir()
                   if p.name.endswith((".jsonl", ".jsonl.gz", ".jsonl.zst")) and p.name not in ours)
  if foreign:
    raise errors.DoremiError(f"{out} holds other domain files ({', '.join(foreign)}); "
                             "write the synthetic corpus to a dir of its own")
  files: dict[str, bytes] = {}
  domains = {}
  for name, docs in texts.items():
    files[f"{name}.jsonl"] = "".join(json.dumps({"text": t}) + "\n" for t in docs).encode()
    domains[name] = {"documents": len(docs), "characters": sum(map(len, docs)),
                     "sha256": hashlib.sha256(files[f"{name}.jsonl"]).hexdigest()}
  manifest = {"generator": "doremi_jax.synthetic_text", "version": _VERSION, "seed": int(seed),
              "scale": float(scale), "domains": domains}
  files[MANIFEST] = (json.dumps(manifest, indent=1, sort_keys=True) + "\n").encode()
  for filename, data in files.items():  # the manifest last: it vouches for the rest
    try:
      _write_if_changed(out / filename, data)
    except OSError as exc:
      raise errors.DoremiError(f"cannot write {out / filename}: {exc.strerror or exc}") from None
  return {name: d["characters"] for name, d in domains.items()}


@errors.exit_on_user_error
def main(argv: Sequence[str] | None = None) -> None:
  ap = argparse.ArgumentParser(prog="python -m doremi_jax.corpora.synthetic_text",
                               description=__doc__.splitlines()[0])
  ap.add_argument("out_dir", help="where <domain>.jsonl and manifest.json are written")
  ap.add_argument("--seed", type=int, default=0)
  ap.add_argument("--scale", type=float, default=1.0, help="multiplies every domain's size")
  args = ap.parse_args(argv)
  for name, chars in write_corpus(args.out_dir, args.seed, args.scale).items():
    print(f"{name:<10} {chars:>11,} chars")


if __name__ == "__main__":
  main()
