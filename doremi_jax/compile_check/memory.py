"""Per-device memory of a compiled train step, from abstract shapes only (no parameter is
ever allocated): the compiler's ``memory_analysis`` plus each input tree's shard bytes.

One place for the concept: ``python -m doremi_jax.compile_check`` and
``benchmarks/memory.py`` both compile the step ``step_builder.build`` makes (the trainer's)
and ``measure`` it.
"""
from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp

from doremi_jax.run import step_builder

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


class OutOfMemory(Exception):
  """The device compiler refused the step: it cannot fit (TPU compilers check HBM)."""


def compile_step(built: step_builder.BuiltStep):
  """The run's own jitted step, lowered from abstract arguments and compiled."""
  with jax.set_mesh(built.mesh):
    lowered = built.step.jitted.lower(*built.abstract_args)
    try:
      return lowered.compile()
    except jax.errors.JaxRuntimeError as exc:
      if str(exc).startswith("RESOURCE_EXHAUSTED"):
        raise OutOfMemory(str(exc).splitlines()[0]) from None
      raise


def measure(built: step_builder.BuiltStep, compiled) -> dict[str, Any]:
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
  args = built.abstract_args
  state, batch = args[0], args[-1]
  reference = args[1] if len(args) == 3 else None
  trees = {"parameters": state.params, "optimizer_state": state.opt_state,
           "step_and_domain_state": (state.step, state.domains),
           "reference_parameters": reference, "batch": batch}
  per_device = {k: shard_bytes(v) for k, v in trees.items()}
  whole = {k: global_bytes(v) for k, v in trees.items()}
  return {"kind": built.settings.kind, "num_devices": int(built.mesh.size),
          "mesh": {k: int(v) for k, v in built.mesh.shape.items()},
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
