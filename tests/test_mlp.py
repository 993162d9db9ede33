"""``TransformerConfig.mlp_activations``: the gated (SwiGLU, default) and plain (GPT-2) MLPs."""
import gin
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from doremi_jax import errors
from doremi_jax.core import model as model_lib


def _init(cfg):
  lm = model_lib.TransformerLM(cfg)
  return lm, nn.unbox(lm.init(jax.random.key(0), jnp.zeros((2, 8), jnp.int32))["params"])


@pytest.mark.parametrize("activations", [None, ("gelu",), ("relu", "linear")])
@pytest.mark.parametrize("tied", [True, False])
def test_num_params_counts_what_init_builds(activations, tied):
  cfg = model_lib.TransformerConfig(vocab_size=96, emb_dim=32, num_heads=2, head_dim=16,
                                    mlp_dim=48, mlp_activations=activations,
                                    tied_embeddings=tied)
  _, params = _init(cfg)
  assert cfg.num_params() == sum(x.size for x in jax.tree.leaves(params))


def test_plain_mlp_is_wo_of_gelu_of_wi():
  cfg = model_lib.TransformerConfig(emb_dim=16, mlp_dim=24, mlp_activations=("gelu",))
  mlp = model_lib.Mlp(cfg)
  x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 5, 16)), jnp.float32)
  params = nn.unbox(mlp.init(jax.random.key(1), x)["params"])
  assert set(params) == {"wi", "wo"}
  expected = jax.nn.gelu(x @ params["wi"]["kernel"]) @ params["wo"]["kernel"]
  np.testing.assert_allclose(mlp.apply({"params": params}, x), expected, rtol=1e-5, atol=1e-6)


def test_default_is_swiglu_with_the_old_parameter_names():
  cfg = model_lib.TransformerConfig(emb_dim=16, mlp_dim=24)
  explicit = model_lib.TransformerConfig(emb_dim=16, mlp_dim=24,
                                         mlp_activations=("silu", "linear"))
  x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 5, 16)), jnp.float32)
  params = nn.unbox(model_lib.Mlp(cfg).init(jax.random.key(1), x)["params"])
  assert set(params) == {"wi_gate", "wi_up", "wo"}
  gate, up = x @ params["wi_gate"]["kernel"], x @ params["wi_up"]["kernel"]
  expected = (jax.nn.silu(gate) * up) @ params["wo"]["kernel"]
  for c in (cfg, explicit):
    np.testing.assert_allclose(model_lib.Mlp(c).apply({"params": params}, x), expected,
                               rtol=1e-5, atol=1e-6)


def test_gin_list_becomes_a_hashable_tuple():
  with gin.unlock_config():
    gin.parse_config("TransformerConfig.mlp_activations = ['gelu']")
  try:
    cfg = model_lib.TransformerConfig()
  finally:
    gin.clear_config()
  assert cfg.mlp_activations == ("gelu",) and hash(cfg)


@pytest.mark.parametrize("activations", [("tanh",), ("gelu", "linear", "silu"), ()])
def test_bad_activations_are_one_line_errors(activations):
  with pytest.raises(errors.DoremiError, match="must be one or two of"):
    model_lib.TransformerConfig(mlp_activations=activations)
