"""Every row of docs/errors.md, run as written: one ``error:`` line matching the catalogue's
message, exit code 2, no traceback, and nothing already written changed."""
from __future__ import annotations

import contextlib
import errno
import gzip
import json
import re
import resource
import shutil
import signal
from pathlib import Path

import error_cases  # noqa: E402  (tests/error_cases.py: issue 21's rows)
import gin
import pytest
import zstandard

from doremi_jax import corpus as corpus_cli
from doremi_jax import errors, mixture_files
from doremi_jax import train as train_cli
from doremi_jax.run import lock, paths

ROOT = Path(__file__).resolve().parents[1]
CATALOGUE = ROOT / "docs" / "errors.md"
LEN = 32


def _catalogue() -> dict[str, str]:
  """case -> message template, from the table of docs/errors.md."""
  rows = {}
  for line in CATALOGUE.read_text().splitlines():
    m = re.match(r"^\| `([a-z_]+)` \| .* \| `(.*)` \|$", line)
    if m:
      rows[m.group(1)] = m.group(2)
  return rows


def _pattern(template: str) -> re.Pattern:
  parts = re.split(r"<[^>]*>", template)
  return re.compile(".*".join(re.escape(p) for p in parts) + "$", re.S)


@pytest.fixture(scope="module")
def ctx(tmp_path_factory):
  base = error_cases.prepared_corpus(tmp_path_factory.mktemp("errors"))
  done = base / "done"
  _run(train_cli.main, _train(base, done))
  assert (done / "train_summary.json").exists()
  return base


def _train(base: Path, model_dir: Path, *extra: str, run_gin="runs/reference.gin") -> list[str]:
  return [f"--gin_file={run_gin}", "--gin_file=experiments/prepared.gin",
          f"--gin.PREPARED_DIR='{base / 'prepared'}'", f"--gin.SEQUENCE_LENGTH={LEN}",
          "--gin.VOCAB_SIZE=259", f"--gin.MODEL_DIR='{model_dir}'", "--gin.TRAIN_STEPS=4",
          "--gin.train.progress=False", "--gin.train.log_every=2",
          "--gin.train.checkpoint_every=2", *extra]


def _run(main, argv):
  gin.clear_config()
  try:
    return main(argv)
  finally:
    gin.clear_config()


def _weights_file(base: Path, name: str, weights: dict) -> str:
  path = base / f"{name}.json"
  path.write_text(json.dumps({"name": name, "domain_weights": weights}))  # NaN as JSON's NaN
  return str(path)


def _domains():
  return ["prepared_arithmetic", "prepared_constant", "prepared_grammar", "prepared_random"]


def _edited_module(base: Path) -> str:
  weights = dict(zip(_domains(), (0.3, 0.3, 0.2, 0.2)))
  paths = mixture_files.write_exports(str(base / "exports"), "edited", weights, {},
                                      overwrite=True)
  text = Path(paths["module"]).read_text().replace(": 0.3,", ": 0.0,", 1)
  Path(paths["module"]).write_text(text)
  return paths["module"]


