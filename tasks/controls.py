"""The controls corpus (``doremi_jax.corpora.controls``) as DoReMi domains: four embedded
real-text domains plus ``junk`` and ``boilerplate``, whose right answer (weight well below
uniform) is known.

``register_controls_prepared`` builds the embedded corpus if needed, writes the controls
corpus into ``$DOREMI_CACHE/controls_<key>`` (once per settings), prepares it with the
Beam job and registers ``controls_<domain>`` Tasks with ``controls_natural`` and
``controls_uniform``. ``gin/experiments/controls.gin`` binds its arguments from macros.
"""
from __future__ import annotations

import hashlib
import json
import os

import gin

from doremi_jax import storage
from doremi_jax.corpora import controls, corpus_build
from doremi_jax.data import tokenizer
from doremi_jax.tasks import prepared

PREFIX = "controls"
BASELINE_MIXTURE = "controls_natural"
UNIFORM_MIXTURE = "controls_uniform"
CONTROL_TASKS = tuple(f"{PREFIX}_{d}" for d in controls.CONTROL_DOMAINS)
DEFAULT_REAL_CAP_BYTES = 1_000_000


def default_corpus_dir(real_corpus_dir: str, settings: dict) -> str:
  """Where the controls corpus is written by default: keyed by its inputs and settings."""
  key = hashlib.sha256(json.dumps({"real_corpus_dir": real_corpus_dir, **settings},
                                  sort_keys=True).encode()).hexdigest()[:16]
  return str(storage.cache_root() / f"controls_{key}")


@gin.configurable
def register_controls_prepared(corpus_dir: str | None = None,
                               real_corpus_dir: str | None = None,
                               real_cap_bytes: int = DEFAULT_REAL_CAP_BYTES,
                               junk_fraction: float = 0.4, boilerplate_fraction: float = 0.1,
                               vocab_size: int = tokenizer.DEFAULT_VOCAB_SIZE,
                               sequence_length: int = 128, validation_fraction: float = 0.05,
                               sample_chars: int = tokenizer.DEFAULT_SAMPLE_CHARS,
                               prepared_dir: str | None = None,
                               model_vocab_size: int | None = None) -> list[str]:
  """Builds (or finds) the embedded corpus, writes (or finds) the controls corpus from it,
  prepares that once and registers it; returns the task names, sorted.

  ``real_corpus_dir`` is where the embedded corpus is built, as ``register_embedded``'s
  ``corpus_dir``: it is built with every default domain and its default cap (raised to
  ``real_cap_bytes`` if that is larger), so it is the same cache the embedded experiment uses.
  """
  real_corpus_dir = os.path.abspath(os.path.expanduser(
      real_corpus_dir or corpus_build.embedded_corpus_dir()))
  corpus_build.build_corpus(real_corpus_dir,
                            max(corpus_build.DEFAULT_CAP_BYTES, int(real_cap_bytes)))
  settings = {"real_domains": list(controls.REAL_DOMAINS), "real_cap_bytes": int(real_cap_bytes),
              "junk_fraction": float(junk_fraction),
              "boilerplate_fraction": float(boilerplate_fraction)}
  corpus_dir = os.path.abspath(os.path.expanduser(
      corpus_dir or default_corpus_dir(real_corpus_dir, settings)))
  controls.write_controls_corpus(corpus_dir, real_corpus_dir, controls.REAL_DOMAINS,
                                 int(real_cap_bytes), float(junk_fraction),
                                 float(boilerplate_fraction))
  return prepared.register_prepared_source(
      f"dir:{corpus_dir}", PREFIX, vocab_size, sequence_length, validation_fraction,
      sample_chars, prepared_dir, model_vocab_size=model_vocab_size)
