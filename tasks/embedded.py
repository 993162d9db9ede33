"""The embedded real-text corpus (``doremi_jax.corpus_build``) as DoReMi domains.

Importing this module builds the corpus on first use (from pinned packages, cached
in ``$DOREMI_CACHE/embedded_corpus`` or ``~/.cache/doremi_jax/embedded_corpus``),
trains or reuses its SentencePiece tokenizer and registers ``embedded_<domain>`` Tasks
plus the ``embedded_baseline`` (token counts) and ``embedded_uniform`` Mixtures.
Gin macros (all optional): ``EMBEDDED_CORPUS_DIR``, ``EMBEDDED_CAP_BYTES`` and the
tokenizer settings read by ``tasks.corpus.gin_settings``.
"""
from __future__ import annotations

from doremi_jax import corpus_build, gin_utils, tasks_lib
from doremi_jax.corpus import DEFAULT_CAP_BYTES, embedded_corpus_dir
from tasks import corpus

PREFIX = "embedded"
BASELINE_MIXTURE = "embedded_baseline"
UNIFORM_MIXTURE = "embedded_uniform"


def register_from_gin(corpus_dir: str | None = None, cap_bytes: int | None = None) -> list[str]:
  """Builds (or finds) the corpus, then registers it like any corpus dir."""
  corpus_dir = corpus_dir or gin_utils.macro_value("EMBEDDED_CORPUS_DIR", None) \
      or embedded_corpus_dir()
  cap_bytes = int(cap_bytes or gin_utils.macro_value("EMBEDDED_CAP_BYTES", DEFAULT_CAP_BYTES))
  corpus_build.build_corpus(corpus_dir, cap_bytes)
  vocabulary, vocab_size, fraction, sample_chars = corpus.gin_settings()
  names = corpus.register_corpus(corpus_dir, PREFIX, vocabulary, vocab_size, fraction,
                                 sample_chars=sample_chars)
  corpus.check_model_vocab(names[0])
  # Re-registering elsewhere must rebuild the corpus first if it is missing there.
  build = (f"from doremi_jax import corpus_build; "
           f"corpus_build.build_corpus({corpus_dir!r}, {cap_bytes}); ")
  tasks_lib.record_provenance(names, build + tasks_lib.registration_statements(names)[0])
  return names


register_from_gin()