def _broken_corpus(base: Path, kind: str) -> Path:
  src = base / f"broken_{kind}"
  shutil.rmtree(src, ignore_errors=True)
  (src / "news").mkdir(parents=True)
  data = "".join(json.dumps({"text": f"story {i} " * 40}) + "\n" for i in range(400)).encode()
  (src / "ok.jsonl").write_text(json.dumps({"text": "fine"}) + "\n")
  if kind == "zst":
    blob = zstandard.ZstdCompressor().compress(data)
    (src / "news" / "part.jsonl.zst").write_bytes(blob[: len(blob) // 2])
  else:
    (src / "news" / "part.jsonl.gz").write_bytes(gzip.compress(data)[:2000])
  return src


def _bad_line_corpus(base: Path) -> Path:
  src = base / "bad_line"
  shutil.rmtree(src, ignore_errors=True)
  src.mkdir()
  lines = [json.dumps({"text": f"story {i}"}) for i in range(20)]
  lines[10] = '{"text": "cut sh'
  (src / "news.jsonl.gz").write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
  return src


def _no_text_module(base: Path) -> str:
  """A user's module registering a domain whose source yields no 'text' field."""
  path = base / "user_no_text.py"
  path.write_text(
      "import seqio\nimport tensorflow as tf\nfrom doremi_jax.data import domains\n"
      "def docs(split, shuffle_files, seed=None):\n"
      "  return tf.data.Dataset.from_tensor_slices({'content': ['a document'] * 64})\n"
      "domains.register_domain_task('user_no_text', seqio.FunctionDataSource(\n"
      "    docs, splits=['train', 'validation', 'test']), seqio.ByteVocabulary())\n")
  return str(path)


def _cases(base: Path) -> dict:
  """case -> (CLI main, argv); built lazily so each case makes only its own files."""
  new = lambda name: base / "new" / name  # noqa: E731
  done = base / "done"

  def weights_case(name, values):
    path = _weights_file(base, name, dict(zip(_domains(), values)))
    return train_cli.main, _train(base, new(name), f"--gin.TASK_MODULES=['{path}']")

  def proxy_case(name, *bindings):
    return train_cli.main, _train(base, new(name), f"--gin.REFERENCE_MODEL_DIR='{done}'",
                                  *bindings, run_gin="runs/proxy.gin")

  return {
      **error_cases.cases(base, new, done, _train),
      "doremi_smoothing": lambda: proxy_case("d_smooth", "--gin.DoremiConfig.smoothing=2.0"),
      "doremi_estimator": lambda: proxy_case("d_est", "--gin.DoremiConfig.estimator='median'"),
      "batch_size_string": lambda: (train_cli.main, _train(
          base, new("a"), "--gin.BATCH_SIZE='16'")),
      "batch_size_zero": lambda: (train_cli.main, _train(base, new("b"), "--gin.BATCH_SIZE=0")),
      "checkpoint_every_zero": lambda: (train_cli.main, _train(
          base, new("c"), "--gin.train.checkpoint_every=0")),
      "train_steps_zero": lambda: (train_cli.main, _train(
          base, new("d"), "--gin.TRAIN_STEPS=0")),
      "microbatches_zero": lambda: (train_cli.main, _train(
          base, new("d0"), "--gin.train.microbatches=0")),
      "microbatches_indivisible": lambda: (train_cli.main, _train(
          base, new("d1"), "--gin.train.microbatches=3")),
      "seed_float": lambda: (train_cli.main, _train(base, new("e"), "--gin.SEED=1.5")),
      "eval_every_zero": lambda: (train_cli.main, _train(
          base, new("e1"), "--gin.train.eval_every=0")),
      "feature_lengths_list": lambda: (train_cli.main, _train(
          base, new("f"), "--gin.TASK_FEATURE_LENGTHS=[128]")),
      "sequence_length_mismatch": lambda: (train_cli.main, _train(
          base, new("g"), "--gin.SEQUENCE_LENGTH=64")),
      "unknown_mixture": lambda: (train_cli.main, _train(
          base, new("h"), "--gin.BASELINE_MIXTURE='no_such_mixture'")),
      "vocab_too_small": lambda: (train_cli.main, _train(
          base, new("i"), "--gin.VOCAB_SIZE=100")),
      "missing_gin_file": lambda: (train_cli.main, _train(
          base, new("j"), "--gin_file=no_such_file.gin")),
      "bad_binding": lambda: (train_cli.main, _train(base, new("k"), "--gin.nonexistent.x=1")),
      "prepared_dir_missing": lambda: (train_cli.main, _train(
          base, new("l"), f"--gin.PREPARED_DIR='{base / 'nothing'}'")),
      "model_dir_not_empty": lambda: (train_cli.main, _train(base, done)),
      "model_dir_in_use": lambda: (train_cli.main, _train(base, base / "live")),
      "model_dir_under_a_file": lambda: (train_cli.main, _train(
          base, base / "prepared" / "manifest.json" / "run")),
      "model_dir_no_room": lambda: (_without_room(train_cli.main), _train(
          base, done, "--gin.RESUME=True")),
      "resume_changed_setting": lambda: (train_cli.main, _train(
          base, done, "--gin.RESUME=True", "--gin.make_optimizer.learning_rate=0.001")),
      "resume_changed_vocab": lambda: (train_cli.main, _train(
          base, done, "--gin.RESUME=True", "--gin.VOCAB_SIZE=300")),
      "resume_more_steps": lambda: (train_cli.main, _train(
          base, done, "--gin.RESUME=True", "--gin.TRAIN_STEPS=6")),
      "proxy_without_reference": lambda: (train_cli.main, _train(
          base, new("m"), run_gin="runs/proxy.gin")),
      "reference_not_trained": lambda: (train_cli.main, _train(
          base, new("n"), f"--gin.REFERENCE_MODEL_DIR='{base / 'empty_ref'}'",
          run_gin="runs/proxy.gin")),
      "nan_loss": lambda: (train_cli.main, _train(
          base, new("o"), "--gin.make_optimizer.learning_rate=1e9",
          "--gin.make_optimizer.warmup_steps=0", "--gin.make_optimizer.grad_clip_norm=1e30",
          "--gin.TRAIN_STEPS=20")),
      "weights_sum": lambda: weights_case("w_sum", (0.4, 0.2, 0.05, 0.05)),
      "weights_negative": lambda: weights_case("w_neg", (0.6, 0.5, -0.2, 0.1)),
      "weights_nan": lambda: weights_case("w_nan", (0.5, 0.5, 0.0, float("nan"))),
      "weights_unknown_domain": lambda: (train_cli.main, _train(
          base, new("s"), "--gin.TASK_MODULES=['{}']".format(_weights_file(
              base, "w_unknown", {"prepared_no_such_domain": 0.5, "prepared_constant": 0.5})))),
      "module_sum": lambda: (train_cli.main, _train(
          base, new("t"), f"--gin.TASK_MODULES=['{_edited_module(base)}']")),
      "source_without_text": lambda: (train_cli.main, _train(
          base, new("y"), f"--gin.TASK_MODULES=['{_no_text_module(base)}']",
          "--gin.BASELINE_MIXTURE='user_no_text'")),
      "prepare_unknown_source": lambda: (corpus_cli.main, [
          "prepare", "--source=foo:/x", "--tokenizer=bytes", f"--out={new('u')}"]),
      "prepare_out_inside_source": lambda: (corpus_cli.main, [
          "prepare", f"--source=dir:{base / 'src'}", "--tokenizer=bytes",
          f"--out={base / 'src' / 'inside'}"]),
      "bad_json_line": lambda: (corpus_cli.main, [
          "prepare", f"--source=dir:{_bad_line_corpus(base)}", "--tokenizer=bytes",
          f"--out={new('x')}"]),
      "truncated_zst": lambda: (corpus_cli.main, [
          "prepare", f"--source=dir:{_broken_corpus(base, 'zst')}", "--tokenizer=bytes",
          f"--out={new('v')}"]),
      "truncated_gz": lambda: (corpus_cli.main, [
          "prepare", f"--source=dir:{_broken_corpus(base, 'gz')}", "--tokenizer=bytes",
          f"--out={new('w')}"]),
  }


def _snapshot(directory: Path) -> dict[str, bytes]:
  return {str(p.relative_to(directory)): p.read_bytes()
          for p in sorted(directory.rglob("*")) if p.is_file() and p.name != lock.LOCK_FILE}


@pytest.mark.parametrize("case", sorted(_catalogue()))
def test_one_line_error(ctx, case, capsys):
  main, argv = _cases(ctx)[case]()
  before = _snapshot(ctx / "done")
  holder = lock.RunLock(str(ctx / "live"), "MODEL_DIR") if case == "model_dir_in_use" else None
  capsys.readouterr()
  try:
    if holder:
      holder.__enter__()
    with pytest.raises(SystemExit) as exit_info:
      _run(main, argv)
  finally:
    if holder:
      holder.__exit__(None, None, None)
  err = capsys.readouterr().err
  lines = [ln for ln in err.splitlines() if ln.strip()]
  assert exit_info.value.code == 2 and "Traceback" not in err, err
  assert len(lines) == 1 and lines[0].startswith("error: "), err
  assert _pattern(_catalogue()[case]).match(lines[0][len("error: "):]), (lines[0], case)
  assert _snapshot(ctx / "done") == before  # the finished run is untouched
  assert not (ctx / "done" / lock.LOCK_FILE).exists()  # and no lock is left behind
  started_runs = [] if case in TRAINED_BEFORE_FAILING else _new_run_dirs(ctx, argv)
  for started in started_runs:  # a refused new run leaves nothing half-started
    assert not started.exists() or not lock.holds_outputs(str(started)), sorted(
        p.name for p in started.rglob("*"))


TRAINED_BEFORE_FAILING = ("nan_loss",)  # past its set-up: its checkpoints are kept


def _new_run_dirs(ctx: Path, argv) -> list[Path]:
  found = re.findall(r"(?:MODEL_DIR|experiment_dir)='([^']+)'", " ".join(argv))
  return [Path(p) for p in found if Path(p).is_relative_to(ctx / "new")]


def test_catalogue_matches_the_cases(tmp_path):
  assert sorted(_catalogue()) == sorted(_cases(tmp_path))


def _file_size_limit(nbytes: int = 1 << 20):
  """Files over ``nbytes`` fail to write with EFBIG, the way a full disk fails them."""
  signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
  resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))


