"""The package as users install it: the wheel's files, and a CLI run from outside the repo.

The wheel is built from a copy of the sources (the build writes ``build/`` and
``*.egg-info`` next to ``setup.py``) and unpacked into a folder put first on
``PYTHONPATH``, so neither the repo checkout nor an editable install is what runs.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SOURCES = ("setup.py", "README.md", "doremi_jax", "tasks", "gin")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
  src = tmp_path_factory.mktemp("src")
  for name in SOURCES:
    path = REPO / name
    if path.is_dir():
      shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    else:
      shutil.copy(path, src / name)
  out = tmp_path_factory.mktemp("wheel")
  proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                         "-q", "-w", str(out), str(src)], capture_output=True, text=True,
                        timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  (found,) = out.glob("doremi_jax-*.whl")
  return found


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> Path:
  target = tmp_path_factory.mktemp("site")
  with zipfile.ZipFile(wheel) as zf:
    zf.extractall(target)
  return target


def test_wheel_files(wheel):
  names = zipfile.ZipFile(wheel).namelist()
  tops = {n.split("/")[0] for n in names}
  assert tops == {"doremi_jax", "doremi_jax-0.1.0.dist-info"}, tops  # no top-level "tasks"
  for name in ("doremi_jax/tasks/__init__.py", "doremi_jax/tasks/embedded.py",
               "doremi_jax/tasks/synthetic.py", "doremi_jax/gin/experiments/synthetic.gin",
               "doremi_jax/gin/runs/base.gin", "doremi_jax/gin/models/tiny.gin",
               "doremi_jax/run/trainer.py", "doremi_jax/core/steps.py",
               "doremi_jax/data/seqio_input.py", "doremi_jax/mixtures.py"):
    assert name in names, name
  assert not [n for n in names if n.startswith("tests/") or "/tests/" in n]
  entry_points = zipfile.ZipFile(wheel).read("doremi_jax-0.1.0.dist-info/entry_points.txt")
  assert b"doremi-pipeline = doremi_jax.pipeline:console_main" in entry_points
  assert b"doremi-export = doremi_jax.export:console_main" in entry_points


def test_cli_runs_from_outside_the_repo(installed, tmp_path):
  """The installed package finds its gin files and task modules from any working directory."""
  work = tmp_path / "elsewhere"
  (work / "runs").mkdir(parents=True)  # a folder named like a gin sub-folder must not matter
  env = {**os.environ, "PYTHONPATH": str(installed), "JAX_PLATFORMS": "cpu"}
  where = subprocess.run([sys.executable, "-c", "import doremi_jax, doremi_jax.tasks as t; "
                          "print(doremi_jax.__file__); print(t.__file__)"],
                         cwd=work, env=env, capture_output=True, text=True, timeout=120)
  assert where.returncode == 0, where.stderr[-2000:]
  assert all(line.startswith(str(installed)) for line in where.stdout.split()), where.stdout
  model_dir = work / "runs" / "ref"
  proc = subprocess.run(
      [sys.executable, "-m", "doremi_jax.train", "--gin_file=runs/reference.gin",
       "--gin_file=experiments/synthetic.gin", f'--gin.MODEL_DIR="{model_dir}"',
       "--gin.TRAIN_STEPS=2", "--gin.train.progress=False", "--gin.train.log_every=1",
       '--gin.TASK_FEATURE_LENGTHS={"targets": 32}'],
      cwd=work, env=env, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert (model_dir / "train_summary.json").exists()
  assert "import doremi_jax.tasks.synthetic" in (model_dir / "config.gin").read_text()
  # The pipeline finds experiments/ and runs/ gin files the same way (stopped at its first check).
  proc = subprocess.run([sys.executable, "-m", "doremi_jax.pipeline",
                         "--gin_file=experiments/synthetic.gin", "--gin.pipeline.seeds=[]"],
                        cwd=work, env=env, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1] == (
      "error: pipeline.seeds must be distinct integers, got []"), proc.stderr[-2000:]
