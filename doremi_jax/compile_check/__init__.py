"""Will a run fit? Compile its train step for a topology without the hardware and print
the memory per device (``doremi-compile-check``):

    python -m doremi_jax.compile_check --gin_file=models/8b.gin --gin_file=runs/main.gin \
        --topology=v5p-512 --gin.VOCAB_SIZE=32000 --gin.BATCH_SIZE=512 \
        --gin.TASK_FEATURE_LENGTHS="{'targets': 1024}"

The step is the one ``train`` builds from the same gin (kind, model, optimizer, mesh,
logical-axis rules, DoReMi settings), lowered from abstract shapes only: nothing is
allocated, so an 8B model compiles on a laptop. ``--topology=cpu:N`` uses N simulated host
devices (XLA's CPU compiler); a TPU slice name (``v5p-256``) uses libtpu's compile-only
devices, i.e. the TPU compiler's own numbers, and needs ``jax[tpu]`` installed (no TPU).
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Sequence

from doremi_jax import errors
from doremi_jax.compile_check import memory, topology
from doremi_jax.core import model as model_lib
from doremi_jax.core import partitioning, steps
from doremi_jax.corpora import pile_format
from doremi_jax.run import config, registry, step_builder
from doremi_jax.run import settings as settings_lib

MIB = 1024 ** 2
ROWS = (("parameters", "parameters"), ("optimizer_state", "optimizer state"),
        ("reference_parameters", "reference parameters (frozen)"),
        ("step_and_domain_state", "step + domain weights"), ("batch", "batch"))
BACKEND_NOTE = {
    "cpu": "XLA's CPU compiler on simulated host devices: layouts, fusion and bf16 handling "
           "differ from TPU/GPU (CPU often computes bf16 in f32), so temporaries are an "
           "estimate; the state rows are exact",
    "tpu": "the TPU compiler (libtpu, compile-only devices): the numbers a TPU run gets "
           "(its argument bytes include TPU layout padding of small arrays)",
}


def _settings() -> settings_lib.RunSettings:
  """The run's ``train`` settings as gin gives them (defaults and validation in
  ``RunSettings``); the outputs and the data are not needed, and the schedule's length
  changes no shape, so those get stand-ins. One-line errors when a shape is missing."""
  lengths = config.bound_value("train.task_feature_lengths", None)
  if not isinstance(lengths, dict) or not isinstance(lengths.get("targets"), int):
    raise errors.DoremiError("set the sequence length: --gin.TASK_FEATURE_LENGTHS="
                             "\"{'targets': 1024}\"")
  if config.missing_required(model_lib.TransformerConfig):
    raise errors.DoremiError("missing required gin value: VOCAB_SIZE (pass --gin.VOCAB_SIZE=...)")
  steps_ = config.bound_value("train.train_steps", 1)
  return settings_lib.RunSettings(
      model_dir="(compile check: nothing is written)",
      mixture_or_task_name="(compile check: no data)",
      reference_model_dir="(compile check: abstract reference)", task_feature_lengths=lengths,
      train_steps=steps_ if isinstance(steps_, int) and steps_ > 0 else 1)


def check(topo: topology.Topology, num_domains: int, budget_gib: float | None = None
          ) -> dict[str, Any]:
  """Compiles the configured step for ``topo``; returns every number (JSON-ready)."""
  settings = _settings()
  if settings.kind == "online":
    raise errors.DoremiError("the compile check covers plain and proxy steps; compile an "
                             "online run's two models as a main and a proxy run")
  devices = topology.devices(topo)
  doremi_config = steps.DoremiConfig() if settings.kind == "proxy" else None
  built = step_builder.build(settings, num_domains, model_lib.TransformerConfig(),
                             doremi_config, mesh=partitioning.make_mesh(devices=devices))
  try:
    compiled, refused = memory.compile_step(built), None
  except memory.OutOfMemory as exc:  # a TPU compiler checks its device's memory itself
    compiled, refused = None, str(exc)
  result = memory.measure(built, compiled)
  budgets = dict(topology.DEVICE_MEMORY_GIB)
  if topo.device:
    budgets = {topo.device: budgets[topo.device]}
  if budget_gib is not None:
    budgets["given"] = budget_gib
  total = result["compiler"]["total"] if compiled is not None else None
  result.update(kind=settings.kind, batch_size=settings.batch_size,
                sequence_length=settings.sequence_length, train_steps=settings.train_steps,
                microbatches=settings.microbatches, topology=topo.name, backend=topo.backend,
                device_kind=str(devices[0].device_kind), backend_note=BACKEND_NOTE[topo.backend],
                num_domains=num_domains, compiler_refused=refused,
                fits={name: memory.verdict(total, gib, refused) for name, gib in budgets.items()})
  return result


def report(r: dict[str, Any]) -> str:
  mesh = " ".join(f"{k}={v}" for k, v in r["mesh"].items())
  micro = f" in {r['microbatches']} micro-batches" if r["microbatches"] > 1 else ""
  lines = [f"{r['kind']} step, {r['num_parameters']:,} parameters, batch {r['batch_size']} x "
           f"{r['sequence_length']}{micro}, {r['num_devices']} devices "
           f"({r['topology']}, mesh {mesh})",
           f"numbers from: {r['backend_note']}", "",
           f"{'per device':<34}{'MiB':>12}"]
  for key, label in ROWS:
    if r["per_device"][key]:
      lines.append(f"  {label:<32}{r['per_device'][key] / MIB:>12.1f}")
  c = r["compiler"]
  if c:
    lines += [f"  {'compiler: arguments':<32}{c['arguments'] / MIB:>12.1f}",
              f"  {'compiler: outputs - aliased':<32}{(c['outputs'] - c['aliased']) / MIB:>12.1f}",
              f"  {'compiler: temporaries':<32}{c['temporaries'] / MIB:>12.1f}",
              f"  {'total':<32}{c['total'] / MIB:>12.1f}", ""]
  else:
    lines += ["", f"the compiler refused the step: {r['compiler_refused']}"]
  for name, f in r["fits"].items():
    verdict = "fits" if f["fits"] else "does NOT fit"
    used = ("" if f["used_fraction"] is None
            else f": {100 * f['used_fraction']:.0f}% of its memory")
    lines.append(f"{verdict} {name} ({f['memory_gib']:g} GiB){used}")
  return "\n".join(lines)


def _parse(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
  parser = errors.ArgumentParser(description="Compile a run's train step for a topology and "
                                   "report its memory per device.")
  parser.add_argument("--topology", required=True,
                      help="cpu:N (simulated devices) or a TPU slice: v5p-256, v4-64, v5e-256")
  parser.add_argument("--json", help="also write every number to this JSON file")
  parser.add_argument("--device_gib", type=float, help="also check against this many GiB")
  parser.add_argument("--num_domains", type=int, default=len(pile_format.PILE_DOMAINS),
                      help="domains in the mixture (default: the Pile's)")
  return parser.parse_known_args(list(argv))


@errors.exit_on_user_error
def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
  args, rest = _parse(sys.argv[1:] if argv is None else argv)
  topo = topology.parse(args.topology)
  import jax  # pylint: disable=g-import-not-at-top
  jax.config.update("jax_platforms", "cpu")  # nothing runs: the step is only compiled
  if topo.backend == "cpu":
    topology.use_cpu_devices(topo)
  registry.register_configurables()
  gin_args = config.parse_args(rest, "Compile check")
  config.configure(gin_args.gin_file, gin_args.bindings, gin_args.gin_search_paths)
  result = check(topo, args.num_domains, args.device_gib)
  print(report(result), flush=True)
  if args.json:
    with open(args.json, "w") as f:
      json.dump(result, f, indent=2)
  return result


def console_main() -> None:
  main()

