"""Every file name of a run dir and an experiment dir, in one place.

A run dir (``MODEL_DIR``) holds ``config.gin`` (the first start's operative config) and
``config.<step>.gin`` per resumed start (``config_file``), ``checkpoints/``, ``tensorboard/``,
``train_summary.json`` when finished, ``eval_<split>.json`` per evaluation and, for a
proxy, ``domain_weights.jsonl`` (the trajectory) and ``export/<name>.json`` (the averaged
weights). An experiment dir holds ``pipeline.json``, ``round_<k>/{reference,proxy}``,
``main/[<size>/]<arm>/seed_<s>``, ``arms/``, ``export/``, ``summary.json`` and ``report.md``.
"""
from __future__ import annotations

import json
import os
from typing import Any

from doremi_jax import storage

CONFIG_FILE = "config.gin"
CHECKPOINT_SUBDIR = "checkpoints"
DAMAGED_DIR = "damaged_checkpoints"  # damaged checkpoints moved aside at a resume
TENSORBOARD_SUBDIR = "tensorboard"
TRAIN_SUMMARY_FILE = "train_summary.json"
WEIGHTS_TRAJECTORY_FILE = "domain_weights.jsonl"
EXPORT_SUBDIR = "export"
PIPELINE_FILE = "pipeline.json"
SUMMARY_FILE = "summary.json"
REPORT_FILE = "report.md"


def config_file(model_dir: str, start_step: int) -> str:
  """Where a start writes its operative config: ``config.gin`` the first time, and
  ``config.<start_step>.gin`` when resumed, so no start's config is overwritten."""
  first = os.path.join(model_dir, CONFIG_FILE)
  if not os.path.exists(first):
    return first
  return os.path.join(model_dir, f"config.{start_step}.gin")


def eval_file(model_dir: str, split: str) -> str:
  return os.path.join(model_dir, f"eval_{split}.json")


def checkpoint_dir(model_dir: str) -> str:
  return os.path.join(os.path.abspath(model_dir), CHECKPOINT_SUBDIR)


def trajectory_file(model_dir: str) -> str:
  return os.path.join(model_dir, WEIGHTS_TRAJECTORY_FILE)


def round_dir(experiment_dir: str, k: int) -> str:
  return os.path.join(experiment_dir, f"round_{k}")


def main_run_dir(experiment_dir: str, arm: str, seed: int, size: str | None = None) -> str:
  """``main/<arm>/seed_<s>``; with a ladder of main model sizes ``main/<size>/<arm>/...``."""
  parts = ["main"] + ([size] if size else []) + [arm, f"seed_{seed}"]
  return os.path.join(experiment_dir, *parts)


def read_json(path: str) -> Any:
  with open(path) as f:
    return json.load(f)


def write_json(path: str, payload: Any) -> str:
  """Atomically: a full disk leaves the previous file (e.g. a summary) as it was."""
  storage.write_atomic(path, json.dumps(payload, indent=2))
  return path
