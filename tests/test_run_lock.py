"""The run lock: a live holder is refused by name, a dead holder's lock is taken over."""
import json
import os
import subprocess
import sys
import time

import pytest

from doremi_jax import errors
from doremi_jax.run.lock import LOCK_FILE, RunLock


def test_second_holder_is_refused_with_the_holders_name(tmp_path):
  holder = subprocess.Popen(
      [sys.executable, "-c", "import sys, time; from doremi_jax.run.lock import RunLock\n"
       f"l = RunLock({str(tmp_path)!r}).acquire(); print('held', flush=True); time.sleep(60)"],
      stdout=subprocess.PIPE, text=True)
  try:
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(errors.DoremiError) as info:
      RunLock(str(tmp_path), "MODEL_DIR").acquire()
    msg = str(info.value)
    assert f"pid {holder.pid}" in msg and "in use" in msg and "\n" not in msg
  finally:
    holder.kill()
    holder.wait()


def test_lock_of_a_killed_process_is_taken_over_with_a_warning(tmp_path, capsys):
  proc = subprocess.Popen(
      [sys.executable, "-c", "import time; from doremi_jax.run.lock import RunLock\n"
       f"RunLock({str(tmp_path)!r}).acquire(); print('held', flush=True); time.sleep(60)"],
      stdout=subprocess.PIPE, text=True)
  assert proc.stdout.readline().strip() == "held"
  proc.kill()  # kill -9: no clean release
  proc.wait()
  with RunLock(str(tmp_path), "MODEL_DIR"):
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"pid {proc.pid}" in err and "no longer running" in err
    record = json.loads(open(os.path.join(tmp_path, LOCK_FILE)).read())
    assert record["pid"] == os.getpid()
  # A clean release leaves nothing to take over.
  with RunLock(str(tmp_path)):
    assert capsys.readouterr().err == ""


def test_same_process_cannot_hold_it_twice(tmp_path):
  with RunLock(str(tmp_path)):
    with pytest.raises(errors.DoremiError):
      RunLock(str(tmp_path)).acquire()


def test_a_second_train_command_into_a_live_run_is_refused(tmp_path):
  """The brief's case: a second start into a live MODEL_DIR (RESUME=True, another learning
  rate) used to be accepted and mixed two runs; now it is one line naming the holder."""
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  model_dir = tmp_path / "live"
  common = [sys.executable, "-m", "doremi_jax.train", "--gin_file=runs/reference.gin",
            "--gin_file=experiments/synthetic.gin", f'--gin.MODEL_DIR="{model_dir}"',
            "--gin.train.progress=False", '--gin.TASK_FEATURE_LENGTHS={"targets": 32}']
  first = subprocess.Popen(common + ["--gin.TRAIN_STEPS=100000"], cwd=root,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  try:
    lock_path = model_dir / LOCK_FILE
    deadline = time.time() + 240
    while not (lock_path.exists() and lock_path.read_text()) and time.time() < deadline:
      assert first.poll() is None, "the first run ended early"
      time.sleep(0.5)
    second = subprocess.run(common + ["--gin.TRAIN_STEPS=10", "--gin.RESUME=True",
                                      "--gin.make_optimizer.learning_rate=0.1"],
                            cwd=root, capture_output=True, text=True, timeout=300)
    assert second.returncode == 2, second.stderr[-2000:]
    lines = [ln for ln in second.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), lines
    assert f"pid {first.pid}" in lines[0] and "in use" in lines[0], lines[0]
  finally:
    first.kill()
    first.wait()
