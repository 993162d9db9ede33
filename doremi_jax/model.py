"""A decoder-only Transformer LM (pre-norm, RoPE) annotated with logical axes.

Every parameter carries logical axis names (``embed``, ``mlp``, ``heads``,
``kv``, ``vocab``) and key activations are constrained with ``batch`` and
``length``; ``partitioning.py`` maps them to mesh axes with a gin rules table,
so the same model runs on one CPU or a pod slice without code changes.
"""
from __future__ import annotations

import dataclasses

import flax.linen as nn
import gin
import jax
import jax.numpy as jnp

Init = nn.initializers


@gin.configurable
@dataclasses.dataclass(frozen=True)
class TransformerConfig:
  """Model hyper-parameters (see ``gin/models/*.gin`` for named sizes)."""
  vocab_size: int = 256
  num_layers: int = 2
  emb_dim: int = 128
  num_heads: int = 4
  head_dim: int = 32
  mlp_dim: int = 512
  tied_embeddings: bool = True
  # Untied output layer starts at zero: the first predictions are uniform, so a
  # fresh proxy sits exactly at the entropy floor of pure-noise domains.
  zero_init_logits: bool = True
  dtype: str = "float32"        # activation / compute dtype
  param_dtype: str = "float32"
  rope_max_wavelength: float = 10_000.0
  remat: bool = False           # rematerialise each block (saves memory on big models)

  def num_params(self) -> int:
    per_layer = (4 * self.emb_dim * self.num_heads * self.head_dim
                 + 2 * self.emb_dim * self.mlp_dim + 2 * self.emb_dim)
    emb = self.vocab_size * self.emb_dim * (1 if self.tied_embeddings else 2)
    return self.num_layers * per_layer + emb + self.emb_dim


def _param(init, names):
  return nn.with_logical_partitioning(init, names)


def _constrain(x: jax.Array, names: tuple[str, ...]) -> jax.Array:
  return nn.with_logical_constraint(x, names)


class RMSNorm(nn.Module):
  cfg: TransformerConfig

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    scale = self.param("scale", _param(Init.ones, ("embed",)), (x.shape[-1],),
                       jnp.dtype(self.cfg.param_dtype))
    x32 = x.astype(jnp.float32)
    normed = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + 1e-6)
    return (normed * scale).astype(self.cfg.dtype)


def apply_rope(x: jax.Array, positions: jax.Array, max_wavelength: float) -> jax.Array:
  """Rotary position embedding on ``[batch, length, heads, head_dim]``."""
  half = x.shape[-1] // 2
  freq = max_wavelength ** (-jnp.arange(half, dtype=jnp.float32) / half)
  angle = positions[..., None, None].astype(jnp.float32) * freq  # [b, l, 1, half]
  sin, cos = jnp.sin(angle), jnp.cos(angle)
  x1, x2 = jnp.split(x.astype(jnp.float32), 2, axis=-1)
  out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
  return out.astype(x.dtype)


class Attention(nn.Module):
  cfg: TransformerConfig

  @nn.compact
  def __call__(self, x: jax.Array, positions: jax.Array) -> jax.Array:
    cfg = self.cfg
    dense = lambda names, feats, axis, name: nn.DenseGeneral(  # noqa: E731
        feats, axis=axis, use_bias=False, dtype=cfg.dtype,
        param_dtype=jnp.dtype(cfg.param_dtype), name=name,
        kernel_init=_param(Init.lecun_normal(), names))
    qkv_names = ("embed", "heads", "kv")
    q = dense(qkv_names, (cfg.num_heads, cfg.head_dim), -1, "query")(x)
    k = dense(qkv_names, (cfg.num_heads, cfg.head_dim), -1, "key")(x)
    v = dense(qkv_names, (cfg.num_heads, cfg.head_dim), -1, "value")(x)
    q = _constrain(apply_rope(q, positions, cfg.rope_max_wavelength),
                   ("batch", "length", "heads", "kv"))
    k = _constrain(apply_rope(k, positions, cfg.rope_max_wavelength),
                   ("batch", "length", "heads", "kv"))
    out = jax.nn.dot_product_attention(q, k, v, is_causal=True)
    out = _constrain(out, ("batch", "length", "heads", "kv"))
    return dense(("heads", "kv", "embed"), cfg.emb_dim, (-2, -1), "out")(out)


class Mlp(nn.Module):
  cfg: TransformerConfig

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    cfg = self.cfg
    dense = lambda names, feats, name: nn.Dense(  # noqa: E731
        feats, use_bias=False, dtype=cfg.dtype, param_dtype=jnp.dtype(cfg.param_dtype),
        kernel_init=_param(Init.lecun_normal(), names), name=name)
    gate = dense(("embed", "mlp"), cfg.mlp_dim, "wi_gate")(x)
    up = dense(("embed", "mlp"), cfg.mlp_dim, "wi_up")(x)
    h = _constrain(nn.silu(gate) * up, ("batch", "length", "mlp"))
    return dense(("mlp", "embed"), cfg.emb_dim, "wo")(h)


class Block(nn.Module):
  cfg: TransformerConfig

  @nn.compact
  def __call__(self, x: jax.Array, positions: jax.Array) -> jax.Array:
    x = x + Attention(self.cfg, name="attention")(RMSNorm(self.cfg, name="pre_attention_norm")(x),
                                                  positions)
    x = x + Mlp(self.cfg, name="mlp")(RMSNorm(self.cfg, name="pre_mlp_norm")(x))
    return _constrain(x, ("batch", "length", "embed"))


class TransformerLM(nn.Module):
  """Maps ``inputs [batch, length]`` token ids to ``logits [batch, length, vocab]``."""
  cfg: TransformerConfig

  @nn.compact
  def __call__(self, inputs: jax.Array) -> jax.Array:
    cfg = self.cfg
    embed = nn.Embed(cfg.vocab_size, cfg.emb_dim, dtype=cfg.dtype,
                     param_dtype=jnp.dtype(cfg.param_dtype), name="token_embedder",
                     embedding_init=_param(Init.normal(stddev=1.0), ("vocab", "embed")))
    x = _constrain(embed(inputs), ("batch", "length", "embed"))
    positions = jnp.broadcast_to(jnp.arange(inputs.shape[1]), inputs.shape)
    block_cls = nn.remat(Block) if cfg.remat else Block
    for i in range(cfg.num_layers):
      x = block_cls(cfg, name=f"layer_{i}")(x, positions)
    x = RMSNorm(cfg, name="final_norm")(x)
    if cfg.tied_embeddings:
      logits = embed.attend(x) / jnp.sqrt(cfg.emb_dim).astype(x.dtype)
    else:
      logits = nn.Dense(cfg.vocab_size, use_bias=False, dtype=cfg.dtype,
                        param_dtype=jnp.dtype(cfg.param_dtype), name="logits_dense",
                        kernel_init=_param(Init.zeros if cfg.zero_init_logits
                                           else Init.lecun_normal(), ("embed", "vocab")))(x)
    return _constrain(logits.astype(jnp.float32), ("batch", "length", "vocab"))
