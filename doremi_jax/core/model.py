"""A decoder-only Transformer LM (pre-norm, RoPE) annotated with logical axes.

Every parameter carries logical axis names (``embed``, ``mlp``, ``heads``,
``kv``, ``vocab``) and key activations are constrained with ``batch`` and
``length``; ``partitioning.py`` maps them to mesh axes with a gin rules table,
so the same model runs on one CPU or a pod slice without code changes.
"""
from __future__ import annotations

import dataclasses
import math

import flax.linen as nn
import gin
import jax
import jax.numpy as jnp

from doremi_jax import errors
from doremi_jax.core.xent import chunked_token_xent, output_logits, token_xent

Init = nn.initializers
ATTENTION_IMPLEMENTATIONS = (None, "xla", "cudnn")  # jax.nn.dot_product_attention's choices
# jax.checkpoint_policies entries a block may be rematerialised with; "none": no remat.
REMAT_POLICIES = ("none", "nothing_saveable", "dots_saveable", "dots_with_no_batch_dims_saveable",
                  "everything_saveable")
# TransformerConfig.mlp_activations entries (t5x's names): one is a plain MLP (``wi``, ``wo``),
# two a gated one whose activated branches are multiplied (("silu", "linear") is SwiGLU).
ACTIVATIONS = {"linear": lambda x: x, "relu": jax.nn.relu, "gelu": jax.nn.gelu,
               "silu": jax.nn.silu}


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
  # None is ("silu", "linear"), SwiGLU (None, so older runs' fingerprints still match);
  # ("gelu",) is GPT-2's MLP: two matrices instead of three (see ACTIVATIONS).
  mlp_activations: tuple[str, ...] | None = None
  tied_embeddings: bool = True
  # Untied output layer starts at zero: the first predictions are uniform, so a
  # fresh proxy sits exactly at the entropy floor of pure-noise domains.
  zero_init_logits: bool = True
  dtype: str = "float32"        # activation / compute dtype ("bfloat16": mixed precision)
  param_dtype: str = "float32"  # params (and so optimizer state) stay float32 under bf16
  rope_max_wavelength: float = 10_000.0
  # What a block keeps for its backward pass: a REMAT_POLICIES name ("none": everything,
  # no recomputation). None (the default, so older runs' fingerprints still match) follows
  # ``remat``: True means "nothing_saveable" (older gin files), False "none".
  remat_policy: str | None = None
  remat: bool = False
  attention_implementation: str | None = None  # None lets jax choose; "xla" or "cudnn"
  # One block's code run num_layers times (``nn.scan``, params stacked on a leading "layers"
  # axis) instead of num_layers copies: compile time and compiler memory stop growing with
  # depth, and each layer's recomputation stays inside its loop iteration, so remat holds
  # on every backend (XLA:CPU hoists unrolled recomputations and keeps them all alive).
  scan_layers: bool = False
  # Forward-only token losses (reference model, evaluation) build the logits in sequence
  # chunks of at most this many elements (0: never chunk); see ``chunked_token_xent``.
  logits_chunk_elements: int = 8 * 1024 * 1024
  # The trained model's loss too (forward and backward, chunk by chunk): a pod-sized batch
  # never holds all its float32 logits and their gradient; slower on CPU. None: off (so
  # older runs' fingerprints still match).
  chunk_train_logits: bool | None = None

  def __post_init__(self):
    """Bad names and sizes are one line (``errors.DoremiError``) before anything is built."""
    for name in ("vocab_size", "num_layers", "emb_dim", "num_heads", "head_dim", "mlp_dim"):
      value = getattr(self, name)
      if not isinstance(value, int) or isinstance(value, bool) or not 0 < value < 2**31:
        raise errors.DoremiError(f"TransformerConfig.{name}={value!r} must be a positive "
                                 "integer below 2**31 (token ids and sizes are int32)")
    if self.attention_implementation not in ATTENTION_IMPLEMENTATIONS:
      raise errors.DoremiError(
          f"TransformerConfig.attention_implementation={self.attention_implementation!r} is "
          f"not one of {ATTENTION_IMPLEMENTATIONS}")
    if self.remat_policy is not None and self.remat_policy not in REMAT_POLICIES:
      raise errors.DoremiError(f"TransformerConfig.remat_policy={self.remat_policy!r} is not "
                               f"one of {REMAT_POLICIES}")
    if self.mlp_activations is not None:
      activations = tuple(self.mlp_activations)  # gin may give a list; the config is hashed
      object.__setattr__(self, "mlp_activations", activations)
      if len(activations) not in (1, 2) or any(a not in ACTIVATIONS for a in activations):
        raise errors.DoremiError(
            f"TransformerConfig.mlp_activations={activations!r} must be one or two of "
            f"{tuple(ACTIVATIONS)}, e.g. ('gelu',) or ('silu', 'linear')")
    for name in ("dtype", "param_dtype"):
      if getattr(self, name) not in ("float32", "bfloat16", "float16"):
        raise errors.DoremiError(f"TransformerConfig.{name}={getattr(self, name)!r} is not "
                                 "one of ('float32', 'bfloat16', 'float16')")

  def block_remat_policy(self) -> str:
    """The effective policy: ``remat_policy``, else "nothing_saveable" if ``remat``."""
    if self.remat_policy is not None:
      return self.remat_policy
    return "nothing_saveable" if self.remat else "none"

  def mlp_activation_names(self) -> tuple[str, ...]:
    """The effective ``mlp_activations``."""
    return self.mlp_activations or ("silu", "linear")

  def num_params(self) -> int:
    mlp_matrices = len(self.mlp_activation_names()) + 1
    per_layer = (4 * self.emb_dim * self.num_heads * self.head_dim
                 + mlp_matrices * self.emb_dim * self.mlp_dim + 2 * self.emb_dim)
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


