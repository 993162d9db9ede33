"""A scanned model (``TransformerConfig.scan_layers``) computes what the unrolled one does."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from doremi_jax.core import model as model_lib
from doremi_jax.core import partitioning


def _unrolled_to_scanned(params: dict, num_layers: int) -> dict:
  """The unrolled model's ``layer_i`` trees stacked into the scanned ``layers/block`` tree."""
  layers = [params[f"layer_{i}"] for i in range(num_layers)]
  rest = {k: v for k, v in params.items() if not k.startswith("layer_")}
  return {**rest, "layers": {"block": jax.tree.map(lambda *a: jnp.stack(a), *layers)}}


@pytest.mark.parametrize("remat", [False, True])
def test_scanned_losses_and_gradients_match_unrolled(remat):
  cfg = model_lib.TransformerConfig(vocab_size=64, num_layers=3, emb_dim=32, num_heads=2,
                                    head_dim=16, mlp_dim=64, tied_embeddings=False,
                                    zero_init_logits=False, remat=remat)
  scanned_cfg = dataclasses.replace(cfg, scan_layers=True)
  rng = np.random.default_rng(0)
  inputs = jnp.asarray(rng.integers(0, 64, (2, 16)), jnp.int32)
  targets = jnp.asarray(rng.integers(0, 64, (2, 16)), jnp.int32)
  unrolled, scanned = model_lib.TransformerLM(cfg), model_lib.TransformerLM(scanned_cfg)
  params = nn.unbox(unrolled.init(jax.random.key(0), inputs)["params"])
  stacked = _unrolled_to_scanned(params, cfg.num_layers)
  abstract = nn.unbox(jax.eval_shape(scanned.init, jax.random.key(0), inputs)["params"])
  assert jax.tree.structure(abstract) == jax.tree.structure(stacked)

  def loss(lm, p):
    return jnp.mean(lm.apply({"params": p}, inputs, targets, method="token_losses"))

  l1, g1 = jax.value_and_grad(lambda p: loss(unrolled, p))(params)
  l2, g2 = jax.value_and_grad(lambda p: loss(scanned, p))(stacked)
  np.testing.assert_allclose(l1, l2, rtol=1e-6)
  for a, b in zip(jax.tree.leaves(_unrolled_to_scanned(g1, cfg.num_layers)), jax.tree.leaves(g2)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_stacked_layer_axis_has_a_logical_name_and_is_not_split():
  cfg = model_lib.TransformerConfig(num_layers=2, scan_layers=True)
  boxed = jax.eval_shape(model_lib.TransformerLM(cfg).init, jax.random.key(0),
                         jnp.zeros((1, 8), jnp.int32))["params"]
  spec = nn.get_partition_spec(boxed)["layers"]["block"]["mlp"]["wi_gate"]["kernel"]
  assert tuple(spec) == ("layers", "embed", "mlp")
  mesh_axes = nn.logical_to_mesh_axes(tuple(spec), partitioning.STANDARD_LOGICAL_AXIS_RULES)
  assert mesh_axes[0] is None
