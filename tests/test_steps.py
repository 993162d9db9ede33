"""The jitted plain/proxy steps on one CPU device: compile-once, donation, frozen reference,
DoReMi state invariants, and the proxy step's metrics/update against a direct recomputation."""
import flax.linen as nn
import jax
import numpy as np
import optax
import pytest
import step_fixtures as fx

from doremi_jax import errors
from doremi_jax.core import doremi, partitioning, steps

TOL = dict(rtol=1e-5, atol=1e-6)
PARAM_TOL = dict(rtol=1e-4, atol=1e-5)


@pytest.fixture(scope="module")
def mesh():
  return fx.single_device_mesh()


@pytest.fixture(scope="module")
def proxy(mesh):
  return fx.Rig(mesh, "proxy")


@pytest.fixture(scope="module")
def reference(proxy):
  return proxy.reference_params(seed=1)


def _copy(tree):
  """A host copy (the step donates its state, so device buffers die)."""
  return jax.tree.map(np.array, jax.device_get(tree))


def _token_losses(rig, params, batch):
  with rig.mesh, nn.logical_axis_rules(partitioning.logical_axis_rules()):
    return steps.token_losses(rig.model, params, rig.put(batch))


def test_proxy_step_compiles_once(proxy, reference):
  state = proxy.init()
  for seed in range(4):  # new batches, incl. ones missing a domain
    state, metrics = proxy.run(state, fx.make_batch(100 + seed, absent=seed % 4 if seed else None),
                               reference)
    assert np.isfinite(float(metrics["loss"]))
  assert proxy.step.jitted._cache_size() == 1  # pylint: disable=protected-access
  assert int(state.step) == 4


def test_plain_step_compiles_once_and_reports_masked_mean(mesh):
  rig = fx.Rig(mesh, "plain")
  state = rig.init()
  batch = fx.BATCHES[0]
  params0 = _copy(state.params)
  state, metrics = rig.run(state, batch)
  tl = np.asarray(_token_losses(rig, params0, batch))
  mask = batch["loss_mask"]
  np.testing.assert_allclose(metrics["loss"], (tl * mask).sum() / mask.sum(), **TOL)
  for seed in range(3):
    state, _ = rig.run(state, fx.make_batch(200 + seed))
  assert rig.step.jitted._cache_size() == 1  # pylint: disable=protected-access
  assert state.domains is None


def test_state_is_donated_and_reference_is_not(proxy, reference):
  state = proxy.init()
  ref_before = _copy(reference)
  new_state, _ = proxy.run(state, fx.BATCHES[0], reference)
  old_leaves = jax.tree.leaves(state)
  assert old_leaves and all(x.is_deleted() for x in old_leaves)
  assert not any(x.is_deleted() for x in jax.tree.leaves(new_state))
  ref_leaves = jax.tree.leaves(reference)
  assert not any(x.is_deleted() for x in ref_leaves)
  for before, after in zip(jax.tree.leaves(ref_before), ref_leaves):
    np.testing.assert_array_equal(np.asarray(after), before)
  # The proxy params did move away from their initial values, the reference did not.
  state2, _ = proxy.run(new_state, fx.BATCHES[2], reference)
  assert any(not np.allclose(a, b) for a, b in zip(jax.tree.leaves(_copy(state2.params)),
                                                  jax.tree.leaves(ref_before)))


@pytest.mark.parametrize("step_size", [1.0, 50.0])
def test_weights_simplex_floor_and_average(mesh, proxy, reference, step_size):
  rig = (proxy if step_size == 1.0
         else fx.Rig(mesh, "proxy", steps.DoremiConfig(step_size=step_size)))
  state = rig.init()
  trajectory = [np.asarray(state.domains.weights)]
  floor = rig.doremi_config.smoothing / fx.K
  for i in range(5):
    state, metrics = rig.run(state, fx.make_batch(300 + i, absent=1 if i == 2 else None), reference)
    w = np.asarray(state.domains.weights)
    np.testing.assert_allclose(metrics["domain_weights"], w, **TOL)
    np.testing.assert_allclose(w.sum(), 1.0, rtol=0, atol=1e-6)
    assert (w >= floor * (1 - 1e-4)).all(), (w, floor)
    trajectory.append(w)
  average = np.mean(trajectory, axis=0)  # the initial weights count as the first vector
  np.testing.assert_allclose(state.domains.average, average, **TOL)
  np.testing.assert_allclose(metrics["average_domain_weights"], average, **TOL)
  if step_size == 50.0:  # large steps really do hit the floor
    assert np.min(trajectory[-1]) < 2 * floor


