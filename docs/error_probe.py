"""Issue 21's bad-input cases, run as a new user runs them (one command-line process each),
against whatever checkout ``PYTHONPATH`` points at; prints a markdown table: exit code,
stderr lines, whether a traceback was printed, what was left behind, and the first line.

    python docs/error_probe.py [--work DIR] [--only CASE ...] > probe.md
    # another checkout: PYTHONPATH=/path/to/checkout python docs/error_probe.py
    # (each command runs in the work dir, so PYTHONPATH, not the working dir, picks the code)

Only the command lines are used (``python -m doremi_jax.<cli>``), so the same probe runs on
code from before and after a change. Each case is ~5-10 s (a fresh process each).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

PY = sys.executable
LEN = 32
WORK_DIR = [tempfile.gettempdir()]  # where commands run: ``python -m`` puts it on sys.path


def cli(module: str, *args: str, env=None, limit_fsize: int | None = None, cwd=None):
  def limit():
    import resource  # pylint: disable=g-import-not-at-top
    import signal  # pylint: disable=g-import-not-at-top
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit_fsize, resource.RLIM_INFINITY))
  return subprocess.run([PY, "-m", f"doremi_jax.{module}", *args], capture_output=True,
                        text=True, timeout=900, env={**os.environ, **(env or {})},
                        cwd=cwd or WORK_DIR[0], preexec_fn=limit if limit_fsize else None)


def write_corpus(path: str, domains: dict[str, list[str]]) -> str:
  shutil.rmtree(path, ignore_errors=True)
  os.makedirs(path)
  for name, texts in domains.items():
    with open(os.path.join(path, f"{name}.jsonl"), "w") as f:
      f.writelines(json.dumps({"text": t}) + "\n" for t in texts)
  return path


def texts(word: str, n: int = 300) -> list[str]:
  return [f"{word} {i} " * 10 for i in range(n)]


class Work:
  """The fixtures every case shares: a corpus, its prepared copy, a finished reference."""

  def __init__(self, root: str):
    self.root = root
    self.src = write_corpus(f"{root}/src", {d: texts(d) for d in ("alpha", "beta", "gamma")})
    self.prepared = f"{root}/prepared"
    if not os.path.exists(f"{self.prepared}/manifest.json"):
      cli("corpus", "prepare", f"--source=dir:{self.src}", "--tokenizer=bytes",
          f"--sequence_length={LEN}", f"--out={self.prepared}")
    self.reference = f"{root}/reference"
    if not os.path.exists(f"{self.reference}/train_summary.json"):
      cli("train", *self.train_args(self.reference))

  def train_args(self, model_dir: str, *extra: str, run: str = "runs/reference.gin",
                 prepared: str | None = None) -> list[str]:
    return [f"--gin_file={run}", "--gin_file=experiments/prepared.gin",
            f"--gin.PREPARED_DIR='{prepared or self.prepared}'", f"--gin.SEQUENCE_LENGTH={LEN}",
            "--gin.VOCAB_SIZE=259", f"--gin.MODEL_DIR='{model_dir}'", "--gin.TRAIN_STEPS=4",
            "--gin.train.progress=False", "--gin.train.checkpoint_every=2", *extra]

  def proxy_args(self, model_dir: str, *extra: str, reference: str | None = None) -> list[str]:
    return self.train_args(model_dir, f"--gin.REFERENCE_MODEL_DIR='{reference or self.reference}'",
                           *extra, run="runs/proxy.gin")

  def new(self, name: str) -> str:
    path = f"{self.root}/new/{name}"
    shutil.rmtree(path, ignore_errors=True)
    return path


def _copy(src: str, dest: str) -> str:
  shutil.rmtree(dest, ignore_errors=True)
  shutil.copytree(src, dest)
  return dest


def _export_over(w: Work, name: str, text: str) -> tuple[str, str]:
  """A corpus prepared at ``root/name`` and a mixture module exported over it."""
  src = write_corpus(f"{w.root}/{name}_src", {d: texts(f"{text} {d}") for d in ("alpha", "beta")})
  out = f"{w.root}/{name}"
  shutil.rmtree(out, ignore_errors=True)
  cli("corpus", "prepare", f"--source=dir:{src}", "--tokenizer=bytes",
      f"--sequence_length={LEN}", f"--out={out}")
  weights = {f"{name}_alpha": 0.5, f"{name}_beta": 0.5}
  code = ("import sys; from doremi_jax import mixture_files; from doremi_jax.tasks import "
          f"prepared; prepared.register_prepared({out!r}, prefix={name!r}); "
          f"mixture_files.write_exports({w.root + '/exports'!r}, {name + '_mix'!r}, "
          f"{weights!r}, {{}}, overwrite=True)")
  subprocess.run([PY, "-c", code], check=True, capture_output=True, cwd=WORK_DIR[0])
  return out, f"{w.root}/exports/{name}_mix.py"


def _cases(w: Work) -> dict:
  """case -> a function returning the probed process (set-up runs inside it)."""
  def bad_gin():
    path = f"{w.root}/bad.gin"
    with open(path, "w") as f:
      f.write("train.log_every = (5\n")
    return cli("train", *w.train_args(w.new("g1"), f"--gin_file={path}"))

  def symlink_loop(command):
    src = write_corpus(f"{w.root}/loop", {"ok": texts("ok", 50)})
    os.symlink(f"{src}/loop.jsonl", f"{src}/loop.jsonl")
    if command == "prepare":
      return cli("corpus", "prepare", f"--source=dir:{src}", "--tokenizer=bytes",
                 f"--out={w.new('loop_out')}")
    return cli("corpus", "stats", src, "--vocab", "bytes")

  def full_disk():
    out = w.new("full")
    before = set(os.listdir(tempfile.gettempdir()))
    proc = cli("corpus", "prepare", f"--source=dir:{w.src}", "--tokenizer=bytes",
               f"--out={out}", limit_fsize=20 << 10)
    left = [n for n in set(os.listdir(tempfile.gettempdir())) - before
            if n.endswith(".array_record")]
    proc.left = f"{len(left)} tmp shard(s) in the system temp dir" if left else ""
    return proc

  def damaged(item):
    run = _copy(w.reference, f"{w.root}/damaged_{item}")
    shutil.rmtree(f"{run}/checkpoints/4/{item}")
    return cli("train", *w.train_args(run, "--gin.TRAIN_STEPS=6", "--gin.RESUME=True",
                                      "--gin.RESUME_IGNORE_CHANGES=['train.train_steps']"))

  def out_other_corpus():
    other = _copy(w.prepared, f"{w.root}/other_prepared")
    return cli("corpus", "prepare", f"--source=dir:{w.src}", "--tokenizer=bytes",
               "--sequence_length=64", f"--out={other}")

  def empty_domain(text):
    src = write_corpus(f"{w.root}/empty", {"ok": texts("ok", 50), "blank": [text] if text else []})
    return cli("corpus", "prepare", f"--source=dir:{src}", "--tokenizer=bytes",
               f"--out={w.new('empty_out')}")

  def export_other_corpus():
    out, module = _export_over(w, "swap", "first")
    src = write_corpus(f"{w.root}/swap_src2", {d: texts(f"second {d}") for d in ("alpha", "beta")})
    shutil.rmtree(out)
    cli("corpus", "prepare", f"--source=dir:{src}", "--tokenizer=bytes",
        f"--sequence_length={LEN}", f"--out={out}")
    return cli("train", *w.train_args(w.new("swap_run"), f"--gin.TASK_MODULES=['{module}']",
                                      "--gin.BASELINE_MIXTURE='swap_mix'"))

  def moved():
    out, module = _export_over(w, "moving", "moves")
    shutil.rmtree(f"{out}_elsewhere", ignore_errors=True)
    os.rename(out, f"{out}_elsewhere")
    return cli("train", *w.train_args(w.new("moved_run"), f"--gin.TASK_MODULES=['{module}']",
                                      "--gin.BASELINE_MIXTURE='moving_mix'"))

  def proxy_as_reference():
    proxy = w.new("a_proxy")
    cli("train", *w.proxy_args(proxy))
    return cli("train", *w.proxy_args(w.new("p2"), reference=proxy))

  def unfinished_reference():
    run = _copy(w.reference, f"{w.root}/unfinished")
    os.remove(f"{run}/train_summary.json")
    return cli("train", *w.proxy_args(w.new("p3"), reference=run))

  def official_wrong_names():
    path = f"{w.root}/official.json"
    with open(path, "w") as f:
      json.dump({"train_domain_weights": {"alpha": 0.5, "omega": 0.5},
                 "eval_domain_weights": {"alpha": 0.5, "omega": 0.5}}, f)
    return cli("train", *w.train_args(w.new("o1"), f"--gin.TASK_MODULES=['{path}']"))

  def tiny_domains():
    src = write_corpus(f"{w.root}/tiny", {**{f"t{i}": ["short"] for i in range(40)},
                                          "big": texts("big")})
    return cli("corpus", "prepare", f"--source=dir:{src}", "--tokenizer=bytes",
               f"--sequence_length={LEN}", f"--out={w.new('tiny_out')}")

  def small_vocab():
    src = write_corpus(f"{w.root}/small", {"a": texts("small corpus", 40)})
    return cli("corpus", "prepare", f"--source=dir:{src}", "--vocab_size=4000",
               f"--sequence_length={LEN}", f"--out={w.new('small_out')}")

  def with_dir(name, args):  # the new MODEL_DIR is checked for leftovers
    def run():
      proc = cli("train", *args)
      proc.model_dir = f"{w.root}/new/{name}"
      return proc
    return run

  def proxy(name, *bindings):
    return with_dir(name, w.proxy_args(w.new(name), *bindings))

  return {
      "gin syntax error in a file": bad_gin,
      "gin syntax error in a binding": with_dir("g2", w.train_args(
          w.new("g2"), "--gin.train.log_every=(5")),
      "step_size='abc'": proxy("d1", "--gin.DoremiConfig.step_size='abc'"),
      "step_size=-1.0": proxy("d2", "--gin.DoremiConfig.step_size=-1.0"),
      "smoothing=1.5": proxy("d3", "--gin.DoremiConfig.smoothing=1.5"),
      "smoothing=-0.1": proxy("d4", "--gin.DoremiConfig.smoothing=-0.1"),
      "estimator='tokenclip'": proxy("d5", "--gin.DoremiConfig.estimator='tokenclip'"),
      "objective='pooled'": proxy("d6", "--gin.DoremiConfig.objective='pooled'"),
      "step_size=[]": proxy("d7", "--gin.DoremiConfig.step_size=[]"),
      "VOCAB_SIZE=4000000000": with_dir("v1", w.train_args(
          w.new("v1"), "--gin.VOCAB_SIZE=4000000000")),
      "mesh_shape=(0,-1,1)": with_dir("m1", w.train_args(
          w.new("m1"), "--gin.make_mesh.mesh_shape=(0,-1,1)")),
      "learning_rate=-1.0": with_dir("l1", w.train_args(
          w.new("l1"), "--gin.make_optimizer.learning_rate=-1.0")),
      "corpus file is a symlink loop (prepare)": lambda: symlink_loop("prepare"),
      "corpus file is a symlink loop (stats)": lambda: symlink_loop("stats"),
      "prepare under ulimit -f 20 KiB": full_disk,
      "resume: latest checkpoint's params removed": lambda: damaged("params"),
      "resume: latest checkpoint's state removed": lambda: damaged("state"),
      "prepare --out holding another corpus": out_other_corpus,
      "an empty domain file": lambda: empty_domain(""),
      "a whitespace-only domain": lambda: empty_domain("   "),
      "export used over another corpus": export_other_corpus,
      "corpus moved (outside the data root)": moved,
      "REFERENCE_MODEL_DIR is a proxy run": proxy_as_reference,
      "REFERENCE_MODEL_DIR unfinished": unfinished_reference,
      "--tokenizer=bytes --vocab_size=300": lambda: cli(
          "corpus", "prepare", f"--source=dir:{w.src}", "--tokenizer=bytes", "--vocab_size=300",
          f"--out={w.new('bv')}"),
      "pipeline.reference_steps=0": lambda: cli("pipeline", *[
          a for a in w.train_args("unused") if "MODEL_DIR" not in a and "TRAIN_STEPS" not in a
          and "runs/" not in a], f"--gin.pipeline.experiment_dir='{w.new('pipe')}'",
          "--gin.pipeline.reference_steps=0"),
      "resume with two changed settings": lambda: cli("train", *w.train_args(
          w.reference, "--gin.RESUME=True", "--gin.make_optimizer.learning_rate=0.001",
          "--gin.make_optimizer.warmup_steps=7")),
      "reference-format JSON with unknown names (TASK_MODULES)": official_wrong_names,
      "40 domains too small for one sequence": tiny_domains,
      "unknown flag": lambda: cli("train", *w.train_args(w.new("u1"), "--no_such_flag")),
      "prepare --vocab_size larger than a small corpus supports": small_vocab,
  }


def _row(name: str, proc) -> str:
  err = [ln for ln in proc.stderr.splitlines() if ln.strip()]
  first = next((ln for ln in err if ln.startswith(("error:", "warning:"))), err[-1] if err else "")
  left = getattr(proc, "left", "")
  model_dir = getattr(proc, "model_dir", None)
  if model_dir and os.path.isdir(model_dir):
    files = [f for _, _, fs in os.walk(model_dir) for f in fs if f != ".lock"]
    left = left or (f"{len(files)} file(s) in the new MODEL_DIR" if files else "")
  cut = first if len(first) <= 150 else first[:147] + "..."
  cut = cut.replace("|", "\\|")
  traceback = "yes" if "Traceback" in proc.stderr else ""
  return f"| {name} | {proc.returncode} | {len(err)} | {traceback} | {left} | `{cut}` |"


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--work", default=None, help="fixtures dir (default: a new temp dir)")
  ap.add_argument("--only", nargs="*", default=None)
  args = ap.parse_args()
  root = os.path.abspath(args.work or tempfile.mkdtemp(prefix="error_probe_"))
  os.makedirs(root, exist_ok=True)
  WORK_DIR[0] = root
  work = Work(root)
  print("| case | exit | stderr lines | traceback | left behind | first error/warning line |")
  print("|---|---|---|---|---|---|")
  for name, run in _cases(work).items():
    if args.only and name not in args.only:
      continue
    print(_row(name, run()), flush=True)


if __name__ == "__main__":
  main()
