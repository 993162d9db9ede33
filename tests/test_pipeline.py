"""End to end: the whole pipeline on the synthetic domains with a tiny budget."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.heavy  # minutes: scheduled first (conftest.py)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PY = sys.executable


def _pipeline(experiment_dir: str, *extra: str) -> subprocess.CompletedProcess:
  cmd = [PY, "-m", "doremi_jax.pipeline", "--gin_file=experiments/synthetic.gin",
         f"--gin.pipeline.experiment_dir='{experiment_dir}'",
         "--gin.pipeline.reference_steps=20", "--gin.pipeline.proxy_steps=20",
         "--gin.pipeline.main_steps=10", "--gin.pipeline.rounds=2",
         "--gin.train.log_every=5", "--gin.train.progress=False",
         "--gin.evaluate.max_batches_per_domain=2", "--gin.pipeline.seeds=[0, 1]", *extra]
  return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900)


def _published_weights(path) -> str:
  """A user arm in the reference implementation's format (train/eval weights)."""
  weights = {"synthetic_markov1": 0.4, "synthetic_markov2": 0.4, "synthetic_noise": 0.1,
             "synthetic_repeat": 0.1}
  path.write_text(json.dumps({"train_domain_weights": weights, "eval_domain_weights": weights}))
  return str(path)


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
  root = tmp_path_factory.mktemp("pipeline")
  out = str(root / "exp")
  arms = {"published": _published_weights(root / "published.json")}
  start = time.time()
  proc = _pipeline(out, f"--gin.pipeline.extra_arms={arms!r}")
  assert proc.returncode == 0, proc.stderr[-3000:]
  return out, proc, time.time() - start


def test_pipeline_outputs(experiment):
  out, proc, _ = experiment
  with open(os.path.join(out, "summary.json")) as f:
    summary = json.load(f)
  assert [r["round"] for r in summary["rounds"]] == [1, 2]
  # Round 2's reference trained on round 1's exported mixture.
  assert summary["rounds"][1]["reference_mixture"] == "synthetic_doremi_round1"
  for rnd in summary["rounds"]:
    assert abs(sum(rnd["average_domain_weights"].values()) - 1) < 1e-5
  for split in ("validation", "test"):
    assert sorted(summary["main"][split]) == ["doremi", "natural", "published", "uniform"]
    for arm, by_seed in summary["main"][split].items():
      assert sorted(by_seed) == ["0", "1"]
      for ev in by_seed.values():
        assert ev["split"] == split and set(ev["bits_per_byte"]) == set(summary["domains"])
        assert ev["worst_log_perplexity"] == max(ev["log_perplexity"].values())
  test = summary["comparison"]["test"]
  assert test["split"] == "test" and test["seeds"] == ["0", "1"]
  doremi_vs = test["arms"]["doremi"]["paired_difference"]
  assert set(doremi_vs) == {"natural", "uniform"}
  # Paired: the mean of per-seed differences is the difference of the means.
  natural = test["arms"]["natural"]["average_bits_per_byte"]["mean"]
  ours = test["arms"]["doremi"]["average_bits_per_byte"]["mean"]
  assert abs(doremi_vs["natural"]["average_bits_per_byte"]["mean"] - (ours - natural)) < 1e-9
  assert summary["selected_arm"] == "doremi"
  for name in ("report.md", "domain_weights.png", "domain_weights_trajectory.png",
               "comparison.png", "export/synthetic_doremi.json",
               "export/synthetic_doremi.py", "export/synthetic_doremi.gin",
               "export/synthetic_doremi.doremi.json"):
    assert os.path.exists(os.path.join(out, name)), name
  # Streamed domains: no MaxText file with made-up paths; the report says why.
  assert not os.path.exists(os.path.join(out, "export/synthetic_doremi.maxtext.json"))
  with open(os.path.join(out, "report.md")) as f:
    assert "- maxtext: no MaxText mixture written" in f.read()
  assert "natural" in proc.stdout and "uniform" in proc.stdout and "report:" in proc.stdout
  assert os.listdir(os.path.join(out, "main", "doremi", "seed_1", "tensorboard"))


def test_rerun_reuses_finished_stages(experiment):
  out, _, first = experiment
  mtime = os.path.getmtime(os.path.join(out, "main", "doremi", "seed_0", "train_summary.json"))
  start = time.time()
  arms = {"published": os.path.join(os.path.dirname(out), "published.json")}
  proc = _pipeline(out, f"--gin.pipeline.extra_arms={arms!r}")
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert os.path.getmtime(
      os.path.join(out, "main", "doremi", "seed_0", "train_summary.json")) == mtime
  assert time.time() - start < first


def test_bad_user_arm_is_one_line_and_writes_nothing(tmp_path):
  bad = tmp_path / "bad.json"
  bad.write_text(json.dumps({"domain_weights": {"synthetic_noise": 0.5, "Pile-CC": 0.5}}))
  out = tmp_path / "exp"
  proc = _pipeline(str(out), f"--gin.pipeline.extra_arms={{'mine': '{bad}'}}")
  assert proc.returncode == 2
  last = proc.stderr.strip().splitlines()[-1]
  assert last.startswith("error:") and "unknown domains ['Pile-CC']" in last, last
  assert not out.exists()


def test_changed_config_refuses_existing_dir(experiment):
  out, _, _ = experiment
  proc = _pipeline(out, "--gin.pipeline.proxy_steps=21")
  assert proc.returncode == 2
  assert proc.stderr.strip().splitlines()[-1].startswith("error:")
  assert "different experiment" in proc.stderr


def test_exported_module_mixture_proportions(experiment):
  """A fresh process imports the export and samples the mixture through SeqIO."""
  out, _, _ = experiment
  module = os.path.join(out, "export", "synthetic_doremi.py")
  code = f"""
import collections, importlib.util, json, sys
import seqio
spec = importlib.util.spec_from_file_location("exported", {module!r})
mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
ds = seqio.get_mixture_or_task(mod.MIXTURE_NAME).get_dataset(
    {{"targets": 32}}, split="train", shuffle=True, seed=1, num_epochs=None)
counts = collections.Counter(ex["domain"].decode() for ex in ds.take(3000).as_numpy_iterator())
print(json.dumps({{"counts": counts, "weights": mod.DOMAIN_WEIGHTS}}))
"""
  proc = subprocess.run([PY, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-2000:]
  res = json.loads(proc.stdout.strip().splitlines()[-1])
  total = sum(res["counts"].values())
  for domain, weight in res["weights"].items():
    assert abs(res["counts"].get(domain, 0) / total - weight) < 0.03, (domain, res)
