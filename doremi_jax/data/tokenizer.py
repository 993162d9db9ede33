"""SentencePiece tokenizers trained (offline, deterministically) on a corpus's train split.

A model is cached as ``<tokenizer dir>/spm_<vocab>.model`` next to ``spm_<vocab>.json``,
which records the sha256 of every domain it was trained on and the training settings;
it is retrained only when those change. Conventions match seqio/T5: pad 0, EOS 1,
UNK 2, no BOS; ``byte_fallback`` makes any text encodable. Training samples up to
``sample_chars`` characters of each domain (so every domain is represented), one
sentence per line of text, with a fixed seed and two threads: the same corpus
gives the same model file on any machine.
"""
from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Mapping, Sequence

from doremi_jax import errors, storage

if TYPE_CHECKING:
  import numpy as np
  import seqio

DEFAULT_VOCAB_SIZE = 8000
DEFAULT_SAMPLE_CHARS = 1_000_000
MIN_VOCAB_SIZE = 300  # 256 byte pieces + pad/EOS/UNK, plus a few merges
BYTES = "bytes"
SENTENCEPIECE = "sentencepiece"
_MAX_LINE = 2048  # longer lines are cut (SentencePiece skips over-long sentences)
_SETTINGS_VERSION = 1


def model_path(tokenizer_dir: str | Path, vocab_size: int) -> Path:
  return Path(tokenizer_dir) / f"spm_{vocab_size}.model"


def default_tokenizer_dir(corpus_dir: str, key: str) -> Path:
  """``$DOREMI_CACHE/tokenizers/<key>``: never inside the user's corpus dir, which may be
  read-only (and would gain a "domain" folder)."""
  del corpus_dir  # the key (the corpus fingerprint) identifies it
  return storage.cache_root() / "tokenizers" / key[:16]


def sample_sentences(documents: Iterable[tuple[str, str]], domains: Sequence[str],
                     sample_chars: int) -> list[str]:
  """Lines of the first ``sample_chars`` characters of each domain's (domain, text) pairs."""
  left = {d: sample_chars for d in domains}
  full = 0
  out: list[str] = []
  for domain, text in documents:
    if left.get(domain, 0) <= 0:
      continue
    for line in text.splitlines():
      for i in range(0, len(line), _MAX_LINE):
        piece = line[i:i + _MAX_LINE]
        if piece.strip():
          out.append(piece)
          left[domain] -= len(piece)
    if left[domain] <= 0:
      full += 1
      if full == len(left):
        break
  return out


def train_sentencepiece(path: Path, vocab_size: int, sentences: Sequence[str],
                        model_type: str = "unigram", seed: int = 0) -> None:
  """Trains a model on ``sentences`` and writes it to ``path`` atomically."""
  import io  # pylint: disable=g-import-not-at-top

  import sentencepiece as spm  # pylint: disable=g-import-not-at-top
  if vocab_size < MIN_VOCAB_SIZE:
    raise errors.DoremiError(f"tokenizer vocab size {vocab_size} is too small; SentencePiece "
                             f"with byte fallback needs at least {MIN_VOCAB_SIZE}")
  if not sentences:
    raise errors.DoremiError("no training text for the tokenizer (empty train split?)")
  buf = io.BytesIO()
  try:
    _train(spm, buf, vocab_size, sentences, model_type, seed)
  except RuntimeError as exc:
    msg = " ".join(str(exc).split())
    most = re.search(r"Vocabulary size too high \(\d+\)\. Please set it to a value <= (\d+)", msg)
    least = re.search(r"smaller than required_chars\. \d+ vs (\d+)", msg)
    if most and int(most.group(1)) >= MIN_VOCAB_SIZE:
      lowered = int(most.group(1))
      print(f"warning: this corpus supports at most {lowered} SentencePiece tokens; trained "
            f"{lowered} instead of {vocab_size}", file=sys.stderr, flush=True)
      buf = io.BytesIO()
      _train(spm, buf, lowered, sentences, model_type, seed)
    elif least:
      raise errors.DoremiError(
          f"a {vocab_size}-token SentencePiece model cannot hold this corpus's characters; "
          f"choose a vocab size >= {least.group(1)}") from None
    elif "vocab_size()) == (model_proto->pieces_size())" in msg:  # fewer pieces than asked
      buf = io.BytesIO()
      _train(spm, buf, vocab_size, sentences, model_type, seed, hard_limit=False)
      lowered = spm.SentencePieceProcessor(model_proto=buf.getvalue()).get_piece_size()
      print(f"warning: this corpus supports at most {lowered} SentencePiece tokens; trained "
            f"{lowered} instead of {vocab_size}", file=sys.stderr, flush=True)
    else:
      raise errors.DoremiError(f"cannot train a {vocab_size}-token SentencePiece model on "
                               f"this corpus ({msg})") from None
  storage.write_atomic(path, buf.getvalue())


def _train(spm, buf, vocab_size: int, sentences: Sequence[str], model_type: str,
           seed: int, hard_limit: bool = True) -> None:
  spm.set_random_generator_seed(seed)
  spm.SentencePieceTrainer.train(
      hard_vocab_limit=hard_limit,
      sentence_iterator=iter(sentences), model_writer=buf, vocab_size=vocab_size,
      model_type=model_type, byte_fallback=True, pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
      num_threads=2, input_sentence_size=4_000_000, shuffle_input_sentence=True,
      character_coverage=0.9995, normalization_rule_name="nfkc",
      remove_extra_whitespaces=False, allow_whitespace_only_pieces=True, split_digits=True,
      max_sentence_length=4 * _MAX_LINE + 16, minloglevel=2)


