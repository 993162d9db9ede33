"""Device mesh and logical-axis rules (t5x / MaxText style, configured in gin).

Code only ever names *logical* axes; ``LOGICAL_AXIS_RULES`` decides which mesh
axis (``data``, ``fsdp``, ``model``) each one is split over. A ``-1`` in
``mesh_shape`` takes all remaining devices.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import flax.linen as nn
import gin
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from doremi_jax import errors

MESH_AXES = ("data", "fsdp", "model")

# Batch over data x fsdp; weights fully sharded over fsdp and tensor-parallel over model.
STANDARD_LOGICAL_AXIS_RULES: tuple[tuple[str, Any], ...] = (
    ("batch", ("data", "fsdp")),
    ("length", None),
    ("vocab", "model"),
    ("embed", "fsdp"),
    ("mlp", "model"),
    ("heads", "model"),
    ("kv", None),
    ("domains", None),
    ("layers", None),    # the stacked blocks of a scanned model (TransformerConfig.scan_layers)
    ("proxies", None),   # the stacked proxies of a DoReMi sweep (replicated)
)


@gin.configurable
def logical_axis_rules(rules: Sequence[tuple[str, Any]] = STANDARD_LOGICAL_AXIS_RULES):
  return tuple((name, tuple(v) if isinstance(v, list) else v) for name, v in rules)


def rules_or_default(rules=None):
  """``rules`` as given, or the gin-configured table when None (functions take either)."""
  return logical_axis_rules() if rules is None else rules


@gin.configurable
def make_mesh(mesh_shape: Sequence[int] = (-1, 1, 1),
              devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A ``(data, fsdp, model)`` mesh over all (or the given) devices."""
  devices = list(devices if devices is not None else jax.devices())
  shape = list(mesh_shape)
  if len(shape) != len(MESH_AXES):
    raise errors.DoremiError(f"mesh_shape needs {len(MESH_AXES)} entries {MESH_AXES}, got {shape}")
  if not all(isinstance(s, int) and not isinstance(s, bool) and (s > 0 or s == -1)
             for s in shape):
    raise errors.DoremiError(f"make_mesh.mesh_shape={tuple(mesh_shape)!r}: each axis must be a "
                             "positive integer or -1 (all remaining devices)")
  if shape.count(-1) > 1:
    raise errors.DoremiError(f"mesh_shape may hold at most one -1, got {shape}")
  known = math.prod(s for s in shape if s != -1)
  if -1 in shape:
    if len(devices) % known:
      raise errors.DoremiError(f"mesh_shape {shape} does not divide {len(devices)} devices")
    shape[shape.index(-1)] = len(devices) // known
  if math.prod(shape) != len(devices):
    raise errors.DoremiError(f"mesh_shape {shape} needs {math.prod(shape)} devices, "
                             f"found {len(devices)}")
  try:
    from jax.experimental import mesh_utils  # pylint: disable=g-import-not-at-top
    grid = mesh_utils.create_device_mesh(shape, devices=devices)
  except (ValueError, AssertionError, RuntimeError):
    grid = np.asarray(devices).reshape(shape)
  return Mesh(grid, MESH_AXES)


def logical_sharding(mesh: Mesh, logical_names: Sequence[str | None], rules=None) -> NamedSharding:
  rules = rules_or_default(rules)
  spec = nn.logical_to_mesh_axes(tuple(logical_names), rules)
  return NamedSharding(mesh, spec)


def tree_shardings(mesh: Mesh, logical_specs: Any, rules=None) -> Any:
  """Maps a tree of logical ``PartitionSpec``s (from ``nn.get_partition_spec``)."""
  rules = rules_or_default(rules)
  return nn.logical_to_mesh_sharding(logical_specs, mesh, rules)


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())


def axis_split(mesh, name: str, rules=None) -> int:
  """How many ways ``rules`` split logical axis ``name`` over ``mesh`` (a ``Mesh`` or an
  ``AbstractMesh``): each device holds ``1/axis_split`` of that axis."""
  spec = nn.logical_to_mesh_axes((name,), rules_or_default(rules))[0]
  axes = () if spec is None else (spec if isinstance(spec, tuple) else (spec,))
  return math.prod(mesh.shape[a] for a in axes)


def batch_size_divisor(mesh: Mesh, rules=None) -> int:
  """How many ways the ``batch`` logical axis is split: the global batch must divide it."""
  return axis_split(mesh, "batch", rules)
