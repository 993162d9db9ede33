"""Train state, optimizer and sharded initialisation.

Domain weights, their running average and the last observed excess live *in*
the train state, so they are sharded (replicated), donated and checkpointed
with the parameters.
"""
from __future__ import annotations

import math
from typing import Any

import flax
import flax.linen as nn
import gin
import jax
import jax.numpy as jnp
import optax

from doremi_jax import errors
from doremi_jax.core import partitioning


@flax.struct.dataclass
class DomainState:
  weights: jax.Array       # [k] current domain weights (sum to 1)
  average: jax.Array       # [k] running mean of weights over steps (initial included)
  last_excess: jax.Array   # [k] last observed per-domain excess loss (0 before first seen)


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  opt_state: Any
  domains: DomainState | None = None


@gin.configurable
def make_optimizer(train_steps: int, learning_rate: float = 3e-3, warmup_steps: int = 50,
                   end_learning_rate_fraction: float = 0.1, weight_decay: float = 0.01,
                   b1: float = 0.9, b2: float = 0.95, grad_clip_norm: float = 1.0
                   ) -> optax.GradientTransformation:
  """AdamW with linear warm-up and cosine decay (the paper's proxy/reference recipe); a
  setting out of its range is one line."""
  _check_optimizer(learning_rate, warmup_steps, end_learning_rate_fraction, weight_decay,
                   b1, b2, grad_clip_norm)
  warmup = max(0, min(warmup_steps, train_steps - 1))
  schedule = optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=learning_rate, warmup_steps=warmup,
      decay_steps=max(train_steps, warmup + 1),
      end_value=learning_rate * end_learning_rate_fraction)
  return optax.chain(
      optax.clip_by_global_norm(grad_clip_norm),
      optax.adamw(schedule, b1=b1, b2=b2, weight_decay=weight_decay))


def _check_optimizer(learning_rate, warmup_steps, end_fraction, weight_decay, b1, b2,
                     grad_clip_norm) -> None:
  def number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)

  checks = [("learning_rate", learning_rate, number(learning_rate) and learning_rate > 0,
             "a finite number > 0"),
            ("warmup_steps", warmup_steps, isinstance(warmup_steps, int)
             and not isinstance(warmup_steps, bool) and warmup_steps >= 0, "an integer >= 0"),
            ("end_learning_rate_fraction", end_fraction,
             number(end_fraction) and 0 <= end_fraction <= 1, "a number in [0, 1]"),
            ("weight_decay", weight_decay, number(weight_decay) and weight_decay >= 0,
             "a finite number >= 0"),
            ("b1", b1, number(b1) and 0 <= b1 < 1, "a number in [0, 1)"),
            ("b2", b2, number(b2) and 0 <= b2 < 1, "a number in [0, 1)"),
            ("grad_clip_norm", grad_clip_norm, number(grad_clip_norm) and grad_clip_norm > 0,
             "a finite number > 0")]
  for name, value, ok, wanted in checks:
    if not ok:
      raise errors.DoremiError(f"make_optimizer.{name}={value!r} must be {wanted}")


def initial_domain_state(num_domains: int, initial_weights: jax.Array | None = None) -> DomainState:
  weights = (jnp.full((num_domains,), 1.0 / num_domains, jnp.float32)
             if initial_weights is None else jnp.asarray(initial_weights, jnp.float32))
  return DomainState(weights=weights, average=weights, last_excess=jnp.zeros_like(weights))


def _init_fn(model: nn.Module, optimizer: optax.GradientTransformation, seq_len: int,
             num_domains: int | None, initial_weights):
  def init(rng: jax.Array) -> TrainState:
    params = model.init(rng, jnp.zeros((1, seq_len), jnp.int32))["params"]
    domains = (None if num_domains is None
               else initial_domain_state(num_domains, initial_weights))
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      opt_state=optimizer.init(params), domains=domains)
  return init


def state_shardings(model, optimizer, mesh, seq_len: int, num_domains: int | None,
                    rules=None) -> tuple[TrainState, TrainState]:
  """Returns (abstract unboxed state, its NamedShardings) from logical annotations."""
  init = _init_fn(model, optimizer, seq_len, num_domains, None)
  boxed = jax.eval_shape(init, jax.random.key(0))
  specs = nn.get_partition_spec(boxed)
  shardings = partitioning.tree_shardings(mesh, specs, rules)
  abstract = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                          nn.meta.unbox(boxed), shardings)
  return abstract, shardings


def init_state(model, optimizer, mesh, seq_len: int, seed: int, num_domains: int | None = None,
               initial_weights=None, rules=None, shardings: TrainState | None = None
               ) -> TrainState:
  """Initialises the state directly into its shardings (no host-side full copy).

  Pass ``shardings`` from ``state_shardings`` when you already have them.
  """
  if shardings is None:
    _, shardings = state_shardings(model, optimizer, mesh, seq_len, num_domains, rules)
  init = _init_fn(model, optimizer, seq_len, num_domains, initial_weights)
  rules = partitioning.rules_or_default(rules)

  def unboxed_init(rng):
    with nn.logical_axis_rules(rules):
      return nn.meta.unbox(init(rng))

  with jax.set_mesh(mesh):
    return jax.jit(unboxed_init, out_shardings=shardings)(jax.random.key(seed))


def stack_proxies(abstract: TrainState, shardings: TrainState, num_proxies: int, mesh,
                  rules=None) -> tuple[TrainState, TrainState]:
  """(abstract, shardings) of ``num_proxies`` states stacked on a leading ``proxies`` axis."""
  axis = partitioning.logical_sharding(mesh, ("proxies",), rules).spec
  lead = axis[0] if len(axis) else None

  def stack_sharding(s):
    return jax.sharding.NamedSharding(s.mesh, jax.sharding.PartitionSpec(lead, *s.spec))

  stacked_sh = jax.tree.map(stack_sharding, shardings)
  stacked_abs = jax.tree.map(
      lambda a, s: jax.ShapeDtypeStruct((num_proxies,) + tuple(a.shape), a.dtype, sharding=s),
      abstract, stacked_sh)
  return stacked_abs, stacked_sh


def broadcast_state(state: TrainState, num_proxies: int, stacked_shardings: TrainState
                    ) -> TrainState:
  """``num_proxies`` copies of one state: every proxy of a sweep starts from the same init,
  so they differ only in their DoReMi settings (as separate runs with one seed would)."""
  def stack(tree):
    return jax.tree.map(lambda x: jnp.broadcast_to(x, (num_proxies,) + x.shape), tree)
  return jax.jit(stack, out_shardings=stacked_shardings)(state)
