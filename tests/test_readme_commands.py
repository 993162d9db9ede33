"""The README's shell commands, run as written: every command in a ```bash block is either
run here (with its long settings shrunk: steps, caps; its paths moved under a temporary
dir) or listed in ``NOT_RUN`` with the reason, so a new README command needs a test."""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from doremi_jax.corpora import synthetic_text

ROOT = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, JAX_PLATFORMS="cpu")

# Command prefix -> why this suite does not run it.
NOT_RUN = {
    "make demo": "the pipeline command below is the demo's, with shrunk steps; CI runs make test",
    "make test": "this suite is make test",
    "python -m doremi_jax.train --gin_file=runs/online.gin":
        "tests/test_online.py runs it shrunk, after the reference run it needs",
    "pip install 'apache-beam[gcp]": "cloud extras, not in requirements.lock",
    "doremi-corpus prepare --source=pile:gs://": "needs Google Cloud (Dataflow)",
    "python -m doremi_jax.corpus build": "downloads packages; test_corpus_tasks builds a slice",
    "doremi-corpus prepare --source=embedded": "run by test_prepare::test_embedded_source (slow)",
    "python -m doremi_jax.corpus stats ~/.cache/doremi_jax/embedded_corpus":
        "the embedded corpus; the same command on a small corpus runs here",
    "python -m doremi_jax.corpus build --out OUT": "as `corpus build` above",
    "python -m doremi_jax.corpus_build OUT": "quoted as removed (what changed)",
    "python -m doremi_jax.export WEIGHTS.json": "tests/test_export.py runs the export CLI",
    "python -m doremi_jax.compile_check":
        "minutes each at these sizes; tests/test_compile_check.py runs it on 8 devices",
    "python benchmarks/pod_fit.py": "the compile checks above, ~15 minutes with libtpu",
    "python -m doremi_jax.pipeline --gin_file=experiments/demo.gin": "make demo",
    "python -m doremi_jax.pipeline --gin_file=experiments/prepared.gin":
        "500-step stages; test_prepared_input configures it as the pipeline CLI does",
    "doremi-pipeline --gin_file=experiments/synthetic.gin":
        "the console script of the pipeline command run here; test_wheel runs console scripts",
    "doremi-pipeline --gin_file=experiments/seqio_tasks.gin":
        "needs the user's task module; test_user_tasks runs it on tests/clients/byo_tasks.py",
    "doremi-corpus prepare --source=seqio:":
        "make test-clients runs it as written (test_clients); test_user_tasks runs it too",
    "doremi-pipeline --gin_file=experiments/prepared.gin --gin.PREPARED_DIR=\"'$PREPARED'\"":
        "make test-clients runs it as written, shrunk (tests/test_clients.py)",
    "python -m maxtext.trainers.pre_train.train":
        "MaxText's venv: make test-clients runs it as written, shrunk (tests/test_clients.py)",
}


def readme_commands() -> list[str]:
  """Each command of the README's bash blocks, continuation lines joined, comments off."""
  text = (ROOT / "README.md").read_text()
  out = []
  for block in re.findall(r"```bash\n(.*?)```", text, re.S):
    block = re.sub(r"\\\n\s*", " ", block)
    pending = ""
    for line in block.splitlines():
      line = line.strip() if pending else re.sub(r"\s+#.*$", "", line).strip()
      if not line or (line.startswith("#") and not pending):
        continue
      pending = f"{pending} {line}".strip()
      if pending.count("'") % 2 == 0:  # a quoted argument may span lines
        out.append(pending)
        pending = ""
  # Commands quoted inline, with arguments (bare names like `doremi-export` are not commands).
  inline = re.findall(r"`((?:python -m doremi_jax\.[\w.]+|doremi-\w+) [^`]+)`", text)
  out += [c for c in inline if not re.fullmatch(r"[a-z]+", c.split()[-1])]  # not `... prepare`
  return out


