"""Tests for doremi_jax.doremi: hand-computed cases, numpy references, properties, jit, grads."""
import jax

jax.config.update("jax_enable_x64", False)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.extra import numpy as hnp  # noqa: E402

from doremi_jax.core import doremi  # noqa: E402

TOL = dict(rtol=1e-6, atol=1e-6)
PROP_TOL = dict(rtol=1e-5, atol=1e-6)  # float32 exp/log over random inputs
SETTINGS = settings(max_examples=40, deadline=None)

# Hand-computed batch: 2 examples x 3 tokens, 3 domains; example 0 is domain 0, example 1 is
# domain 2, domain 1 is absent. The last token of example 1 is masked (its values are junk).
PROXY = np.array([[2.0, 1.0, 3.0], [0.5, 4.0, 100.0]], np.float32)
REF = np.array([[1.0, 2.0, 1.0], [0.5, 1.0, np.nan]], np.float32)
# proxy - ref = [[1, -1, 2], [0, 3, junk]] -> clipped [[1, 0, 2], [0, 3, masked]]
MASK = np.array([[1, 1, 1], [1, 1, 0]], bool)
IDS = np.array([0, 2], np.int32)
WEIGHTS = np.array([0.5, 0.2, 0.3], np.float32)


def np_segment_mean(values, ids, mask, k):
  ids = np.broadcast_to(ids.reshape(ids.shape + (1,) * (values.ndim - ids.ndim)), values.shape)
  mean, count = np.zeros(k), np.zeros(k)
  for i in range(k):
    sel = (ids == i) & (mask != 0)
    count[i] = sel.sum()
    mean[i] = values[sel].mean() if count[i] else 0.0
  return mean, count


def np_update(w, excess, eta, c):
  logits = np.log(w.astype(np.float64)) + eta * excess
  new = np.exp(logits - logits.max())
  new /= new.sum()
  return (1 - c) * new + c / len(w)


def test_excess_hand_computed():
  excess, counts = doremi.per_domain_excess_loss(PROXY, REF, IDS, MASK, 3)
  # domain 0: (1 + 0 + 2) / 3 = 1; domain 1 absent; domain 2: (0 + 3) / 2 = 1.5
  np.testing.assert_allclose(excess, [1.0, 0.0, 1.5], **TOL)
  np.testing.assert_allclose(counts, [3.0, 0.0, 2.0], **TOL)
  assert counts.dtype == jnp.float32 and not np.any(np.isnan(excess))


def test_excess_per_token_clip_counts_negative_tokens():
  ids = np.array([[0, 1, 1], [2, 0, 2]], np.int32)
  proxy = np.array([[2.0, 1.0, 3.0], [0.5, 4.0, 1.0]], np.float32)
  ref = np.array([[1.0, 2.0, 1.0], [0.5, 1.0, 2.0]], np.float32)
  excess, counts = doremi.per_domain_excess_loss(proxy, ref, ids, np.ones((2, 3)), 3)
  # diffs [[1, -1, 2], [0, 3, -1]]; d0: (1 + 3) / 2 = 2; d1: (0 + 2) / 2 = 1; d2: (0 + 0) / 2 = 0
  np.testing.assert_allclose(excess, [2.0, 1.0, 0.0], **TOL)
  np.testing.assert_allclose(counts, [2.0, 2.0, 2.0], **TOL)
  # Clipping after averaging would give d1 = max((-1 + 2) / 2, 0) = 0.5, not 1.


def test_masked_tokens_ignored_and_float_mask():
  junk_proxy = PROXY.copy()
  junk_proxy[1, 2] = -1e30
  a = doremi.per_domain_excess_loss(PROXY, REF, IDS, MASK, 3)
  b = doremi.per_domain_excess_loss(junk_proxy, REF, IDS, MASK.astype(np.float32), 3)
  for x, y in zip(a, b):
    np.testing.assert_allclose(x, y, **TOL)


def test_example_and_token_domain_ids_agree():
  token_ids = np.broadcast_to(IDS[:, None], PROXY.shape)
  for fn, args in [(doremi.per_domain_excess_loss, (PROXY, REF)),
                     (doremi.per_domain_mean_loss, (PROXY,))]:
    for x, y in zip(fn(*args, IDS, MASK, 3), fn(*args, token_ids, MASK, 3)):
      np.testing.assert_allclose(x, y, **TOL)
  for obj in doremi.OBJECTIVES:
    np.testing.assert_allclose(
      doremi.weighted_proxy_loss(PROXY, IDS, MASK, WEIGHTS, obj),
      doremi.weighted_proxy_loss(PROXY, token_ids, MASK, WEIGHTS, obj), **TOL)


