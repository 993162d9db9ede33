"""Multi-host start-up: one call before the first JAX computation.

On TPU VMs / SLURM, ``jax.distributed.initialize()`` finds its peers by itself
(``DOREMI_DISTRIBUTED=auto``). Elsewhere (e.g. several local CPU processes) set
``DOREMI_COORDINATOR=host:port``, ``DOREMI_NUM_PROCESSES`` and ``DOREMI_PROCESS_ID``;
``launch/local_multihost.sh`` does that to simulate a pod on one machine.
"""
from __future__ import annotations

import os

import jax


def maybe_initialize() -> None:
  """Initialises jax.distributed when the environment asks for it; otherwise a no-op."""
  mode = os.environ.get("DOREMI_DISTRIBUTED", "")
  coordinator = os.environ.get("DOREMI_COORDINATOR")
  if not coordinator and mode != "auto":
    return
  # Cross-process collectives between CPU devices (harmless where an accelerator does them).
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  if coordinator:
    jax.distributed.initialize(coordinator_address=coordinator,
                               num_processes=int(os.environ["DOREMI_NUM_PROCESSES"]),
                               process_id=int(os.environ["DOREMI_PROCESS_ID"]))
  else:
    jax.distributed.initialize()
