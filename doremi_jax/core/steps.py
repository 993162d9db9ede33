"""The step factory: the plain LM step and the DoReMi proxy step, each jitted once.

The proxy step does, in one compiled function: proxy forward (keeping the VJP),
frozen reference forward, per-domain excess loss, exponentiated-gradient update
of the domain weights, the backward pass of the domain-weighted loss through the
same VJP (one forward, one backward), the optax update and the running average.
With ``microbatches > 1`` both steps accumulate gradients exactly (``accumulate.py``).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import flax.linen as nn
import gin
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from doremi_jax import errors
from doremi_jax.core import accumulate, doremi, partitioning
from doremi_jax.core.train_state import TrainState

Batch = dict[str, jax.Array]
BATCH_LOGICAL_AXES = {
    "inputs": ("batch", "length"),
    "targets": ("batch", "length"),
    "loss_mask": ("batch", "length"),
    "domain_ids": ("batch",),
}


@dataclasses.dataclass(frozen=True)
class DoremiSetting:
  """One proxy's DoReMi hyper-parameters."""
  step_size: float
  smoothing: float
  estimator: str
  use_reference: bool = True  # False: the reference-free ablation (Group DRO on raw loss)

  @property
  def tag(self) -> str:
    """A file-name-safe label, e.g. ``eta0.1-mean_clip-c0.001`` (``-noref`` appended for
    the reference-free ablation)."""
    tag = f"eta{self.step_size:g}-{self.estimator}-c{self.smoothing:g}"
    return tag if self.use_reference else tag + "-noref"


def _as_list(value) -> list:
  return list(value) if isinstance(value, (list, tuple)) else [value]


@gin.configurable
@dataclasses.dataclass(frozen=True)
class DoremiConfig:
  """DoReMi hyper-parameters (paper: step size 1, smoothing 1e-3, per-token clip); a bad
  value is the project's one-line error (``errors.DoremiError``).

  ``step_size``, ``smoothing`` and ``estimator`` may each be a list: the proxy stage then
  trains one proxy per combination (their product) in one compiled step that shares the
  batch and the frozen reference's forward pass.
  """
  step_size: float | Sequence[float] = 1.0
  smoothing: float | Sequence[float] = 1e-3
  estimator: str | Sequence[str] = "token_clip"  # see doremi.ESTIMATORS
  objective: str = "domain_mean"   # or "token_pooled" (the reference implementation)
  # The frozen reference's forward in another compute dtype ("bfloat16": params cast too);
  # None: the model's. Only the reference: the proxy and the DoReMi math are unchanged.
  reference_dtype: str | None = None
  # False (or a list with False): the ablation without the reference, Group DRO on the
  # proxy's own loss (excess = proxy loss), which shows what the reference is for.
  use_reference: bool | Sequence[bool] = True
  # Average the weights over the updates after this many (0: all, the paper's): see
  # ``doremi.average_weights_after``.
  average_start: int = 0

  def __post_init__(self):
    def bad(message: str) -> errors.DoremiError:
      return errors.DoremiError(f"DoremiConfig.{message}")

    def number(x) -> bool:
      return isinstance(x, (int, float)) and not isinstance(x, bool)

    if (not isinstance(self.average_start, int) or isinstance(self.average_start, bool)
        or self.average_start < 0):
      raise bad(f"average_start={self.average_start!r} must be an integer >= 0")
    if self.reference_dtype not in (None, "float32", "bfloat16"):
      raise bad(f"reference_dtype={self.reference_dtype!r} is not one of "
                "(None, 'float32', 'bfloat16')")
    for name in ("step_size", "smoothing", "estimator", "use_reference"):
      if isinstance(getattr(self, name), (list, tuple)) and not getattr(self, name):
        raise bad(f"{name}=[] is empty; give a value or a non-empty list (a sweep)")
    if self.objective not in doremi.OBJECTIVES:
      raise bad(f"objective={self.objective!r} is not one of {doremi.OBJECTIVES}")
    for c in _as_list(self.smoothing):
      if not (number(c) and 0.0 <= c <= 1.0):
        raise bad(f"smoothing={c!r} must be a number in [0, 1]")
    for eta in _as_list(self.step_size):
      if not (number(eta) and 0.0 <= eta < float("inf")):
        raise bad(f"step_size={eta!r} must be a finite number >= 0")
    for e in _as_list(self.estimator):
      if e not in doremi.ESTIMATORS:
        raise bad(f"estimator={e!r} is not one of {tuple(doremi.ESTIMATORS)}")
    for r in _as_list(self.use_reference):
      if not isinstance(r, bool):
        raise bad(f"use_reference={r!r} must be True or False")

  def settings(self) -> list[DoremiSetting]:
    """Every (step size, estimator, smoothing, use_reference) combination, in a fixed
    order."""
    return [DoremiSetting(float(eta), float(c), e, r) for r in _as_list(self.use_reference)
            for eta in _as_list(self.step_size) for e in _as_list(self.estimator)
            for c in _as_list(self.smoothing)]


