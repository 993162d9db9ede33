"""Times levanter's own DoReMi step (levanter/doremi.py) on one CPU device; run in its venv.

    .bench/peers/levanter-venv/bin/python benchmarks/peers/levanter_step.py --vocab 512

``doremi_step`` is a closure inside ``levanter.doremi.estimate_mixture_weights``, so the
harness runs that function itself (its Trainer, DoremiState, data loader and loop) for
``warmup + steps`` steps, and wraps the ``haliax.named_jit`` it decorates the step with:
each call of the jitted ``doremi_step`` is timed up to ``block_until_ready`` of all its
outputs (protocol.py). Nothing of levanter's is reimplemented here.

Model: levanter's Gpt2Config, 2 layers, hidden 128, 4 heads (head size 32), mlp 4 x 128 =
512, seq 128, tied embeddings (GPT-2 always ties), learned positions, LayerNorm with biases,
dropout 0, f32 policy; ``gradient_checkpointing`` off (levanter's default is on; ours does not
recompute). Optimizer: levanter's AdamConfig (AdamW, lr 3e-3, b2 0.95, wd 0.01, clip 1.0,
warm-up 50, cosine), our recipe's settings. 4 domains of uniform random tokens.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("WANDB_MODE", "disabled")

import protocol  # noqa: E402  (benchmarks/peers/protocol.py, next to this file)

NUM_DOMAINS = 4


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  protocol.add_args(parser)
  args = parser.parse_args()
  import haliax as hax
  import jax
  import jax.random as jrandom
  import levanter.doremi
  import levanter.tracker
  import numpy as np
  from levanter.checkpoint import CheckpointerConfig
  from levanter.data import AsyncDataset
  from levanter.models.gpt2 import Gpt2Config
  from levanter.models.lm_model import LmExample, compute_next_token_loss
  from levanter.optim import AdamConfig
  from levanter.trainer import TrainerConfig

  m = protocol.MODEL
  config = Gpt2Config(seq_len=args.seq, hidden_dim=m["d_model"], num_layers=m["layers"],
                      num_heads=m["heads"], mlp_scale=m["mlp"] // m["d_model"],
                      gradient_checkpointing=False)
  vocab = hax.Axis("vocab", args.vocab)

  class RandomTokens(AsyncDataset):
    """Endless uniform tokens; example i depends only on (domain, i)."""

    def __init__(self, domain):
      super().__init__()
      self.domain = domain

    async def async_len(self):
      raise ValueError("endless")

    async def final_length_is_known(self):
      return False

    def is_finite(self):
      return False

    async def current_len(self):
      return None

    async def get_batch(self, indices):
      rng = np.random.default_rng([self.domain, *indices])
      tokens = rng.integers(0, args.vocab, size=(len(indices), args.seq), dtype=np.int32)
      return [LmExample.causal(hax.named(t, config.Pos)) for t in tokens]

  times, first = [], []
  real_named_jit = hax.named_jit

  def spy(fn=None, *a, **kw):
    """haliax.named_jit, with the calls of the function named doremi_step timed."""
    if fn is None:
      return lambda f: spy(f, *a, **kw)
    jitted = real_named_jit(fn, *a, **kw)
    if getattr(fn, "__name__", "") != "doremi_step":
      return jitted

    def timed(*call_args, **call_kw):
      t0 = time.perf_counter()
      out = jax.block_until_ready(jitted(*call_args, **call_kw))
      (times if first else first).append(time.perf_counter() - t0)
      return out
    return timed

  total = args.warmup + args.steps
  with tempfile.TemporaryDirectory() as tmp:
    trainer_config = TrainerConfig(
        num_train_steps=total, train_batch_size=args.batch, tracker=(), id="bench",
        log_dir=os.path.join(tmp, "logs"), per_device_parallelism=args.batch,
        checkpointer=CheckpointerConfig(base_path=os.path.join(tmp, "ckpt")))
    optimizer = AdamConfig(learning_rate=3e-3, weight_decay=0.01, beta1=0.9, beta2=0.95,
                           max_grad_norm=1.0, warmup=50, lr_schedule="cosine",
                           min_lr_ratio=0.1).build(10_000)
    with trainer_config.device_mesh:
      proxy = config.build(vocab, key=jrandom.PRNGKey(0))
      ref = config.build(vocab, key=jrandom.PRNGKey(1))
    hax.named_jit = spy
    try:
      with levanter.tracker.current_tracker(levanter.tracker.NoopTracker()):
        levanter.doremi.estimate_mixture_weights(
            compute_next_token_loss, proxy, ref,
            {f"d{i}": RandomTokens(i) for i in range(NUM_DOMAINS)},
            trainer_config=trainer_config, optimizer=optimizer, key=jrandom.PRNGKey(2))
    finally:
      hax.named_jit = real_named_jit
  timed = times[args.warmup - 1:]
  if len(timed) != args.steps:
    raise SystemExit(f"levanter ran {len(times) + len(first)} doremi steps, expected {total}")
  result = protocol.summarize(first[0], timed, args.warmup)
  protocol.emit(dict(result, contender="levanter_doremi", vocab=args.vocab,
                     peer="levanter@83f3f346", model=dict(m, tied=True, norm="LayerNorm+bias",
                                                         positions="learned")))


if __name__ == "__main__":
  main()
