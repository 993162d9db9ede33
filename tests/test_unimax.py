"""UniMax weights: the worked example, its two limits (uniform, natural), epochs, errors."""
from __future__ import annotations

import math

import pytest

from doremi_jax import errors
from doremi_jax.unimax import unimax_weights

SIZES = {"c": 1000, "a": 10, "b": 100}  # not in size order: the output keeps this order


def test_worked_example_from_the_docstring():
  w = unimax_weights(SIZES, budget_tokens=300)
  assert list(w) == ["c", "a", "b"]
  assert w == pytest.approx({"a": 10 / 300, "b": 100 / 300, "c": 190 / 300})


def test_no_cap_binds_gives_uniform():
  w = unimax_weights(SIZES, budget_tokens=30)  # 10 each: a's cap of 10 just holds
  assert w == pytest.approx({k: 1 / 3 for k in SIZES})


def test_budget_beyond_every_cap_gives_natural():
  w = unimax_weights(SIZES, budget_tokens=1e9)
  assert w == pytest.approx({k: n / 1110 for k, n in SIZES.items()})


def test_more_epochs_lift_the_caps():
  # Two epochs: a capped at 20; 280 / 2 = 140 for b (cap 200); c gets 140.
  w = unimax_weights(SIZES, budget_tokens=300, max_epochs=2.0)
  assert w == pytest.approx({"a": 20 / 300, "b": 140 / 300, "c": 140 / 300})
  assert math.fsum(w.values()) == pytest.approx(1.0)


def test_empty_domain_gets_zero_and_ties_keep_order():
  w = unimax_weights({"x": 50, "empty": 0, "y": 50}, budget_tokens=60)
  assert list(w) == ["x", "empty", "y"]
  assert w == pytest.approx({"x": 0.5, "empty": 0.0, "y": 0.5})


@pytest.mark.parametrize("sizes,budget,epochs,match", [
    ({}, 10, 1.0, "at least one domain"),
    ({"a": -1}, 10, 1.0, "bad token count"),
    ({"a": math.nan}, 10, 1.0, "bad token count"),
    ({"a": math.inf}, 10, 1.0, "bad token count"),
    ({"a": 0, "b": 0}, 10, 1.0, "every domain has 0 tokens"),
    ({"a": 5}, 0, 1.0, "budget_tokens must be a positive"),
    ({"a": 5}, math.inf, 1.0, "budget_tokens must be a positive"),
    ({"a": 5}, 10, 0.0, "max_epochs must be a positive"),
])
def test_bad_input_is_one_line(sizes, budget, epochs, match):
  with pytest.raises(errors.DoremiError, match=match) as info:
    unimax_weights(sizes, budget, epochs)
  assert "\n" not in str(info.value)
