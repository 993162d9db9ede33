"""Online DoReMi's step: the main model trains on a batch drawn with the current domain
weights while a small proxy, against a small frozen reference, updates those weights, all
in one jitted step.

The main run's ``TrainState.domains`` is an ``OnlineDomains``: the proxy's whole state
(with its ``DomainState``) and the weights every step's main batch was drawn with
(``trajectory[t]``), so both are donated, sharded and checkpointed with the main model,
and a resumed run rebuilds its input from the trajectory (``data/online_input.py``).
"""
from __future__ import annotations

from typing import Any, Callable

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from doremi_jax.core import partitioning, steps
from doremi_jax.core.train_state import TrainState

ONE_SETTING = ("an online DoReMi run takes one DoReMi setting, not a sweep; give "
               "DoremiConfig.step_size/smoothing/estimator one value each")
# The proxy's own metrics under these names (the main model's keep the plain ones).
_PROXY_OWN = ("loss", "grad_norm", "unweighted_loss", "domain_loss", "domain_tokens")


@flax.struct.dataclass
class OnlineDomains:
  proxy: TrainState       # the proxy, with the current weights in proxy.domains
  trajectory: jax.Array   # [train_steps, k]: the weights main batch t was drawn with


def initial_domains(proxy_state: TrainState, train_steps: int) -> OnlineDomains:
  k = proxy_state.domains.weights.shape[-1]
  return OnlineDomains(proxy=proxy_state, trajectory=jnp.zeros((train_steps, k), jnp.float32))


def make_online_step(main_model: nn.Module, proxy_model: nn.Module,
                     optimizer: optax.GradientTransformation,
                     proxy_optimizer: optax.GradientTransformation, mesh: Mesh,
                     state_shardings: TrainState, reference_shardings: Any, num_domains: int,
                     doremi_config: steps.DoremiConfig, rules=None, microbatches: int = 1
                     ) -> Callable:
  """``step(state, reference_params, main_batch, proxy_batch) -> (state, metrics)``.

  The main step is ``steps.plain_step`` on ``main_batch`` (drawn with the weights the state
  holds); the proxy step is ``steps.proxy_step`` on ``proxy_batch`` (the proxy's uniform
  mixture), whose new weights draw the next main batch. The state is donated."""
  rules = partitioning.rules_or_default(rules)
  main = steps.plain_step(main_model, optimizer, num_domains, microbatches)
  proxy = steps.proxy_step(proxy_model, proxy_optimizer, num_domains, doremi_config,
                           microbatches)

  def fn(state: TrainState, reference_params, main_batch, proxy_batch):
    with nn.logical_axis_rules(rules):
      online = state.domains
      drawn_with = online.proxy.domains.weights
      trajectory = jax.lax.dynamic_update_index_in_dim(online.trajectory, drawn_with,
                                                       state.step, 0)
      new_proxy, proxy_metrics = proxy(online.proxy, reference_params, proxy_batch)
      new_main, metrics = main(state.replace(domains=None), main_batch)
    metrics = {**metrics, "drawn_weights": drawn_with,
               **{("proxy_" + k if k in _PROXY_OWN else k): v for k, v in proxy_metrics.items()}}
    return new_main.replace(domains=OnlineDomains(new_proxy, trajectory)), metrics

  batch_sh = steps.batch_shardings(mesh, rules)
  jitted = jax.jit(fn, in_shardings=(state_shardings, reference_shardings, batch_sh, batch_sh),
                   out_shardings=(state_shardings, partitioning.replicated(mesh)),
                   donate_argnums=(0,))

  def run(*args):
    with jax.set_mesh(mesh):
      return jitted(*args)

  run.jitted = jitted
  return run
