"""What both benchmarks share: the brief's tiny model on one CPU device and random batches."""
from __future__ import annotations

import sys

import jax
import numpy as np

from doremi_jax.core import model as model_lib
from doremi_jax.core import partitioning
from doremi_jax.core import train_state as ts


def tiny_model(vocab: int, untied: bool):
  """(config, mesh, model, optimizer): 2 layers, d=128, 4 heads, f32, on the first device."""
  cfg = model_lib.TransformerConfig(
      vocab_size=vocab, num_layers=2, emb_dim=128, num_heads=4, head_dim=32, mlp_dim=512,
      tied_embeddings=not untied, dtype="float32", param_dtype="float32")
  mesh = partitioning.make_mesh((1, 1, 1), devices=jax.devices()[:1])
  return cfg, mesh, model_lib.TransformerLM(cfg), ts.make_optimizer(10_000)


def random_batches(n: int, batch: int, seq: int, vocab: int, shardings, num_domains: int,
                   seed: int = 0):
  """``n`` device batches of uniform tokens, rows cycling over ``num_domains`` domains."""
  rng = np.random.default_rng(seed)
  out = []
  for _ in range(n):
    targets = rng.integers(1, vocab, size=(batch, seq), dtype=np.int32)
    host = {"targets": targets,
            "inputs": np.concatenate([np.zeros((batch, 1), np.int32), targets[:, :-1]], 1),
            "loss_mask": np.ones((batch, seq), np.float32),
            "domain_ids": (np.arange(batch) % num_domains).astype(np.int32)}
    out.append({k: jax.device_put(v, shardings[k]) for k, v in host.items()})
  return out


def exit_status(recompiled: list) -> int:
  """1 (with one ``error:`` line) when a step function compiled more than once, else 0."""
  if recompiled:
    print(f"error: a step function compiled more than once ({', '.join(map(str, recompiled))})",
          file=sys.stderr)
    return 1
  return 0