def token_losses(model: nn.Module, params: Any, batch: Batch, chunked: bool = False
                 ) -> jax.Array:
  """Per-token cross-entropy ``[batch, length]`` (masking happens in the reductions).

  ``chunked=True`` never materialises the whole ``[batch, length, vocab]`` logits (see
  ``xent.chunked_token_xent``): for forward-only losses (reference model, evaluation); a
  model with ``chunk_train_logits`` chunks every call, the trained loss's too.
  """
  return model.apply({"params": params}, batch["inputs"], batch["targets"], chunked,
                     method="token_losses")


def _masked_mean(x: jax.Array, mask: jax.Array) -> jax.Array:
  return jnp.sum(x * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def plain_step(model, optimizer, num_domains: int, m: int):
  """The unjitted plain step (a swarm vmaps it over models and their own batches)."""
  def step(state: TrainState, batch: Batch) -> tuple[TrainState, dict[str, jax.Array]]:
    micro = accumulate.split(batch, m, BATCH_LOGICAL_AXES)
    mask = micro["loss_mask"]
    total = jnp.maximum(jnp.sum(mask), 1.0)  # the whole batch's tokens, for every micro-batch

    def loss_fn(params, b):
      tl = token_losses(model, params, b)
      return jnp.sum(tl * b["loss_mask"]) / total, tl

    (loss, tl), grads = accumulate.value_and_grad(loss_fn, state.params, micro, m,
                                                  BATCH_LOGICAL_AXES)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    domain_loss, counts = doremi.per_domain_mean_loss(
        jax.lax.stop_gradient(tl), micro["domain_ids"], mask, num_domains)
    metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads),
               "domain_loss": domain_loss, "domain_tokens": counts}
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics

  return step


