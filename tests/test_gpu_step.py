"""The GPU benchmark without a GPU: its FLOP count, its plan and budget, and the model
values it reads from gin/models without gin."""
import os
import sys

import gin
import pytest

from doremi_jax.core import model as model_lib
from doremi_jax.run import config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

import gpu_flops  # noqa: E402


@pytest.mark.parametrize("name", ("tiny", "120m", "280m", "1b", "8b"))
def test_model_values_read_without_gin_are_gins(name):
  gin.clear_config()
  try:
    config.configure([f"models/{name}.gin"], ["VOCAB_SIZE = 32000"])
    want = model_lib.TransformerConfig()
  finally:
    gin.clear_config()
  assert model_lib.TransformerConfig(**gpu_flops.read_model_gin(name, 32000)) == want


def test_flops_per_token_at_120m():
  cfg = model_lib.TransformerConfig(**gpu_flops.read_model_gin("120m", 32000))
  # 12 layers x (4 x 768 x 768 attention + 3 x 768 x 2048 SwiGLU) + 32000 x 768 output
  assert gpu_flops.matmul_params(cfg) == 12 * (2_359_296 + 4_718_592) + 24_576_000
  assert gpu_flops.attention_forward_flops(cfg, 1024) == 4 * 12 * 12 * 64 * 1024
  plain, proxy = (gpu_flops.flops_per_token(cfg, 1024, k) for k in ("plain", "proxy"))
  assert plain == 770_310_144 and proxy == 1_027_080_192
  assert proxy / plain == pytest.approx(gpu_flops.PROXY_OVER_PLAIN_LIMIT)
  cfg = model_lib.TransformerConfig(**gpu_flops.read_model_gin("280m", 32000))  # README's
  assert [gpu_flops.flops_per_token(cfg, 1024, k) for k in ("plain", "proxy")] == [
      2_348_285_952, 3_131_047_936]
  r = gpu_flops.throughput(0.5, 32, 1024, plain, 790.0)
  assert r["tokens_per_s"] == 65536 and r["mfu_datasheet"] == pytest.approx(
      770_310_144 * 65536 / 989e12)
  assert r["mfu_measured"] == pytest.approx(r["model_tflops"] / 790)
  assert gpu_flops.throughput(0.5, 32, 1024, plain, None)["mfu_measured"] is None


def test_plan_runs_every_pair_at_the_middle_batch_first():
  cells = gpu_flops.plan({"a": (8, 16, 32), "b": (4,)}, ("cudnn", "xla"),
                         {"a": ("p", "none"), "b": ("none",)})
  keys = [(c["model"], c["batch"], c["attention"], c["remat"]) for c in cells]
  assert keys == [("a", 16, "cudnn", "p"), ("b", 4, "cudnn", "none"),
                  ("a", 16, "cudnn", "none"), ("a", 16, "xla", "p"), ("b", 4, "xla", "none"),
                  ("a", 16, "xla", "none"), ("a", 8, "cudnn", "p"), ("a", 32, "cudnn", "p")]


def test_budget_skips_what_would_not_finish_and_batches_after_oom():
  cell = {"model": "a", "batch": 32, "attention": "xla", "remat": "p"}
  done = [dict(cell, batch=16, wall_s=50.0,
               plain={"status": "error", "error": "XlaRuntimeError: RESOURCE_EXHAUSTED: ..."})]
  assert "ran out of memory" in gpu_flops.budget_verdict(cell, done, 500.0)
  done[0]["plain"] = {"status": "ok"}
  assert gpu_flops.budget_verdict(cell, done, 500.0) is None
  assert "budget" in gpu_flops.budget_verdict(cell, done, 40.0)
  assert gpu_flops.budget_verdict(cell, [], 1.0) is None  # nothing timed yet: try it
