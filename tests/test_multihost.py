"""A simulated pod over prepared data: the proxy run on 2 processes x 4 CPU devices (gloo)
gives the averaged weights of the same run on 1 process x 8 devices."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

pytestmark = pytest.mark.heavy  # minutes: scheduled first (conftest.py)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAUNCH = os.path.join(ROOT, "launch", "local_multihost.sh")
LEN = 64  # conftest.prepared_dir's sequence length
# Same global batches and mesh; only where the cross-device sums run differs (one process
# vs gloo between two), so the float32 results may differ in the last bits.
WEIGHT_TOLERANCE = 1e-5


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


def _params(model_dir, step):
  import jax  # pylint: disable=g-import-not-at-top
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  path = os.path.join(model_dir, "checkpoints", str(step), "params")
  checkpointer = ocp.StandardCheckpointer()
  one_device = jax.sharding.SingleDeviceSharding(jax.devices()[0])  # saved over 8 devices
  target = jax.tree_util.tree_map(
      lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=one_device),
      checkpointer.metadata(path).item_metadata.tree)
  leaves = jax.tree_util.tree_leaves(checkpointer.restore(path, target))
  return [np.asarray(x) for x in leaves]


@pytest.mark.slow
def test_a_signal_to_one_host_stops_both_at_one_step(prepared_dir, tmp_path):
  """SIGTERM to process 1 only: both processes stop at the same log step with a checkpoint of
  it, and the resumed run ends bit for bit where the uninterrupted one does."""
  steps = ["--gin.TRAIN_STEPS=40", "--gin.train.checkpoint_every=4"]
  full = str(tmp_path / "full")
  _run(prepared_dir, 2, 4, "runs/reference.gin", full, *steps)
  model_dir = str(tmp_path / "stopped")
  cmd = [sys.executable, "-m", "doremi_jax.train", "--gin_file=runs/reference.gin",
         "--gin_file=experiments/prepared.gin", f'--gin.PREPARED_DIR="{prepared_dir}"',
         f"--gin.SEQUENCE_LENGTH={LEN}", "--gin.VOCAB_SIZE=320", f'--gin.MODEL_DIR="{model_dir}"',
         "--gin.train.progress=False", "--gin.train.log_every=3",
         "--gin.make_mesh.mesh_shape=(4, 1, 2)", *steps]
  port = str(20000 + os.getpid() % 20000)
  env = dict(os.environ, JAX_PLATFORMS="cpu", DOREMI_NUM_PROCESSES="2",
             XLA_FLAGS="--xla_force_host_platform_device_count=4",
             DOREMI_COORDINATOR=f"127.0.0.1:{port}")
  logs = [open(tmp_path / f"stderr_{i}", "w+") for i in range(2)]
  procs = [subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=logs[i],
                            env=dict(env, DOREMI_PROCESS_ID=str(i))) for i in range(2)]
  checkpoints = os.path.join(model_dir, "checkpoints")
  try:
    while procs[1].poll() is None and not (
        os.path.isdir(checkpoints) and any(d.isdigit() for d in os.listdir(checkpoints))):
      time.sleep(0.02)
    procs[1].send_signal(signal.SIGTERM)
    results = [(p.wait(timeout=600), (log.seek(0), log.read())[1])
               for p, log in zip(procs, logs)]
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  lines = [[ln for ln in err.splitlines() if ln.startswith("preempted")] for _, err in results]
  assert [rc for rc, _ in results] == [143, 143], results
  assert lines[0] == lines[1] and len(lines[0]) == 1, results
  step = int(lines[0][0].split()[3].rstrip(";"))
  assert step % 3 == 0 and step < 40, step
  assert os.path.isdir(os.path.join(checkpoints, str(step)))
  _run(prepared_dir, 2, 4, "runs/reference.gin", model_dir, *steps, "--gin.RESUME=True")
  for a, b in zip(_params(full, 40), _params(model_dir, 40), strict=True):
    np.testing.assert_array_equal(a, b, err_msg=f"stopped at step {step}")
  print(f"2 processes stopped together at step {step}; the resumed run is bit-identical")


@pytest.mark.slow
def test_an_online_run_on_two_processes_draws_the_one_process_batches(prepared_dir, tmp_path):
  """Online DoReMi on 2 processes x 4 devices: every host draws its slice of the same global
  rows from the same replicated weights, so the weights the main batches were drawn with
  and the losses are those of 1 process x 8 devices (up to the cross-process sums)."""
  ref = str(tmp_path / "ref")
  _run(prepared_dir, 1, 8, "runs/reference.gin", ref)
  runs = {}
  for processes, devices in ((1, 8), (2, 4)):
    runs[processes] = _run(
        prepared_dir, processes, devices, "runs/online.gin", str(tmp_path / f"online_{processes}"),
        f'--gin.REFERENCE_MODEL_DIR="{ref}"', "--gin.MIXTURE_OR_TASK_NAME='prepared_natural'",
        "--gin.DoremiConfig.step_size=1.0", "--gin.PROXY_BATCH_SIZE=32")
  one, two = runs[1], runs[2]
  assert one["kind"] == two["kind"] == "online"
  a, b = (np.asarray([r["online"]["mean_drawn_weights"][d] for d in one["domains"]])
          for r in (one, two))
  assert np.abs(a - b).max() < WEIGHT_TOLERANCE and np.abs(a - 0.25).max() > 1e-3, (a, b)
  np.testing.assert_allclose(one["final_loss"], two["final_loss"], rtol=1e-5)
