"""Faults that need more than one command to show (docs/errors.md, below the table): a
damaged checkpoint at resume, a checkpoints dir that cannot be written, memory running
out, and a prepare job whose disk fills up; plus the warnings that name a fix."""
from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import error_cases  # noqa: E402
import pytest
from in_process import run_main  # noqa: E402

from doremi_jax import corpus as corpus_cli
from doremi_jax import errors
from doremi_jax import train as train_cli
from doremi_jax.corpora import prepare_io, synthetic_text
from doremi_jax.run import checkpoints, paths

ROOT = Path(__file__).resolve().parents[1]
LEN = 32
MORE_STEPS = "--gin.RESUME_IGNORE_CHANGES=['train.train_steps']"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
  return error_cases.prepared_corpus(tmp_path_factory.mktemp("faults"))


def _train_argv(base: Path, model_dir: Path, steps: int, *extra: str) -> list[str]:
  return ["--gin_file=runs/reference.gin", "--gin_file=experiments/prepared.gin",
          f"--gin.PREPARED_DIR='{base / 'prepared'}'", f"--gin.SEQUENCE_LENGTH={LEN}",
          "--gin.VOCAB_SIZE=259", f"--gin.MODEL_DIR='{model_dir}'", f"--gin.TRAIN_STEPS={steps}",
          "--gin.train.progress=False", "--gin.train.log_every=2",
          "--gin.train.checkpoint_every=2", *extra]


def _steps(model_dir: Path) -> list[int]:
  return sorted(int(p.name) for p in (model_dir / "checkpoints").iterdir() if p.name.isdigit())


def _damage(step_dir: Path) -> None:
  """What a copy cut short leaves: the params item's array data gone."""
  for path in sorted((step_dir / "params").rglob("*")):
    if path.is_file() and "ocdbt" in str(path.relative_to(step_dir)):
      path.unlink()


def test_a_damaged_checkpoint_is_moved_aside_and_the_run_resumes(corpus):
  model_dir = corpus / "damaged"
  assert run_main(train_cli.main, _train_argv(corpus, model_dir, 4)).returncode == 0
  assert _steps(model_dir) == [2, 4]
  _damage(model_dir / "checkpoints" / "4")
  resumed = run_main(train_cli.main, _train_argv(
      corpus, model_dir, 6, "--gin.RESUME=True", MORE_STEPS))
  assert resumed.returncode == 0, resumed.stderr[-2000:]
  warnings = [ln for ln in resumed.stderr.splitlines() if ln.startswith("warning: checkpoint")]
  assert len(warnings) == 1 and "checkpoint 4" in warnings[0], resumed.stderr[-2000:]
  assert warnings[0].endswith("resuming from checkpoint 2") and "Traceback" not in resumed.stderr
  assert (model_dir / paths.DAMAGED_DIR / "4").is_dir()  # moved, not deleted
  assert _steps(model_dir) == [4, 6]  # checkpoint 4 written again, from step 2
  summary = json.loads((model_dir / paths.TRAIN_SUMMARY_FILE).read_text())
  assert summary["steps"] == 6


def test_no_intact_checkpoint_is_one_line(corpus):
  model_dir = corpus / "all_damaged"
  assert run_main(train_cli.main, _train_argv(corpus, model_dir, 4)).returncode == 0
  for step in (2, 4):
    _damage(model_dir / "checkpoints" / str(step))
  proc = run_main(train_cli.main, _train_argv(corpus, model_dir, 6, "--gin.RESUME=True",
                                              MORE_STEPS))
  lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
  assert proc.returncode == 2 and len(lines) == 1, proc.stderr[-2000:]
  assert lines[0].startswith(f"error: no intact checkpoint under {model_dir}/checkpoints")
  assert lines[0].endswith("restore the files, or start over in a new MODEL_DIR")


