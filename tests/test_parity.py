"""Sharding parity: 3 plain and 3 proxy steps on 8 simulated CPU devices (data=4 x model=2,
and data=2 x fsdp=2 x model=2) match one device to float tolerance.

The body runs in a subprocess (``parity_worker.py``) because the device count is an XLA flag
that must be set before jax initialises.
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

pytestmark = pytest.mark.heavy  # minutes: scheduled first (conftest.py)

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
TOL = dict(rtol=1e-4, atol=1e-5)
SHARDED_MESHES = ("data4_model2", "data2_fsdp2_model2")


@pytest.fixture(scope="module")
def results(tmp_path_factory):
  out = str(tmp_path_factory.mktemp("parity") / "parity.npz")
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8",
             JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3")
  proc = subprocess.run([sys.executable, os.path.join(HERE, "parity_worker.py"), out],
                        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-4000:]
  with open(out + ".json") as f:
    info = json.load(f)
  arrays = np.load(out)
  return {k: arrays[k] for k in arrays.files}, info


def _pairs(arrays, mesh, kind, part):
  prefix = f"single|{kind}|{part}"
  keys = sorted(k for k in arrays if k.startswith(prefix))
  assert keys, prefix
  for key in keys:
    yield key.split("|", 1)[1], arrays[key], arrays[mesh + key[len("single"):]]


@pytest.mark.parametrize("mesh", SHARDED_MESHES)
@pytest.mark.parametrize("kind", ["plain", "proxy"])
def test_matches_single_device(results, mesh, kind):
  arrays, _ = results
  parts = ["init", "params", "metrics0", "metrics1", "metrics2", "step"]
  if kind == "proxy":
    parts.append("domains")
  checked = 0
  for part in parts:
    for name, single, sharded in _pairs(arrays, mesh, kind, part):
      np.testing.assert_allclose(sharded, single, err_msg=f"{mesh} {name}", **TOL)
      checked += 1
  assert checked > 40
  assert int(arrays[f"{mesh}|{kind}|step"]) == 3


def test_proxy_metrics_cover_doremi_state(results):
  arrays, _ = results
  for key in ("loss", "domain_weights", "average_domain_weights", "domain_excess"):
    assert f"single|proxy|metrics2|{key}" in arrays
  for key in ("weights", "average", "last_excess"):
    assert f"single|proxy|domains|{key}" in arrays
  # Domain 3 is absent from batch 1: no tokens, so its excess there is 0 and not used.
  np.testing.assert_array_equal(arrays["single|proxy|metrics1|domain_tokens"][3], 0.0)


@pytest.mark.parametrize("mesh", SHARDED_MESHES)
def test_params_are_really_sharded(results, mesh):
  _, info = results
  m = info[mesh]
  assert m["num_devices"] == 8
  for kind in ("plain", "proxy"):
    assert m[f"{kind}_sharded_leaves"] > 0 and m[f"{kind}_final_sharded_leaves"] > 0
    specs = m[f"{kind}_param_specs"]
    assert any("model" in s for s in specs.values()), specs
    assert specs["layer_0/mlp/wi_gate/kernel"] == "P('fsdp', 'model')"
    assert m[f"{kind}_cache_size"] == 1  # 3 steps, one compilation
  if "fsdp" in mesh:
    assert m["proxy_sharded_leaves"] == len(m["proxy_param_specs"])  # every leaf split