@contextlib.contextmanager
def _no_room():
  """In this process, for a moment: no file can grow (a full disk)."""
  limit, handler = resource.getrlimit(resource.RLIMIT_FSIZE), signal.getsignal(signal.SIGXFSZ)
  _file_size_limit(0)
  try:
    yield
  finally:
    resource.setrlimit(resource.RLIMIT_FSIZE, limit)
    signal.signal(signal.SIGXFSZ, handler)


def _without_room(main):
  def run(argv):
    with _no_room():
      return main(argv)
  return run


def test_a_full_disk_anywhere_is_one_line_and_keeps_the_old_file(tmp_path, capsys):
  """Past the start (e.g. the summary at the end), a full disk is one line naming the file,
  even through gin's re-raise, and the file it would have replaced is as it was."""
  summary = tmp_path / "train_summary.json"
  summary.write_text("{}")

  @gin.configurable("write_summary_without_room")
  def write_summary():
    with _no_room():
      paths.write_json(str(summary), {"steps": 2})

  with pytest.raises(SystemExit) as exit_info:
    errors.exit_on_user_error(lambda: write_summary())()  # pylint: disable=unnecessary-lambda
  lines = capsys.readouterr().err.splitlines()
  assert exit_info.value.code == 2 and len(lines) == 1, lines
  assert lines[0].startswith(f"error: no room to write '{summary}': File too large"), lines
  assert summary.read_text() == "{}" and [p.name for p in tmp_path.iterdir()] == [summary.name]

  def beam_step():  # Beam re-raises a worker's OSError as a RuntimeError, the OSError its context
    try:
      raise OSError(errno.EROFS, "Read-only file system", "/tmp/shard", None, "/out/shard")
    except OSError as exc:
      raise RuntimeError(f"OSError: {exc} [while running 'PackShards']") from None

  with pytest.raises(SystemExit):
    errors.exit_on_user_error(beam_step)()
  assert capsys.readouterr().err.splitlines() == [
      "error: cannot write '/out/shard': Read-only file system; fix the permissions or write "
      "elsewhere"]


