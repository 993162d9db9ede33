"""RegMix's regression (Liu et al. 2024), in numpy: mixtures -> validation loss, then the
mixture the fit predicts best.

The model is log-linear, ``loss ~ a + sum_d b_d log(w_d + eps)``, fit by ridge least
squares. Why this rather than RegMix's LightGBM: it needs no extra dependency, it is
stable with the few dozen runs a CPU swarm affords (a tree ensemble needs hundreds), and
its shape is the one pretraining losses show, diminishing returns in a domain's share.
As RegMix does, the answer is not the fit's argmin but the average of the ``top_k``
mixtures it predicts best among many drawn from the swarm's own prior.
"""
from __future__ import annotations

import dataclasses

import numpy as np

EPS = 1e-3  # a domain's share floor inside the log: 0 weight is a finite penalty


def dirichlet_mixtures(prior: np.ndarray, count: int, concentration: float, seed: int
                       ) -> np.ndarray:
  """``count`` mixtures ``[count, K]`` drawn around ``prior`` (its mean), as RegMix draws its
  swarm (``concentration``: how tightly; small values give spiky mixtures)."""
  prior = np.asarray(prior, np.float64)
  alpha = np.maximum(prior / prior.sum() * concentration * len(prior), 1e-3)
  return np.random.default_rng(seed).dirichlet(alpha, size=count)


def _features(weights: np.ndarray) -> np.ndarray:
  w = np.atleast_2d(np.asarray(weights, np.float64))
  return np.concatenate([np.ones((len(w), 1)), np.log(w + EPS)], axis=1)


@dataclasses.dataclass(frozen=True)
class Fit:
  coefficients: np.ndarray  # [1 + K]: intercept, then one per domain
  r2: float  # on the swarm itself (in-sample)

  def predict(self, weights: np.ndarray) -> np.ndarray:
    return _features(weights) @ self.coefficients


def fit(weights: np.ndarray, losses: np.ndarray, ridge: float = 1e-3) -> Fit:
  """Ridge least squares of ``losses`` [S] on the log-linear features of ``weights``."""
  x, y = _features(weights), np.asarray(losses, np.float64)
  penalty = ridge * np.eye(x.shape[1])
  penalty[0, 0] = 0.0  # the intercept is not shrunk
  coef = np.linalg.solve(x.T @ x + penalty, x.T @ y)
  residual = y - x @ coef
  total = float(np.sum((y - y.mean()) ** 2)) or 1.0
  return Fit(coef, 1.0 - float(residual @ residual) / total)


def best_mixture(model: Fit, prior: np.ndarray, concentration: float, candidates: int = 100_000,
                 top_k: int = 100, seed: int = 0) -> np.ndarray:
  """The mean of the ``top_k`` of ``candidates`` mixtures from the prior with the lowest
  predicted loss (RegMix's recipe), renormalised."""
  mixes = dirichlet_mixtures(prior, candidates, concentration, seed)
  best = mixes[np.argsort(model.predict(mixes))[:top_k]].mean(axis=0)
  return best / best.sum()