def test_absent_domain_keeps_last_excess(proxy, reference):
  state = proxy.init()
  state, m0 = proxy.run(state, fx.BATCHES[0], reference)
  excess_after_first = np.asarray(state.domains.last_excess)
  assert excess_after_first[3] > 0 and m0["domain_tokens"][3] > 0
  state, m1 = proxy.run(state, fx.BATCHES[1], reference)  # domain 3 absent
  assert float(m1["domain_tokens"][3]) == 0.0 and float(m1["domain_excess"][3]) == 0.0
  last = np.asarray(state.domains.last_excess)
  assert last[3] == excess_after_first[3]
  np.testing.assert_allclose(last[:3], m1["domain_excess"][:3], **TOL)


def test_proxy_step_matches_direct_computation(proxy, reference):
  """Metrics, weights and the parameter update equal a step written out by hand."""
  state = proxy.init()
  state, _ = proxy.run(state, fx.BATCHES[0], reference)  # lr is 0 at step 0 (warm-up)
  batch = fx.BATCHES[1]  # domain 3 absent: exercises the last-excess path
  params0, opt0, domains0 = _copy(state.params), _copy(state.opt_state), _copy(state.domains)
  new_state, metrics = proxy.run(state, batch, reference)

  ids, mask = batch["domain_ids"], batch["loss_mask"]
  proxy_tl = _token_losses(proxy, params0, batch)
  ref_tl = _token_losses(proxy, reference, batch)
  excess, counts = doremi.per_domain_excess_loss(proxy_tl, ref_tl, ids, mask, fx.K)
  np.testing.assert_allclose(metrics["domain_excess"], excess, **TOL)
  np.testing.assert_allclose(metrics["domain_tokens"], counts, **TOL)
  np.testing.assert_allclose(
      counts, [mask[ids == d].sum() for d in range(fx.K)], **TOL)
  np.testing.assert_allclose(
      metrics["domain_loss"], doremi.per_domain_mean_loss(proxy_tl, ids, mask, fx.K)[0], **TOL)
  np.testing.assert_allclose(
      metrics["domain_reference_loss"],
      doremi.per_domain_mean_loss(ref_tl, ids, mask, fx.K)[0], **TOL)
  np.testing.assert_allclose(metrics["unweighted_loss"],
                             (np.asarray(proxy_tl) * mask).sum() / mask.sum(), **TOL)

  cfg = proxy.doremi_config
  used = doremi.observed_excess(domains0.last_excess, excess, counts)
  weights = doremi.update_domain_weights(domains0.weights, used, cfg.step_size, cfg.smoothing)
  np.testing.assert_allclose(metrics["domain_weights"], weights, **TOL)
  np.testing.assert_allclose(new_state.domains.last_excess, used, **TOL)
  np.testing.assert_allclose(new_state.domains.average,
                             doremi.average_weights(domains0.average, weights, 2), **TOL)
  np.testing.assert_allclose(
      metrics["loss"], doremi.weighted_proxy_loss(proxy_tl, ids, mask, weights), **TOL)

  # One forward + VJP in the step == grad of the weighted loss written directly.
  def objective(p):
    return doremi.weighted_proxy_loss(_token_losses(proxy, p, batch), ids, mask, weights)

  grads = jax.grad(objective)(params0)
  np.testing.assert_allclose(metrics["grad_norm"], optax.global_norm(grads), rtol=1e-4)
  updates, _ = proxy.optimizer.update(grads, opt0, params0)
  expected = optax.apply_updates(params0, updates)
  for (path, want), got in zip(jax.tree_util.tree_flatten_with_path(expected)[0],
                               jax.tree.leaves(new_state.params)):
    np.testing.assert_allclose(got, want, err_msg=jax.tree_util.keystr(path), **PARAM_TOL)


def test_token_pooled_objective(mesh, proxy, reference):
  pooled = fx.Rig(mesh, "proxy", steps.DoremiConfig(objective="token_pooled"))
  batch = fx.BATCHES[0]
  state = pooled.init()
  params0 = _copy(state.params)
  state, metrics = pooled.run(state, batch, reference)
  tl = _token_losses(pooled, params0, batch)
  w = metrics["domain_weights"]
  ids, mask = batch["domain_ids"], batch["loss_mask"]
  want = doremi.weighted_proxy_loss(tl, ids, mask, w, "token_pooled")
  np.testing.assert_allclose(metrics["loss"], want, **TOL)
  # Padded examples make domains' token counts differ, so the two objectives differ here.
  assert abs(float(want) - float(doremi.weighted_proxy_loss(tl, ids, mask, w))) > 1e-4
  np.testing.assert_allclose(np.sum(state.domains.weights), 1.0, atol=1e-6)
  for i in range(2):
    state, metrics = pooled.run(state, fx.BATCHES[1 + i], reference)
    assert np.isfinite(float(metrics["loss"]))
  assert pooled.step.jitted._cache_size() == 1  # pylint: disable=protected-access


