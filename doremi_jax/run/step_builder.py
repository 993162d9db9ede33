"""The one place a run's train step is built: model, optimizer, mesh, logical-axis rules,
state shardings, the stacked sweep and micro-batches, after the batch checks. The trainer
runs what it builds, the compile check lowers the very same step from abstract shapes
(MaxText's ``train_compile`` idea), and the evaluator builds its model, mesh, rules and
parameter shardings here too (``build_eval``)."""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from doremi_jax import errors
from doremi_jax.core import model as model_lib
from doremi_jax.core import online as online_lib
from doremi_jax.core import partitioning, steps
from doremi_jax.core import train_state as ts
from doremi_jax.run.settings import RunSettings, check_batch


@dataclasses.dataclass(frozen=True)
class OnlineProxy:
  """An online run's proxy (and its reference's) model: config, model, one abstract state
  and its shardings, and the proxy's batch size."""
  model_config: model_lib.TransformerConfig
  lm: model_lib.TransformerLM
  model_state: ts.TrainState
  model_shardings: ts.TrainState
  batch_size: int


@dataclasses.dataclass(frozen=True)
class BuiltStep:
  """A run's jitted step and everything it was built from; ``model_state`` is one model's
  abstract state, ``state`` the one the step takes (several proxies stacked in a sweep)."""
  settings: RunSettings
  model_config: model_lib.TransformerConfig
  lm: model_lib.TransformerLM
  optimizer: optax.GradientTransformation
  mesh: Mesh
  rules: Any
  doremi_config: steps.DoremiConfig | None
  num_domains: int
  model_state: ts.TrainState
  model_shardings: ts.TrainState
  state: ts.TrainState
  state_shardings: ts.TrainState
  step: Callable  # plain: step(state, batch); proxy: step(state, reference_params, batch)
  # online: step(state, reference_params, main_batch, proxy_batch); the main model's
  # state.domains is an online.OnlineDomains holding the proxy's state
  online: OnlineProxy | None = None

  @property
  def num_proxies(self) -> int:
    return steps.num_proxies(self.doremi_config)

  @property
  def batch_shardings(self) -> dict[str, jax.sharding.NamedSharding]:
    return steps.batch_shardings(self.mesh, self.rules)

  def init_model_state(self, seed: int) -> ts.TrainState:
    """One model's initial state, directly into its shardings (a sweep broadcasts it);
    an online run's main state holds its proxy's initial state."""
    if self.online is not None:
      main = ts.init_state(self.lm, self.optimizer, self.mesh, self.settings.sequence_length,
                           seed, None, rules=self.rules, shardings=self.model_shardings)
      proxy = ts.init_state(self.online.lm, self.optimizer, self.mesh,
                            self.settings.sequence_length, seed, self.num_domains,
                            rules=self.rules, shardings=self.online.model_shardings)
      with jax.set_mesh(self.mesh):
        domains = jax.jit(lambda p: online_lib.initial_domains(p, self.settings.train_steps),
                          out_shardings=self.state_shardings.domains)(proxy)
      return main.replace(domains=domains)
    return ts.init_state(self.lm, self.optimizer, self.mesh, self.settings.sequence_length,
                         seed, self._domain_state(), rules=self.rules,
                         shardings=self.model_shardings)

  @functools.cached_property
  def abstract_args(self) -> tuple:
    """The step's arguments as sharded shapes (state first), for lowering without arrays;
    built once, shared by the compile and the memory accounting."""
    batch = abstract_batch(self.mesh, self.settings.batch_size, self.settings.sequence_length,
                           self.rules)
    if self.settings.kind == "proxy":
      return (self.state, self.model_state.params, batch)
    if self.online is not None:
      proxy_batch = abstract_batch(self.mesh, self.online.batch_size,
                                   self.settings.sequence_length, self.rules)
      return (self.state, self.online.model_state.params, batch, proxy_batch)
    return (self.state, batch)

  def _domain_state(self) -> int | None:
    return self.num_domains if self.settings.kind == "proxy" else None


def abstract_batch(mesh, batch_size: int, seq_len: int, rules=None) -> dict[str, Any]:
  """The training batch's shapes and dtypes (as ``grain_input`` / ``seqio_input`` make it)."""
  shardings = steps.batch_shardings(mesh, rules)
  shapes = {"inputs": ((batch_size, seq_len), jnp.int32),
            "targets": ((batch_size, seq_len), jnp.int32),
            "loss_mask": ((batch_size, seq_len), jnp.float32),
            "domain_ids": ((batch_size,), jnp.int32)}
  return {k: jax.ShapeDtypeStruct(shape, dtype, sharding=shardings[k])
          for k, (shape, dtype) in shapes.items()}


