"""Gradient accumulation inside one jitted step: the micro-batch layout, forward-only
losses over micro-batches and gradients summed over a ``lax.scan``.

With ``m == 1`` every function is the identity or a plain ``jax.value_and_grad``, so the
single-batch step compiles exactly as without accumulation.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

Batch = dict[str, jax.Array]


def _constrain(batch: Batch, axes: Mapping[str, tuple], lead: tuple = ()) -> Batch:
  return {k: nn.with_logical_constraint(v, lead + tuple(axes[k])) if k in axes else v
          for k, v in batch.items()}


def split(batch: Batch, m: int, axes: Mapping[str, tuple]) -> Batch:
  """``[b, ...] -> [m, b/m, ...]``, micro-batch ``j`` holding examples ``j, j+m, ...``.

  Strided (not contiguous) so each micro-batch is split over the data shards like the whole
  batch without moving data, when every shard's rows divide into ``m`` (the trainer checks
  ``batch % (m * shards) == 0``). ``axes`` are the fields' logical axes (batch first).
  """
  if m == 1:
    return batch
  size = next(iter(batch.values())).shape[0]
  if size % m:
    raise ValueError(f"batch of {size} does not split into {m} micro-batches")
  out = {k: jnp.swapaxes(v.reshape(size // m, m, *v.shape[1:]), 0, 1) for k, v in batch.items()}
  return _constrain(out, axes, (None,))


def forward(fn: Callable[[Batch], jax.Array], micro: Batch, m: int,
            axes: Mapping[str, tuple]) -> jax.Array:
  """``fn`` (forward only) on each micro-batch in turn: ``[m, b/m, ...]`` (``m == 1``: ``fn``)."""
  if m == 1:
    return fn(micro)
  return jax.lax.map(lambda b: fn(_constrain(b, axes)), micro)


def value_and_grad(loss_fn: Callable[[Any, Batch], tuple[jax.Array, Any]], params: Any,
                   micro: Batch, m: int, axes: Mapping[str, tuple]
                   ) -> tuple[tuple[jax.Array, Any], Any]:
  """``((sum of losses, stacked aux), sum of gradients)`` over the micro-batches.

  ``loss_fn(params, batch) -> (loss, aux)`` must already be normalised by the *whole*
  batch, so the sum is the whole batch's loss and gradient. Gradients accumulate in the
  params' dtype (float32 params: float32 sums).
  """
  if m == 1:
    return jax.value_and_grad(loss_fn, has_aux=True)(params, micro)

  def body(carry, batch):
    loss, grads = carry
    (part, aux), g = jax.value_and_grad(loss_fn, has_aux=True)(params, _constrain(batch, axes))
    return (loss + part, jax.tree.map(jnp.add, grads, g)), aux

  zeros = (jnp.zeros((), jnp.float32), jax.tree.map(jnp.zeros_like, params))
  (loss, grads), aux = jax.lax.scan(body, zeros, micro)
  return (loss, aux), grads
