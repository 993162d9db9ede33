"""The generated real-text corpus (``doremi_jax.corpora.synthetic_text``) as DoReMi domains.

``register_synthetic_text`` writes the corpus if missing (``$DOREMI_CACHE/synthetic_text_<scale>``,
default ``~/.cache/doremi_jax/...``), trains or reuses its SentencePiece tokenizer and
registers ``stext_<domain>`` Tasks plus ``stext_baseline`` and ``stext_uniform``.
``gin/experiments/synthetic_text.gin`` binds its arguments from macros.
"""
from __future__ import annotations

import os

import gin

from doremi_jax import storage
from doremi_jax.corpora import synthetic_text
from doremi_jax.data import tokenizer
from doremi_jax.tasks import corpus

PREFIX = "stext"
BASELINE_MIXTURE = "stext_baseline"
UNIFORM_MIXTURE = "stext_uniform"


def default_corpus_dir(scale: float) -> str:
  return str(storage.cache_root() / f"synthetic_text_{scale:g}")


@gin.configurable
def register_synthetic_text(corpus_dir: str | None = None, scale: float = 1.0,
                            vocabulary: str = tokenizer.SENTENCEPIECE,
                            vocab_size: int = tokenizer.DEFAULT_VOCAB_SIZE,
                            validation_fraction: float = 0.05,
                            sample_chars: int = tokenizer.DEFAULT_SAMPLE_CHARS,
                            model_vocab_size: int | None = None) -> list[str]:
  """Writes (or finds) the corpus, then registers it like any corpus dir."""
  scale = float(scale)
  corpus_dir = os.path.abspath(os.path.expanduser(corpus_dir or default_corpus_dir(scale)))
  synthetic_text.write_corpus(corpus_dir, scale=scale)
  return corpus.register_generated(
      register_synthetic_text, corpus_dir, PREFIX, {"corpus_dir": corpus_dir, "scale": scale},
      corpus.tokenizer_kwargs(vocabulary, vocab_size, validation_fraction, sample_chars),
      model_vocab_size)