def test_all_domains_absent_no_nan():
  excess, counts = doremi.per_domain_excess_loss(PROXY, REF, IDS, np.zeros((2, 3)), 4)
  np.testing.assert_array_equal(excess, np.zeros(4))
  np.testing.assert_array_equal(counts, np.zeros(4))
  for obj in doremi.OBJECTIVES:
    assert float(doremi.weighted_proxy_loss(PROXY, IDS, np.zeros((2, 3)), WEIGHTS, obj)) == 0.0


def test_per_domain_mean_loss_hand_computed():
  mean, counts = doremi.per_domain_mean_loss(PROXY, IDS, MASK, 3)
  # d0: (2 + 1 + 3) / 3 = 2; d1 absent; d2: (0.5 + 4) / 2 = 2.25
  np.testing.assert_allclose(mean, [2.0, 0.0, 2.25], **TOL)
  np.testing.assert_allclose(counts, [3.0, 0.0, 2.0], **TOL)


@SETTINGS
@given(st.integers(1, 4), st.integers(1, 5), st.integers(1, 5), st.booleans(), st.data())
def test_excess_matches_numpy(batch, length, k, per_token, data):
  floats = st.floats(-5, 5, width=32)
  proxy = data.draw(hnp.arrays(np.float32, (batch, length), elements=floats))
  ref = data.draw(hnp.arrays(np.float32, (batch, length), elements=floats))
  ids = data.draw(hnp.arrays(np.int32, (batch, length) if per_token else (batch,),
                               elements=st.integers(0, k - 1)))
  mask = data.draw(hnp.arrays(np.bool_, (batch, length)))
  excess, counts = doremi.per_domain_excess_loss(proxy, ref, ids, mask, k)
  want, want_counts = np_segment_mean(np.maximum(proxy - ref, 0), ids, mask, k)
  np.testing.assert_allclose(excess, want, **PROP_TOL)
  np.testing.assert_array_equal(counts, want_counts)


def test_observed_excess_keeps_last_value():
  last = jnp.array([0.7, 0.2, 0.0])
  new = jnp.array([1.0, 0.0, 1.5])  # domain 1 absent: its 0 is "no data", not "no excess"
  out = doremi.observed_excess(last, new, jnp.array([3.0, 0.0, 2.0]))
  np.testing.assert_allclose(out, [1.0, 0.2, 1.5], **TOL)
  first = doremi.observed_excess(jnp.zeros(3), new, jnp.array([3.0, 0.0, 2.0]))
  np.testing.assert_allclose(first, [1.0, 0.0, 1.5], **TOL)


def test_update_hand_computed():
  w = np.full(3, 1 / 3, np.float32)
  out = doremi.update_domain_weights(w, np.array([1.0, 0.0, 1.5], np.float32), 1.0, 0.0)
  e = np.exp([1.0, 0.0, 1.5])
  np.testing.assert_allclose(out, e / e.sum(), **TOL)
  # Smoothing 0.1 with k = 3: 0.9 * a' + 0.1 / 3.
  out = doremi.update_domain_weights(w, np.array([1.0, 0.0, 1.5], np.float32), 1.0, 0.1)
  np.testing.assert_allclose(out, 0.9 * e / e.sum() + 0.1 / 3, **TOL)


def _simplex(k):
  return hnp.arrays(np.float32, (k,), elements=st.floats(0.0625, 1.0, width=32)).map(
    lambda w: (w / w.sum()).astype(np.float32))


@SETTINGS
@given(st.integers(1, 8).flatmap(lambda k: st.tuples(
  _simplex(k), hnp.arrays(np.float32, (k,), elements=st.floats(0, 10, width=32)))),
  st.floats(0, 2), st.floats(0, 1))
def test_update_matches_numpy_and_smoothing_bounds(w_excess, eta, c):
  w, excess = w_excess
  out = np.asarray(doremi.update_domain_weights(w, excess, eta, c))
  np.testing.assert_allclose(out, np_update(w, excess, eta, c), **PROP_TOL)
  assert np.all(out >= c / len(w) - 1e-6)
  np.testing.assert_allclose(out.sum(), 1.0, **PROP_TOL)


