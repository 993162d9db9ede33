"""The generated real-text corpus (``doremi_jax.synthetic_text``) as DoReMi domains.

Importing this module writes the corpus if missing (``$DOREMI_CACHE/synthetic_text_<scale>``,
default ``~/.cache/doremi_jax/...``), trains or reuses its SentencePiece tokenizer and
registers ``stext_<domain>`` Tasks (random, constant, grammar, arithmetic) plus the
``stext_baseline`` (token counts) and ``stext_uniform`` Mixtures. DoReMi should move
weight from ``random`` and ``constant`` to ``grammar`` and ``arithmetic``.
Gin macros (all optional): ``SYNTHETIC_TEXT_DIR``, ``SYNTHETIC_TEXT_SCALE`` and the
tokenizer settings read by ``tasks.corpus.gin_settings``.
"""
from __future__ import annotations

import os

from doremi_jax import gin_utils, synthetic_text, tasks_lib
from doremi_jax.corpus import cache_root
from tasks import corpus

PREFIX = "stext"
BASELINE_MIXTURE = "stext_baseline"
UNIFORM_MIXTURE = "stext_uniform"


def default_corpus_dir(scale: float) -> str:
  return str(cache_root() / f"synthetic_text_{scale:g}")


def register_from_gin(corpus_dir: str | None = None, scale: float | None = None) -> list[str]:
  """Writes (or finds) the corpus, then registers it like any corpus dir."""
  scale = float(scale if scale is not None else gin_utils.macro_value("SYNTHETIC_TEXT_SCALE", 1.0))
  corpus_dir = corpus_dir or gin_utils.macro_value("SYNTHETIC_TEXT_DIR", None) \
      or default_corpus_dir(scale)
  corpus_dir = os.path.abspath(os.path.expanduser(corpus_dir))
  synthetic_text.write_corpus(corpus_dir, scale=scale)
  vocabulary, vocab_size, fraction, sample_chars = corpus.gin_settings()
  names = corpus.register_corpus(corpus_dir, PREFIX, vocabulary, vocab_size, fraction,
                                 sample_chars=sample_chars)
  corpus.check_model_vocab(names[0])
  # Re-registering elsewhere (an exported mixture module) must write the corpus first.
  write = (f"from doremi_jax import synthetic_text; "
           f"synthetic_text.write_corpus({corpus_dir!r}, scale={scale!r}); ")
  tasks_lib.record_provenance(names, write + tasks_lib.registration_statements(names)[0])
  return names


register_from_gin()
