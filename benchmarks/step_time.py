"""Wall time per step: our plain and DoReMi proxy steps against levanter's and nanodo's, measured.

    python benchmarks/step_time.py                  # vocab 50257 and 512, peers if built
    python benchmarks/step_time.py --vocab 512 --steps 20 --reps 3 --json /tmp/bench.json
    python benchmarks/step_time.py --peers          # peers required (one line if not built)

One CPU device; the brief's model (2 layers, d=128, 4 heads x 32, mlp 512, f32) on batch
16 x seq 128. Both peers' MLP is GPT-2's (two matrices, GELU); ours defaults to SwiGLU (three
matrices, half as much MLP arithmetic again), so "ours" is timed with the
peers' MLP (``mlp_activations=("gelu",)``: the same model, judged against the targets) and
"ours swiglu" with our default MLP (reported beside it; ``--no-swiglu`` skips it). Every
contender (our plain and proxy steps, levanter's DoReMi step, nanodo's train step) runs in
its own fresh process with the same protocol
(benchmarks/peers/protocol.py: first call compiles, warm-up, ``--steps`` timed calls up to
``block_until_ready``, median), one process per contender per repetition, interleaved:
repetition r runs ours plain, ours proxy, levanter, nanodo (then ours swiglu), for r in
1..``--reps``, so all see the same machine load. The peers run in their own pinned venvs
(benchmarks/peers/build_envs.sh, ``make bench-peers``); a peer whose venv is missing is
reported as not measured. Nothing is quoted from elsewhere.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys

os.environ.setdefault("JAX_PLATFORMS", "cpu")
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "peers"))

import bench_setup  # noqa: E402
import jax  # noqa: E402
import protocol  # noqa: E402  (benchmarks/peers/protocol.py)

from doremi_jax.core import steps  # noqa: E402
from doremi_jax.core import train_state as ts  # noqa: E402

NUM_DOMAINS = 4
PEERS_DIR = os.environ.get("PEERS_DIR", os.path.join(HERE, "..", ".bench", "peers"))
# contender -> (peer venv or None for ours, harness)
CONTENDERS = {"ours_plain": (None, None), "ours_proxy": (None, None),
              "levanter_doremi": ("levanter", "levanter_step.py"),
              "nanodo_plain": ("nanodo", "nanodo_step.py"),
              "ours_plain_swiglu": (None, None), "ours_proxy_swiglu": (None, None)}
OURS = [name for name, (peer, _) in CONTENDERS.items() if peer is None]
PEERS_MLP = ("gelu",)  # GPT-2's MLP, as levanter's Gpt2Config and nanodo's TransformerDo
# (ratio, numerator, denominator, at most): the targets, at every vocab size.
TARGETS = [("proxy/levanter", "ours_proxy", "levanter_doremi", 0.7),
           ("plain/nanodo", "ours_plain", "nanodo_plain", 0.9)]


def time_ours(kind: str, vocab: int, args, mlp_activations=None) -> dict:
  """Times our ``kind`` ("plain" | "proxy") step in this process (protocol.py);
  ``mlp_activations`` None is our default MLP (SwiGLU)."""
  cfg, mesh, lm, optimizer = bench_setup.tiny_model(vocab, args.untied, mlp_activations)
  batches = bench_setup.random_batches(args.warmup + args.steps, args.batch, args.seq, vocab,
                                       steps.batch_shardings(mesh), NUM_DOMAINS)
  reference = ts.init_state(lm, optimizer, mesh, args.seq, 1).params if kind == "proxy" else None
  runner = bench_setup.Runner.fresh(kind, lm, optimizer, mesh, args.seq, NUM_DOMAINS,
                                    reference=reference)
  result = protocol.time_calls(lambda i: runner(batches[i]), args.warmup, args.steps)
  result["compiles"] = runner.compiles()
  result["num_params"] = cfg.num_params()
  return result


def bench_vocab(vocab: int, args) -> dict:
  """Our two steps timed one after the other in this process (used by input_pipeline.py)."""
  result = {"vocab": vocab, "plain": time_ours("plain", vocab, args),
            "proxy": time_ours("proxy", vocab, args)}
  result["ratios"] = {"proxy/plain": result["proxy"]["median_s"] / result["plain"]["median_s"]}
  return result


def peer_python(peer: str) -> str | None:
  """The peer venv's python when build_envs.sh finished it (its stamp), else None."""
  venv = os.path.join(PEERS_DIR, f"{peer}-venv")
  ok = os.path.exists(os.path.join(venv, ".installed"))
  return os.path.join(venv, "bin", "python") if ok else None