def test_update_large_excess_no_overflow():
  out = doremi.update_domain_weights(np.full(2, 0.5, np.float32), np.array([1e4, 0.0]), 1.0, 0.0)
  np.testing.assert_allclose(out, [1.0, 0.0], **TOL)


@SETTINGS
@given(st.integers(1, 6).flatmap(lambda k: st.lists(_simplex(k), min_size=1, max_size=12)))
def test_average_equals_mean_including_initial(seq):
  avg = jnp.asarray(seq[0])  # the initial weights are the first vector, step = 1
  for step, w in enumerate(seq[1:], start=1):
    avg = doremi.average_weights(avg, w, step)
  np.testing.assert_allclose(avg, np.mean(np.stack(seq), axis=0), **PROP_TOL)


def test_objectives_hand_computed():
  # domain_mean: 0.5 * 2 + 0.2 * 0 + 0.3 * 2.25 = 1.675
  np.testing.assert_allclose(doremi.weighted_proxy_loss(PROXY, IDS, MASK, WEIGHTS), 1.675, **TOL)
  # token_pooled: (0.5 * (2 + 1 + 3) + 0.3 * (0.5 + 4)) / (0.5 * 3 + 0.3 * 2) = 4.35 / 2.1
  np.testing.assert_allclose(
    doremi.weighted_proxy_loss(PROXY, IDS, MASK, WEIGHTS, "token_pooled"), 4.35 / 2.1, **TOL)


@SETTINGS
@given(st.integers(1, 4), st.integers(1, 5), st.integers(1, 5), st.data())
def test_objectives_match_numpy(batch, length, k, data):
  loss = data.draw(hnp.arrays(np.float32, (batch, length), elements=st.floats(0, 10, width=32)))
  ids = data.draw(hnp.arrays(np.int32, (batch, length), elements=st.integers(0, k - 1)))
  mask = data.draw(hnp.arrays(np.bool_, (batch, length)))
  w = data.draw(_simplex(k))
  mean, _ = np_segment_mean(loss, ids, mask, k)
  np.testing.assert_allclose(doremi.weighted_proxy_loss(loss, ids, mask, w, "domain_mean"),
                               np.sum(w * mean), **PROP_TOL)
  tw = np.where(mask, w[ids], 0.0)
  want = (tw * loss).sum() / tw.sum() if tw.sum() > 0 else 0.0
  np.testing.assert_allclose(doremi.weighted_proxy_loss(loss, ids, mask, w, "token_pooled"),
                               want, **PROP_TOL)


def test_unknown_objective_raises():
  with pytest.raises(ValueError, match="'token_mean'.*domain_mean.*token_pooled"):
    doremi.weighted_proxy_loss(PROXY, IDS, MASK, WEIGHTS, "token_mean")


def test_gradients_are_expected_token_weights():
  def grad(obj):
    return jax.grad(doremi.weighted_proxy_loss, argnums=(0, 3))(
      jnp.asarray(PROXY), IDS, MASK, jnp.asarray(WEIGHTS), obj)
  g, gw = grad("domain_mean")
  np.testing.assert_allclose(g, [[0.5 / 3] * 3, [0.3 / 2, 0.3 / 2, 0.0]], **TOL)
  np.testing.assert_array_equal(gw, np.zeros(3))  # weights are constants
  g, gw = grad("token_pooled")
  np.testing.assert_allclose(g, [[0.5 / 2.1] * 3, [0.3 / 2.1, 0.3 / 2.1, 0.0]], **TOL)
  np.testing.assert_array_equal(gw, np.zeros(3))


