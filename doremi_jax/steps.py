"""The step factory: the plain LM step and the DoReMi proxy step, each jitted once.

The proxy step does, in one compiled function: proxy forward (keeping the VJP),
frozen reference forward, per-domain excess loss, exponentiated-gradient update
of the domain weights, the backward pass of the domain-weighted loss through the
same VJP (one forward, one backward), the optax update and the running average.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import flax.linen as nn
import gin
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from doremi_jax import doremi, partitioning
from doremi_jax.train_state import TrainState

Batch = dict[str, jax.Array]
BATCH_LOGICAL_AXES = {
    "inputs": ("batch", "length"),
    "targets": ("batch", "length"),
    "loss_mask": ("batch", "length"),
    "domain_ids": ("batch",),
}


@gin.configurable
@dataclasses.dataclass(frozen=True)
class DoremiConfig:
  """DoReMi hyper-parameters (paper defaults: step size 1, smoothing 1e-3)."""
  step_size: float = 1.0
  smoothing: float = 1e-3
  objective: str = "domain_mean"   # or "token_pooled" (the reference implementation)

  def __post_init__(self):
    if self.objective not in doremi.OBJECTIVES:
      raise ValueError(f"DoremiConfig.objective={self.objective!r} is not one of "
                       f"{doremi.OBJECTIVES}")
    if not 0.0 <= self.smoothing <= 1.0:
      raise ValueError(f"DoremiConfig.smoothing={self.smoothing} must be in [0, 1]")


def token_losses(model: nn.Module, params: Any, batch: Batch, chunked: bool = False
                 ) -> jax.Array:
  """Per-token cross-entropy ``[batch, length]`` (masking happens in the reductions).

  ``chunked=True`` never materialises the whole ``[batch, length, vocab]`` logits (see
  ``model.chunked_token_xent``): for forward-only losses (reference model, evaluation).
  """
  return model.apply({"params": params}, batch["inputs"], batch["targets"], chunked,
                     method="token_losses")


def _masked_mean(x: jax.Array, mask: jax.Array) -> jax.Array:
  return jnp.sum(x * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def _plain_step(model, optimizer, num_domains: int):
  def step(state: TrainState, batch: Batch) -> tuple[TrainState, dict[str, jax.Array]]:
    mask = batch["loss_mask"]

    def loss_fn(params):
      tl = token_losses(model, params, batch)
      return _masked_mean(tl, mask), tl

    (loss, tl), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    domain_loss, counts = doremi.per_domain_mean_loss(
        jax.lax.stop_gradient(tl), batch["domain_ids"], mask, num_domains)
    metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads),
               "domain_loss": domain_loss, "domain_tokens": counts}
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics

  return step


def _proxy_step(model, optimizer, num_domains: int, cfg: DoremiConfig):
  def step(state: TrainState, reference_params: Any, batch: Batch
           ) -> tuple[TrainState, dict[str, jax.Array]]:
    mask, domain_ids = batch["loss_mask"], batch["domain_ids"]
    proxy_tl, proxy_vjp = jax.vjp(lambda p: token_losses(model, p, batch), state.params)
    # Forward only, so its logits are built a chunk at a time (never all 412 MB at vocab 50k).
    reference_tl = jax.lax.stop_gradient(
        token_losses(model, reference_params, batch, chunked=True))

    excess, counts = doremi.per_domain_excess_loss(
        proxy_tl, reference_tl, domain_ids, mask, num_domains)
    ds = state.domains
    excess_used = doremi.observed_excess(ds.last_excess, excess, counts)
    weights = doremi.update_domain_weights(ds.weights, excess_used, cfg.step_size, cfg.smoothing)
    average = doremi.average_weights(ds.average, weights, state.step + 1)

    def objective(tl):
      return doremi.weighted_proxy_loss(tl, domain_ids, mask, weights, cfg.objective)

    loss, dloss_dtokens = jax.value_and_grad(objective)(proxy_tl)
    (grads,) = proxy_vjp(dloss_dtokens)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    domain_loss, _ = doremi.per_domain_mean_loss(proxy_tl, domain_ids, mask, num_domains)
    reference_loss, _ = doremi.per_domain_mean_loss(reference_tl, domain_ids, mask, num_domains)
    metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads),
               "unweighted_loss": _masked_mean(proxy_tl, mask),
               "domain_loss": domain_loss, "domain_reference_loss": reference_loss,
               "domain_excess": excess, "domain_tokens": counts,
               "domain_weights": weights, "average_domain_weights": average}
    new_domains = ds.replace(weights=weights, average=average, last_excess=excess_used)
    new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state,
                              domains=new_domains)
    return new_state, metrics

  return step


def batch_shardings(mesh: Mesh, rules=None) -> dict[str, jax.sharding.NamedSharding]:
  return {k: partitioning.logical_sharding(mesh, v, rules) for k, v in BATCH_LOGICAL_AXES.items()}


def make_train_step(kind: str, model: nn.Module, optimizer: optax.GradientTransformation,
                    mesh: Mesh, state_shardings: TrainState, num_domains: int,
                    doremi_config: DoremiConfig | None = None, rules=None) -> Callable:
  """Returns the jitted step for ``kind`` in {"plain", "proxy"}.

  plain: ``step(state, batch)``; proxy: ``step(state, reference_params, batch)``.
  The state is donated; reference params are an input that is never updated.
  """
  rules = partitioning.logical_axis_rules() if rules is None else rules
  batch_sh = batch_shardings(mesh, rules)
  replicated = partitioning.replicated(mesh)
  if kind == "plain":
    fn = _plain_step(model, optimizer, num_domains)
    in_shardings = (state_shardings, batch_sh)
  elif kind == "proxy":
    fn = _proxy_step(model, optimizer, num_domains, doremi_config or DoremiConfig())
    in_shardings = (state_shardings, state_shardings.params, batch_sh)
  else:
    raise ValueError(f"unknown step kind {kind!r}; expected 'plain' or 'proxy'")

  def with_rules(*args):
    with nn.logical_axis_rules(rules):
      return fn(*args)

  jitted = jax.jit(with_rules, in_shardings=in_shardings,
                   out_shardings=(state_shardings, replicated), donate_argnums=(0,))

  def run(*args):
    with jax.set_mesh(mesh):
      return jitted(*args)

  run.jitted = jitted  # exposed for AOT lowering / compile-count checks
  return run


def make_eval_step(model: nn.Module, mesh: Mesh, params_shardings: Any, num_domains: int,
                   rules=None) -> Callable:
  """Per-domain sums of token loss and token counts for held-out evaluation."""
  rules = partitioning.logical_axis_rules() if rules is None else rules

  def fn(params, batch):
    with nn.logical_axis_rules(rules):
      tl = token_losses(model, params, batch, chunked=True)
    mask = batch["loss_mask"]
    mean, counts = doremi.per_domain_mean_loss(tl, batch["domain_ids"], mask, num_domains)
    return mean * counts, counts

  jitted = jax.jit(fn, in_shardings=(params_shardings, batch_shardings(mesh, rules)),
                   out_shardings=partitioning.replicated(mesh))

  def run(params, batch):
    with jax.set_mesh(mesh):
      return jitted(params, batch)

  return run
