"""The controls experiment end to end on tiny settings (issue 18): a proxy batch holding
every domain, the reference-free ablation, unimax, a ladder of two main model sizes with
learning curves, steps-to-target, excess over the reference and the learnable average."""
from __future__ import annotations

import json
import os

import pytest

from doremi_jax import pipeline as pipeline_cli
from doremi_jax import unimax
from doremi_jax.corpora import controls, corpus_build

pytestmark = pytest.mark.heavy  # minutes: scheduled first (conftest.py)

MAIN_STEPS = 8
ARMS = ["natural", "uniform", "unimax", "doremi_eta1-token_clip-c0.001",
        "doremi_eta1-token_clip-c0.001-noref"]


# One seed in the default suite (10 main runs); the paired two-seed run under -m slow.
@pytest.fixture(scope="module", params=[
    pytest.param([0], id="one_seed"),
    pytest.param([0, 1], id="two_seeds", marks=pytest.mark.slow)])
def experiment(tmp_path_factory, request):
  seeds = request.param
  root = tmp_path_factory.mktemp("controls_e2e")
  real = root / "real"
  real.mkdir()
  for k, name in enumerate(controls.REAL_DOMAINS):  # four small, different real domains
    docs = [" ".join(f"The {name} note {i} lists {j * (k + 3)} things, then {k} more."
                     for j in range(3)) for i in range(300)]
    (real / f"{name}.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in docs))
  patch = pytest.MonkeyPatch()
  patch.setenv("DOREMI_CACHE", str(root / "cache"))
  patch.setattr(corpus_build, "build_corpus", lambda *a, **k: None)  # the real dir is ours
  out = root / "exp"
  argv = ["--gin_file=experiments/study_controls.gin",
          f"--gin.EMBEDDED_CORPUS_DIR='{real}'", "--gin.CONTROLS_REAL_CAP_BYTES=20000",
          "--gin.VOCAB_SIZE=512", "--gin.SEQUENCE_LENGTH=64",
          f"--gin.PREPARED_DIR='{root / 'prepared'}'", f"--gin.pipeline.experiment_dir='{out}'",
          "--gin.pipeline.reference_steps=20", "--gin.pipeline.proxy_steps=6",
          "--gin.pipeline.proxy_batch_size=48", f"--gin.pipeline.main_steps={MAIN_STEPS}",
          "--gin.pipeline.eval_every=4", f"--gin.pipeline.seeds={seeds}", "--gin.BATCH_SIZE=8",
          "--gin.DoremiConfig.step_size=1.0", "--gin.train.log_every=4",
          "--gin.train.progress=False", "--gin.train.curve_batches_per_domain=1",
          "--gin.evaluate.max_batches_per_domain=1"]
  try:
    result = pipeline_cli.main(argv)
  finally:
    patch.undo()
  with open(out / "summary.json") as f:
    return out, result, json.load(f), [str(seed) for seed in seeds]


def test_every_arm_at_both_sizes(experiment):
  _, _, summary, _ = experiment
  assert list(summary["sizes"]) == ["1x", "4x"]
  assert summary["selected_arm"] == "doremi_eta1-token_clip-c0.001"  # the ablation is not chosen
  for label, size in summary["sizes"].items():
    assert list(size["comparison"]["test"]["arms"]) == ARMS, label
  one, four = (summary["sizes"][k]["model"] for k in ("1x", "4x"))
  assert four["non_embedding_params"] / one["non_embedding_params"] == pytest.approx(4, rel=0.01)
  assert summary["rounds"][0]["proxy_model"]["non_embedding_params"] == one["non_embedding_params"]


def test_learnable_average_leaves_the_controls_out(experiment):
  _, _, summary, _ = experiment
  learnable = summary["learnable_domains"]
  assert sorted(learnable) == sorted(f"controls_{d}" for d in controls.REAL_DOMAINS)
  size = summary["sizes"]["1x"]
  evals = summary["main"]["test"]["natural"]
  expected = sum(evals["0"]["bits_per_byte"][d] for d in learnable) / len(learnable)
  assert size["learnable"]["arms"]["natural"]["average"]["values"][0] == pytest.approx(expected)


def test_curves_and_steps_to_target(experiment):
  out, _, summary, seeds = experiment
  found = summary["sizes"]["4x"]["curves"]["all"]
  natural = found["series"]["natural"]["0"]
  assert natural["steps"] == [4, MAIN_STEPS]
  assert found["baseline_final_step"]["0"] == MAIN_STEPS
  assert found["target"]["0"] == natural["values"][-1]
  for arm in ARMS:
    for seed, reached in found["steps_to_natural_final"][arm].items():
      speedup = found["speedup_vs_natural"][arm][seed]
      assert (reached is None and speedup is None) or speedup == pytest.approx(MAIN_STEPS / reached)
  with open(out / "main" / "4x" / "natural" / f"seed_{seeds[-1]}" / "curve_test.jsonl") as f:
    rows = [json.loads(line) for line in f]
  assert [r["step"] for r in rows] == [4, MAIN_STEPS] and rows[-1]["split"] == "test"
  assert "learnable" in summary["sizes"]["4x"]["curves"]


def test_unimax_weights_and_excess_over_reference(experiment):
  _, _, summary, _ = experiment
  weights = summary["arm_weights"]["unimax"]
  assert sum(weights.values()) == pytest.approx(1.0)
  with open(os.path.join(summary["experiment_dir"], "arms", "arm_unimax.json")) as f:
    meta = json.load(f)["metadata"]
  budget = MAIN_STEPS * 8 * 64
  assert meta["budget_tokens"] == budget
  assert weights == pytest.approx(unimax.unimax_weights(meta["train_tokens"], budget, 1.0))
  excess = summary["sizes"]["1x"]["excess_over_reference"]
  assert list(excess) == ARMS
  for entry in excess.values():
    assert entry["worst_domain"] in summary["domains"]
    # The mean over seeds of each seed's worst excess is at least the worst mean excess.
    assert entry["worst"]["mean"] >= max(e["mean"] for e in entry["bits_per_byte"].values()) - 1e-9


def test_cost_and_report(experiment):
  out, result, summary, _ = experiment
  cost = summary["doremi_cost"]
  assert cost["seconds"] > 0 and cost["flops"] > 0
  for size in summary["sizes"].values():
    frac = size["doremi_cost_fraction"]
    assert frac["flops"] == pytest.approx(cost["flops"] / size["main_run_flops"])
  assert (summary["sizes"]["1x"]["doremi_cost_fraction"]["flops"]
          > summary["sizes"]["4x"]["doremi_cost_fraction"]["flops"])
  report = (out / "report.md").read_text()
  for text in ("## Main models, size 1x", "## Main models, size 4x", "Steps to natural's final",
               "Excess over the reference", "Learnable domains only", "DoReMi's stages"):
    assert text in report, text
  assert (out / "curves_4x.png").exists() and result["report"] == str(out / "report.md")
