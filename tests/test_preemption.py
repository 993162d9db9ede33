"""Runs killed at awkward moments resume cleanly through the train CLI: during a checkpoint
write (no duplicate trajectory rows) or after the last checkpoint (the final loss kept)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, JAX_PLATFORMS="cpu")
STEPS = 40
FAST = ["--gin.train.progress=False", "--gin.train.log_every=2",
        "--gin.train.checkpoint_every=3", '--gin.TASK_FEATURE_LENGTHS={"targets": 64}',
        f"--gin.TRAIN_STEPS={STEPS}"]
REF = ["--gin_file=runs/reference.gin", "--gin_file=experiments/synthetic.gin", *FAST]
PROXY = ["--gin_file=runs/proxy.gin", "--gin_file=experiments/synthetic.gin", *FAST]


def _args(kind, model_dir, ref):
  if kind == "plain":
    return [*REF, f'--gin.MODEL_DIR="{model_dir}"']
  return [*PROXY, f'--gin.MODEL_DIR="{model_dir}"', f'--gin.REFERENCE_MODEL_DIR="{ref}"']


def _cli(*args):
  proc = subprocess.run([sys.executable, "-m", "doremi_jax.train", *args], cwd=ROOT, env=ENV,
                        capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]


def _checkpoints(model_dir):
  directory = os.path.join(model_dir, "checkpoints")
  if not os.path.isdir(directory):
    return []
  return sorted(int(d) for d in os.listdir(directory) if d.isdigit())


def _logged_steps(model_dir):
  path = os.path.join(model_dir, "domain_weights.jsonl")
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line)["step"] for line in f if line.endswith("\n")]


def _read(model_dir, name):
  with open(os.path.join(model_dir, name), "rb") as f:
    return f.read()


def _summary(model_dir):
  return json.loads(_read(model_dir, "train_summary.json"))


def _params(model_dir):
  path = os.path.join(model_dir, "checkpoints", str(_checkpoints(model_dir)[-1]), "params")
  leaves = jax.tree_util.tree_leaves(ocp.StandardCheckpointer().restore(path))
  return [np.asarray(x) for x in leaves]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """Uninterrupted 40-step runs: a plain (reference) one, then a proxy one against it."""
  base = tmp_path_factory.mktemp("preempt")
  ref, proxy = str(base / "ref"), str(base / "proxy")
  _cli(*_args("plain", ref, None))
  _cli(*_args("proxy", proxy, ref))
  return {"base": base, "ref": ref, "plain": ref, "proxy": proxy}


def test_kill_during_a_checkpoint_write_leaves_no_duplicate_rows(runs):
  # Killed while writing checkpoint 40 (after logging step 40): it resumes from 39.
  model_dir = str(runs["base"] / "killed_in_write")
  shutil.copytree(runs["proxy"], model_dir)
  shutil.rmtree(os.path.join(model_dir, "checkpoints", "40"))
  os.remove(os.path.join(model_dir, "train_summary.json"))
  _cli(*_args("proxy", model_dir, runs["ref"]), "--gin.RESUME=True")
  assert _logged_steps(model_dir) == list(range(2, STEPS + 1, 2))
  assert _read(model_dir, "domain_weights.jsonl") == _read(runs["proxy"], "domain_weights.jsonl")


def test_kill_after_the_last_checkpoint_keeps_the_final_loss(runs):
  model_dir = str(runs["base"] / "killed_after_last")
  shutil.copytree(runs["plain"], model_dir)
  os.remove(os.path.join(model_dir, "train_summary.json"))
  _cli(*_args("plain", model_dir, None), "--gin.RESUME=True")
  assert _summary(model_dir)["final_loss"] == _summary(runs["plain"])["final_loss"] is not None
