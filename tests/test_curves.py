"""Learning curves: steps to a target, speed-ups over seeds, domains improved, the plot."""
from __future__ import annotations

import math

import pytest

from doremi_jax import errors
from doremi_jax.run import curves

STEPS = [0, 100, 200, 300, 400]
NATURAL = [5.0, 4.0, 3.5, 3.2, 3.0]  # final 3.0 at step 400


def _curve(values, steps=STEPS):
  return {"steps": list(steps), "values": list(values)}


def test_reached_between_evaluations_is_interpolated():
  # 3.4 at 200, 2.9 at 300: 3.0 is crossed 0.4 / 0.5 of the way, at step 280.
  assert curves.steps_to_target(STEPS, [5.0, 4.0, 3.4, 2.9, 2.5], 3.0) == pytest.approx(280.0)
  assert curves.steps_to_target(STEPS, [5.0, 4.0, 3.0, 2.9, 2.5], 3.0) == 200.0  # exactly on
  assert curves.steps_to_target([10, 20], [4.0, 2.0], 3.5) == pytest.approx(12.5)


def test_reached_at_first_evaluation_and_never():
  assert curves.steps_to_target([50, 100], [2.0, 1.0], 3.0) == 50.0
  assert curves.steps_to_target(STEPS, [5.0, 4.5, 4.0, 3.5, 3.1], 3.0) is None
  # A diverged evaluation never counts as reached, and nothing is interpolated from it.
  assert curves.steps_to_target([0, 10, 20], [5.0, math.nan, 2.0], 3.0) == 20.0


def test_bad_curves_are_one_line_errors():
  for steps, values, match in [([], [], "at least one"), ([0, 1], [1.0], "as many values"),
                               ([0, 0], [1.0, 2.0], "steps must increase")]:
    with pytest.raises(errors.DoremiError, match=match):
      curves.steps_to_target(steps, values, 1.0)
  with pytest.raises(errors.DoremiError, match="target must be finite"):
    curves.steps_to_target([0], [1.0], math.nan)


def test_identical_curves_have_speedup_one():
  result = curves.speedups({"natural": {0: _curve(NATURAL), 1: _curve(NATURAL)},
                            "doremi": {0: _curve(NATURAL), 1: _curve(NATURAL)}})
  assert result["speedup_vs_natural"]["doremi"] == {0: 1.0, 1: 1.0}
  assert result["steps_to_natural_final"]["natural"] == {0: 400.0, 1: 400.0}
  summary = result["summary"]["doremi"]
  assert summary["mean"] == 1.0 and summary["reached"] == 2 and summary["of"] == 2
  assert summary["ci_low"] == summary["ci_high"] == 1.0 and summary["not_reached"] == []


def test_summary_with_one_seed_not_reaching():
  faster = [5.0, 3.5, 3.0, 2.8, 2.7]  # natural's final 3.0 at step 200: 2x
  slower = [5.0, 4.5, 4.0, 3.5, 3.1]  # never reaches 3.0
  natural = {s: _curve(NATURAL) for s in (0, 1, 2)}
  result = curves.speedups({
      "natural": natural,
      "doremi": {0: _curve(faster), 1: _curve(faster), 2: _curve(slower)},
      "uniform": {0: _curve(faster), 1: _curve([5.0, 3.5, 3.2, 2.9, 2.8]), 2: _curve(faster)}})
  assert result["target"] == {0: 3.0, 1: 3.0, 2: 3.0}
  assert result["steps_to_natural_final"]["doremi"] == {0: 200.0, 1: 200.0, 2: None}
  assert result["speedup_vs_natural"]["doremi"] == {0: 2.0, 1: 2.0, 2: None}
  doremi = result["summary"]["doremi"]
  assert (doremi["reached"], doremi["of"], doremi["not_reached"]) == (2, 3, [2])
  assert doremi["mean"] is None and doremi["ci_low"] is None and doremi["n"] == 0
  uniform = result["summary"]["uniform"]  # 3.2 at 200, 2.9 at 300: 3.0 at 266.7
  assert result["steps_to_natural_final"]["uniform"][1] == pytest.approx(200 + 100 * 2 / 3)
  expected = (2.0 + 400 / (200 + 100 * 2 / 3) + 2.0) / 3
  assert uniform["mean"] == pytest.approx(expected) and uniform["n"] == 3
  assert uniform["ci_low"] < expected < uniform["ci_high"]


def test_speedups_need_the_same_seeds_and_a_finite_baseline():
  with pytest.raises(errors.DoremiError, match="paired"):
    curves.speedups({"natural": {0: _curve(NATURAL)}, "doremi": {1: _curve(NATURAL)}})
  with pytest.raises(errors.DoremiError, match="baseline arm 'natural' not among"):
    curves.speedups({"doremi": {0: _curve(NATURAL)}})
  with pytest.raises(errors.DoremiError, match="not finite"):
    curves.speedups({"natural": {0: _curve(NATURAL[:-1] + [math.inf])}})


def test_domains_better_or_equal():
  natural = {"code": 2.0, "news": 3.0, "legal": 1.5}
  result = curves.domains_better_or_equal({"code": 1.9, "news": 3.0, "legal": 1.6}, natural)
  assert result == {"k": 2, "n": 3, "domains": ["code", "news"]}
  with pytest.raises(errors.DoremiError, match="domains differ"):
    curves.domains_better_or_equal({"code": 1.0}, natural)


def test_plot_curves_writes_a_png(tmp_path):
  data = {"natural": {0: _curve(NATURAL), 1: _curve([x + 0.1 for x in NATURAL])},
          "doremi": {0: _curve([5.0, 3.5, 3.0, 2.8, 2.7]),
                     1: _curve([5.1, 3.6, 3.1, 2.9], steps=STEPS[:4])}}  # 1 stopped early
  path = curves.plot_curves(data, str(tmp_path / "plots" / "curves.png"), "test")
  assert path == str(tmp_path / "plots" / "curves.png")
  with open(path, "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"