def _proxy_update(model, optimizer, num_domains: int, objective: str, m: int,
                  average_start: int = 0):
  """One proxy's update given the reference's token losses (vmapped over proxies).

  ``micro`` and ``reference_tl`` are in ``accumulate.split``'s layout. With ``m > 1`` the
  excess and the weight update use the *whole* batch: a forward-only pass over the
  micro-batches gives the proxy's token losses first, then a second pass does forward and
  backward of each micro-batch's share of the weighted loss (normalised by whole-batch
  counts), so m > 1 costs one extra proxy forward but equals m = 1 (the reference
  implementation updates the weights on the first micro-batch and uses stale ones after).
  """
  def update(state: TrainState, reference_tl: jax.Array, micro: Batch, step_size: jax.Array,
             smoothing: jax.Array, estimator: jax.Array, reference_scale: jax.Array):
    mask, domain_ids = micro["loss_mask"], micro["domain_ids"]
    reference_tl = reference_tl * reference_scale  # 0: the reference-free ablation
    if m == 1:  # one forward whose VJP the weighted loss's backward reuses
      proxy_tl, proxy_vjp = jax.vjp(lambda p: token_losses(model, p, micro), state.params)
    else:
      proxy_tl = accumulate.forward(lambda b: token_losses(model, state.params, b, chunked=True),
                                    micro, m, BATCH_LOGICAL_AXES)
    estimates, counts = doremi.excess_estimates(
        proxy_tl, reference_tl, domain_ids, mask, num_domains)
    excess = estimates[estimator]
    ds = state.domains
    excess_used = doremi.observed_excess(ds.last_excess, excess, counts)
    weights = doremi.update_domain_weights(ds.weights, excess_used, step_size, smoothing)
    if average_start:
      average = doremi.average_weights_after(ds.average, weights, state.step + 1,
                                             average_start)
    else:
      average = doremi.average_weights(ds.average, weights, state.step + 1)
    coefficients = doremi.loss_coefficients(weights, counts, objective)

    def weighted(tl, b=micro):
      return doremi.coefficient_loss(tl, b["domain_ids"], b["loss_mask"], coefficients)

    if m == 1:
      loss, dloss_dtokens = jax.value_and_grad(weighted)(proxy_tl)
      (grads,) = proxy_vjp(dloss_dtokens)
    else:
      loss = weighted(proxy_tl)
      _, grads = accumulate.value_and_grad(
          lambda p, b: (weighted(token_losses(model, p, b), b), ()), state.params, micro, m,
          BATCH_LOGICAL_AXES)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    domain_loss, _ = doremi.per_domain_mean_loss(proxy_tl, domain_ids, mask, num_domains)
    metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads),
               "unweighted_loss": _masked_mean(proxy_tl, mask),
               "domain_loss": domain_loss, "domain_excess": excess, "domain_tokens": counts,
               "domain_weights": weights, "average_domain_weights": average,
               **doremi.weight_diagnostics(weights)}
    new_domains = ds.replace(weights=weights, average=average, last_excess=excess_used)
    new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state,
                              domains=new_domains)
    return new_state, metrics

  return update


def _reference_losses(model, dtype: str | None) -> Callable:
  """Forward-only token losses of the frozen reference, in compute ``dtype`` if given.

  Forward only, so its logits are built a chunk at a time (never all 412 MB at vocab 50k).
  """
  if dtype is not None and dtype != model.cfg.dtype:
    model = model.clone(cfg=dataclasses.replace(model.cfg, dtype=dtype))

  def losses(params, batch):
    if dtype is not None:
      params = jax.tree.map(lambda x: x.astype(dtype), params)
    return jax.lax.stop_gradient(token_losses(model, params, batch, chunked=True))

  return losses


def proxy_step(model, optimizer, num_domains: int, cfg: DoremiConfig, m: int):
  """The unjitted proxy step (online DoReMi runs it beside the main model's); with several
  settings the state is stacked on a leading axis."""
  settings = cfg.settings()
  reference_losses = _reference_losses(model, cfg.reference_dtype)
  update = _proxy_update(model, optimizer, num_domains, cfg.objective, m, cfg.average_start)
  etas = jnp.asarray([s.step_size for s in settings], jnp.float32)
  smooth = jnp.asarray([s.smoothing for s in settings], jnp.float32)
  est = jnp.asarray([doremi.estimator_index(s.estimator) for s in settings], jnp.int32)
  ref_scale = jnp.asarray([1.0 if s.use_reference else 0.0 for s in settings], jnp.float32)

  def step(state: TrainState, reference_params: Any, batch: Batch
           ) -> tuple[TrainState, dict[str, jax.Array]]:
    micro = accumulate.split(batch, m, BATCH_LOGICAL_AXES)
    reference_tl = accumulate.forward(lambda b: reference_losses(reference_params, b), micro, m,
                                      BATCH_LOGICAL_AXES)
    if len(settings) == 1:
      new_state, metrics = update(state, reference_tl, micro, etas[0], smooth[0], est[0],
                                  ref_scale[0])
    else:
      new_state, metrics = jax.vmap(update, in_axes=(0, None, None, 0, 0, 0, 0))(
          state, reference_tl, micro, etas, smooth, est, ref_scale)
    reference_loss, _ = doremi.per_domain_mean_loss(
        reference_tl, micro["domain_ids"], micro["loss_mask"], num_domains)
    metrics["domain_reference_loss"] = reference_loss
    return new_state, metrics

  return step