class _DenseGeneral(nn.Module):
  """Bias-free ``nn.DenseGeneral`` (same parameter path, initial values and math) whose
  multi-axis kernel keeps its logical names under ``jax.set_mesh``.

  ``nn.DenseGeneral`` initialises a flat 2-D kernel inside the logical-partitioning box
  and reshapes it afterwards, so with a (non-empty) abstract mesh unboxing applies the
  kernel's 3 logical names to the 2-D value and fails. Here the reshape happens inside
  the initialiser.
  """
  cfg: TransformerConfig
  features: tuple[int, ...]
  axis: tuple[int, ...]
  names: tuple[str, ...]

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    axis = tuple(a % x.ndim for a in self.axis)
    in_shape = tuple(x.shape[a] for a in axis)

    def init(key, shape, dtype=jnp.float32):
      flat = (math.prod(in_shape), math.prod(self.features))
      return Init.lecun_normal()(key, flat, dtype).reshape(shape)

    kernel = self.param("kernel", _param(init, self.names), in_shape + self.features,
                        jnp.dtype(self.cfg.param_dtype))
    x, kernel = x.astype(self.cfg.dtype), kernel.astype(self.cfg.dtype)
    return jax.lax.dot_general(x, kernel, ((axis, tuple(range(len(axis)))), ((), ())))


class Attention(nn.Module):
  cfg: TransformerConfig

  @nn.compact
  def __call__(self, x: jax.Array, positions: jax.Array) -> jax.Array:
    cfg = self.cfg
    heads = (cfg.num_heads, cfg.head_dim)
    qkv_names = ("embed", "heads", "kv")
    q = _DenseGeneral(cfg, heads, (-1,), qkv_names, name="query")(x)
    k = _DenseGeneral(cfg, heads, (-1,), qkv_names, name="key")(x)
    v = _DenseGeneral(cfg, heads, (-1,), qkv_names, name="value")(x)
    q = _constrain(apply_rope(q, positions, cfg.rope_max_wavelength),
                   ("batch", "length", "heads", "kv"))
    k = _constrain(apply_rope(k, positions, cfg.rope_max_wavelength),
                   ("batch", "length", "heads", "kv"))
    out = jax.nn.dot_product_attention(q, k, v, is_causal=True,
                                       implementation=cfg.attention_implementation)
    out = _constrain(out, ("batch", "length", "heads", "kv"))
    return _DenseGeneral(cfg, (cfg.emb_dim,), (-2, -1), ("heads", "kv", "embed"), name="out")(out)


class Mlp(nn.Module):
  cfg: TransformerConfig

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    cfg = self.cfg
    dense = lambda names, feats, name: nn.Dense(  # noqa: E731
        feats, use_bias=False, dtype=cfg.dtype, param_dtype=jnp.dtype(cfg.param_dtype),
        kernel_init=_param(Init.lecun_normal(), names), name=name)
    # 2-D [batch*length, features] activations: on XLA:CPU the weight-gradient dots of
    # 3-D activations get transposing copies in front of them (~25% of a small model's
    # step); batch*length is split like batch, so the logical names stay valid.
    shape = x.shape
    x = _constrain(x.reshape(-1, shape[-1]), ("batch", "embed"))
    activations = cfg.mlp_activation_names()
    names = ("wi_gate", "wi_up") if len(activations) == 2 else ("wi",)
    branches = [ACTIVATIONS[a](dense(("embed", "mlp"), cfg.mlp_dim, name)(x))
                for a, name in zip(activations, names)]
    h = branches[0] if len(branches) == 1 else branches[0] * branches[1]
    h = _constrain(h, ("batch", "mlp"))
    return dense(("mlp", "embed"), cfg.emb_dim, "wo")(h).reshape(shape)