def ensure_sentencepiece(tokenizer_dir: str | Path, vocab_size: int,
                         fingerprints: Mapping[str, str],
                         documents: Callable[[], Iterable[tuple[str, str]]],
                         sample_chars: int = DEFAULT_SAMPLE_CHARS, model_type: str = "unigram",
                         settings: Mapping[str, object] | None = None) -> Path:
  """The cached model for this corpus (domain -> sha256) and settings, trained if needed.

  ``documents()`` yields (domain, text) for the train split; it is only called when
  the model must be (re)trained.
  """
  path = model_path(tokenizer_dir, vocab_size)
  meta_path = path.with_suffix(".json")
  want = {"version": _SETTINGS_VERSION, "vocab_size": vocab_size, "sample_chars": sample_chars,
          "model_type": model_type, "corpus_sha256": dict(sorted(fingerprints.items())),
          **dict(settings or {})}
  try:
    meta = json.loads(meta_path.read_text("utf-8"))
    if path.exists() and {k: meta.get(k) for k in want} == want and meta.get(
        "sha256") == storage.file_sha256(path):
      return path
  except (OSError, ValueError):
    pass
  sentences = sample_sentences(documents(), sorted(fingerprints), sample_chars)
  train_sentencepiece(path, vocab_size, sentences, model_type)
  meta = {**want, "sha256": storage.file_sha256(path)}
  meta_path.write_text(json.dumps(meta, indent=2) + "\n", "utf-8")
  return path


def load_vocabulary(spec: str | Path) -> seqio.Vocabulary:
  """``"bytes"`` -> ``seqio.ByteVocabulary``; a ``.model`` path -> SentencePiece."""
  import seqio  # pylint: disable=g-import-not-at-top,redefined-outer-name
  if str(spec) == BYTES:
    return seqio.ByteVocabulary()
  if not os.path.isfile(spec):
    raise errors.DoremiError(f"tokenizer model {str(spec)!r} not found")
  return seqio.SentencePieceVocabulary(str(spec))


def vocabulary_sha256(vocab: seqio.Vocabulary) -> str:
  """Identifies a vocabulary in cache keys: the model file's sha256, or its type name."""
  path = getattr(vocab, "sentencepiece_model_file", None)
  return storage.file_sha256(Path(path)) if path else f"{type(vocab).__name__}:{vocab.vocab_size}"


def check_vocab_matches(model_vocab_size: int, vocabulary: seqio.Vocabulary,
                        what: str = "VOCAB_SIZE", exact: bool = False) -> None:
  """The model's embedding table must hold every token id of the tokenizer (``exact``:
  the sizes must be equal, e.g. a requested vocab size against a given model)."""
  size = int(vocabulary.vocab_size)
  if int(model_vocab_size) < size or (exact and int(model_vocab_size) != size):
    path = getattr(vocabulary, "sentencepiece_model_file", None)
    name = f"{type(vocabulary).__name__}" + (f" {path}" if path else "")
    need = f"= {size}" if exact else f">= {size}"
    raise errors.DoremiError(
        f"vocab/tokenizer mismatch: {what}={model_vocab_size} but the tokenizer ({name}) has "
        f"{size} tokens; set {what} {need}")


def token_byte_lengths(vocabulary: seqio.Vocabulary) -> "np.ndarray":
  """UTF-8 bytes of text each token id stands for, so losses become bits per byte.

  SentencePiece: a piece's text with ``▁`` as one space byte, ``<0xNN>`` byte pieces are
  1 byte, control and unknown pieces 0 (the dummy-prefix space of each document counts
  as 1 byte, so a document's total is its text plus at most one byte). Byte vocabulary:
  1 per byte token. Any other vocabulary (e.g. token-level synthetic domains) counts 1
  per non-special id, so "bits per byte" there reads as bits per token, unless its
  ``decode`` of one id gives text (a user's own vocabulary): then that text's bytes.
  """
  import numpy as np  # pylint: disable=g-import-not-at-top
  import seqio  # pylint: disable=g-import-not-at-top,redefined-outer-name
  size = int(vocabulary.vocab_size)
  special = {i for i in (0, vocabulary.eos_id, getattr(vocabulary, "unk_id", None))
             if i is not None}
  out = np.asarray([0 if i in special else 1 for i in range(size)], np.int32)
  if isinstance(vocabulary, seqio.SentencePieceVocabulary):
    sp = vocabulary.tokenizer
    for i in range(min(size, sp.get_piece_size())):
      if sp.is_control(i) or sp.is_unknown(i):
        out[i] = 0
      elif sp.is_byte(i):
        out[i] = 1
      else:
        out[i] = len(sp.id_to_piece(i).replace("\u2581", " ").encode("utf-8"))
  elif not isinstance(vocabulary, (seqio.ByteVocabulary, seqio.PassThroughVocabulary)):
    for i in range(size):
      text = vocabulary.decode([i]) if out[i] else None
      if isinstance(text, str):
        out[i] = len(text.encode("utf-8"))
  return out
