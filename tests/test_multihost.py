"""A simulated pod over prepared data: the proxy run on 2 processes x 4 CPU devices (gloo)
gives the averaged weights of the same run on 1 process x 8 devices."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from doremi_jax.data import prepare, synthetic_text

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAUNCH = os.path.join(ROOT, "launch", "local_multihost.sh")
LEN = 64
# Same global batches and mesh; only where the cross-device sums run differs (one process
# vs gloo between two), so the float32 results may differ in the last bits.
WEIGHT_TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def prepared_dir(tmp_path_factory) -> str:
  src = tmp_path_factory.mktemp("synthetic")
  synthetic_text.write_corpus(str(src), scale=0.05)
  out = tmp_path_factory.mktemp("prepared")
  prepare.prepare(f"dir:{src}", str(out), vocab_size=320, sequence_length=LEN)
  return str(out)


def _run(prepared_dir, processes, devices, run_gin, model_dir, *extra):
  cmd = [LAUNCH, str(processes), str(devices), sys.executable, "-m", "doremi_jax.train",
         f"--gin_file={run_gin}", "--gin_file=experiments/prepared.gin",
         f'--gin.PREPARED_DIR="{prepared_dir}"', f"--gin.SEQUENCE_LENGTH={LEN}",
         "--gin.VOCAB_SIZE=320", f'--gin.MODEL_DIR="{model_dir}"', "--gin.TRAIN_STEPS=6",
         "--gin.train.progress=False", "--gin.train.log_every=3",
         "--gin.make_mesh.mesh_shape=(4, 1, 2)", *extra]
  proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  with open(os.path.join(model_dir, "train_summary.json")) as f:
    return json.load(f)


def test_two_processes_give_the_one_process_weights(prepared_dir, tmp_path):
  ref = str(tmp_path / "ref")
  summary = _run(prepared_dir, 2, 4, "runs/reference.gin", ref)
  assert summary["input"] == "grain"
  assert sorted(os.listdir(os.path.join(ref, "checkpoints")))[-1] == "6"
  runs = {}
  for processes, devices in ((1, 8), (2, 4)):
    model_dir = str(tmp_path / f"proxy_{processes}x{devices}")
    runs[processes] = _run(prepared_dir, processes, devices, "runs/proxy.gin", model_dir,
                           f'--gin.REFERENCE_MODEL_DIR="{ref}"', "--gin.DoremiConfig.step_size=1.0")
  one, two = runs[1], runs[2]
  assert one["domains"] == two["domains"] and len(one["domains"]) == 4
  a = np.asarray([one["average_domain_weights"][d] for d in one["domains"]])
  b = np.asarray([two["average_domain_weights"][d] for d in one["domains"]])
  assert abs(a.sum() - 1) < 1e-5 and np.abs(a - b).max() < WEIGHT_TOLERANCE, (a, b)
  assert np.abs(a - 0.25).max() > 100 * WEIGHT_TOLERANCE, a  # the weights did move
  print(f"max |1x8 - 2x4| of the averaged weights: {np.abs(a - b).max():.2e}; weights {a}")
  np.testing.assert_allclose(one["final_loss"], two["final_loss"], rtol=1e-5)
  assert os.path.exists(os.path.join(str(tmp_path / "proxy_2x4"), "export"))
