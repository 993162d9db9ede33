"""Several proxies in one compiled step: a DoReMi sweep equals separate proxy runs."""
import jax
import numpy as np
import pytest
import step_fixtures as fx

from doremi_jax import errors
from doremi_jax.core import steps
from doremi_jax.core import train_state as ts

TOL = dict(rtol=2e-5, atol=2e-6)


@pytest.fixture(scope="module")
def mesh():
  return fx.single_device_mesh()


def _run(rig, state, reference, n=3):
  for batch in fx.BATCHES[:n]:
    state, metrics = rig.run(state, batch, reference)
  return jax.device_get(state), jax.device_get(metrics)


def test_settings_are_the_product_of_lists():
  cfg = steps.DoremiConfig(step_size=[1.0, 0.1], estimator=["token_clip", "mean_clip"],
                           smoothing=1e-3)
  tags = [s.tag for s in cfg.settings()]
  assert tags == ["eta1-token_clip-c0.001", "eta1-mean_clip-c0.001",
                  "eta0.1-token_clip-c0.001", "eta0.1-mean_clip-c0.001"]
  with pytest.raises(errors.DoremiError):
    steps.DoremiConfig(estimator="median")


def test_two_proxies_in_one_step_equal_two_separate_runs(mesh):
  settings = [dict(step_size=1.0, estimator="token_clip"),
              dict(step_size=0.1, estimator="mean_clip")]
  sweep_cfg = steps.DoremiConfig(step_size=[1.0, 0.1], estimator=["token_clip", "mean_clip"])
  # The product has 4 settings; keep the two we compare by slicing the stacked results.
  single = fx.Rig(mesh, "proxy")
  reference = single.reference_params(seed=1)
  separate = []
  for s in settings:
    rig = fx.Rig(mesh, "proxy", steps.DoremiConfig(**s))
    separate.append(_run(rig, rig.init(0), reference))

  rig = fx.Rig(mesh, "proxy")  # for the unstacked abstract state / shardings
  num = len(sweep_cfg.settings())
  _, stacked_sh = ts.stack_proxies(rig.abstract, rig.shardings, num, mesh)
  step = steps.make_train_step("proxy", rig.model, rig.optimizer, mesh, stacked_sh, fx.K,
                               sweep_cfg, reference_shardings=rig.shardings.params)
  state = ts.broadcast_state(rig.init(0), num, stacked_sh)
  for batch in fx.BATCHES:
    state, metrics = step(state, reference, rig.put(batch))
  state, metrics = jax.device_get(state), jax.device_get(metrics)
  assert step.jitted._cache_size() == 1
  tags = [s.tag for s in sweep_cfg.settings()]
  for s, (sep_state, sep_metrics) in zip(settings, separate):
    i = tags.index(steps.DoremiConfig(**s).settings()[0].tag)
    np.testing.assert_allclose(state.domains.average[i], sep_state.domains.average, **TOL)
    np.testing.assert_allclose(state.domains.weights[i], sep_state.domains.weights, **TOL)
    np.testing.assert_allclose(metrics["domain_excess"][i], sep_metrics["domain_excess"], **TOL)
    for (path, a), b in zip(fx.flat(state.params).items(), fx.flat(sep_state.params).values()):
      np.testing.assert_allclose(a[i], b, rtol=1e-4, atol=1e-5, err_msg=path)
  # The reference's losses are computed once and are the same for every proxy.
  assert metrics["domain_reference_loss"].shape == (fx.K,)
  assert metrics["domain_weights"].shape == (num, fx.K)
  assert metrics["weight_entropy"].shape == (num,)
