"""Compiled memory of the DoReMi proxy step vs the plain step, same model, one CPU device.

    python benchmarks/memory.py                  # the tiny model and a ~25M one (make bench)
    python benchmarks/memory.py --json /tmp/memory.json

Nothing is run or allocated: each step is compiled from abstract shapes and measured by
``doremi_jax.compile_check.memory`` (the compile check's own functions). It shows that the frozen
reference costs its parameters only (no optimizer state, no gradients), and bytes per
parameter against the ideal: f32 parameters 4 + Adam's two moments 8 = 12 B per trained
parameter, 4 B per frozen one; gradients (4 B) are temporaries, not state.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402

from doremi_jax.compile_check import memory  # noqa: E402
from doremi_jax.core import model as model_lib  # noqa: E402
from doremi_jax.core import partitioning, steps  # noqa: E402
from doremi_jax.run import settings, step_builder  # noqa: E402

NUM_DOMAINS = 4
IDEAL = {"trained": 4 + 8, "frozen": 4, "gradient": 4}  # f32 bytes per parameter
MODELS = {  # 2 layers d=128 is gin/models/tiny.gin; the second is ~25M parameters
    "tiny": dict(vocab_size=512, num_layers=2, emb_dim=128, num_heads=4, head_dim=32,
                 mlp_dim=512, tied_embeddings=False),
    "25m": dict(vocab_size=8192, num_layers=6, emb_dim=512, num_heads=8, head_dim=64,
                mlp_dim=1536, tied_embeddings=True),
}


def bench_model(name: str, batch: int, seq: int) -> dict:
  cfg = model_lib.TransformerConfig(**MODELS[name])
  mesh = partitioning.make_mesh((1, 1, 1), devices=jax.devices()[:1])
  out = {"model": name, "config": MODELS[name]}
  for kind in ("plain", "proxy"):
    run = settings.RunSettings(model_dir="(not written)", mixture_or_task_name="(no data)",
                               task_feature_lengths={"targets": seq}, train_steps=1000,
                               kind=kind, batch_size=batch)
    built = step_builder.build(run, NUM_DOMAINS, cfg,
                               steps.DoremiConfig() if kind == "proxy" else None, mesh=mesh)
    out[kind] = memory.measure(built, memory.compile_step(built))
  n = out["plain"]["num_parameters"]
  plain, proxy = out["plain"], out["proxy"]
  out["bytes_per_parameter"] = {
      "plain_state": (plain["per_device"]["parameters"]
                      + plain["per_device"]["optimizer_state"]) / n,
      "plain_arguments": plain["compiler"]["arguments"] / n,
      "proxy_arguments": proxy["compiler"]["arguments"] / n,
      "reference": proxy["per_device"]["reference_parameters"] / n,
      "proxy_minus_plain_arguments": (proxy["compiler"]["arguments"]
                                      - plain["compiler"]["arguments"]) / n,
      "plain_temporaries": plain["compiler"]["temporaries"] / n,
      "proxy_temporaries": proxy["compiler"]["temporaries"] / n,
  }
  return out


def table(results: list[dict]) -> str:
  head = (f"{'model':>6} {'params':>11} {'step':>6} {'params MB':>10} {'Adam MB':>8} "
          f"{'ref MB':>7} {'args MB':>8} {'temp MB':>8} {'args B/p':>9} {'temp B/p':>9}")
  lines = [head]
  for r in results:
    for kind in ("plain", "proxy"):
      m, n = r[kind], r[kind]["num_parameters"]
      pd, c = m["per_device"], m["compiler"]
      lines.append(f"{r['model']:>6} {n:>11,} {kind:>6} {pd['parameters'] / 1e6:>10.2f} "
                   f"{pd['optimizer_state'] / 1e6:>8.2f} {pd['reference_parameters'] / 1e6:>7.2f} "
                   f"{c['arguments'] / 1e6:>8.2f} {c['temporaries'] / 1e6:>8.2f} "
                   f"{c['arguments'] / n:>9.2f} {c['temporaries'] / n:>9.2f}")
  lines.append("")
  lines.append(f"ideal B/param: trained {IDEAL['trained']} (f32 params + Adam), frozen reference "
               f"{IDEAL['frozen']}, gradients {IDEAL['gradient']} (temporary)")
  for r in results:
    b = r["bytes_per_parameter"]
    lines.append(f"{r['model']}: plain state {b['plain_state']:.3f} B/param; the proxy adds "
                 f"{b['proxy_minus_plain_arguments']:.3f} B/param of arguments (reference "
                 f"{b['reference']:.3f}); temporaries plain {b['plain_temporaries']:.2f} vs "
                 f"proxy {b['proxy_temporaries']:.2f} B/param")
  return "\n".join(lines)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
  parser.add_argument("--batch", type=int, default=16)
  parser.add_argument("--seq", type=int, default=128)
  parser.add_argument("--models", default=",".join(MODELS), help=f"subset of {list(MODELS)}")
  parser.add_argument("--json", help="write every number here")
  args = parser.parse_args()
  results = [bench_model(name, args.batch, args.seq) for name in args.models.split(",")]
  print(f"compiled memory, batch {args.batch} x {args.seq}, one CPU device "
        f"(jax {jax.__version__}, XLA CPU)\n")
  print(table(results), flush=True)
  if args.json:
    with open(args.json, "w") as f:
      json.dump({"date": datetime.datetime.now(datetime.timezone.utc).isoformat(),
                 "machine": platform.platform(), "batch": args.batch, "seq": args.seq,
                 "results": results}, f, indent=2)


if __name__ == "__main__":
  main()
