"""Seed-paired arm comparison: intervals against scipy, hand-computed differences, outputs."""
import json
import os

import numpy as np
import pytest
from scipy import stats

from doremi_jax.errors import DoremiError
from doremi_jax.run import comparison

DOMAINS = ("a", "b", "c")
SEEDS = (0, 1, 2)
# bits per byte, per arm -> domain -> values for seeds 0, 1, 2.
BPB = {
    "natural": {"a": [1.0, 1.1, 0.9], "b": [2.0, 2.1, 1.9], "c": [3.0, 2.9, 3.3]},
    # a: consistently better; b: noise around 0; c: consistently worse.
    "doremi": {"a": [0.9, 0.98, 0.81], "b": [2.05, 2.05, 1.95], "c": [3.2, 3.1, 3.45]},
    "uniform": {"a": [1.2, 1.2, 1.2], "b": [1.5, 1.6, 1.7], "c": [3.0, 3.0, 3.0]},
}
LOGPPL = {
    "natural": {"a": [2.0] * 3, "b": [2.0] * 3, "c": [2.5] * 3},
    # The worst domain moves with the seed: per-seed worst is 3.0, worst of the means only 5/3.
    "doremi": {"a": [3.0, 1.0, 1.0], "b": [1.0, 3.0, 1.0], "c": [1.0, 1.0, 3.0]},
    "uniform": {"a": [1.5] * 3, "b": [1.5] * 3, "c": [1.5] * 3},
}


def _evals(arms=("natural", "doremi", "uniform"), seeds=SEEDS):
  return {arm: {s: {"split": "test",
                    "log_perplexity": {d: LOGPPL[arm][d][i] for d in DOMAINS},
                    "bits_per_byte": {d: BPB[arm][d][i] for d in DOMAINS}}
                for i, s in enumerate(seeds)}
          for arm in arms}


@pytest.mark.parametrize("values", [[1.0, 2.0, 4.0], [0.5, 0.7], [3.0, 1.0, 4.0, 1.0, 5.0]])
@pytest.mark.parametrize("confidence", [0.95, 0.9])
def test_t_interval_matches_scipy(values, confidence):
  ci = comparison.t_interval(values, confidence)
  low, high = stats.t.interval(confidence, len(values) - 1, loc=np.mean(values),
                               scale=stats.sem(values))
  assert ci["mean"] == pytest.approx(np.mean(values))
  assert ci["ci_low"] == pytest.approx(low)
  assert ci["ci_high"] == pytest.approx(high)
  assert ci["half_width"] == pytest.approx((high - low) / 2)
  assert ci["n"] == len(values) and ci["values"] == values


def test_t_interval_hand_case():
  # mean 7/3, s = sqrt(7/3), t_{0.975, 2} = 4.302653.
  ci = comparison.t_interval([1.0, 2.0, 4.0])
  assert ci["half_width"] == pytest.approx(4.302653 * np.sqrt(7 / 3) / np.sqrt(3), rel=1e-6)


def test_t_interval_single_value_and_constant():
  one = comparison.t_interval([2.5])
  assert one["mean"] == 2.5 and one["n"] == 1
  assert one["ci_low"] is None and one["ci_high"] is None and one["half_width"] is None
  json.dumps(one, allow_nan=False)
  same = comparison.t_interval([2.0, 2.0, 2.0])
  assert same["half_width"] == 0.0 and same["ci_low"] == same["ci_high"] == 2.0
  with pytest.raises(DoremiError):
    comparison.t_interval([])


def test_compare_arms_means_and_worst_domain_per_seed():
  result = comparison.compare_arms(_evals())
  assert result["split"] == "test" and result["seeds"] == [0, 1, 2]
  assert result["domains"] == list(DOMAINS) and result["baselines"] == ["natural", "uniform"]
  assert list(result["arms"]) == ["natural", "doremi", "uniform"]
  natural = result["arms"]["natural"]
  assert natural["bits_per_byte"]["c"]["mean"] == pytest.approx((3.0 + 2.9 + 3.3) / 3)
  assert natural["average_bits_per_byte"]["mean"] == pytest.approx((2.0 + 6.1 / 3 * 2) / 3)
  # Seed 1's worst domain is c at 2.9, not the 3.0 of the other seeds.
  assert natural["per_seed"]["1"]["worst_bits_per_byte"] == pytest.approx(2.9)
  assert natural["worst_bits_per_byte"]["mean"] == pytest.approx((3.0 + 2.9 + 3.3) / 3)
  doremi = result["arms"]["doremi"]
  assert [doremi["per_seed"][s]["worst_domain"] for s in "012"] == ["a", "b", "c"]
  assert doremi["worst_log_perplexity"]["mean"] == pytest.approx(3.0)
  assert doremi["worst_log_perplexity"]["half_width"] == 0.0
  assert doremi["average_log_perplexity"]["mean"] == pytest.approx(5 / 3)