def run_contender(name: str, vocab: int, args) -> dict:
  """One fresh process timing one contender; its JSON line, or {"error": ...}."""
  peer, harness = CONTENDERS[name]
  common = ["--vocab", str(vocab), "--steps", str(args.steps), "--warmup", str(args.warmup),
            "--batch", str(args.batch), "--seq", str(args.seq)]
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  if peer is None:
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", name] + common
    cmd += ["--untied"] if args.untied else []
  else:
    cmd = [peer_python(peer), os.path.join(HERE, "peers", harness)] + common
    env.pop("PYTHONPATH", None)  # the peer's venv only
  proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
  lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
  if proc.returncode or not lines:
    tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
    return {"error": f"exit {proc.returncode}: {tail}"}
  return json.loads(lines[-1])


def ratio(runs: dict, num: str, den: str) -> float | None:
  a, b = runs.get(num), runs.get(den)
  return a / b if a and b else None


def summarize(vocab: int, reps: dict) -> dict:
  """Per contender: the median over repetitions of each repetition's median."""
  out = {"vocab": vocab, "contenders": {}, "seconds": {}}
  for name, runs in reps.items():
    ok = [r for r in runs if "error" not in r]
    out["contenders"][name] = runs
    if ok and len(ok) == len(runs):
      out["seconds"][name] = statistics.median(r["median_s"] for r in ok)
  s = out["seconds"]
  out["ratios"] = {"proxy/plain": ratio(s, "ours_proxy", "ours_plain")}
  out["targets"] = {}
  for label, num, den, limit in TARGETS:
    out["ratios"][label] = r = ratio(s, num, den)
    out["targets"][label] = {"at_most": limit, "met": None if r is None else r <= limit}
    # the same ratio with our default MLP: reported, not judged (not the peers' model)
    out["ratios"][f"swiglu {label}"] = ratio(s, f"{num}_swiglu", den)
  return out


def format_table(results: list[dict], skipped: dict) -> str:
  cols = ["ours_plain", "ours_proxy", "levanter_doremi", "nanodo_plain", "ours_plain_swiglu",
          "ours_proxy_swiglu"]
  heads = ["ours plain s", "ours proxy s", "levanter s", "nanodo s", "swiglu plain",
           "swiglu proxy", "proxy/plain", "proxy/lev", "plain/nanodo", "sw proxy/lev",
           "sw pl/nanodo"]
  ratios = ("proxy/plain", "proxy/levanter", "plain/nanodo", "swiglu proxy/levanter",
            "swiglu plain/nanodo")
  lines = [f"{'vocab':>6} " + " ".join(f"{h:>12}" for h in heads)]
  for r in results:
    cells = [f"{r['seconds'][c]:.4f}" if c in r["seconds"] else "-" for c in cols]
    cells += [f"{r['ratios'][k]:.2f}" if r["ratios"].get(k) is not None else "-"
              for k in ratios]
    lines.append(f"{r['vocab']:>6} " + " ".join(f"{c:>12}" for c in cells))
  for label, _, den, limit in TARGETS:
    verdicts = []
    for r in results:
      met = r["targets"][label]["met"]
      why = skipped.get(CONTENDERS[den][0], "failed") if met is None else ""
      verdicts.append(f"vocab {r['vocab']} " + ("not measured (" + why + ")" if met is None
                                               else f"{r['ratios'][label]:.2f} "
                                               + ("pass" if met else "FAIL")))
    lines.append(f"target {label} <= {limit}: " + "; ".join(verdicts))
  for r in results:
    lines.append(f"vocab {r['vocab']} repetitions' medians (s): " + "; ".join(
        f"{name} " + " ".join(f"{run['median_s']:.4f}" if "error" not in run else "failed"
                              for run in runs) for name, runs in r["contenders"].items()))
  for r in results:
    for name, runs in r["contenders"].items():
      for i, run in enumerate(runs):
        if "error" in run:
          lines.append(f"vocab {r['vocab']} {name} repetition {i + 1}: {run['error']}")
  return "\n".join(lines)


