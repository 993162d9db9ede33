"""Times nanodo's own jitted train step (nanodo/train.py) on one CPU device; run in its venv.

    .bench/peers/nanodo-venv/bin/python benchmarks/peers/nanodo_step.py --vocab 512

Builds nanodo's state and ``train.Trainer`` from its default config (configs/default.py)
with the brief's sizes and times ``Trainer.do_step`` (its jitted ``_train_step``: loss,
gradients, optimizer update and its per-step metrics; ``log_internal_metrics`` as in
nanodo's default) with protocol.py. Model: nanodo's TransformerDo, 2 layers, D 128, 4 heads
(head dim 32), F 512, L 128, f32, tied embeddings (nanodo always ties), learned positions,
LayerNorm without bias. Optimizer: nanodo's AdamW with our recipe's lr 3e-3, warm-up 50,
cosine, weight decay 0.01, clip 1.0. Batches: uniform random tokens (none is the pad id 0).
"""
from __future__ import annotations

import argparse
import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import protocol  # noqa: E402  (benchmarks/peers/protocol.py, next to this file)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  protocol.add_args(parser)
  args = parser.parse_args()
  import jax
  import numpy as np
  from jax.experimental import mesh_utils
  from jax.sharding import Mesh, NamedSharding
  from jax.sharding import PartitionSpec as P
  from nanodo import model_factory, train
  from nanodo.configs import default

  m = protocol.MODEL
  c = default.get_config()
  c.batch_size = args.batch
  c.model.update(D=m["d_model"], H=m["heads"], L=args.seq, N=m["layers"], F=m["mlp"],
                 dtype=m["dtype"])
  c.opt.update(num_train_steps=10_000, peak_learning_rate=3e-3, init_learning_rate=0.0, b2=0.95,
               final_learning_rate=3e-4, warmup_steps=50, weight_decay=0.01,
               clip_by_global_norm=1.0)
  mesh = Mesh(mesh_utils.create_device_mesh((1,), devices=jax.devices()[:1]), ("data",))
  model, get_loss_fn = model_factory.get_model_and_loss(c, args.vocab)
  shardings, state = train._init_train_state(c, model, rng=jax.random.PRNGKey(0), mesh=mesh)  # noqa: SLF001
  trainer = train.Trainer(c=c, state=state, mesh=mesh, shardings=shardings,
                          get_loss_fn=get_loss_fn)
  rng = np.random.default_rng(0)
  n = args.warmup + args.steps
  batches = [jax.device_put(rng.integers(1, args.vocab, size=(args.batch, args.seq),
                                         dtype=np.int32), NamedSharding(mesh, P()))
             for _ in range(n)]

  def call(i):
    metrics = trainer.do_step(i, batches[i])
    return trainer.state, metrics

  result = protocol.time_calls(call, args.warmup, args.steps)
  result["compiles"] = trainer.step_fn._cache_size()  # noqa: SLF001
  protocol.emit(dict(result, contender="nanodo_plain", vocab=args.vocab,
                     peer="nanodo@10aefdee", model=dict(m, tied=True, norm="LayerNorm",
                                                       positions="learned")))


if __name__ == "__main__":
  main()
