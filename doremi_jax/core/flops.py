"""Estimated FLOPs of the steps, for cost fractions and MFU.

Per token, a forward pass costs 2 FLOPs per matrix parameter (every weight matrix and the
output layer; the input embedding is a lookup) plus the attention products (QK^T and AV,
``4 x length x heads x head_dim`` per layer, computed in full although causal); a
training step is forward + backward = 3x forward (Kaplan et al. 2020's ``6N``).
"""
from __future__ import annotations

from doremi_jax.core.model import TransformerConfig


def matrix_params(cfg: TransformerConfig) -> int:
  """The weights one token's forward multiplies by: every block matrix and the output
  layer (counted once, tied or not); the input embedding is a lookup, norms are ignored."""
  mlp_matrices = len(cfg.mlp_activation_names()) + 1
  per_layer = (4 * cfg.emb_dim * cfg.num_heads * cfg.head_dim
               + mlp_matrices * cfg.emb_dim * cfg.mlp_dim)
  return cfg.num_layers * per_layer + cfg.vocab_size * cfg.emb_dim


def attention_forward_flops(cfg: TransformerConfig, length: int) -> int:
  """QK^T and AV over all ``length`` positions, every layer (causal masking not
  subtracted: XLA computes the full products)."""
  return 4 * cfg.num_layers * cfg.num_heads * cfg.head_dim * length


def non_embedding_params(cfg: TransformerConfig) -> int:
  """The blocks' parameters: what 'a model N x larger' compares (Kaplan et al.)."""
  tables = cfg.vocab_size * cfg.emb_dim * (1 if cfg.tied_embeddings else 2)
  return cfg.num_params() - tables - cfg.emb_dim


def forward_flops_per_token(cfg: TransformerConfig, length: int) -> float:
  return float(2 * matrix_params(cfg) + attention_forward_flops(cfg, length))


def train_flops_per_token(cfg: TransformerConfig, length: int) -> float:
  return 3.0 * forward_flops_per_token(cfg, length)


def proxy_flops_per_token(cfg: TransformerConfig, length: int, num_proxies: int = 1) -> float:
  """A DoReMi step: each proxy's forward and backward plus one shared reference forward."""
  return num_proxies * train_flops_per_token(cfg, length) + forward_flops_per_token(cfg, length)