def test_compare_arms_paired_differences():
  result = comparison.compare_arms(_evals())
  diff = result["arms"]["doremi"]["paired_difference"]["natural"]
  per_seed = [(0.9 + 2.05 + 3.2 - 6.0) / 3, (0.98 + 2.05 + 3.1 - 6.1) / 3,
              (0.81 + 1.95 + 3.45 - 6.1) / 3]
  assert diff["average_bits_per_byte"]["values"] == pytest.approx(per_seed)
  assert diff["average_bits_per_byte"]["mean"] == pytest.approx(np.mean(per_seed))
  expected = comparison.t_interval(per_seed)
  assert diff["average_bits_per_byte"]["half_width"] == pytest.approx(expected["half_width"])
  assert diff["bits_per_byte"]["a"]["values"] == pytest.approx([-0.1, -0.12, -0.09])
  assert diff["worst_bits_per_byte"]["values"] == pytest.approx([0.2, 0.2, 0.15])
  assert diff["domains_better"] == ["a"] and diff["domains_worse"] == ["c"]
  assert diff["log_perplexity"]["c"]["values"] == pytest.approx([-1.5, -1.5, 0.5])
  # Baselines are not compared with themselves; both appear for the other arms.
  assert set(result["arms"]["natural"]["paired_difference"]) == {"uniform"}
  assert set(result["arms"]["uniform"]["paired_difference"]) == {"natural"}
  assert set(result["arms"]["doremi"]["paired_difference"]) == {"natural", "uniform"}
  vs_uniform = result["arms"]["doremi"]["paired_difference"]["uniform"]
  assert vs_uniform["domains_better"] == ["a"]


def test_compare_arms_json_serialisable():
  result = comparison.compare_arms(_evals())
  assert json.loads(json.dumps(result, allow_nan=False))["arms"]["doremi"]["per_seed"]["2"]
  single = comparison.compare_arms(_evals(seeds=(7,)))
  text = json.dumps(single, allow_nan=False)
  diff = single["arms"]["doremi"]["paired_difference"]["natural"]
  assert diff["domains_better"] == [] and diff["domains_worse"] == [] and "NaN" not in text


def test_compare_arms_pairs_int_and_str_seeds():
  evals = _evals()
  evals["doremi"] = {str(s): r for s, r in evals["doremi"].items()}
  result = comparison.compare_arms(evals)
  diff = result["arms"]["doremi"]["paired_difference"]["natural"]
  assert diff["bits_per_byte"]["a"]["values"] == pytest.approx([-0.1, -0.12, -0.09])


def test_compare_arms_without_baselines():
  result = comparison.compare_arms(_evals(arms=("doremi",)))
  assert result["baselines"] == [] and result["arms"]["doremi"]["paired_difference"] == {}


def test_mismatched_seeds_raise():
  evals = _evals()
  del evals["uniform"][2]
  with pytest.raises(DoremiError, match="same seeds"):
    comparison.compare_arms(evals)


def test_mismatched_domains_raise():
  evals = _evals()
  del evals["doremi"][1]["bits_per_byte"]["b"]
  with pytest.raises(DoremiError, match="domains"):
    comparison.compare_arms(evals)


def test_mixed_splits_and_non_finite_raise():
  evals = _evals()
  evals["doremi"][0]["split"] = "validation"
  with pytest.raises(DoremiError, match="splits"):
    comparison.compare_arms(evals)
  evals = _evals()
  evals["natural"][0]["log_perplexity"]["a"] = float("inf")
  with pytest.raises(DoremiError, match="non-finite"):
    comparison.compare_arms(evals)


def test_best_arm():
  result = comparison.compare_arms(_evals())
  assert comparison.best_arm(result) == "uniform"
  assert comparison.best_arm(result, candidates=["natural", "doremi"]) == "natural"
  assert comparison.best_arm(result, metric="worst_log_perplexity") == "uniform"
  with pytest.raises(DoremiError):
    comparison.best_arm(result, candidates=["missing"])
  with pytest.raises(DoremiError):
    comparison.best_arm(result, metric="accuracy")


def test_table_and_markdown():
  result = comparison.compare_arms(_evals())
  mean = result["arms"]["doremi"]["paired_difference"]["natural"]["average_bits_per_byte"]["mean"]
  table = comparison.comparison_table(result)
  for text in ("natural", "doremi", "uniform", "Δ vs natural", "Δ vs uniform", f"{mean:+.4f}",
               "2.050 2.043 2.070", "nats/token",
               "doremi vs natural (bits/byte, beyond the CI): better a; worse c"):
    assert text in table, text
  assert max(len(line) for line in table.splitlines()) <= 130
  md = "\n".join(comparison.comparison_markdown(result))
  for text in ("| doremi | 3 |", "Paired difference vs `natural`", "Paired difference vs `uniform`",
               f"{mean:+.4f}", "| a |", "**average**", "95% CI"):
    assert text in md, text


def test_plot_written(tmp_path):
  result = comparison.compare_arms(_evals())
  path = str(tmp_path / "plots" / "comparison.png")
  assert comparison.plot_comparison(result, path) == path
  assert os.path.getsize(path) > 1000
  single = comparison.compare_arms(_evals(seeds=(3,)))
  assert os.path.exists(comparison.plot_comparison(single, str(tmp_path / "one.png")))
