"""Resuming or reusing a run dir compares the run's fingerprint: a changed setting or
changed data is refused with one line naming it, unless consented to by name."""
from __future__ import annotations

import json

import in_process
import pytest

from doremi_jax import train as train_cli
from doremi_jax.corpora import prepare, synthetic_text


def _prepare(src, out):
  prepare.prepare(f"dir:{src}", str(out), model="bytes", sequence_length=32)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
  src = tmp_path_factory.mktemp("synthetic")
  synthetic_text.write_corpus(str(src), scale=0.03)
  out = tmp_path_factory.mktemp("prepared")
  _prepare(src, out)
  return src, out


def _train(prepared_dir, model_dir, *extra):
  """The train CLI in process (``in_process.run_main``): each start parses its own gin."""
  return in_process.run_main(train_cli.main, [
      "--gin_file=runs/reference.gin", "--gin_file=experiments/prepared.gin",
      f'--gin.PREPARED_DIR="{prepared_dir}"', "--gin.SEQUENCE_LENGTH=32",
      "--gin.VOCAB_SIZE=259", f'--gin.MODEL_DIR="{model_dir}"', "--gin.TRAIN_STEPS=4",
      "--gin.train.progress=False", "--gin.train.log_every=2",
      "--gin.train.checkpoint_every=2", "--gin.RESUME=True", *extra])


def _one_line(proc, *needles):
  assert proc.returncode == 2, proc.stderr[-2000:]
  lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
  assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
  for needle in needles:
    assert needle in lines[0], lines[0]


def test_changes_are_refused_by_name_unless_consented(corpus, tmp_path):
  src, prepared_dir = corpus
  run = tmp_path / "run"
  assert _train(prepared_dir, run).returncode == 0
  recorded = json.loads((run / "fingerprint.json").read_text())
  assert recorded["make_optimizer.learning_rate"] == 3e-3
  assert recorded["data.prepared_constant"].startswith("prepared ")
  summary = (run / "train_summary.json").read_bytes()
  # The same command again reuses the finished run.
  assert _train(prepared_dir, run).returncode == 0
  assert (run / "train_summary.json").read_bytes() == summary
  _one_line(_train(prepared_dir, run, "--gin.make_optimizer.learning_rate=0.001"),
            "make_optimizer.learning_rate = 0.003", "this start has 0.001",
            "RESUME_IGNORE_CHANGES")
  _one_line(_train(prepared_dir, run, "--gin.TransformerConfig.num_layers=3"),
            "TransformerConfig.num_layers = 2")
  _one_line(_train(prepared_dir, run, "--gin.TRAIN_STEPS=6"), "train.train_steps = 4")
  # Edited data, prepared again: the manifest (and every shard sha256) differs.
  with open(src / "constant.jsonl", "a", encoding="utf-8") as f:
    f.write(json.dumps({"text": "one more lighthouse document " * 20}) + "\n")
  _prepare(src, prepared_dir)
  _one_line(_train(prepared_dir, run), "data.prepared_constant")
  assert (run / "train_summary.json").read_bytes() == summary  # nothing was touched
  # Consent by name (a prefix covers its entries): training continues and says so.
  proc = _train(prepared_dir, run, "--gin.TRAIN_STEPS=6",
                """--gin.RESUME_IGNORE_CHANGES=["train.train_steps", "data"]""")
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert "resuming with changed" in proc.stdout and "train.train_steps" in proc.stdout
  assert json.loads((run / "train_summary.json").read_text())["steps"] == 6
  assert json.loads((run / "fingerprint.json").read_text())["train.train_steps"] == 6
