"""Ground truth through the real-text path: corpus dir -> SentencePiece -> SeqIO -> pipeline.

With the default DoReMi settings (``gin/runs/proxy.gin``), a proxy trained against a
natural-mixture reference must move weight off the random-string and near-constant
domains (nothing left to learn) and onto the two learnable ones.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.heavy  # minutes: scheduled first (conftest.py)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_default_settings_find_the_learnable_domains(tmp_path):
  out = tmp_path / "exp"
  env = {**os.environ, "DOREMI_CACHE": os.environ.get("DOREMI_CACHE") or str(tmp_path / "cache")}
  proc = subprocess.run(
      [sys.executable, "-m", "doremi_jax.pipeline", "--gin_file=experiments/synthetic_text.gin",
       f"--gin.pipeline.experiment_dir='{out}'", "--gin.pipeline.run_main=False",
       "--gin.train.progress=False"],
      cwd=REPO, capture_output=True, text=True, timeout=1200, env=env)
  assert proc.returncode == 0, proc.stderr[-3000:]
  with open(out / "summary.json") as f:
    summary = json.load(f)
  weights = {k.removeprefix("stext_"): v for k, v in summary["doremi_weights"].items()}
  uniform = 1 / len(weights)
  assert weights["random"] < uniform and weights["constant"] < uniform, weights
  assert weights["grammar"] > uniform and weights["arithmetic"] > uniform, weights
  rows = [json.loads(line) for line in open(out / "round_1" / "proxy" / "domain_weights.jsonl")]
  assert {"weight_entropy", "min_weight", "min_weight_domain", "l1_from_uniform"} <= set(rows[-1])
