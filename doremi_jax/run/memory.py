"""Per-device memory of a compiled train step, from abstract shapes only (no parameter is
ever allocated): the compiler's ``memory_analysis`` plus each input tree's shard bytes.

One place for the concept: ``python -m doremi_jax.compile_check`` and
``benchmarks/memory.py`` both call ``build_step`` and ``measure``.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

import jax
import jax.numpy as jnp

from doremi_jax.core import model as model_lib
from doremi_jax.core import partitioning, steps
from doremi_jax.core import train_state as ts

GIB = 1024 ** 3


def shard_bytes(tree: Any) -> int:
  """Bytes one device holds of a tree of sharded abstract arrays (``sharding.shard_shape``;
  an uneven split counts the largest shard)."""
  return sum(math.prod(x.sharding.shard_shape(x.shape)) * jnp.dtype(x.dtype).itemsize
             for x in jax.tree.leaves(tree))


def global_bytes(tree: Any) -> int:
  return sum(math.prod(x.shape) * jnp.dtype(x.dtype).itemsize for x in jax.tree.leaves(tree))


def num_elements(tree: Any) -> int:
  return sum(math.prod(x.shape) for x in jax.tree.leaves(tree))


@dataclasses.dataclass
class AbstractStep:
  """A step's jitted function and abstract, sharded arguments (state first)."""
  kind: str
  jitted: Any
  mesh: Any
  args: tuple
  state: ts.TrainState
  reference_params: Any = None
  batch: Mapping[str, Any] = dataclasses.field(default_factory=dict)


def abstract_batch(mesh, batch_size: int, seq_len: int, rules=None) -> dict[str, Any]:
  """The training batch's shapes and dtypes (as ``grain_input`` / ``seqio_input`` make it)."""
  shardings = steps.batch_shardings(mesh, rules)
  shapes = {"inputs": ((batch_size, seq_len), jnp.int32),
            "targets": ((batch_size, seq_len), jnp.int32),
            "loss_mask": ((batch_size, seq_len), jnp.float32),
            "domain_ids": ((batch_size,), jnp.int32)}
  return {k: jax.ShapeDtypeStruct(shape, dtype, sharding=shardings[k])
          for k, (shape, dtype) in shapes.items()}


def build_step(kind: str, mesh, batch_size: int, seq_len: int, num_domains: int,
               train_steps: int, rules=None,
               model_config: model_lib.TransformerConfig | None = None,
               microbatches: int = 1) -> AbstractStep:
  """The step a run of ``kind`` builds (gin-configured model unless ``model_config`` is
  given, optimizer and DoReMi settings, as ``run/trainer.py`` does), with abstract
  arguments instead of arrays."""
  rules = partitioning.rules_or_default(rules)
  lm = model_lib.TransformerLM(model_config or model_lib.TransformerConfig())
  optimizer = ts.make_optimizer(train_steps)
  proxy = kind == "proxy"
  doremi_config = steps.DoremiConfig() if proxy else None
  single, single_sh = ts.state_shardings(lm, optimizer, mesh, seq_len,
                                         num_domains if proxy else None, rules)
  state, state_sh = single, single_sh
  count = steps.num_proxies(doremi_config)
  if proxy and count > 1:
    state, state_sh = ts.stack_proxies(single, single_sh, count, mesh, rules)
  step = steps.make_train_step(kind, lm, optimizer, mesh, state_sh, num_domains,
                               doremi_config, rules, reference_shardings=single_sh.params,
                               microbatches=microbatches)
  batch = abstract_batch(mesh, batch_size, seq_len, rules)
  reference = single.params if proxy else None
  args = (state, reference, batch) if proxy else (state, batch)
  return AbstractStep(kind, step.jitted, mesh, args, state, reference, batch)


class OutOfMemory(Exception):
  """The device compiler refused the step: it cannot fit (TPU compilers check HBM)."""


def compile_step(step: AbstractStep):
  with jax.set_mesh(step.mesh):
    lowered = step.jitted.lower(*step.args)
    try:
      return lowered.compile()
    except jax.errors.JaxRuntimeError as exc:
      if str(exc).startswith("RESOURCE_EXHAUSTED"):
        raise OutOfMemory(str(exc).splitlines()[0]) from None
      raise


def measure(step: AbstractStep, compiled) -> dict[str, Any]:
  """Per-device bytes: each input tree's shards and the compiler's own accounting.

  ``total`` = arguments + outputs - aliased (the donated state is updated in place) +
  temporaries, the peak XLA reports for one device; generated code is listed apart.
  ``compiled`` None (the compiler ran out of memory) leaves ``compiler`` None."""
  stats = compiled.memory_analysis() if compiled is not None else None
  compiler = None if stats is None else {"arguments": int(stats.argument_size_in_bytes),
              "outputs": int(stats.output_size_in_bytes),
              "aliased": int(stats.alias_size_in_bytes),
              "temporaries": int(stats.temp_size_in_bytes),
              "generated_code": int(stats.generated_code_size_in_bytes)}
  if compiler:
    compiler["total"] = (compiler["arguments"] + compiler["outputs"] - compiler["aliased"]
                         + compiler["temporaries"])
  state = step.state
  trees = {"parameters": state.params, "optimizer_state": state.opt_state,
           "step_and_domain_state": (state.step, state.domains),
           "reference_parameters": step.reference_params, "batch": step.batch}
  per_device = {k: shard_bytes(v) for k, v in trees.items()}
  whole = {k: global_bytes(v) for k, v in trees.items()}
  return {"kind": step.kind, "num_devices": int(step.mesh.size),
          "mesh": {k: int(v) for k, v in step.mesh.shape.items()},
          "num_parameters": num_elements(state.params),
          "per_device": per_device, "global": whole, "compiler": compiler}


def verdict(total_bytes: int | None, budget_gib: float, refused: str | None = None
            ) -> dict[str, Any]:
  """Whether ``total_bytes`` fits ``budget_gib``; a compile the device's own compiler
  refused (``refused``: its message) has no total and fits nothing."""
  if total_bytes is None:
    return {"memory_gib": budget_gib, "fits": False, "used_fraction": None, "reason": refused}
  return {"memory_gib": budget_gib, "fits": total_bytes <= budget_gib * GIB,
          "used_fraction": total_bytes / (budget_gib * GIB)}
