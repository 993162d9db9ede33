"""The GPU benchmark without a GPU: its FLOP count, its plan and budget, the model values it
reads from gin/models without gin, and its prepared device script run in CPU smoke mode
with TensorFlow, SeqIO and grain made unimportable (the device image has none of them)."""
import json
import os
import subprocess
import sys

import gin
import pytest

from doremi_jax.core import flops
from doremi_jax.core import model as model_lib
from doremi_jax.run import config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

import gpu_flops  # noqa: E402

BLOCKED = ("tensorflow", "seqio", "grain", "array_record")
BLOCKER = f"""import sys
class _Blocked:
  def find_spec(self, name, path=None, target=None):
    if name.split(".")[0] in {BLOCKED!r}:
      raise ModuleNotFoundError("blocked by test_gpu_step: " + name)
sys.meta_path.insert(0, _Blocked())
"""
STEP_COLUMNS = ("median_s", "first_call_s", "times_s", "tokens_per_s", "flops_per_token",
                "model_tflops", "mfu_datasheet", "mfu_measured", "peak_bytes", "compiles")


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
  assert flops.matrix_params(cfg) == 12 * (2_359_296 + 4_718_592) + 24_576_000
  assert flops.attention_forward_flops(cfg, 1024) == 4 * 12 * 12 * 64 * 1024
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


def test_cpu_smoke_of_the_device_script_without_tensorflow(tmp_path):
  site = tmp_path / "site"
  site.mkdir()
  (site / "sitecustomize.py").write_text(BLOCKER)
  env = dict(os.environ, PYTHON=sys.executable, OUT=str(tmp_path / "out"),
             PYTHONPATH=os.pathsep.join([str(site), ROOT]))
  probe = subprocess.run(
      [sys.executable, "-c", "import sys, doremi_jax, doremi_jax.core.steps, "
       "doremi_jax.core.model\ntry:\n  import tensorflow\nexcept ImportError as e:\n"
       "  print(e)\nprint(sorted(m for m in sys.modules if m.split('.')[0] in "
       f"{BLOCKED!r}))"], env=env, capture_output=True, text=True, timeout=60)
  assert probe.returncode == 0, probe.stderr
  assert probe.stdout.splitlines() == ["blocked by test_gpu_step: tensorflow", "[]"]
  proc = subprocess.run([os.path.join(ROOT, "benchmarks", "gpu_check.sh"), "--cpu-smoke"],
                        env=env, capture_output=True, text=True, timeout=150)  # ~15-40 s here
  assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
  out = json.loads((tmp_path / "out" / "gpu_step_smoke.json").read_text())
  assert (tmp_path / "out" / "gpu_step_smoke.log").read_text().strip()
  meta = out["meta"]
  assert meta["datasheet_tflops"] == 989.0 and meta["measured_tflops"] > 0
  assert meta["matmul"]["rel_err_vs_f32"] < 1e-2 and "6N + 3A" in meta["flop_formula"]
  [cell] = out["cells"]
  assert (cell["model"], cell["batch"], cell["attention"], cell["remat"]) == (
      "tiny", 2, "xla", "none")
  cfg = model_lib.TransformerConfig(**gpu_flops.read_model_gin("tiny", 256))
  for kind in ("plain", "proxy"):
    r = cell[kind]
    assert r["status"] == "ok" and set(STEP_COLUMNS) <= set(r), r
    assert r["timed_steps"] == 2 and r["compiles"] == 1 and r["median_s"] > 0
    assert r["flops_per_token"] == gpu_flops.flops_per_token(cfg, 64, kind)
    assert r["tokens_per_s"] == pytest.approx(2 * 64 / r["median_s"])
    assert 0 < r["mfu_datasheet"] < r["mfu_measured"]  # a CPU is far under 989 TFLOP/s
  assert cell["proxy_over_plain"] == pytest.approx(
      cell["proxy"]["median_s"] / cell["plain"]["median_s"])
  assert cell["proxy_over_plain_limit"] == pytest.approx(4 / 3)
  assert "tiny     2   xla" in proc.stdout  # the table, printed last