def _run(command: str, cwd: Path, **replace: str) -> subprocess.CompletedProcess:
  for old, new in replace.items():
    assert old in command, (old, command)
    command = command.replace(old, new)
  argv = shlex.split(command)
  if argv[0] == "python":
    argv[0] = sys.executable
  elif argv[0] == "doremi-corpus":
    argv[:1] = [sys.executable, "-m", "doremi_jax.corpus"]
  proc = subprocess.run(argv, cwd=cwd, env=ENV, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, (command, proc.stderr[-3000:])
  return proc


def _find(prefix: str) -> str:
  found = [c for c in readme_commands() if c.startswith(prefix)]
  assert len(found) == 1, (prefix, found)
  return found[0]


RUN = ("python -m doremi_jax.corpus stats DIR", "doremi-corpus prepare --source=dir:",
       "python -m doremi_jax.train --gin_file=runs/reference.gin",
       "python -m doremi_jax.train --gin_file=runs/proxy.gin", "python -m doremi_jax.evaluate",
       "python -m doremi_jax.pipeline --gin_file=experiments/synthetic.gin",
       "launch/local_multihost.sh",
       "python -m doremi_jax.pipeline --gin_file=experiments/corpus.gin",
       # The pod and GPU-node commands run with --dry_run (test_launch_commands_dry_run).
       "export TPU_NAME=", "launch/tpu_pod.sh ", "launch/gpu_node.sh ")


def test_every_readme_command_is_run_or_excused():
  for command in readme_commands():
    assert any(command.startswith(p) for p in (*RUN, *NOT_RUN)), command


def test_corpus_commands(tmp_path):
  synthetic_text.write_corpus(str(tmp_path / "my_corpus"), scale=0.05)
  proc = _run(_find("python -m doremi_jax.corpus stats DIR"), tmp_path,
              DIR=str(tmp_path / "my_corpus"))
  assert "total" in proc.stdout
  model = re.search(r"^tokenizer: (\S+\.model) ", proc.stdout, re.M).group(1)
  _run(_find("doremi-corpus prepare --source=dir:"), tmp_path,
       **{"/data/my_corpus": str(tmp_path / "my_corpus"), "/data/mine": str(tmp_path / "mine"),
          "spm.model": model})
  assert (tmp_path / "mine" / "manifest.json").exists()


@pytest.mark.slow  # ~1.5 min (make test-all); tests/test_pipeline.py runs the pipeline by default
def test_stage_commands_and_the_pipeline(tmp_path):
  """The hand-run stages (300 steps shrunk to 4), the evaluation and the pipeline."""
  for prefix in RUN[2:4]:
    _run(_find(prefix), tmp_path, **{"TRAIN_STEPS=300": "TRAIN_STEPS=4"})
  proc = _run(_find("python -m doremi_jax.evaluate"), tmp_path)
  assert "synthetic" in proc.stdout
  pipeline = _find("python -m doremi_jax.pipeline --gin_file=experiments/synthetic.gin")
  _run(pipeline + " --gin.pipeline.reference_steps=4 --gin.pipeline.proxy_steps=4"
       " --gin.pipeline.main_steps=4 --gin.pipeline.seeds=[0]", tmp_path)
  assert (tmp_path / "runs" / "synthetic" / "report.md").exists()


@pytest.mark.slow  # ~1 min: a whole pipeline on a corpus dir (make test-all)
def test_corpus_pipeline_command(tmp_path):
  synthetic_text.write_corpus(str(tmp_path / "dir"), scale=0.4)  # held-out batches per domain
  command = _find("python -m doremi_jax.pipeline --gin_file=experiments/corpus.gin")
  _run(command + " --gin.pipeline.reference_steps=4 --gin.pipeline.proxy_steps=4"
       " --gin.pipeline.main_steps=4 --gin.pipeline.seeds=[0]", tmp_path,
       **{"/path/to/dir": str(tmp_path / "dir")})
  assert (tmp_path / "runs" / "mine" / "report.md").exists()


def test_local_multihost_command(tmp_path):
  _run(_find("launch/local_multihost.sh"), tmp_path,
       **{"launch/local_multihost.sh": str(ROOT / "launch" / "local_multihost.sh"),
          ".venv/bin/python": sys.executable, "TRAIN_STEPS=10": "TRAIN_STEPS=2"})
  assert (tmp_path / "runs" / "mh" / "reference" / "train_summary.json").exists()


def test_launch_commands_dry_run(tmp_path):
  """Each pod / GPU-node command with --dry_run after its subcommand, in the environment
  the README's export sets: every setting present, every flag known, nothing called (a
  gcloud on PATH would leave a file)."""
  gcloud = tmp_path / "bin" / "gcloud"
  gcloud.parent.mkdir()
  gcloud.write_text(f"#!/bin/sh\ntouch {tmp_path / 'called'}\n")
  gcloud.chmod(0o755)
  (export,) = {c for c in readme_commands() if c.startswith("export TPU_NAME=")}
  env = dict(ENV, PATH=f"{gcloud.parent}:{ENV['PATH']}")
  env.update(word.split("=", 1) for word in shlex.split(export)[1:])
  commands = [c for c in readme_commands() if c.startswith(RUN[-2:])]
  assert len(commands) >= 10, commands
  for command in commands:
    argv = shlex.split(command)
    argv[:2] = [str(ROOT / argv[0]), argv[1], "--dry_run"]
    proc = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0 and proc.stdout.startswith("+ "), (command, proc.stderr)
  assert not (tmp_path / "called").exists()


@pytest.mark.parametrize("prefix", sorted(NOT_RUN))
def test_excused_commands_exist(prefix):
  assert any(c.startswith(prefix) for c in readme_commands()), prefix
