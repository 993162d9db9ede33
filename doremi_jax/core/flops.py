"""Estimated FLOPs of the steps, for cost fractions and MFU.

Per token, a forward pass costs 2 FLOPs per matrix parameter (every weight matrix and the
output layer; the input embedding is a lookup) plus the attention products (QK^T and AV,
``4 x length x heads x head_dim`` per layer, computed in full although causal); a
training step is forward + backward = 3x forward (Kaplan et al. 2020's ``6N``).
"""
from __future__ import annotations

from doremi_jax.core.model import TransformerConfig


def matrix_params(cfg: TransformerConfig) -> int:
  """Parameters that take part in a matrix product (all but the input embedding table;
  with tied embeddings the table is the output layer and counts)."""
  lookup = 0 if cfg.tied_embeddings else cfg.vocab_size * cfg.emb_dim
  return cfg.num_params() - lookup


def non_embedding_params(cfg: TransformerConfig) -> int:
  """The blocks' parameters: what 'a model N x larger' compares (Kaplan et al.)."""
  tables = cfg.vocab_size * cfg.emb_dim * (1 if cfg.tied_embeddings else 2)
  return cfg.num_params() - tables - cfg.emb_dim


def forward_flops_per_token(cfg: TransformerConfig, length: int) -> float:
  attention = 4 * cfg.num_layers * length * cfg.num_heads * cfg.head_dim
  return float(2 * matrix_params(cfg) + attention)


def train_flops_per_token(cfg: TransformerConfig, length: int) -> float:
  return 3.0 * forward_flops_per_token(cfg, length)


def proxy_flops_per_token(cfg: TransformerConfig, length: int, num_proxies: int = 1) -> float:
  """A DoReMi step: each proxy's forward and backward plus one shared reference forward."""
  return num_proxies * train_flops_per_token(cfg, length) + forward_flops_per_token(cfg, length)
