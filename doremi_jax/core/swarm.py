"""A RegMix-style swarm: S small models trained in one compiled step, each on a batch of its
own mixture, and evaluated in one compiled step on the same held-out batches.

The states are stacked on a leading ``proxies`` axis (``train_state.stack_proxies``, as a
DoReMi sweep stacks its proxies) and so are the batches; the plain step is vmapped over
both, so one model's update depends on its own state and batch only, exactly as S
separate runs (``tests/test_swarm.py``).
"""
from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import optax
from jax.sharding import Mesh

from doremi_jax.core import partitioning, steps

SWARM_AXIS = "proxies"


def batch_shardings(mesh: Mesh, rules=None) -> dict[str, jax.sharding.NamedSharding]:
  """Stacked batches ``[S, batch, ...]``: the models' axis first, then a batch's axes."""
  return {k: partitioning.logical_sharding(mesh, (SWARM_AXIS,) + v, rules)
          for k, v in steps.BATCH_LOGICAL_AXES.items()}


def make_swarm_step(model: nn.Module, optimizer: optax.GradientTransformation, mesh: Mesh,
                    stacked_shardings: Any, num_domains: int, rules=None) -> Callable:
  """``step(states, batches) -> (states, metrics)``, jitted once; states are donated."""
  rules = partitioning.rules_or_default(rules)
  one = steps.plain_step(model, optimizer, num_domains, 1)

  def fn(states, batches):
    with nn.logical_axis_rules(rules):
      return jax.vmap(one)(states, batches)

  jitted = jax.jit(fn, in_shardings=(stacked_shardings, batch_shardings(mesh, rules)),
                   out_shardings=(stacked_shardings, partitioning.replicated(mesh)),
                   donate_argnums=(0,))

  def run(states, batches):
    with jax.set_mesh(mesh):
      return jitted(states, batches)

  return run


def make_swarm_eval_step(model: nn.Module, mesh: Mesh, stacked_params_shardings: Any,
                         num_domains: int, rules=None) -> Callable:
  """``run(stacked params, batch, token_bytes)``: every model's per-domain sums
  (``steps.eval_sums``) on one shared held-out batch, each ``[S, num_domains]``."""
  rules = partitioning.rules_or_default(rules)

  def fn(params, batch, token_bytes):
    with nn.logical_axis_rules(rules):
      return jax.vmap(lambda p: steps.eval_sums(model, p, batch, token_bytes, num_domains))(
          params)

  replicated = partitioning.replicated(mesh)
  jitted = jax.jit(fn, in_shardings=(stacked_params_shardings,
                                     steps.batch_shardings(mesh, rules), replicated),
                   out_shardings=replicated)

  def run(params, batch, token_bytes):
    with jax.set_mesh(mesh):
      return jitted(params, batch, token_bytes)

  return run