def build(settings: RunSettings, num_domains: int, model_config: model_lib.TransformerConfig,
          doremi_config: steps.DoremiConfig | None = None, mesh: Mesh | None = None,
          proxy_config: model_lib.TransformerConfig | None = None) -> BuiltStep:
  """The step of ``settings.kind`` on ``mesh`` (default: ``make_mesh()``), one message per
  bad batch; a proxy needs its ``doremi_config`` (a list-valued one stacks a sweep), an
  online run that and its proxy's (= its reference's) ``proxy_config`` too."""
  if settings.kind in ("proxy", "online") and doremi_config is None:
    raise ValueError("a proxy step needs its DoremiConfig")
  if settings.kind == "online":
    return _build_online(settings, num_domains, model_config, doremi_config, mesh,
                         proxy_config)
  proxy = settings.kind == "proxy"
  mesh = partitioning.make_mesh() if mesh is None else mesh
  rules = partitioning.logical_axis_rules()
  check_batch(settings.batch_size, settings.microbatches,
              partitioning.batch_size_divisor(mesh, rules))
  lm = model_lib.TransformerLM(model_config)
  optimizer = ts.make_optimizer(settings.train_steps)
  model_state, model_shardings = ts.state_shardings(
      lm, optimizer, mesh, settings.sequence_length, num_domains if proxy else None, rules)
  state, state_shardings = model_state, model_shardings
  count = steps.num_proxies(doremi_config if proxy else None)
  if count > 1:
    state, state_shardings = ts.stack_proxies(model_state, model_shardings, count, mesh, rules)
  step = steps.make_train_step(settings.kind, lm, optimizer, mesh, state_shardings,
                               num_domains, doremi_config if proxy else None, rules,
                               reference_shardings=model_shardings.params,
                               microbatches=settings.microbatches)
  return BuiltStep(settings, model_config, lm, optimizer, mesh, rules,
                   doremi_config if proxy else None, num_domains, model_state,
                   model_shardings, state, state_shardings, step)


def _build_online(settings: RunSettings, num_domains: int,
                  model_config: model_lib.TransformerConfig, doremi_config: steps.DoremiConfig,
                  mesh: Mesh | None, proxy_config: model_lib.TransformerConfig | None
                  ) -> BuiltStep:
  if proxy_config is None:
    raise ValueError("an online step needs its proxy's model config")
  if steps.num_proxies(doremi_config) > 1:
    raise errors.DoremiError(online_lib.ONE_SETTING)
  mesh = partitioning.make_mesh() if mesh is None else mesh
  rules = partitioning.logical_axis_rules()
  divisor = partitioning.batch_size_divisor(mesh, rules)
  proxy_batch = settings.online_proxy_batch_size or settings.batch_size
  check_batch(settings.batch_size, settings.microbatches, divisor)
  check_batch(proxy_batch, settings.microbatches, divisor)
  length, optimizer = settings.sequence_length, ts.make_optimizer(settings.train_steps)
  lm, proxy_lm = model_lib.TransformerLM(model_config), model_lib.TransformerLM(proxy_config)
  main_state, main_shardings = ts.state_shardings(lm, optimizer, mesh, length, None, rules)
  proxy_state, proxy_shardings = ts.state_shardings(proxy_lm, optimizer, mesh, length,
                                                    num_domains, rules)
  replicated = partitioning.replicated(mesh)
  trajectory = jax.ShapeDtypeStruct((settings.train_steps, num_domains), jnp.float32,
                                    sharding=replicated)
  state = main_state.replace(domains=online_lib.OnlineDomains(proxy_state, trajectory))
  shardings = main_shardings.replace(domains=online_lib.OnlineDomains(proxy_shardings,
                                                                      replicated))
  step = online_lib.make_online_step(lm, proxy_lm, optimizer, optimizer, mesh, shardings,
                                     proxy_shardings.params, num_domains, doremi_config, rules,
                                     settings.microbatches)
  return BuiltStep(settings, model_config, lm, optimizer, mesh, rules, doremi_config,
                   num_domains, main_state, main_shardings, state, shardings, step,
                   OnlineProxy(proxy_config, proxy_lm, proxy_state, proxy_shardings,
                               proxy_batch))


@dataclasses.dataclass(frozen=True)
class EvalModel:
  """What evaluating a checkpoint needs: the model, mesh and rules, and the parameters'
  abstract sharded shapes (as a train step of that model lays them out) to restore into."""
  lm: model_lib.TransformerLM
  mesh: Mesh
  rules: Any
  params: Any

  @property
  def params_shardings(self) -> Any:
    return jax.tree.map(lambda x: x.sharding, self.params)


def build_eval(model_config: model_lib.TransformerConfig, sequence_length: int,
               mesh: Mesh | None = None) -> EvalModel:
  mesh = partitioning.make_mesh() if mesh is None else mesh
  rules = partitioning.logical_axis_rules()
  lm = model_lib.TransformerLM(model_config)
  # The optimizer only shapes state the evaluator drops; the params' layout is the step's.
  abstract, _ = ts.state_shardings(lm, ts.make_optimizer(1), mesh, sequence_length, None,
                                   rules)
  return EvalModel(lm, mesh, rules, abstract.params)