def test_everything_under_jit():
  last, avg = jnp.zeros(3), jnp.asarray(WEIGHTS)
  excess_fn = jax.jit(doremi.per_domain_excess_loss, static_argnames="num_domains")
  mean_fn = jax.jit(doremi.per_domain_mean_loss, static_argnames="num_domains")
  loss_fn = jax.jit(doremi.weighted_proxy_loss, static_argnames="objective")
  pairs = [
    (excess_fn(PROXY, REF, IDS, MASK, num_domains=3),
         doremi.per_domain_excess_loss(PROXY, REF, IDS, MASK, 3)),
    (mean_fn(PROXY, IDS, MASK, num_domains=3),
         doremi.per_domain_mean_loss(PROXY, IDS, MASK, 3)),
    (jax.jit(doremi.observed_excess)(last, jnp.ones(3), jnp.array([1.0, 0.0, 2.0])),
         doremi.observed_excess(last, jnp.ones(3), jnp.array([1.0, 0.0, 2.0]))),
    (jax.jit(doremi.update_domain_weights)(WEIGHTS, jnp.ones(3), 0.5, 0.1),
         doremi.update_domain_weights(WEIGHTS, jnp.ones(3), 0.5, 0.1)),
    (jax.jit(doremi.average_weights)(avg, jnp.ones(3) / 3, 4),
         doremi.average_weights(avg, jnp.ones(3) / 3, 4)),
    (jax.jit(doremi.l1_distance)(WEIGHTS, jnp.ones(3) / 3),
         doremi.l1_distance(WEIGHTS, jnp.ones(3) / 3)),
  ] + [(loss_fn(PROXY, IDS, MASK, WEIGHTS, objective=o),
          doremi.weighted_proxy_loss(PROXY, IDS, MASK, WEIGHTS, o)) for o in doremi.OBJECTIVES]
  for got, want in pairs:
    for x, y in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
      np.testing.assert_allclose(x, y, **TOL)


def test_l1_distance():
  np.testing.assert_allclose(doremi.l1_distance(WEIGHTS, np.full(3, 1 / 3)),
                               abs(0.5 - 1 / 3) + abs(0.2 - 1 / 3) + abs(0.3 - 1 / 3), **TOL)


def test_mean_clip_estimator_clips_after_the_mean():
  # Domain 0: diffs (2-1.5, 1-2.5, 3-1) = (0.5, -1.5, 2) -> mean 1/3; token clip: (0.5+0+2)/3.
  proxy = np.array([[2.0, 1.0, 3.0]], np.float32)
  ref = np.array([[1.5, 2.5, 1.0]], np.float32)
  ids, mask = np.array([0]), np.ones((1, 3), np.float32)
  mean_clip, counts = doremi.per_domain_mean_clipped_excess(proxy, ref, ids, mask, 2)
  np.testing.assert_allclose(mean_clip, [1 / 3, 0.0], **TOL)
  np.testing.assert_allclose(counts, [3, 0], **TOL)
  both, _ = doremi.excess_estimates(proxy, ref, ids, mask, 2)
  np.testing.assert_allclose(both[doremi.estimator_index("token_clip")], [2.5 / 3, 0.0], **TOL)
  np.testing.assert_allclose(both[doremi.estimator_index("mean_clip")], [1 / 3, 0.0], **TOL)
  # A proxy better than the reference on average gets 0, not a negative excess.
  neg, _ = doremi.per_domain_mean_clipped_excess(ref, proxy + 1.0, ids, mask, 2)
  np.testing.assert_allclose(neg, [0.0, 0.0], **TOL)


def test_zero_mean_noise_inflates_token_clip_but_not_mean_clip():
  rng = np.random.default_rng(0)
  noise = rng.normal(0.0, 1.0, size=(64, 128)).astype(np.float32)
  ids, mask = np.zeros(64, np.int32), np.ones((64, 128), np.float32)
  token_clip, _ = doremi.per_domain_excess_loss(noise, np.zeros_like(noise), ids, mask, 1)
  mean_clip, _ = doremi.per_domain_mean_clipped_excess(noise, np.zeros_like(noise), ids, mask, 1)
  assert abs(float(token_clip[0]) - 1 / np.sqrt(2 * np.pi)) < 0.02  # E max(X, 0) = 0.399 sigma
  assert float(mean_clip[0]) < 0.02


def test_weight_diagnostics():
  diag = doremi.weight_diagnostics(jnp.asarray([[0.5, 0.2, 0.3], [1 / 3, 1 / 3, 1 / 3]]))
  np.testing.assert_allclose(diag["weight_entropy"],
                             [-(0.5 * np.log(0.5) + 0.2 * np.log(0.2) + 0.3 * np.log(0.3)),
                              np.log(3)], **TOL)
  np.testing.assert_allclose(diag["min_weight"], [0.2, 1 / 3], **TOL)
  assert diag["min_weight_domain"].tolist()[0] == 1
  np.testing.assert_allclose(diag["l1_from_uniform"],
                             [abs(0.5 - 1 / 3) + abs(0.2 - 1 / 3) + abs(0.3 - 1 / 3), 0.0], **TOL)