def test_bad_step_kind_and_objective(mesh, proxy):
  with pytest.raises(errors.DoremiError, match="objective"):
    steps.DoremiConfig(objective="nope")
  with pytest.raises(ValueError, match="step kind"):
    steps.make_train_step("dpo", proxy.model, proxy.optimizer, mesh, proxy.shardings, fx.K)


def test_chunked_reference_losses_match_unchunked():
  """The proxy's reference pass and eval use chunked logits; they must equal the plain path."""
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top

  from doremi_jax.core import model as model_lib  # pylint: disable=g-import-not-at-top
  from doremi_jax.core import steps as steps_lib
  for tied in (True, False):
    cfg = model_lib.TransformerConfig(vocab_size=256, tied_embeddings=tied, zero_init_logits=False,
                                      logits_chunk_elements=16 * 8 * 256)
    lm = model_lib.TransformerLM(cfg)
    rng = np.random.default_rng(0)
    targets = jnp.asarray(rng.integers(2, 256, (16, 64)), jnp.int32)
    batch = {"targets": targets, "inputs": jnp.pad(targets[:, :-1], ((0, 0), (1, 0)))}
    params = nn.meta.unbox(lm.init(jax.random.key(0), batch["inputs"]))["params"]
    full = steps_lib.token_losses(lm, params, batch)
    chunked = steps_lib.token_losses(lm, params, batch, chunked=True)
    np.testing.assert_allclose(np.asarray(chunked), np.asarray(full), rtol=1e-5, atol=1e-5)


def test_chunked_training_loss_same_gradients_fewer_temporaries():
  """``chunk_train_logits``: the trained loss's gradients are unchanged, and its compiled
  backward no longer holds the whole [tokens, vocab] logits and their gradient."""
  import dataclasses  # pylint: disable=g-import-not-at-top

  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

  from doremi_jax.core import model as model_lib  # pylint: disable=g-import-not-at-top
  vocab, batch_size, length = 4096, 16, 64
  cfg = model_lib.TransformerConfig(vocab_size=vocab, tied_embeddings=False,
                                    zero_init_logits=False,
                                    logits_chunk_elements=batch_size * 8 * vocab)
  rng = np.random.default_rng(0)
  targets = jnp.asarray(rng.integers(2, vocab, (batch_size, length)), jnp.int32)
  batch = {"targets": targets, "inputs": jnp.pad(targets[:, :-1], ((0, 0), (1, 0)))}
  params = nn.meta.unbox(model_lib.TransformerLM(cfg).init(jax.random.key(0),
                                                           batch["inputs"]))["params"]
  results = {}
  for chunk in (None, True):
    lm = model_lib.TransformerLM(dataclasses.replace(cfg, chunk_train_logits=chunk))
    grad_fn = jax.jit(jax.value_and_grad(lambda p, lm=lm: steps.token_losses(lm, p, batch).mean()))
    temps = grad_fn.lower(params).compile().memory_analysis().temp_size_in_bytes
    results[chunk] = (grad_fn(params), temps)
  (loss, grads), full_temps = results[None]
  (chunked_loss, chunked_grads), chunked_temps = results[True]
  np.testing.assert_allclose(chunked_loss, loss, rtol=1e-6)
  for a, b in zip(jax.tree.leaves(chunked_grads), jax.tree.leaves(grads)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
  logits_bytes = batch_size * length * vocab * 4
  # what is gone: the logits and most of their gradient (the body's activations stay)
  assert full_temps - chunked_temps > 1.5 * logits_bytes, (full_temps, chunked_temps)


@pytest.mark.parametrize("mesh_shape,chunks", [((1, 1, 1), 64), ((2, 4, 1), 8), ((1, 1, 4), 16)])
def test_logit_chunks_are_sized_by_what_one_device_holds(mesh_shape, chunks):
  """On a mesh each device holds its share of the batch (and of the vocabulary under tensor
  parallelism), so chunks are sized by that share, not by the global batch."""
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

  from doremi_jax.core import model as model_lib  # pylint: disable=g-import-not-at-top
  from doremi_jax.core import xent  # pylint: disable=g-import-not-at-top
  cfg = model_lib.TransformerConfig(vocab_size=256, emb_dim=16, logits_chunk_elements=4 * 8 * 256)
  hidden, weights = jnp.zeros((32, 64, 16)), jnp.zeros((256, 16))
  targets = jnp.zeros((32, 64), jnp.int32)
  mesh = jax.sharding.AbstractMesh(mesh_shape, partitioning.MESH_AXES)
  rules = partitioning.logical_axis_rules()
  with jax.sharding.use_abstract_mesh(mesh), nn.logical_axis_rules(rules):
    jaxpr = jax.make_jaxpr(lambda h: xent.chunked_token_xent(cfg, h, weights, targets))(hidden)
  assert [e.params["length"] for e in jaxpr.eqns if e.primitive.name == "scan"] == [chunks]