def test_an_unwritable_checkpoints_dir_at_resume_is_one_line_at_once(corpus, monkeypatch):
  """(As root the tests cannot make a dir unwritable: the probe's write is made to fail.)"""
  model_dir = corpus / "unwritable"
  assert run_main(train_cli.main, _train_argv(corpus, model_dir, 2)).returncode == 0

  def refuse(*args, **kwargs):
    raise PermissionError(13, "Permission denied")

  monkeypatch.setattr(checkpoints.tempfile, "mkstemp", refuse)
  proc = run_main(train_cli.main, _train_argv(
      corpus, model_dir, 4, "--gin.RESUME=True", MORE_STEPS))
  assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
      f"error: cannot write checkpoints under {model_dir}/checkpoints: Permission denied; fix "
      "the permissions (or free space) and resume again"]


def test_out_of_memory_is_one_line_that_says_what_to_lower(capsys):
  class XlaRuntimeError(RuntimeError):  # jaxlib's, as raised by an allocation that fails
    pass

  def allocate():
    raise XlaRuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate "
                          "3200000000000 bytes.\nBufferAssignment OOM Debugging ...")

  with pytest.raises(SystemExit) as exit_info:
    errors.exit_on_user_error(allocate)()
  lines = capsys.readouterr().err.splitlines()
  assert exit_info.value.code == 2 and len(lines) == 1, lines
  assert lines[0].startswith("error: out of memory (RESOURCE_EXHAUSTED: Out of memory while")
  assert "lower BATCH_SIZE, the model size or VOCAB_SIZE" in lines[0]


def _file_size_limit(nbytes: int = 64 << 10):
  signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
  resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))


def test_prepare_on_a_full_disk_is_one_line_and_leaves_no_temp_files(corpus, tmp_path):
  """Shards over 64 KiB fail (RLIMIT_FSIZE, the path a full disk takes): one line, and no
  shard being written is left in the system temp dir (they are written under --out, and
  a killed job's leftovers go at the next start)."""
  before = set(os.listdir(tempfile.gettempdir()))
  out = tmp_path / "out"
  cmd = [sys.executable, "-m", "doremi_jax.corpus", "prepare", f"--source=dir:{corpus / 'src'}",
         "--tokenizer=bytes", "--sequence_length=32", "--shard_bytes=100000000", f"--out={out}"]
  proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600,
                        preexec_fn=_file_size_limit)
  lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
  assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
  assert len(lines) == 1 and lines[0].startswith("error: no room to write"), lines
  assert "File too large" in lines[0]
  leftovers = [n for n in set(os.listdir(tempfile.gettempdir())) - before
               if n.endswith(".array_record")]
  assert not leftovers
  (out / "arithmetic").mkdir(parents=True, exist_ok=True)
  (out / "arithmetic" / f"{prepare_io.TMP_PREFIX}killed.array_record").write_bytes(b"x")
  proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert not [p for p in out.rglob(f"{prepare_io.TMP_PREFIX}*")]


def test_prepare_warns_of_domains_too_small_to_sample(corpus, tmp_path, capsys):
  src = tmp_path / "src"
  src.mkdir()
  (src / "big.jsonl").write_text("".join(json.dumps({"text": f"line {i} " * 30}) + "\n"
                                         for i in range(200)))
  for name in ("small", "tiny"):
    (src / f"{name}.jsonl").write_text(json.dumps({"text": f"{name} " * 12}) + "\n")
  corpus_cli.main(["prepare", f"--source=dir:{src}", "--tokenizer=bytes",
                   "--sequence_length=32", f"--out={tmp_path / 'out'}"])
  warned = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("warning:")]
  assert len(warned) == 1 and "2 domain(s) have fewer than 16 train sequences" in warned[0]
  assert "prepare with a shorter --sequence_length" in warned[0]


def test_prepare_lowers_a_vocab_size_the_corpus_cannot_fill(tmp_path, capsys):
  """As ``stats`` does: the most the corpus supports, with a warning (was: refused)."""
  src = tmp_path / "src"
  synthetic_text.write_corpus(str(src), scale=0.01)
  corpus_cli.main(["prepare", f"--source=dir:{src}", "--vocab_size=4000",
                   "--sequence_length=32", f"--out={tmp_path / 'out'}"])
  err = capsys.readouterr().err
  assert "warning: this corpus supports at most" in err
  manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
  assert manifest["tokenizer"]["vocab_size"] < 4000
