"""A simulated pod: 2 processes x 4 CPU devices (gloo) run the reference and the proxy."""
from __future__ import annotations

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAUNCH = os.path.join(ROOT, "launch", "local_multihost.sh")


def _run(tmp, run_gin, model_dir, *extra):
  cmd = [LAUNCH, "2", "4", sys.executable, "-m", "doremi_jax.train",
         f"--gin_file={run_gin}", "--gin_file=experiments/synthetic.gin",
         f'--gin.MODEL_DIR="{model_dir}"', "--gin.TRAIN_STEPS=6", "--gin.train.progress=False",
         "--gin.train.log_every=3", "--gin.make_mesh.mesh_shape=(4, 1, 2)", *extra]
  proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]


def test_two_process_reference_and_proxy(tmp_path):
  ref, proxy = str(tmp_path / "ref"), str(tmp_path / "proxy")
  _run(tmp_path, "runs/reference.gin", ref)
  _run(tmp_path, "runs/proxy.gin", proxy, f'--gin.REFERENCE_MODEL_DIR="{ref}"')
  assert sorted(os.listdir(os.path.join(ref, "checkpoints")))[-1] == "6"
  with open(os.path.join(proxy, "train_summary.json")) as f:
    summary = json.load(f)
  weights = summary["average_domain_weights"]
  assert len(weights) == 4 and abs(sum(weights.values()) - 1) < 1e-5
  assert os.path.exists(os.path.join(proxy, "export", "synthetic_uniform_doremi.py"))
