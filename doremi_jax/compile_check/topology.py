"""Devices to compile for without owning them: ``cpu:N`` (N simulated host devices) or a
TPU slice name (``v5p-256``, ``v4-64``, ``v5e-256``, ``v6e-64``) described by libtpu's
compile-only topology, as MaxText's ``train_compile.py`` does on a CPU machine.

Nothing here initialises a backend except ``devices``, and that only when called; a CPU
topology must be chosen before anything else in the process asks JAX for devices.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import math
import os
import re

from doremi_jax import errors

# High-bandwidth memory per JAX device, from the vendors' spec sheets (v4 and v5p chips
# are one "megacore" device each).
DEVICE_MEMORY_GIB = {"v4": 32, "v5e": 16, "v5p": 95, "v6e": 32, "H100": 80}

# Slice name -> (libtpu's topology prefix, chip config, TensorCores per chip, grid rank).
_TPU_KINDS = {"v4": ("v4", "megacore", 2, 3), "v5p": ("v5", "megacore", 2, 3),
              "v5e": ("v5e", "default", 1, 2), "v6e": ("v6e", "default", 1, 2)}


@dataclasses.dataclass(frozen=True)
class Topology:
  name: str              # as the user wrote it
  backend: str           # "cpu" or "tpu"
  num_devices: int
  device: str | None     # a key of DEVICE_MEMORY_GIB (TPU generations), None for CPU
  tpu_topology: str = ""  # libtpu's name, e.g. "v5:4x4x8"
  chip_config: str = ""


def chip_grid(chips: int, rank: int) -> tuple[int, ...]:
  """The usual slice shape for a power-of-two chip count: grow the last of the smallest
  sides (3-D: 2x2x1, 2x2x2, 2x2x4, 2x4x4, 4x4x4, 4x4x8 ...; 2-D: 2x2, 2x4, 4x4 ...)."""
  grid = [2, 2, 1] if rank == 3 else [1, 1]
  while math.prod(grid) < chips:
    smallest = min(grid)
    last = max(i for i, g in enumerate(grid) if g == smallest)
    grid[last] *= 2
  return tuple(grid)


def parse(name: str) -> Topology:
  """``cpu:N`` or ``<generation>-<cores>``; anything else is a one-line error."""
  cpu = re.fullmatch(r"cpu:(\d+)", name)
  if cpu and int(cpu.group(1)) > 0:
    return Topology(name, "cpu", int(cpu.group(1)), None)
  tpu = re.fullmatch(r"(v4|v5p|v5e|v6e)-(\d+)", name)
  if tpu:
    prefix, config, cores_per_chip, rank = _TPU_KINDS[tpu.group(1)]
    cores = int(tpu.group(2))
    chips = cores // cores_per_chip
    if chips < (4 if rank == 3 else 1) or chips & (chips - 1) or cores % cores_per_chip:
      raise errors.DoremiError(
          f"topology {name!r}: only power-of-two slices from {tpu.group(1)}-"
          f"{4 * cores_per_chip if rank == 3 else 1} up are known here")
    grid = chip_grid(chips, rank)
    return Topology(name, "tpu", chips, tpu.group(1), f"{prefix}:{'x'.join(map(str, grid))}",
                    config)
  raise errors.DoremiError(f"unknown topology {name!r}: use cpu:N (N simulated devices) or a "
                           "TPU slice such as v5p-256, v4-64, v5e-256, v6e-64")


def use_cpu_devices(topology: Topology) -> None:
  """Asks for ``num_devices`` host devices; must run before JAX creates its CPU backend."""
  import jax  # pylint: disable=g-import-not-at-top
  try:
    jax.config.update("jax_num_cpu_devices", topology.num_devices)
  except RuntimeError:  # the backend already exists (a test process); checked in devices()
    pass


def devices(topology: Topology) -> list:
  """The topology's devices: simulated host devices or libtpu's compile-only TPU devices."""
  import jax  # pylint: disable=g-import-not-at-top
  if topology.backend == "cpu":
    use_cpu_devices(topology)
    found = jax.devices("cpu")
    if len(found) < topology.num_devices:
      raise errors.DoremiError(f"topology {topology.name!r}: this process already has "
                               f"{len(found)} CPU devices")
    return found[:topology.num_devices]
  if importlib.util.find_spec("libtpu") is None:
    raise errors.DoremiError(
        f"topology {topology.name!r} needs libtpu to compile for TPU (pip install "
        f"'jax[tpu]=={jax.__version__}'; no TPU is needed); or use cpu:{topology.num_devices}")
  # Without these libtpu looks for a TPU VM's metadata and prints warnings about it.
  for key, value in (("TPU_ACCELERATOR_TYPE", topology.name), ("TPU_WORKER_HOSTNAMES", "localhost"),
                     ("TPU_SKIP_MDS_QUERY", "1")):
    os.environ.setdefault(key, value)
  from jax.experimental import topologies  # pylint: disable=g-import-not-at-top
  try:
    desc = topologies.get_topology_desc(
        platform="tpu", topology_name=topology.tpu_topology,
        chip_config_name=topology.chip_config, chips_per_host_bounds=(2, 2, 1), num_slices=1)
  except Exception as exc:  # libtpu's own errors have no common type
    raise errors.DoremiError(f"libtpu cannot describe {topology.name!r} "
                             f"({topology.tpu_topology}): {exc}") from None
  return list(desc.devices)