class Block(nn.Module):
  cfg: TransformerConfig

  @nn.compact
  def __call__(self, x: jax.Array, positions: jax.Array) -> jax.Array:
    x = x + Attention(self.cfg, name="attention")(RMSNorm(self.cfg, name="pre_attention_norm")(x),
                                                  positions)
    x = x + Mlp(self.cfg, name="mlp")(RMSNorm(self.cfg, name="pre_mlp_norm")(x))
    return _constrain(x, ("batch", "length", "embed"))


def _block_class(cfg: TransformerConfig, scanned: bool):
  """``Block``, rematerialised with ``cfg``'s policy. Inside a scan no CSE can merge the
  recomputation with the forward pass, so jax's CSE barrier is left out there (cheaper)."""
  policy = cfg.block_remat_policy()
  if policy == "none":
    return Block
  return nn.remat(Block, policy=getattr(jax.checkpoint_policies, policy), prevent_cse=not scanned)


class _ScanStep(nn.Module):
  """One block as an ``nn.scan`` body: ``(x, positions) -> (x, None)``."""
  cfg: TransformerConfig

  @nn.compact
  def __call__(self, x: jax.Array, positions: jax.Array) -> tuple[jax.Array, None]:
    return _block_class(self.cfg, scanned=True)(self.cfg, name="block")(x, positions), None


class _OutputKernel(nn.Module):
  """The untied output layer's ``[embed, vocab]`` kernel (same parameter path as ``nn.Dense``)."""
  cfg: TransformerConfig

  @nn.compact
  def __call__(self) -> jax.Array:
    cfg = self.cfg
    init = Init.zeros if cfg.zero_init_logits else Init.lecun_normal()
    return self.param("kernel", _param(init, ("embed", "vocab")), (cfg.emb_dim, cfg.vocab_size),
                      jnp.dtype(cfg.param_dtype))


class TransformerLM(nn.Module):
  """Maps ``inputs [batch, length]`` token ids to ``logits [batch, length, vocab]``.

  Other entry points (``model.apply(variables, ..., method=...)``): ``hidden`` (final
  normalised hidden states), ``output_weights`` and ``token_losses`` (per-token
  cross-entropy, optionally chunked).
  """
  cfg: TransformerConfig

  def setup(self):
    cfg = self.cfg
    self.token_embedder = nn.Embed(
        cfg.vocab_size, cfg.emb_dim, dtype=cfg.dtype, param_dtype=jnp.dtype(cfg.param_dtype),
        embedding_init=_param(Init.normal(stddev=1.0), ("vocab", "embed")))
    if cfg.scan_layers:
      self.layers = nn.scan(_ScanStep, variable_axes={"params": 0}, split_rngs={"params": True},
                            in_axes=(nn.broadcast,), length=cfg.num_layers,
                            metadata_params={nn.PARTITION_NAME: "layers"})(cfg)
    else:
      block_cls = _block_class(cfg, scanned=False)
      for i in range(cfg.num_layers):
        setattr(self, f"layer_{i}", block_cls(cfg))
    self.final_norm = RMSNorm(cfg)
    if not cfg.tied_embeddings:
      self.logits_dense = _OutputKernel(cfg)

  def hidden(self, inputs: jax.Array) -> jax.Array:
    """Final normalised hidden states ``[batch, length, embed]``."""
    # The lookup reads an embedding gathered over its "embed" axis (as FSDP does before any
    # use of a weight): a gather from an embed-sharded table cannot be resharded to
    # batch-sharded activations over the same mesh axis without replicating them.
    table = _constrain(self.token_embedder.embedding, ("vocab", None)).astype(self.cfg.dtype)
    x = _constrain(jnp.take(table, inputs, axis=0), ("batch", "length", "embed"))
    positions = jnp.broadcast_to(jnp.arange(inputs.shape[1]), inputs.shape)
    if self.cfg.scan_layers:
      x, _ = self.layers(x, positions)
    else:
      for i in range(self.cfg.num_layers):
        x = getattr(self, f"layer_{i}")(x, positions)
    return self.final_norm(x)

  def output_weights(self) -> jax.Array:
    """Tied: the ``[vocab, embed]`` embedding; untied: the ``[embed, vocab]`` kernel."""
    return self.token_embedder.embedding if self.cfg.tied_embeddings else self.logits_dense()

  def __call__(self, inputs: jax.Array) -> jax.Array:
    logits = output_logits(self.cfg, self.hidden(inputs), self.output_weights())
    return _constrain(logits, ("batch", "length", "vocab"))

  def token_losses(self, inputs: jax.Array, targets: jax.Array,
                   chunked: bool = False) -> jax.Array:
    """Per-token cross-entropy ``[batch, length]``; ``chunked`` (or ``chunk_train_logits``)
    uses ``chunked_token_xent``."""
    hidden, weights = self.hidden(inputs), self.output_weights()
    if chunked or self.cfg.chunk_train_logits:
      return chunked_token_xent(self.cfg, hidden, weights, targets)
    return token_xent(self.cfg, hidden, weights, targets)
