"""Shared fixtures for the step tests: the tiny model, fixed synthetic batches, a step "rig".

Imported by ``test_steps.py`` (in-process, one CPU device) and ``parity_worker.py`` (a
subprocess with 8 simulated CPU devices), so both exercise exactly the same setup.
"""
from __future__ import annotations

import jax
import numpy as np

from doremi_jax.core import model as model_lib
from doremi_jax.core import partitioning, steps
from doremi_jax.core import train_state as ts

VOCAB = 256
BATCH = 16
SEQ = 64
K = 4  # domains


def tiny_config(**overrides) -> model_lib.TransformerConfig:
  cfg = dict(vocab_size=VOCAB, num_layers=2, emb_dim=128, num_heads=4, head_dim=32, mlp_dim=512)
  cfg.update(overrides)
  return model_lib.TransformerConfig(**cfg)


def make_batch(seed: int, absent: int | None = None) -> dict[str, np.ndarray]:
  """A fixed host batch; domains differ in kind so their excess losses differ.

  Domain 0: uniform tokens; 1: one repeated token; 2: a cyclic pattern; 3: a small alphabet.
  ``absent`` names a domain left out of this batch. Some examples are padded (loss_mask 0).
  """
  rng = np.random.default_rng(seed)
  present = [d for d in range(K) if d != absent]
  domain_ids = np.asarray([present[i % len(present)] for i in range(BATCH)], np.int32)
  rng.shuffle(domain_ids)
  targets = np.empty((BATCH, SEQ), np.int32)
  for i, d in enumerate(domain_ids):
    if d == 0:
      targets[i] = rng.integers(2, VOCAB, SEQ)
    elif d == 1:
      targets[i] = rng.integers(2, VOCAB)
    elif d == 2:
      start = rng.integers(2, VOCAB - 8)
      targets[i] = start + (np.arange(SEQ) % 7)
    else:
      targets[i] = rng.integers(2, 12, SEQ)
  lengths = np.full(BATCH, SEQ)
  lengths[rng.choice(BATCH, 4, replace=False)] = rng.integers(SEQ // 4, SEQ, 4)
  mask = np.arange(SEQ)[None, :] < lengths[:, None]
  targets = np.where(mask, targets, 0).astype(np.int32)
  inputs = np.concatenate([np.zeros((BATCH, 1), np.int32), targets[:, :-1]], axis=1)
  return {"inputs": inputs, "targets": targets, "loss_mask": mask.astype(np.float32),
          "domain_ids": domain_ids}


# Three fixed batches; domain 3 is absent from the second one.
BATCHES = [make_batch(0), make_batch(1, absent=3), make_batch(2)]


class Rig:
  """Model, optimizer, shardings and the jitted step of one kind on one mesh."""

  def __init__(self, mesh, kind: str, doremi_config: steps.DoremiConfig | None = None,
               train_steps: int = 100, warmup_steps: int = 2, microbatches: int = 1,
               **model_overrides):
    self.mesh, self.kind = mesh, kind
    self.model = model_lib.TransformerLM(tiny_config(**model_overrides))
    self.optimizer = ts.make_optimizer(train_steps, warmup_steps=warmup_steps)
    self.num_domain_state = K if kind == "proxy" else None
    self.abstract, self.shardings = ts.state_shardings(
        self.model, self.optimizer, mesh, SEQ, self.num_domain_state)
    self.doremi_config = doremi_config or steps.DoremiConfig()
    self.step = steps.make_train_step(kind, self.model, self.optimizer, mesh, self.shardings, K,
                                      self.doremi_config if kind == "proxy" else None,
                                      microbatches=microbatches)
    self.batch_shardings = steps.batch_shardings(mesh)

  def init(self, seed: int = 0):
    return ts.init_state(self.model, self.optimizer, self.mesh, SEQ, seed, self.num_domain_state)

  def reference_params(self, seed: int = 1):
    """A second, differently initialised model stands in for the trained reference."""
    return ts.init_state(self.model, self.optimizer, self.mesh, SEQ, seed).params

  def put(self, batch: dict[str, np.ndarray]) -> dict[str, jax.Array]:
    return {k: jax.device_put(v, self.batch_shardings[k]) for k, v in batch.items()}

  def run(self, state, batch, reference_params=None):
    if self.kind == "proxy":
      return self.step(state, reference_params, self.put(batch))
    return self.step(state, self.put(batch))


def single_device_mesh():
  return partitioning.make_mesh((1, 1, 1), devices=jax.devices()[:1])


def flat(tree) -> dict[str, np.ndarray]:
  """``{"a/b/c": host array}`` for every leaf."""
  leaves = jax.tree_util.tree_flatten_with_path(jax.device_get(tree))[0]
  return {"/".join(str(getattr(k, "key", getattr(k, "name", k))) for k in path): np.asarray(v)
          for path, v in leaves}
