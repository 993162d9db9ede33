"""Per-token cross-entropy from final hidden states: the output layer and its loss, whole
or a sequence chunk at a time (forward-only losses never hold all the logits).

Pure functions of a model config (``model.TransformerConfig``), hidden states and the
output weights, so the model and the benchmarks share one implementation.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from doremi_jax.core import partitioning


def _constrain(x: jax.Array, names: tuple[str, ...]) -> jax.Array:
  return nn.with_logical_constraint(x, names)


def output_logits(cfg, hidden: jax.Array, weights: jax.Array) -> jax.Array:
  """float32 logits ``[..., vocab]`` from final hidden states and ``output_weights``.

  Tied: ``weights`` is the ``[vocab, embed]`` embedding and the *activations* are scaled
  by ``1/sqrt(emb_dim)`` (not the ``[tokens, vocab]`` logits). Untied: ``[embed, vocab]``.
  The matmul runs on 2-D ``[tokens, embed]`` activations: with 3-D ones XLA:CPU's
  backward of the untied ``[embed, vocab]`` kernel transposes the whole
  ``[tokens, vocab]`` gradient first (2.4x slower output layer at vocab 50257).
  """
  lead = hidden.shape[:-1]
  x = hidden.reshape(-1, hidden.shape[-1]).astype(cfg.dtype)
  weights = weights.astype(cfg.dtype)
  if cfg.tied_embeddings:
    logits = jnp.dot(x / jnp.sqrt(cfg.emb_dim).astype(x.dtype), weights.T)
  else:
    logits = jnp.dot(x, weights)
  return logits.astype(jnp.float32).reshape(*lead, -1)


def token_xent(cfg, hidden: jax.Array, weights: jax.Array,
               targets: jax.Array) -> jax.Array:
  """Per-token cross-entropy ``[batch, length]`` from final hidden states (no chunking)."""
  logits = _constrain(output_logits(cfg, hidden, weights), ("batch", "length", "vocab"))
  return optax.softmax_cross_entropy_with_integer_labels(logits, targets)


def _shards(name: str) -> int:
  """Into how many pieces the current mesh (``jax.set_mesh``) and flax logical rules split
  logical axis ``name`` (1 outside a mesh): a chunk's size is what one device holds."""
  mesh = jax.sharding.get_abstract_mesh()
  return 1 if mesh.empty else partitioning.axis_split(mesh, name, nn.get_logical_axis_rules())


def _length_chunk(batch: int, length: int, vocab: int, max_elements: int) -> int:
  """Largest divisor ``c`` of ``length`` with ``batch * c * vocab <= max_elements`` (>= 1)."""
  fits = [c for c in range(1, length + 1)
          if length % c == 0 and batch * c * vocab <= max_elements]
  return max(fits, default=1)


def chunked_token_xent(cfg, hidden: jax.Array, weights: jax.Array,
                       targets: jax.Array, max_elements: int | None = None) -> jax.Array:
  """``token_xent`` computed over sequence chunks, never materialising all the logits.

  The ``[batch, length, vocab]`` logits are built ``[batch, chunk, vocab]`` at a time
  (at most ``max_elements`` per device, default ``cfg.logits_chunk_elements``: on a pod
  each device holds only its share of the batch, so chunks are as long as that allows,
  not 1 position of a 512-sequence global batch) inside a
  ``lax.map``, so each chunk's matmul output and softmax stay in cache; chunks run over
  the sequence axis so every chunk keeps the full (sharded) batch. Each chunk is
  rematerialised, so its backward too goes a chunk at a time (recomputing each chunk's
  logits) and never holds all the logits or their gradient. Used for forward-only losses
  (the frozen reference model, evaluation), and for the trained model's loss when
  ``cfg.chunk_train_logits`` (pods: memory); on CPU the unchunked ``token_xent`` trains
  faster.
  """
  max_elements = cfg.logits_chunk_elements if max_elements is None else max_elements
  batch, length = targets.shape
  device_batch = max(batch // _shards("batch"), 1)
  device_vocab = max(cfg.vocab_size // _shards("vocab"), 1)
  chunk = (_length_chunk(device_batch, length, device_vocab, max_elements) if max_elements
           else length)
  if chunk == length:
    return token_xent(cfg, hidden, weights, targets)
  n = length // chunk

  def split(a):  # [batch, length, ...] -> [n, batch, chunk, ...]
    return jnp.swapaxes(a.reshape(batch, n, chunk, *a.shape[2:]), 0, 1)

  one = jax.checkpoint(lambda a: token_xent(cfg, a[0], weights, a[1]))
  losses = jax.lax.map(one, (split(hidden), split(targets)))  # [n, batch, chunk]
  return jnp.swapaxes(losses, 0, 1).reshape(batch, length)
