"""The RegMix swarm (issue 23 item 1): S models in one compiled step equal S separate runs,
and the regression finds a known optimum on synthetic loss surfaces."""
import jax
import numpy as np
import step_fixtures as fx

from doremi_jax.core import regmix, swarm
from doremi_jax.core import train_state as ts


def test_swarm_step_equals_separate_runs():
  """Two models from two inits, each on its own batches: one vmapped step per step equals
  each model's own plain step (float tolerance), and the swarm compiles once."""
  mesh = fx.single_device_mesh()
  rig = fx.Rig(mesh, "plain")
  stacked_abs, stacked_sh = ts.stack_proxies(rig.abstract, rig.shardings, 2, mesh)
  step = swarm.make_swarm_step(rig.model, rig.optimizer, mesh, stacked_sh, fx.K)
  singles = [jax.tree.map(np.array, jax.device_get(rig.init(seed))) for seed in (0, 1)]
  stacked = jax.device_put(jax.tree.map(lambda *x: np.stack(x), *singles), stacked_sh)
  separate = [rig.init(seed) for seed in (0, 1)]
  for t in range(3):
    batches = [fx.make_batch(10 * t + i) for i in range(2)]
    stacked, metrics = step(stacked, jax.tree.map(lambda *x: np.stack(x), *batches))
    for i in range(2):
      separate[i], own = rig.run(separate[i], batches[i])
      np.testing.assert_allclose(np.asarray(metrics["loss"])[i], own["loss"], rtol=1e-5)
  for i in range(2):
    mine = jax.tree.map(lambda x, i=i: np.asarray(x)[i], jax.device_get(stacked.params))
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5), mine,
                 jax.device_get(separate[i].params))


def test_regression_recovers_a_known_optimum():
  """Loss = sum_d c_d log(w_d + eps) + noise has its simplex optimum at w proportional to
  -c (Lagrange); 48 swarm mixtures around a uniform prior find it within 0.1 in L1."""
  rng = np.random.default_rng(0)
  c = -np.array([0.6, 0.3, 0.1, 0.0])  # domain 3 does not help: its weight should vanish
  mixes = regmix.dirichlet_mixtures(np.full(4, 0.25), 48, concentration=1.0, seed=1)
  losses = 3.0 + np.log(mixes + regmix.EPS) @ c + rng.normal(0, 0.01, len(mixes))
  model = regmix.fit(mixes, losses)
  assert model.r2 > 0.9
  best = regmix.best_mixture(model, np.full(4, 0.25), concentration=1.0, candidates=20_000,
                             top_k=50, seed=2)
  assert np.abs(best - np.array([0.6, 0.3, 0.1, 0.0])).sum() < 0.1
  assert best[3] < 0.02 and np.isclose(best.sum(), 1.0)
