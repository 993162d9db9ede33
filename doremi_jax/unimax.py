"""UniMax (Chung et al. 2023, "UniMax: Fairer and more effective language sampling").

A mixture from token counts alone: as uniform as the training budget allows, but no domain
repeated more than ``max_epochs`` times. Domains are visited smallest first; each gets an
equal share of the budget still unallocated, capped at ``max_epochs`` times its size, so
what a small domain cannot use goes to the larger ones. A strong baseline for learned
mixtures (Held et al. 2025) at no training cost.
"""
from __future__ import annotations

import math
from typing import Mapping

from doremi_jax import errors


def unimax_weights(domain_tokens: Mapping[str, int | float], budget_tokens: float,
                   max_epochs: float = 1.0) -> dict[str, float]:
  """Mixture weights (summing to 1, in ``domain_tokens``' order) for a run of
  ``budget_tokens`` tokens.

  Worked example: sizes ``{a: 10, b: 100, c: 1000}``, budget 300, one epoch. ``a`` would get
  300 / 3 = 100 but is capped at 10; the remaining 290 split over two gives ``b`` 145,
  capped at 100; ``c`` gets the last 190. Weights: 10/300, 100/300, 190/300.

  A budget small enough that no cap binds gives the uniform mixture. A budget beyond every
  domain's cap cannot be spent without more epochs: the weights are then the capped sizes
  normalised (the natural mixture for equal ``max_epochs``), and the run repeats each
  domain more than ``max_epochs`` times. Ties in size keep the input's order.
  """
  sizes = dict(domain_tokens)
  if not sizes:
    raise errors.DoremiError("unimax_weights needs at least one domain")
  for name, n in sizes.items():
    if isinstance(n, bool) or not isinstance(n, (int, float)) or not math.isfinite(n) or n < 0:
      raise errors.DoremiError(f"domain {name!r} has a bad token count {n!r}: "
                               "counts must be finite and non-negative")
  for what, x in (("budget_tokens", budget_tokens), ("max_epochs", max_epochs)):
    if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x) or x <= 0:
      raise errors.DoremiError(f"{what} must be a positive finite number, got {x!r}")
  if not any(sizes.values()):
    raise errors.DoremiError("unimax_weights: every domain has 0 tokens")
  order = sorted(sizes, key=lambda name: sizes[name])  # stable: ties keep the input order
  left, allocation = float(budget_tokens), {}
  for i, name in enumerate(order):
    allocation[name] = min(left / (len(order) - i), max_epochs * float(sizes[name]))
    left -= allocation[name]
  total = sum(allocation.values())
  return {name: allocation[name] / total for name in sizes}