def _checkpoint_steps(model_dir: Path) -> list[int]:
  return sorted(int(p.name) for p in (model_dir / "checkpoints").iterdir() if p.name.isdigit())


def test_a_failed_checkpoint_write_ends_with_one_line_and_resumes(ctx, tmp_path):
  """Checkpoint 3 is written; then files over 1 MiB fail to write (RLIMIT_FSIZE: the path a
  full disk takes), so checkpoint 6 fails: exit 2 and only the error line, checkpoint 3
  untouched, and the same command with room to write resumes from it and finishes."""
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  model_dir = tmp_path / "full"
  big = ["--gin.train.checkpoint_every=3", "--gin.VOCAB_SIZE=2048"]
  _run(train_cli.main, _train(ctx, model_dir, "--gin.TRAIN_STEPS=3", *big))
  assert _checkpoint_steps(model_dir) == [3]
  argv = [*_train(ctx, model_dir, "--gin.TRAIN_STEPS=6", *big), "--gin.RESUME=True",
          """--gin.RESUME_IGNORE_CHANGES=['train.train_steps']"""]
  proc = subprocess.run([sys.executable, "-m", "doremi_jax.train", *argv], cwd=ROOT,
                        capture_output=True, text=True, timeout=600,
                        preexec_fn=_file_size_limit)
  lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
  assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
  assert len(lines) == 1, proc.stderr[-2000:]
  assert lines[0].startswith(f"error: cannot write checkpoint 6 under {model_dir}")
  assert "File too large" in lines[0] and lines[0].endswith("from checkpoint 3"), lines[0]
  assert _checkpoint_steps(model_dir) == [3]
  assert _run(train_cli.main, argv)["steps"] == 6
  assert _checkpoint_steps(model_dir) == [3, 6]
  assert (model_dir / "config.3.gin").exists()  # the start that resumed from checkpoint 3