def num_proxies(doremi_config: DoremiConfig | None) -> int:
  return len(doremi_config.settings()) if doremi_config is not None else 1


def batch_shardings(mesh: Mesh, rules=None) -> dict[str, jax.sharding.NamedSharding]:
  return {k: partitioning.logical_sharding(mesh, v, rules) for k, v in BATCH_LOGICAL_AXES.items()}


def make_train_step(kind: str, model: nn.Module, optimizer: optax.GradientTransformation,
                    mesh: Mesh, state_shardings: TrainState, num_domains: int,
                    doremi_config: DoremiConfig | None = None, rules=None,
                    reference_shardings: Any = None, microbatches: int = 1) -> Callable:
  """Returns the jitted step for ``kind`` in {"plain", "proxy"}.

  plain: ``step(state, batch)``; proxy: ``step(state, reference_params, batch)``.
  The state is donated; reference params are an input that is never updated. A DoReMi
  sweep (``doremi_config`` with lists) takes states stacked by ``train_state.stack_proxies``
  and needs ``reference_shardings`` (the unstacked params' shardings). ``microbatches``
  splits each batch into that many micro-batches inside the step (exact accumulation).
  """
  if not isinstance(microbatches, int) or microbatches < 1:
    raise ValueError(f"microbatches must be an integer >= 1, got {microbatches!r}")
  rules = partitioning.rules_or_default(rules)
  batch_sh = batch_shardings(mesh, rules)
  replicated = partitioning.replicated(mesh)
  if kind == "plain":
    fn = plain_step(model, optimizer, num_domains, microbatches)
    in_shardings = (state_shardings, batch_sh)
  elif kind == "proxy":
    if doremi_config is None:
      raise ValueError("a proxy step needs its DoremiConfig (built once per run)")
    fn = proxy_step(model, optimizer, num_domains, doremi_config, microbatches)
    reference_shardings = (state_shardings.params if reference_shardings is None
                           else reference_shardings)
    in_shardings = (state_shardings, reference_shardings, batch_sh)
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


def eval_sums(model: nn.Module, params: Any, batch: Batch, token_bytes: jax.Array,
              num_domains: int) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Per-domain summed token loss, token counts and UTF-8 bytes of one held-out batch."""
  tl = token_losses(model, params, batch, chunked=True)
  mask, ids = batch["loss_mask"], batch["domain_ids"]
  mean, counts = doremi.per_domain_mean_loss(tl, ids, mask, num_domains)
  target_bytes = token_bytes[batch["targets"]].astype(jnp.float32)
  mean_bytes, _ = doremi.per_domain_mean_loss(target_bytes, ids, mask, num_domains)
  return mean * counts, counts, mean_bytes * counts


def make_eval_step(model: nn.Module, mesh: Mesh, params_shardings: Any, num_domains: int,
                   rules=None) -> Callable:
  """Per-domain sums of token loss, token counts and UTF-8 bytes for held-out evaluation.

  ``run(params, batch, token_bytes)``: ``token_bytes[id]`` is the text bytes of token ``id``
  (``tokenizer.token_byte_lengths``), so the sums give bits per byte as well.
  """
  rules = partitioning.rules_or_default(rules)

  def fn(params, batch, token_bytes):
    with nn.logical_axis_rules(rules):
      return eval_sums(model, params, batch, token_bytes, num_domains)

  replicated = partitioning.replicated(mesh)
  jitted = jax.jit(fn, in_shardings=(params_shardings, batch_shardings(mesh, rules), replicated),
                   out_shardings=replicated)

  def run(params, batch, token_bytes):
    with jax.set_mesh(mesh):
      return jitted(params, batch, token_bytes)

  return run
