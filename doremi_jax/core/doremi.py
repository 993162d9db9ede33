"""DoReMi domain-reweighting math (Xie et al. 2023) as pure, jit-able JAX array functions.

Shapes: token arrays are ``[batch, length]``; ``domain_ids`` is ``[batch]`` (one domain per
example) or ``[batch, length]``; ``loss_mask`` is bool or float 0/1. ``num_domains`` and
``objective`` are static Python values (mark them static under ``jax.jit``).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array
OBJECTIVES = ("domain_mean", "token_pooled")
# How a domain's excess loss is estimated from its tokens (see ``excess_estimates``).
ESTIMATORS = ("token_clip", "mean_clip")


def _token_domain_ids(domain_ids: Array, like: Array) -> Array:
  """Broadcasts per-example ids ``[batch]`` to per-token ids so one code path serves both."""
  domain_ids = jnp.asarray(domain_ids)
  extra = jnp.ndim(like) - domain_ids.ndim
  domain_ids = domain_ids.reshape(domain_ids.shape + (1,) * extra)
  return jnp.broadcast_to(domain_ids, jnp.shape(like)).astype(jnp.int32)


def _float(x: Array) -> Array:
  """Promotes to at least float32 so bf16 losses are not summed in low precision."""
  x = jnp.asarray(x)
  return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def _safe_div(num: Array, den: Array) -> Array:
  """``num / den`` where ``den > 0``, else 0 (no NaN in values or gradients for empty domains)."""
  ok = den > 0
  return jnp.where(ok, num / jnp.where(ok, den, 1.0), 0.0)


def _segment_mean(values: Array, domain_ids: Array, loss_mask: Array,
                  num_domains: int) -> tuple[Array, Array]:
  """Per-domain mean of ``values`` over unmasked tokens, via one ``segment_sum`` per statistic."""
  values = _float(values)
  ids = _token_domain_ids(domain_ids, values).reshape(-1)
  mask = jnp.asarray(loss_mask).reshape(-1) != 0
  # jnp.where (not multiply) so NaN/inf in padded positions cannot leak into the sums.
  sums = jax.ops.segment_sum(jnp.where(mask, values.reshape(-1), 0.0), ids,
                               num_segments=num_domains)
  counts = jax.ops.segment_sum(mask.astype(jnp.float32), ids, num_segments=num_domains)
  return _safe_div(sums, counts.astype(sums.dtype)), counts


def per_domain_excess_loss(proxy_token_loss: Array, reference_token_loss: Array,
                           domain_ids: Array, loss_mask: Array,
                           num_domains: int) -> tuple[Array, Array]:
  """Per-domain mean of the per-token clipped excess loss ``max(proxy - reference, 0)``.

  Clipping per token (before averaging) is DoReMi's definition: tokens the proxy already
  fits better than the reference add 0 but still count in the mean. Returns
  ``(excess [k], token_counts [k] float32)``; a domain with no tokens gets 0 and 0.
  """
  diff = _float(proxy_token_loss) - _float(reference_token_loss)
  return _segment_mean(jnp.maximum(diff, 0.0), domain_ids, loss_mask, num_domains)


def per_domain_mean_clipped_excess(proxy_token_loss: Array, reference_token_loss: Array,
                                   domain_ids: Array, loss_mask: Array,
                                   num_domains: int) -> tuple[Array, Array]:
  """``max(mean(proxy - reference), 0)`` per domain: clip after the domain's mean.

  Clipping each token first (the paper) gives zero-mean noise a positive mean
  (``E max(X, 0) ~ 0.4 sigma``), so a high-variance domain that neither model can learn
  looks under-learned; averaging first lets that noise cancel.
  """
  diff = _float(proxy_token_loss) - _float(reference_token_loss)
  mean, counts = _segment_mean(diff, domain_ids, loss_mask, num_domains)
  return jnp.maximum(mean, 0.0), counts


def excess_estimates(proxy_token_loss: Array, reference_token_loss: Array, domain_ids: Array,
                     loss_mask: Array, num_domains: int) -> tuple[Array, Array]:
  """Every estimator of ``ESTIMATORS`` at once: ``([len(ESTIMATORS), k], counts [k])``.

  Both are a few segment sums, so computing all of them lets proxies with different
  estimators share one compiled (vmapped) step: each picks its row by index.
  """
  token_clip, counts = per_domain_excess_loss(proxy_token_loss, reference_token_loss,
                                              domain_ids, loss_mask, num_domains)
  mean_clip, _ = per_domain_mean_clipped_excess(proxy_token_loss, reference_token_loss,
                                                domain_ids, loss_mask, num_domains)
  return jnp.stack([token_clip, mean_clip]), counts


def estimator_index(name: str) -> int:
  if name not in ESTIMATORS:
    raise ValueError(f"unknown excess estimator {name!r}; expected one of {ESTIMATORS}")
  return ESTIMATORS.index(name)


def per_domain_mean_loss(token_loss: Array, domain_ids: Array, loss_mask: Array,
                         num_domains: int) -> tuple[Array, Array]:
  """Per-domain mean of the (unclipped) token loss, for logging/eval; 0 for absent domains."""
  return _segment_mean(token_loss, domain_ids, loss_mask, num_domains)


def observed_excess(last_excess: Array, excess: Array, token_counts: Array) -> Array:
  """Uses the new excess only for domains seen in this batch, else the last observed one.

  A domain missing from a batch has no evidence, so its excess must not drop to 0 (which
  would shrink its weight). The caller initialises ``last_excess`` to zeros.
  """
  return jnp.where(jnp.asarray(token_counts) > 0, excess, last_excess)


def update_domain_weights(domain_weights: Array, excess: Array, step_size: float,
                          smoothing: float) -> Array:
  """Exponentiated-gradient ascent on the domain weights, then mixing with uniform.

  ``log a' = log a + step_size * excess`` renormalised in log space (softmax, so large
  excesses cannot overflow), then ``(1 - smoothing) * a' + smoothing / k`` keeps every
  weight >= smoothing / k so no domain is starved.
  """
  log_w = jnp.log(_float(domain_weights)) + step_size * _float(excess)
  new = jax.nn.softmax(log_w, axis=-1)
  k = new.shape[-1]
  return (1.0 - smoothing) * new + smoothing / k


def average_weights(average: Array, new_weights: Array, step: int | Array) -> Array:
  """Running mean of the weight trajectory; DoReMi outputs this average, not the last iterate.

  Convention: the initial weights are the 1st vector of the sequence. If ``average`` is the
  mean of the first ``step`` vectors (``step >= 1``; start with ``average = initial`` and
  ``step = 1``), the result is the mean of those ``step + 1`` vectors, i.e.
  ``average + (new_weights - average) / (step + 1)``. After ``T`` updates, pass ``step = T``
  on the ``T``-th call.
  """
  average = _float(average)
  step = jnp.asarray(step, dtype=average.dtype)
  return average + (_float(new_weights) - average) / (step + 1.0)


def average_weights_after(average: Array, new_weights: Array, step: int | Array,
                          start: int) -> Array:
  """The mean of the iterates after the first ``start`` updates (``start >= 1``): the
  weights of update ``step`` (1-based) while ``step <= start``, then their running mean.

  A short proxy run's all-steps average is dominated by its first steps, when a fresh
  proxy trails the reference everywhere and most on what the reference fits best; leaving
  those out keeps what the weights settle to. ``start = 0`` is ``average_weights``.
  """
  average, new = _float(average), _float(new_weights)
  count = jnp.asarray(step, dtype=average.dtype) - start
  return jnp.where(count <= 0, new, average + (new - average) / jnp.maximum(count, 1.0))


def loss_coefficients(domain_weights: Array, token_counts: Array,
                      objective: str = "domain_mean") -> Array:
  """Per-domain factor ``c`` with weighted loss ``= sum_t mask_t c[d_t] l_t`` (see below).

  ``token_counts`` are the counts of the *whole* batch, so with gradient accumulation each
  micro-batch's ``coefficient_loss`` is its exact share of the whole batch's loss.
  """
  if objective not in OBJECTIVES:
    raise ValueError(f"unknown objective {objective!r}; expected one of {OBJECTIVES}")
  weights = jax.lax.stop_gradient(_float(domain_weights))
  counts = _float(token_counts)
  if objective == "domain_mean":
    return _safe_div(weights, counts)
  return weights * _safe_div(1.0, jnp.sum(weights * counts, axis=-1, keepdims=True))


def coefficient_loss(token_loss: Array, domain_ids: Array, loss_mask: Array,
                     coefficients: Array) -> Array:
  """``sum_t mask_t c[d_t] l_t`` in float32 (``c`` from ``loss_coefficients``)."""
  token_loss = _float(token_loss)
  ids = jnp.asarray(domain_ids).astype(jnp.int32)
  # Gather at the ids' own shape ([batch] for per-example ids), then broadcast to tokens.
  per_id = coefficients[ids].reshape(ids.shape + (1,) * (token_loss.ndim - ids.ndim))
  token_c = jnp.broadcast_to(per_id, token_loss.shape)
  mask = jnp.asarray(loss_mask) != 0
  return jnp.sum(jnp.where(mask, token_c * token_loss, 0.0))


def weighted_proxy_loss(token_loss: Array, domain_ids: Array, loss_mask: Array,
            domain_weights: Array, objective: str = "domain_mean") -> Array:
  """Domain-weighted training loss of the proxy model (weights are constants: stop_gradient).

  ``"domain_mean"`` (the paper): ``sum_i a_i * mean_{tokens of i} l``, absent domains add 0.
  ``"token_pooled"`` (the reference implementation): ``sum_t a[d_t] l_t / sum_t a[d_t]``
  over unmasked tokens, so a domain's pull also scales with its token count in the batch.
  """
  weights = jnp.asarray(domain_weights)
  _, counts = _segment_mean(token_loss, domain_ids, loss_mask, weights.shape[-1])  # counts
  return coefficient_loss(token_loss, domain_ids, loss_mask,
                          loss_coefficients(weights, counts, objective))


def l1_distance(a: Array, b: Array) -> Array:
  """L1 distance between weight vectors (last axis), for convergence checks."""
  return jnp.sum(jnp.abs(_float(a) - _float(b)), axis=-1)


def weight_diagnostics(weights: Array) -> dict[str, Array]:
  """Signs of collapse towards one-hot: entropy (nats), smallest weight and its index, and
  the L1 distance from uniform (last axis; works on stacked ``[P, k]`` weights too)."""
  w = _float(weights)
  k = w.shape[-1]
  entropy = -jnp.sum(jnp.where(w > 0, w * jnp.log(jnp.where(w > 0, w, 1.0)), 0.0), axis=-1)
  return {"weight_entropy": entropy, "min_weight": jnp.min(w, axis=-1),
          "min_weight_domain": jnp.argmin(w, axis=-1),
          "l1_from_uniform": jnp.sum(jnp.abs(w - 1.0 / k), axis=-1)}
