"""What benchmarks/gpu_step.py computes without a device: model configs read from
gin/models/*.gin (no gin needed), the FLOPs a step must do per token, MFU, and the plan of
cells that fits the budget. Pure functions, so tests check them on any machine."""
from __future__ import annotations

import ast
import os
import re

from doremi_jax.core import flops

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GIN_MODELS = os.path.join(ROOT, "gin", "models")
DATASHEET_TFLOPS = 989.0  # H100/H200 SXM dense bf16 without sparsity, NVIDIA's data sheet
PROXY_OVER_PLAIN_LIMIT = 4 / 3  # a proxy step adds one forward (2N) to 6N
_BINDING = re.compile(r"^TransformerConfig\.(\w+)\s*=\s*([^#]+?)\s*(#.*)?$")

FLOP_FORMULA = (
    "per token, PaLM's convention (MFU, not HFU: remat's recomputation is not counted): "
    "N = L*(4*d*H*Dh + k*d*F) + V*d, the matrices a token's forward multiplies by (k = 3 for "
    "SwiGLU, 2 for a plain MLP; the output projection V*d counted once, tied or not; the "
    "input embedding is a lookup, norms are ignored); attention forward A = 4*L*H*Dh*T "
    "(QK^T and AV over the full T x T, causal masking not subtracted); plain step = 6N + 3A; "
    "proxy step = plain + 2N + A (the frozen reference's forward), so proxy/plain <= 4/3")


def parse_model_gin(text: str, vocab: int) -> dict:
  """``TransformerConfig.field = literal`` lines as a dict (``%VOCAB_SIZE`` is ``vocab``);
  other bindings (e.g. ``make_mesh``) are not the model's and are skipped."""
  fields = {}
  for line in text.splitlines():
    m = _BINDING.match(line.strip())
    if m:
      value = m.group(2).strip()
      fields[m.group(1)] = vocab if value == "%VOCAB_SIZE" else ast.literal_eval(value)
  return fields


def read_model_gin(name: str, vocab: int, models_dir: str = GIN_MODELS) -> dict:
  with open(os.path.join(models_dir, f"{name}.gin")) as f:
    return parse_model_gin(f.read(), vocab)


def flops_per_token(cfg, seq: int, kind: str) -> int:
  """Model FLOPs per trained token of a ``kind`` ("plain" | "proxy") step: the project's
  estimate (``doremi_jax.core.flops``), the FLOP_FORMULA above."""
  if kind == "proxy":
    return int(flops.proxy_flops_per_token(cfg, seq))
  return int(flops.train_flops_per_token(cfg, seq))


def throughput(median_s: float, batch: int, seq: int, fpt: int,
               measured_tflops: float | None) -> dict:
  """tokens/s, achieved model TFLOP/s and MFU against the data sheet and the measured peak."""
  tokens_per_s = batch * seq / median_s
  tflops = fpt * tokens_per_s / 1e12
  return {"tokens_per_s": tokens_per_s, "flops_per_token": fpt, "model_tflops": tflops,
          "mfu_datasheet": tflops / DATASHEET_TFLOPS,
          "mfu_measured": tflops / measured_tflops if measured_tflops else None}


def plan(models: dict[str, tuple[int, ...]], attentions: tuple[str, ...],
         remats: dict[str, tuple[str, ...]]) -> list[dict]:
  """Cells (model, batch, attention, remat) in the order they are run, most wanted first:
  every attention x remat pair at each model's middle batch (the models alternating, so a
  short budget still sees each), then the other batches with the first pair.
  ``remats[model]`` are resolved policy names; repeats are dropped."""
  cells, seen = [], set()

  def add(model, batch, attention, remat):
    key = (model, batch, attention, remat)
    if key not in seen:
      seen.add(key)
      cells.append(dict(zip(("model", "batch", "attention", "remat"), key)))

  pairs = max(len(r) for r in remats.values())
  for attention in attentions:
    for i in range(pairs):
      for model, batches in models.items():
        if i < len(remats[model]):
          add(model, batches[len(batches) // 2], attention, remats[model][i])
  for model, batches in models.items():
    for batch in batches:
      add(model, batch, attentions[0], remats[model][0])
  return cells


def budget_verdict(cell: dict, done: list[dict], left_s: float) -> str | None:
  """Why ``cell`` is not run (None: run it): a smaller batch of the same model, attention
  and remat ran out of memory, or the slowest earlier cell of its model (else of any model)
  took longer than the ``left_s`` seconds left."""
  if left_s <= 0:
    return "budget spent"
  same = lambda c, keys: all(c[k] == cell[k] for k in keys)  # noqa: E731
  for c in done:
    if (same(c, ("model", "attention", "remat")) and c["batch"] < cell["batch"]
        and "RESOURCE_EXHAUSTED" in str(c.get("plain", {}).get("error", ""))):
      return f"batch {c['batch']} ran out of memory"
  walls = [c["wall_s"] for c in done if c["model"] == cell["model"]] or [
      c["wall_s"] for c in done]
  if walls and max(walls) > left_s:
    return f"budget ({left_s:.0f} s left, a cell took {max(walls):.0f} s)"
  return None
