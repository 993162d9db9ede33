"""More rows of docs/errors.md (issue 21: settings checked before anything is written,
wrong pairings refused, corpus faults named): each builds only its own files under
``base`` and returns (CLI main, argv) for ``tests/test_errors.py::test_one_line_error``."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Callable

import seqio

from doremi_jax import corpus as corpus_cli
from doremi_jax import mixture_files
from doremi_jax import pipeline as pipeline_cli
from doremi_jax import train as train_cli
from doremi_jax.corpora import prepare, synthetic_text
from doremi_jax.run import paths
from doremi_jax.tasks import prepared as prepared_tasks

LEN = 32


def prepared_corpus(base: Path) -> Path:
  """The error tests' corpus: the generated text domains, prepared with byte ids under
  ``base/prepared`` (source ``base/src``) and registered as ``prepared_*`` Tasks."""
  synthetic_text.write_corpus(str(base / "src"), scale=0.03)
  prepare.prepare(f"dir:{base / 'src'}", str(base / "prepared"), model="bytes",
                  sequence_length=LEN)
  prepared_tasks.register_prepared(str(base / "prepared"))
  return base


def _copy_run(done: Path, target: Path, edit: Callable[[Path], None]) -> Path:
  """A copy of the finished reference run, edited (a proxy's summary, a lost summary)."""
  if not target.exists():
    shutil.copytree(done, target)
    edit(target)
  return target


def _as_proxy(run: Path) -> None:
  path = run / paths.TRAIN_SUMMARY_FILE
  path.write_text(json.dumps({**json.loads(path.read_text()), "kind": "proxy"}))


def _unfinished(run: Path) -> None:
  (run / paths.TRAIN_SUMMARY_FILE).unlink()


def _prepared_export(base: Path, name: str, text: str, export: bool = True
                     ) -> tuple[Path, str | None]:
  """A small corpus prepared under ``base/name`` and a mixture module exported over it."""
  src, out = base / f"{name}_src", base / name
  shutil.rmtree(src, ignore_errors=True)
  src.mkdir()
  for domain in ("alpha", "beta"):
    (src / f"{domain}.jsonl").write_text("".join(
        json.dumps({"text": f"{text} {domain} {i} " * 12}) + "\n" for i in range(40)))
  prepare.prepare(f"dir:{src}", str(out), model="bytes", sequence_length=LEN, overwrite=True)
  tasks = prepared_tasks.register_prepared(str(out), prefix=name)
  module = mixture_files.write_exports(
      str(base / f"{name}_export"), f"{name}_mix", dict(zip(tasks, (0.5, 0.5))), {},
      overwrite=True)["module"] if export else None
  for task in tasks:  # a new process would not have them: the module registers them again
    seqio.TaskRegistry.remove(task)
  return src, module


def _over_other_data(base: Path) -> str:
  src, module = _prepared_export(base, "swapped", "first corpus")
  _prepared_export(base, "swapped", "second corpus, other text", export=False)  # same place
  for task in ("swapped_alpha", "swapped_beta"):
    if task in seqio.TaskRegistry.names():
      seqio.TaskRegistry.remove(task)
  return module


def _moved(base: Path) -> str:
  _, module = _prepared_export(base, "moved", "a corpus that moves")
  shutil.rmtree(base / "moved_elsewhere", ignore_errors=True)
  os.rename(base / "moved", base / "moved_elsewhere")
  return module


def _corpus(base: Path, name: str, files: dict[str, str]) -> Path:
  src = base / name
  shutil.rmtree(src, ignore_errors=True)
  src.mkdir()
  for file, text in files.items():
    (src / file).write_text(text)
  return src


def _empty_domain(base: Path) -> Path:
  """One domain of text, one whose only document is whitespace, one empty file."""
  return _corpus(base, "empty_domain", {"ok.jsonl": json.dumps({"text": "x " * 99}) + "\n",
                                        "blank.jsonl": json.dumps({"text": "   "}) + "\n",
                                        "void.jsonl": ""})


def _looping_link(base: Path) -> Path:
  src = _corpus(base, "looping", {"ok.jsonl": json.dumps({"text": "fine " * 50}) + "\n"})
  os.symlink(src / "loop.jsonl", src / "loop.jsonl")
  return src


def _tiny_domain(base: Path) -> Path:
  out = base / "tiny_prepared"
  if not out.exists():
    src = base / "tiny_src"
    synthetic_text.write_corpus(str(src), scale=0.03)
    (src / "tiny.jsonl").write_text(json.dumps({"text": "too short"}) + "\n")
    prepare.prepare(f"dir:{src}", str(out), model="bytes", sequence_length=LEN)
  return out


def _bad_gin(base: Path) -> str:
  path = base / "syntax_error.gin"
  path.write_text("train.log_every = (5\n")
  return str(path)


def cases(base: Path, new: Callable[[str], Path], done: Path, train: Callable) -> dict:
  """case -> a thunk giving (CLI main, argv)."""
  def proxy(name: str, *bindings: str, reference: Path = done):
    return train_cli.main, train(base, new(name), f"--gin.REFERENCE_MODEL_DIR='{reference}'",
                                 *bindings, run_gin="runs/proxy.gin")

  def run(name: str, *bindings: str):
    return train_cli.main, train(base, new(name), *bindings)

  def online(name: str, *bindings: str, reference: Path = done):
    return train_cli.main, train(base, new(name), f"--gin.REFERENCE_MODEL_DIR='{reference}'",
                                 "--gin.MIXTURE_OR_TASK_NAME='prepared_natural'", *bindings,
                                 run_gin="runs/online.gin")

  def prep(*args: str):
    return corpus_cli.main, ["prepare", *args]

  return {
      "online_without_reference": lambda: run("on1", "--gin.train.kind='online'"),
      "online_sweep": lambda: online("on2", "--gin.DoremiConfig.step_size=[1.0, 0.1]"),
      "online_reference_unfinished": lambda: online(
          "on3", reference=_copy_run(done, base / "unfinished", _unfinished)),
      "gin_syntax_binding": lambda: run("g1", "--gin.train.log_every=(5"),
      "gin_syntax_file": lambda: run("g2", f"--gin_file={_bad_gin(base)}"),
      "unknown_flag": lambda: run("g3", "--no_such_flag=1"),
      "doremi_step_size_text": lambda: proxy("d1", "--gin.DoremiConfig.step_size='abc'"),
      "doremi_step_size_negative": lambda: proxy("d2", "--gin.DoremiConfig.step_size=-1.0"),
      "doremi_step_size_empty": lambda: proxy("d3", "--gin.DoremiConfig.step_size=[]"),
      "doremi_smoothing_negative": lambda: proxy("d4", "--gin.DoremiConfig.smoothing=-0.1"),
      "doremi_objective": lambda: proxy("d5", "--gin.DoremiConfig.objective='pooled'"),
      "vocab_size_huge": lambda: run("v1", "--gin.VOCAB_SIZE=4000000000"),
      "mesh_axis_zero": lambda: run("m1", "--gin.make_mesh.mesh_shape=(0, -1, 1)"),
      "learning_rate_negative": lambda: run("o1", "--gin.make_optimizer.learning_rate=-1.0"),
      "resume_two_changes": lambda: (train_cli.main, train(
          base, done, "--gin.RESUME=True", "--gin.make_optimizer.learning_rate=0.001",
          "--gin.make_optimizer.warmup_steps=7")),
      "reference_is_a_proxy": lambda: proxy(
          "r1", reference=_copy_run(done, base / "proxy_like", _as_proxy)),
      "reference_unfinished": lambda: proxy(
          "r2", reference=_copy_run(done, base / "unfinished", _unfinished)),
      "export_over_other_data": lambda: run(
          "x1", f"--gin.TASK_MODULES=['{_over_other_data(base)}']"),
      "export_data_moved": lambda: run("x2", f"--gin.TASK_MODULES=['{_moved(base)}']"),
      "domain_without_sequences": lambda: run("t1", f"--gin.PREPARED_DIR='{_tiny_domain(base)}'"),
      "pipeline_steps_zero": lambda: (pipeline_cli.main, [
          "--gin_file=experiments/prepared.gin", f"--gin.PREPARED_DIR='{base / 'prepared'}'",
          f"--gin.SEQUENCE_LENGTH={LEN}", "--gin.VOCAB_SIZE=259",
          f"--gin.pipeline.experiment_dir='{new('p1')}'", "--gin.pipeline.reference_steps=0"]),
      "prepare_bytes_with_vocab_size": lambda: prep(
          f"--source=dir:{base / 'src'}", "--tokenizer=bytes", "--vocab_size=300",
          f"--out={new('c1')}"),
      "prepare_out_holds_other_corpus": lambda: prep(
          f"--source=dir:{base / 'src'}", "--tokenizer=bytes", "--sequence_length=64",
          f"--out={base / 'prepared'}"),
      "prepare_empty_domain": lambda: prep(
          f"--source=dir:{_empty_domain(base)}", "--tokenizer=bytes", f"--out={new('c2')}"),
      "corpus_file_loops": lambda: prep(
          f"--source=dir:{_looping_link(base)}", "--tokenizer=bytes", f"--out={new('c3')}"),
  }
