"""Preemption through the train CLI: SIGTERM or SIGINT at a random step checkpoints that
step and exits with one line (143 / 130); resuming ends bit for bit where an uninterrupted
run ends. Also: a kill during a checkpoint write or after the last one resumes cleanly, and
every start keeps its own config."""
from __future__ import annotations

import glob
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time

import in_process
import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from doremi_jax import train as train_cli
from doremi_jax.run import preemption

pytestmark = pytest.mark.heavy  # minutes: scheduled first (conftest.py)

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
  """A run to its end, in this process (only the interrupted starts need their own)."""
  proc = in_process.run_main(train_cli.main, args)
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


def _tensorboard_view(model_dir):
  """(tag, step, value) as TensorBoard shows a run dir: event files in name order, and a
  ``SessionLog.START`` at step T (a resumed start) hides every earlier event at step >= T.
  Throughput is left out: it is the one scalar that differs between runs."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  rows = []
  for path in sorted(glob.glob(os.path.join(model_dir, "tensorboard", "events.*"))):
    for event in tf.compat.v1.train.summary_iterator(path):
      if event.HasField("session_log") and event.session_log.status == event.session_log.START:
        rows = [r for r in rows if r[1] < event.step]
      rows += [(v.tag, event.step, v.simple_value) for v in event.summary.value
               if v.tag != "tokens_per_second"]
  return sorted(rows)


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


def _interrupt(kind, model_dir, ref, sig, after):
  """Starts a run and sends ``sig`` once it has logged (proxy) or checkpointed (plain) step
  ``after``; returns (exit code, stderr, config.gin as the first start wrote it)."""
  watch = _logged_steps if kind == "proxy" else _checkpoints
  proc = subprocess.Popen([sys.executable, "-m", "doremi_jax.train", *_args(kind, model_dir, ref)],
                          cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True)
  try:
    while proc.poll() is None and not any(s >= after for s in watch(model_dir)):
      time.sleep(0.02)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=600)
  finally:
    if proc.poll() is None:
      proc.kill()
  return proc.returncode, err, _read(model_dir, "config.gin")


def check_preempted_and_resumed(runs, kind, sig, after, name):
  """Interrupts, checks what the stop leaves, resumes; returns the preempted step."""
  model_dir = str(runs["base"] / name)
  rc, err, first_config = _interrupt(kind, model_dir, runs["ref"], sig, after)
  # A proxy at batch 16 over 4 domains also prints its (tested) small-batch warning first.
  lines = [ln for ln in err.splitlines()
           if ln.strip() and not ln.startswith("warning: proxy batch")]
  assert rc == 128 + sig and len(lines) == 1, (after, rc, err[-3000:])
  step = int(lines[0].split()[3].rstrip(";"))
  assert lines[0] == f"preempted at step {step}; resume with RESUME=True"
  assert after <= step < STEPS and _checkpoints(model_dir)[-1] == step, (after, step)
  assert all(s <= step for s in _logged_steps(model_dir))
  assert not os.path.exists(os.path.join(model_dir, "train_summary.json"))
  _cli(*_args(kind, model_dir, runs["ref"]), "--gin.RESUME=True")
  full = runs[kind]
  for a, b in zip(_params(full), _params(model_dir), strict=True):
    np.testing.assert_array_equal(a, b, err_msg=f"{kind}: stopped at {step}")
  resumed = _summary(model_dir)
  assert resumed["final_loss"] == _summary(full)["final_loss"] is not None
  if kind == "proxy":
    assert resumed["average_domain_weights"] == _summary(full)["average_domain_weights"]
    assert _read(model_dir, "domain_weights.jsonl") == _read(full, "domain_weights.jsonl")
  # The first start's config stays; the resumed start's is written next to it.
  assert _read(model_dir, "config.gin") == first_config
  assert os.path.exists(os.path.join(model_dir, f"config.{step}.gin"))
  return step


def test_sigterm_at_a_random_step_resumes_exactly(runs):
  after = random.SystemRandom().randrange(2, 18, 2)
  check_preempted_and_resumed(runs, "proxy", signal.SIGTERM, after, "sigterm")


def test_sigint_at_a_random_step_resumes_exactly(runs):
  after = random.SystemRandom().randrange(3, 19, 3)
  check_preempted_and_resumed(runs, "plain", signal.SIGINT, after, "sigint")


@pytest.mark.slow
def test_sigterm_five_times(runs):
  rng = random.SystemRandom()
  stops = [(after, check_preempted_and_resumed(runs, "proxy", signal.SIGTERM, after,
                                               f"sigterm_{i}"))
           for i, after in enumerate(rng.randrange(2, 18, 2) for _ in range(5))]
  print(f"5 of 5 bit-identical; (signalled after logging step, preempted at step): {stops}")


def test_kill_during_a_checkpoint_write_leaves_no_duplicate_rows(runs):
  # Killed while writing checkpoint 40 (after logging step 40): it resumes from 39.
  model_dir = str(runs["base"] / "killed_in_write")
  shutil.copytree(runs["proxy"], model_dir)
  shutil.rmtree(os.path.join(model_dir, "checkpoints", "40"))
  os.remove(os.path.join(model_dir, "train_summary.json"))
  _cli(*_args("proxy", model_dir, runs["ref"]), "--gin.RESUME=True")
  assert _logged_steps(model_dir) == list(range(2, STEPS + 1, 2))
  assert _read(model_dir, "domain_weights.jsonl") == _read(runs["proxy"], "domain_weights.jsonl")
  # Step 40 was logged by the killed start and again after resuming: TensorBoard shows it once.
  assert len(glob.glob(os.path.join(model_dir, "tensorboard", "events.*"))) == 2
  assert _tensorboard_view(model_dir) == _tensorboard_view(runs["proxy"])


def test_kill_after_the_last_checkpoint_keeps_the_final_loss(runs):
  model_dir = str(runs["base"] / "killed_after_last")
  shutil.copytree(runs["plain"], model_dir)
  os.remove(os.path.join(model_dir, "train_summary.json"))
  _cli(*_args("plain", model_dir, None), "--gin.RESUME=True")
  assert _summary(model_dir)["final_loss"] == _summary(runs["plain"])["final_loss"] is not None


def test_handlers_live_only_inside_the_block_and_the_main_thread():
  before = {sig: signal.getsignal(sig) for sig in preemption.SIGNALS}
  with preemption.StopRequest() as stop:
    assert not stop.should_stop(sync_point=True)
    os.kill(os.getpid(), signal.SIGTERM)
    os.kill(os.getpid(), signal.SIGINT)  # ignored: the first signal decides
    assert stop.should_stop(sync_point=False) and stop.exit_code == 143
  assert {sig: signal.getsignal(sig) for sig in preemption.SIGNALS} == before
  seen = {}

  def elsewhere():
    with preemption.StopRequest():
      seen.update({sig: signal.getsignal(sig) for sig in preemption.SIGNALS})

  thread = threading.Thread(target=elsewhere)
  thread.start()
  thread.join()
  assert seen == before  # Python installs handlers from the main thread only
