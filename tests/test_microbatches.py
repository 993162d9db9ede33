"""Gradient accumulation (``train.microbatches``) is exact: 4 micro-batches give the same
parameters, domain weights, averaged weights and metrics as the whole batch at once."""
import jax
import numpy as np
import pytest
import step_fixtures as fx

from doremi_jax.core import steps
from doremi_jax.core import train_state as ts

TOL = dict(rtol=2e-5, atol=2e-6)
PARAM_TOL = dict(rtol=1e-4, atol=1e-5)
SMALL = dict(num_layers=1, emb_dim=32, num_heads=2, head_dim=16, mlp_dim=64)  # quick compiles


@pytest.fixture(scope="module")
def mesh():
  return fx.single_device_mesh()


def _train(step, put, state, reference=None):
  """Three steps over the fixed batches (the 2nd misses a domain; some rows are padded)."""
  for batch in fx.BATCHES:
    args = (state, put(batch)) if reference is None else (state, reference, put(batch))
    state, metrics = step(*args)
  return jax.device_get(state), jax.device_get(metrics)


def _assert_same(a, b):
  (state_a, metrics_a), (state_b, metrics_b) = a, b
  for (path, x), y in zip(fx.flat(state_a.params).items(), fx.flat(state_b.params).values()):
    np.testing.assert_allclose(x, y, err_msg=path, **PARAM_TOL)
  if state_a.domains is not None:
    np.testing.assert_allclose(state_a.domains.weights, state_b.domains.weights, **TOL)
    np.testing.assert_allclose(state_a.domains.average, state_b.domains.average, **TOL)
  assert sorted(metrics_a) == sorted(metrics_b)
  for k, v in metrics_a.items():
    np.testing.assert_allclose(v, metrics_b[k], err_msg=k, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kind", [pytest.param("plain", marks=pytest.mark.slow), "proxy"])
def test_four_microbatches_equal_one_batch(mesh, kind):
  runs = []
  for m in (1, 4):
    rig = fx.Rig(mesh, kind, warmup_steps=1, microbatches=m, **SMALL)
    reference = rig.reference_params(seed=1) if kind == "proxy" else None
    runs.append(_train(rig.step, rig.put, rig.init(0), reference))
    assert rig.step.jitted._cache_size() == 1  # pylint: disable=protected-access
  _assert_same(*runs)


@pytest.mark.slow
def test_sweep_with_token_pooled_objective_accumulates_exactly(mesh):
  """Two proxies vmapped in one step, the reference implementation's pooled objective."""
  cfg = steps.DoremiConfig(step_size=[1.0, 0.1], estimator="mean_clip",
                           objective="token_pooled")
  rig = fx.Rig(mesh, "proxy", warmup_steps=1, **SMALL)
  reference = rig.reference_params(seed=1)
  _, stacked = ts.stack_proxies(rig.abstract, rig.shardings, 2, mesh)
  runs = []
  for m in (1, 4):
    step = steps.make_train_step("proxy", rig.model, rig.optimizer, mesh, stacked, fx.K, cfg,
                                 reference_shardings=rig.shardings.params, microbatches=m)
    runs.append(_train(step, rig.put, ts.broadcast_state(rig.init(0), 2, stacked), reference))
  _assert_same(*runs)
  weights = runs[1][0].domains.weights
  assert not np.allclose(weights[0], weights[1])  # the two settings really differ


def test_microbatches_must_be_a_positive_integer(mesh):
  with pytest.raises(ValueError, match="microbatches"):
    fx.Rig(mesh, "plain", microbatches=0)
