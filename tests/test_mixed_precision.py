"""Mixed precision and model switches: the model gin files (bf16 compute, float32 params),
attention implementation and remat policy, and DoReMi's float32 math on bf16 losses."""
import gin
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from doremi_jax import errors
from doremi_jax.core import (
  doremi,
  partitioning,  # noqa: F401  (8b.gin binds make_mesh)
  steps,
)
from doremi_jax.core import model as model_lib
from doremi_jax.run import config

MODELS = ("tiny", "120m", "280m", "1b", "8b")


@pytest.mark.parametrize("name", MODELS)
def test_model_gin_files_load(name):
  gin.clear_config()
  try:
    config.configure([f"models/{name}.gin"], ["VOCAB_SIZE = 512"])
    cfg = model_lib.TransformerConfig()
  finally:
    gin.clear_config()
  assert cfg.param_dtype == "float32"  # params, hence optimizer state, stay float32
  assert cfg.dtype == ("float32" if name == "tiny" else "bfloat16")
  assert cfg.block_remat_policy() == ("none" if name == "tiny" else cfg.remat_policy) != ""


@pytest.mark.parametrize("field,value", [("attention_implementation", "flash"),
                                         ("remat_policy", "dots"), ("dtype", "fp8")])
def test_bad_switches_are_one_line_errors(field, value):
  with pytest.raises(errors.DoremiError, match=f"TransformerConfig.{field}="):
    model_lib.TransformerConfig(**{field: value})


def test_remat_true_still_means_nothing_saveable():
  assert model_lib.TransformerConfig(remat=True).block_remat_policy() == "nothing_saveable"
  assert model_lib.TransformerConfig().block_remat_policy() == "none"
  assert model_lib.TransformerConfig(remat=True, remat_policy="dots_saveable"
                                     ).block_remat_policy() == "dots_saveable"


def test_remat_policy_xla_attention_and_bf16_compute():
  """Rematerialisation recomputes, it does not change the math; nor does naming "xla".
  bfloat16 compute keeps float32 params and gradients (so float32 optimizer state)."""
  small = dict(vocab_size=64, num_layers=1, emb_dim=32, num_heads=2, head_dim=16, mlp_dim=64)
  tokens = jnp.asarray(np.random.default_rng(0).integers(0, 64, (2, 16)), jnp.int32)
  results = []
  for extra in ({}, {"remat_policy": "dots_with_no_batch_dims_saveable",
                     "attention_implementation": "xla"}, {"dtype": "bfloat16"}):
    lm = model_lib.TransformerLM(model_lib.TransformerConfig(**small, **extra))
    params = jax.jit(lm.init)(jax.random.key(0), tokens)["params"]
    loss = jax.jit(jax.value_and_grad(lambda p, lm=lm: jnp.mean(lm.apply(
        {"params": p}, tokens, tokens, method="token_losses"))))
    results.append((params, *loss(params)))
  (_, l0, g0), (_, l1, g1), (p2, l2, g2) = results
  np.testing.assert_allclose(l0, l1, rtol=1e-6)
  for a, b in zip(jax.tree.leaves(g0), jax.tree.leaves(g1)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  assert {str(x.dtype) for x in jax.tree.leaves((p2, l2, g2))} == {"float32"}
  np.testing.assert_allclose(l2, l0, rtol=1e-2)


def test_bf16_token_losses_keep_the_weight_update():
  """The losses DoReMi reads may be bfloat16 (a bf16 model); its reductions, excess, update
  and average are float32, and bf16 rounding (spacing 2**-5 for losses in [4, 8]) moves
  the excess by < 2e-3 and an eta = 1 update by < 5e-4 (measured: 4e-4 and 9e-5)."""
  rng = np.random.default_rng(0)
  k, ids = 4, np.arange(16) % 4
  mask = np.ones((16, 128), np.float32)
  ref = rng.uniform(2, 8, (16, 128)).astype(np.float32)
  proxy = (ref + rng.normal(0.05, 0.5, ref.shape)).astype(np.float32)
  start = np.full(k, 1 / k, np.float32)
  out = {}
  for dtype in (jnp.float32, jnp.bfloat16):
    p, r = jnp.asarray(proxy, dtype), jnp.asarray(ref, dtype)
    excess, counts = doremi.excess_estimates(p, r, ids, mask, k)
    weights = doremi.update_domain_weights(start, excess[0], 1.0, 1e-3)
    average = doremi.average_weights(start, weights, 1)
    mean, _ = doremi.per_domain_mean_loss(p, ids, mask, k)
    loss = doremi.weighted_proxy_loss(p, ids, mask, weights)
    assert {str(x.dtype) for x in (excess, counts, weights, average, mean, loss)} == {"float32"}
    out[dtype] = excess, weights
  np.testing.assert_array_less(np.abs(out[jnp.float32][0] - out[jnp.bfloat16][0]), 2e-3)
  np.testing.assert_array_less(np.abs(out[jnp.float32][1] - out[jnp.bfloat16][1]), 5e-4)


def test_bf16_reference_forward_is_close_to_float32():
  """``DoremiConfig.reference_dtype = "bfloat16"`` casts only the reference's forward."""
  with pytest.raises(errors.DoremiError, match="reference_dtype"):
    steps.DoremiConfig(reference_dtype="fp8")
  small = dict(vocab_size=64, num_layers=1, emb_dim=32, num_heads=2, head_dim=16, mlp_dim=64)
  lm = model_lib.TransformerLM(model_lib.TransformerConfig(**small))
  tokens = jnp.asarray(np.random.default_rng(1).integers(0, 64, (2, 16)), jnp.int32)
  params = jax.jit(lm.init)(jax.random.key(0), tokens)["params"]
  batch = {"inputs": tokens, "targets": tokens}
  f32, bf16 = (jax.jit(steps._reference_losses(lm, d))(params, batch)  # pylint: disable=protected-access
               for d in (None, "bfloat16"))
  assert f32.dtype == bf16.dtype == jnp.float32  # a float32 softmax either way
  np.testing.assert_allclose(bf16, f32, rtol=2e-2)
  assert np.max(np.abs(np.asarray(bf16) - np.asarray(f32))) > 0  # it did run in bf16
