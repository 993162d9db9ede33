"""Training on prepared data through the CLI: the grain input is chosen, a resumed run
equals an uninterrupted one bit for bit, and a wrong sequence length is one line."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import orbax.checkpoint as ocp

from doremi_jax.corpora import prepare

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, JAX_PLATFORMS="cpu")
LEN = 64  # conftest.prepared_dir's sequence length


def _train(prepared_dir, model_dir, *extra, length=LEN):
  return subprocess.run(
      [sys.executable, "-m", "doremi_jax.train", "--gin_file=runs/reference.gin",
       "--gin_file=experiments/prepared.gin", f'--gin.PREPARED_DIR="{prepared_dir}"',
       f"--gin.SEQUENCE_LENGTH={length}", "--gin.VOCAB_SIZE=320",
       f'--gin.MODEL_DIR="{model_dir}"', "--gin.TRAIN_STEPS=8", "--gin.train.progress=False",
       "--gin.train.log_every=4", "--gin.train.checkpoint_every=4", *extra],
      cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600)


def _params(model_dir, step):
  path = os.path.join(model_dir, "checkpoints", str(step), "params")
  return ocp.StandardCheckpointer().restore(path)


def test_resumed_run_equals_the_uninterrupted_one(prepared_dir, tmp_path):
  full = str(tmp_path / "full")
  proc = _train(prepared_dir, full)
  assert proc.returncode == 0, proc.stderr[-3000:]
  with open(os.path.join(full, "train_summary.json")) as f:
    summary = json.load(f)
  assert summary["input"] == "grain" and summary["mixture_or_task_name"] == "prepared_natural"
  # Cut the run back to its step-4 checkpoint, as a kill after step 4 would, and resume.
  resumed = str(tmp_path / "resumed")
  shutil.copytree(full, resumed)
  shutil.rmtree(os.path.join(resumed, "checkpoints", "8"))
  os.remove(os.path.join(resumed, "train_summary.json"))
  proc = _train(prepared_dir, resumed, "--gin.RESUME=True")
  assert proc.returncode == 0, proc.stderr[-3000:]
  a, b = _params(full, 8), _params(resumed, 8)
  leaves_a, leaves_b = (jax_leaves(a), jax_leaves(b))
  assert len(leaves_a) == len(leaves_b) > 0
  for x, y in zip(leaves_a, leaves_b):
    np.testing.assert_array_equal(x, y)


def jax_leaves(tree):
  import jax  # pylint: disable=g-import-not-at-top
  return [np.asarray(x) for x in jax.tree_util.tree_leaves(tree)]


def test_sequence_length_other_than_prepared_is_one_line(prepared_dir, tmp_path):
  proc = _train(prepared_dir, str(tmp_path / "bad"), length=32)
  assert proc.returncode == 2, proc.stderr[-3000:]
  lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
  assert lines[-1].startswith("error: ") and "sequence_length=64" in lines[-1], proc.stderr
  assert "Traceback" not in proc.stderr


def test_pile_sample_trains_from_prepared_data(tmp_path):
  """A Pile-format sample through ``doremi-corpus prepare --source=pile:`` and
  ``experiments/pile.gin`` (shrunk to the tiny model): the paper's baseline weights over
  the domains present, read through grain."""
  import zstandard  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  names = ["Pile-CC", "Github", "Wikipedia (en)"]
  word = lambda: "".join(rng.choice(list("abcdefghijklmnop"), rng.integers(2, 9)))  # noqa: E731
  rows = [{"text": " ".join(word() for _ in range(rng.integers(20, 120))),
           "meta": {"pile_set_name": names[i % 3]}} for i in range(600)]
  (tmp_path / "pile").mkdir()
  data = "".join(json.dumps(r) + "\n" for r in rows).encode()
  (tmp_path / "pile" / "00.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(data))
  out = str(tmp_path / "pile_prepared")
  prepare.prepare(f"pile:{tmp_path / 'pile'}", out, vocab_size=320, sequence_length=LEN)
  model_dir = str(tmp_path / "ref")
  proc = subprocess.run(
      [sys.executable, "-m", "doremi_jax.train", "--gin_file=runs/reference.gin",
       "--gin_file=experiments/pile.gin", "--gin_file=models/tiny.gin",
       "--gin.TransformerConfig.remat=False", f'--gin.PREPARED_DIR="{out}"',
       f"--gin.SEQUENCE_LENGTH={LEN}", "--gin.VOCAB_SIZE=320", "--gin.BATCH_SIZE=8",
       f'--gin.MODEL_DIR="{model_dir}"', "--gin.TRAIN_STEPS=4", "--gin.train.progress=False",
       "--gin.train.log_every=2"], cwd=ROOT, env=ENV, capture_output=True, text=True,
      timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  with open(os.path.join(model_dir, "train_summary.json")) as f:
    summary = json.load(f)
  assert summary["input"] == "grain" and summary["mixture_or_task_name"] == "pile_baseline"
  assert summary["domains"] == ["pile_github", "pile_pile_cc", "pile_wikipedia_en"]
