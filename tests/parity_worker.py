"""Runs the plain and proxy steps on several meshes and saves every result (for test_parity).

Usage: ``XLA_FLAGS=--xla_force_host_platform_device_count=8 python tests/parity_worker.py OUT.npz``
(XLA flags must be set before jax initialises, hence a separate process.)
"""
from __future__ import annotations

import json
import os
import sys

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax  # noqa: E402
import numpy as np  # noqa: E402
import step_fixtures as fx  # noqa: E402

from doremi_jax.core import partitioning  # noqa: E402

MESHES = {"single": (1, 1, 1), "data4_model2": (4, 1, 2), "data2_fsdp2_model2": (2, 2, 2)}


def run_mesh(name: str, shape) -> tuple[dict[str, np.ndarray], dict]:
  devices = jax.devices()[:1] if name == "single" else jax.devices()
  mesh = partitioning.make_mesh(shape, devices=devices)
  out, info = {}, {"num_devices": int(mesh.devices.size)}
  for kind in ("plain", "proxy"):
    rig = fx.Rig(mesh, kind)
    state = rig.init(seed=0)
    for k, v in fx.flat(state.params).items():
      out[f"{name}|{kind}|init|{k}"] = v
    info[f"{kind}_param_specs"] = {
        k: str(leaf.sharding.spec) for k, leaf in zip(
            fx.flat(state.params), jax.tree.leaves(state.params))}
    info[f"{kind}_sharded_leaves"] = sum(
        not leaf.sharding.is_fully_replicated for leaf in jax.tree.leaves(state.params))
    reference = rig.reference_params(seed=1) if kind == "proxy" else None
    for i, batch in enumerate(fx.BATCHES):
      state, metrics = rig.run(state, batch, reference)
      for k, v in jax.device_get(metrics).items():
        out[f"{name}|{kind}|metrics{i}|{k}"] = np.asarray(v)
    info[f"{kind}_final_sharded_leaves"] = sum(
        not leaf.sharding.is_fully_replicated for leaf in jax.tree.leaves(state.params))
    info[f"{kind}_cache_size"] = rig.step.jitted._cache_size()  # pylint: disable=protected-access
    for k, v in fx.flat(state.params).items():
      out[f"{name}|{kind}|params|{k}"] = v
    if state.domains is not None:
      for k, v in fx.flat(state.domains).items():
        out[f"{name}|{kind}|domains|{k}"] = v
    out[f"{name}|{kind}|step"] = np.asarray(state.step)
  return out, info


def main(path: str) -> None:
  if len(jax.devices()) != 8:
    raise SystemExit(f"expected 8 simulated devices, got {len(jax.devices())}")
  arrays, infos = {}, {}
  for name, shape in MESHES.items():
    a, info = run_mesh(name, shape)
    arrays.update(a)
    infos[name] = info
  np.savez(path, **arrays)
  with open(path + ".json", "w") as f:
    json.dump(infos, f, indent=1)


if __name__ == "__main__":
  main(sys.argv[1])