def worker(args) -> int:
  kind = args.worker.split("_")[1]
  swiglu = args.worker.endswith("_swiglu")
  result = time_ours(kind, args.vocab[0], args, None if swiglu else PEERS_MLP)
  protocol.emit(dict(result, contender=args.worker, vocab=args.vocab[0],
                     model=dict(protocol.MODEL, tied=not args.untied, norm="RMSNorm",
                                positions="rope", mlp="swiglu" if swiglu else "gelu")))
  return bench_setup.exit_status([args.worker] if result["compiles"] != 1 else [])


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--vocab", type=int, action="append",
                      help="vocabulary size (repeatable; default 50257 and 512)")
  parser.add_argument("--steps", type=int, default=10, help="timed steps per process (>= 10)")
  parser.add_argument("--warmup", type=int, default=2, help="untimed calls (the 1st compiles)")
  parser.add_argument("--reps", type=int, default=2, help="interleaved repetitions")
  parser.add_argument("--batch", type=int, default=protocol.MODEL["batch"])
  parser.add_argument("--seq", type=int, default=protocol.MODEL["seq"])
  peers = parser.add_mutually_exclusive_group()
  peers.add_argument("--peers", action="store_true",
                     help="time levanter and nanodo (say so when a venv is missing)")
  peers.add_argument("--no-peers", action="store_true", help="time our two steps only")
  parser.add_argument("--untied", action="store_true",
                      help="untied output layer for ours (as gin/models/tiny.gin); default "
                      "tied, as both peers")
  parser.add_argument("--no-swiglu", action="store_true",
                      help="skip our steps with our default MLP (SwiGLU)")
  parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
  parser.add_argument("--worker", choices=OURS, help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args.worker:
    return worker(args)
  if args.steps < 10:
    parser.error("--steps must be >= 10")
  vocabs = args.vocab or [50257, 512]
  names, skipped = ["ours_plain", "ours_proxy"], {}
  for name in ("levanter_doremi", "nanodo_plain"):
    peer = CONTENDERS[name][0]
    if args.no_peers:
      skipped[peer] = "--no-peers"
    elif peer_python(peer):
      names.append(name)
    else:
      skipped[peer] = f"no venv in {os.path.normpath(PEERS_DIR)}: make bench-peers"
      if args.peers:
        print(f"{peer} not measured: its venv is not built; run `make bench-peers` "
              f"(benchmarks/peers/build_envs.sh, see benchmarks/README.md)", file=sys.stderr)
  names += [] if args.no_swiglu else ["ours_plain_swiglu", "ours_proxy_swiglu"]
  load = [os.getloadavg()]
  reps = {v: {n: [] for n in names} for v in vocabs}
  for rep in range(args.reps):
    for vocab in vocabs:
      for name in names:
        run = run_contender(name, vocab, args)
        reps[vocab][name].append(run)
        t = f"{run['median_s']:.4f} s" if "error" not in run else run["error"]
        print(f"rep {rep + 1} vocab {vocab} {name}: {t}", file=sys.stderr, flush=True)
    load.append(os.getloadavg())
  results = [summarize(v, reps[v]) for v in vocabs]
  meta = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
          "machine": f"{platform.machine()} {os.cpu_count()} CPUs {platform.processor()}",
          "jax_ours": jax.__version__, "load_average": load,
          "command": " ".join(["benchmarks/step_time.py"] + (argv or sys.argv[1:])),
          "batch": args.batch, "seq": args.seq, "tied_embeddings_ours": not args.untied,
          "steps": args.steps, "warmup": args.warmup, "reps": args.reps}
  print("ours: the peers' GELU MLP (targets judged on it); swiglu: our default MLP, three "
        "matrices against two (reported only)")
  print(f"one CPU device, batch {args.batch} x seq {args.seq}, f32; each contender in its own "
        f"process, {args.reps} interleaved repetitions x {args.steps} timed steps, median of "
        f"the repetitions' medians; ours {'untied' if args.untied else 'tied'}")
  print(format_table(results, skipped))
  print(f"{meta['date']}  {meta['machine']}  jax {meta['jax_ours']} (ours)  load avg "
        + " -> ".join("/".join(f"{x:.1f}" for x in la) for la in load))
  if args.json:
    with open(args.json, "w") as f:
      json.dump({"meta": meta, "results": results}, f, indent=2)
  recompiled = [f"{n} vocab {r['vocab']}" for r in results for n in OURS
                if n in r["contenders"] for run in r["contenders"][n]
                if run.get("compiles", 1) != 1]
  failed = any("error" in run for r in results for runs in r["contenders"].values()
               for run in runs)
  return bench_setup.exit_status(recompiled) or int(failed)


if __name__ == "__main__":
  sys.exit(main())
