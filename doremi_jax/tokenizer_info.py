"""What tokenizer a mixture uses: recorded with exported weights, checked on load.

DoReMi weights depend strongly on the tokenizer (excess loss is measured in its
tokens), so weights found with one tokenizer must not silently drive another.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

import seqio

from doremi_jax import corpus_reader, errors


def _sha256(path: str) -> str:
  return corpus_reader.file_sha256(Path(path))


def describe_vocabulary(vocab: seqio.Vocabulary) -> dict[str, Any]:
  info: dict[str, Any] = {"type": type(vocab).__name__, "vocab_size": int(vocab.vocab_size)}
  path = getattr(vocab, "sentencepiece_model_file", None)
  if path:
    info["path"] = os.path.abspath(path)
    info["sha256"] = _sha256(path) if os.path.exists(path) else None
  return info


def describe(mixture_or_task_name: str) -> dict[str, Any]:
  provider = errors.require_mixture_or_task(mixture_or_task_name)
  return describe_vocabulary(provider.output_features["targets"].vocabulary)


def check_same_tokenizer(recorded: Mapping[str, Any], mixture_or_task_name: str) -> None:
  """Fails when weights were found with a different tokenizer than the mixture uses."""
  if not recorded:
    return
  current = describe(mixture_or_task_name)
  keys = ("type", "vocab_size", "sha256")
  diff = {k: (recorded.get(k), current.get(k)) for k in keys
          if recorded.get(k) is not None and recorded.get(k) != current.get(k)}
  if diff:
    raise errors.DoremiError(
        f"tokenizer mismatch: the weights were found with {recorded.get('type')} "
        f"(vocab {recorded.get('vocab_size')}, sha256 {str(recorded.get('sha256'))[:12]}) but "
        f"{mixture_or_task_name!r} uses {current.get('type')} (vocab {current.get('vocab_size')}, "
        f"sha256 {str(current.get('sha256'))[:12]}); DoReMi weights are tokenizer-specific")
