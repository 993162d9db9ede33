"""Exports checked by their real consumers (``make test-clients``): the README's MaxText
commands, run as written (shrunk), from a user's own SeqIO Tasks to MaxText's first
training step, in MaxText 0.2.5's own pinned venv (tests/clients/build_env.sh); the batch
MaxText reads is checked row by row against our shards; the prepared export module is
read in a fresh process as t5x's ``get_dataset`` reads it.

Needs ``MAXTEXT_PYTHON`` (the venv's python); ``make test-clients`` builds and sets it.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.clients, pytest.mark.skipif(
    not os.environ.get("MAXTEXT_PYTHON"), reason="make test-clients sets MAXTEXT_PYTHON")]

ROOT = Path(__file__).resolve().parents[1]
CLIENTS = ROOT / "tests" / "clients"
sys.path.insert(0, str(CLIENTS))
import byo_tasks  # noqa: E402

LENGTH, VOCAB = 64, 128
# The README's sizes -> a CPU-sized run; the user's module and Tasks -> tests/clients'.
SHRINK = {"512": str(LENGTH), "32000": str(VOCAB), "my_tasks": "byo_tasks",
          "my_web": "byo_web", "my_code": "byo_code", "my_books": "byo_books"}
EXTRA = {
    "doremi-pipeline": ["--gin_file=models/micro.gin", "--gin.BATCH_SIZE=8",
                        "--gin.pipeline.reference_steps=10", "--gin.pipeline.proxy_steps=10",
                        "--gin.pipeline.seeds=[0]", "--gin.train.progress=False",
                        "--gin.evaluate.max_batches_per_domain=2"],
    "python -m maxtext": ["steps=2", "per_device_batch_size=4", "eval_interval=-1",
                          "grain_worker_count=0", "enable_checkpointing=false",
                          "base_emb_dim=64", "base_num_query_heads=2", "base_num_kv_heads=2",
                          "base_mlp_dim=128", "base_num_decoder_layers=2", "head_dim=32",
                          "attention=dot_product", "packing=false"],
}


def maxtext_commands() -> list[str]:
  """The bash block after README's "**The main model in MaxText**"."""
  text = (ROOT / "README.md").read_text()
  start = text.index("**The main model in MaxText**")
  block = re.search(r"```bash\n(.*?)```", text[start:], re.S).group(1)
  return [ln.strip() for ln in block.splitlines() if ln.strip() and not ln.startswith("#")]


def _shrunk(command: str) -> str:
  for old, new in SHRINK.items():
    command = re.sub(rf"\b{old}\b", new, command)
  for prefix, extra in EXTRA.items():
    if command.startswith(prefix):
      command += " " + " ".join(shlex.quote(e) for e in extra)
  return command


@pytest.fixture(scope="module")
def maxtext_run(tmp_path_factory):
  tmp = tmp_path_factory.mktemp("clients")
  data = str(tmp / "byo_data")
  byo_tasks.write_data(data)
  maxtext_py = os.environ["MAXTEXT_PYTHON"]
  base_yml = subprocess.run(
      [maxtext_py, "-c", "import os, maxtext.configs as c; "
                         "print(os.path.join(os.path.dirname(c.__file__), 'base.yml'))"],
      capture_output=True, text=True, check=True).stdout.strip()
  env = {**os.environ, "BYO_TASKS_DIR": data, "PREPARED": str(tmp / "prepared"),
         "EXP": str(tmp / "exp"), "MAXTEXT_OUT": str(tmp / "maxtext"),
         "MAXTEXT_BASE_YML": base_yml, "JAX_PLATFORMS": "cpu",
         "PYTHONPATH": os.pathsep.join([str(CLIENTS), str(ROOT)])}
  ours = os.path.dirname(sys.executable)
  logs = []
  for command in maxtext_commands():
    bin_dir = os.path.dirname(maxtext_py) if command.startswith("python -m maxtext") else ours
    proc = subprocess.run(["bash", "-c", _shrunk(command)], cwd=ROOT, capture_output=True,
                          text=True, timeout=1200,
                          env={**env, "PATH": f"{bin_dir}:{env['PATH']}"})
    assert proc.returncode == 0, (command, proc.stderr[-3000:])
    logs.append(proc.stdout + proc.stderr)
  return env, logs


def test_readme_commands_reach_maxtexts_first_step(maxtext_run):
  _, logs = maxtext_run
  assert len(logs) == 3
  assert re.search(r"completed step: 1, .*loss: [0-9.]+", logs[-1]), logs[-1][-2000:]


def test_maxtext_batch_is_our_rows(maxtext_run):
  env, _ = maxtext_run
  mixture = os.path.join(env["EXP"], "export", "prepared_doremi.maxtext.json")
  with open(mixture) as f:
    assert sorted(json.load(f)) == sorted(f"prepared_{t}" for t in byo_tasks.TASKS)
  proc = subprocess.run(
      [os.environ["MAXTEXT_PYTHON"], str(CLIENTS / "maxtext_read.py"), mixture, str(LENGTH),
       os.path.join(env["PREPARED"], "tokenizer", "spm.model")],
      capture_output=True, text=True, timeout=600, env=env)
  assert proc.returncode == 0, proc.stderr[-3000:]
  found = json.loads(proc.stdout.strip().splitlines()[-1])
  assert found["rows"] == found["rows_from_shards"] == found["targets_shifted"] == 8, found
  assert {"inputs", "targets", "inputs_segmentation"} <= set(found["keys"])


T5X_READ = """
import seqio
import prepared_doremi  # t5x: MIXTURE_OR_TASK_MODULE, imported by name
ds = seqio.get_dataset("prepared_doremi", task_feature_lengths={"targets": %d},
                       dataset_split="train", shuffle=False, num_epochs=1, batch_size=4,
                       feature_converter=seqio.DecoderFeatureConverter(pack=True))
print(next(ds.as_numpy_iterator())["decoder_target_tokens"].shape)
""" % LENGTH


def test_prepared_export_read_as_t5x_reads_it(maxtext_run):
  env, _ = maxtext_run
  export = os.path.join(env["EXP"], "export")
  proc = subprocess.run([sys.executable, "-c", T5X_READ], capture_output=True, text=True,
                        timeout=600, cwd="/", env={**env, "PYTHONPATH": export})
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert f"(4, {LENGTH})" in proc.stdout
