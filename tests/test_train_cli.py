"""The training CLI end to end: reference -> proxy -> exports, resume, and one-line user
errors (exit code 2, a single ``error:`` line on stderr). Its ``main`` runs in this process;
what needs a fresh process (a new interpreter's stderr, a mixture module imported anew)
is a subprocess."""
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time

import in_process
import pytest

from doremi_jax import train as train_cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, JAX_PLATFORMS="cpu")
FAST = ["--gin.train.progress=False", "--gin.train.log_every=2",
        "--gin.train.checkpoint_every=3", '--gin.TASK_FEATURE_LENGTHS={"targets": 64}']
REF = ["--gin_file=runs/reference.gin", "--gin_file=experiments/synthetic.gin", *FAST]
PROXY = ["--gin_file=runs/proxy.gin", "--gin_file=experiments/synthetic.gin", *FAST]
STEPS = 6
EXPORT_FORMATS = (".json", ".py", ".gin", ".doremi.json")  # no MaxText: streamed domains


def cli(*args):
  """The train CLI in this process (``in_process.run_main``)."""
  return in_process.run_main(train_cli.main, args)


def cli_subprocess(*args):
  """The train CLI as a fresh process: what a user's shell sees (TensorFlow's start-up
  included)."""
  return subprocess.run([sys.executable, "-m", "doremi_jax.train", *args], cwd=ROOT, env=ENV,
                        capture_output=True, text=True, timeout=600)


def gin_str(value):
  return f'"{value}"'


def ok(proc):
  assert proc.returncode == 0, proc.stderr[-3000:]
  return proc


def snapshot(directory):
  """path -> (mtime_ns, sha1) of every file below ``directory``."""
  out = {}
  for base, _, files in os.walk(directory):
    for name in files:
      path = os.path.join(base, name)
      with open(path, "rb") as f:
        out[os.path.relpath(path, directory)] = (os.stat(path).st_mtime_ns,
                                                 hashlib.sha1(f.read()).hexdigest())
  return out


def error_line(proc, *needles):
  """Exit code 2, no traceback, and exactly one ``error:`` line, the last one on stderr."""
  assert proc.returncode == 2, (proc.returncode, proc.stderr[-3000:])
  assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
  lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
  errors = [ln for ln in lines if ln.startswith("error:")]
  assert len(errors) == 1 and lines[-1] == errors[0], proc.stderr
  for needle in needles:
    assert needle.lower() in errors[0].lower(), errors[0]
  return errors[0]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """A 6-step reference run, then a 6-step proxy run against it."""
  base = tmp_path_factory.mktemp("cli")
  ref, proxy = str(base / "ref"), str(base / "proxy")
  t0 = time.time()
  ok(cli(*REF, f"--gin.MODEL_DIR={gin_str(ref)}", f"--gin.TRAIN_STEPS={STEPS}"))
  t1 = time.time()
  ok(cli(*PROXY, f"--gin.MODEL_DIR={gin_str(proxy)}", f"--gin.TRAIN_STEPS={STEPS}",
         f"--gin.REFERENCE_MODEL_DIR={gin_str(ref)}"))
  return {"base": base, "ref": ref, "proxy": proxy, "ref_seconds": t1 - t0}


def _summary(model_dir):
  with open(os.path.join(model_dir, "train_summary.json")) as f:
    return json.load(f)


def _checkpoint_steps(model_dir):
  return sorted(int(d) for d in os.listdir(os.path.join(model_dir, "checkpoints")) if d.isdigit())


def _trajectory(model_dir):
  with open(os.path.join(model_dir, "domain_weights.jsonl")) as f:
    return [json.loads(line) for line in f]


def test_reference_run_outputs(runs):
  ref = runs["ref"]
  for name in ("config.gin", "train_summary.json", "checkpoints", "tensorboard"):
    assert os.path.exists(os.path.join(ref, name)), name
  assert not os.path.exists(os.path.join(ref, "domain_weights.jsonl"))
  summary = _summary(ref)
  assert summary["kind"] == "plain" and summary["steps"] == STEPS
  assert summary["sequence_length"] == 64 and summary["final_loss"] > 0
  assert _checkpoint_steps(ref)[-1] == STEPS
  with open(os.path.join(ref, "config.gin")) as f:
    config = f.read()
  assert "synthetic_baseline" in config and "train_steps" in config


def test_proxy_run_outputs_and_exports(runs):
  proxy = runs["proxy"]
  summary = _summary(proxy)
  assert summary["kind"] == "proxy" and summary["steps"] == STEPS
  assert summary["reference_model_dir"] == os.path.abspath(runs["ref"])
  assert _checkpoint_steps(proxy)[-1] == STEPS
  traj = _trajectory(proxy)
  assert [r["step"] for r in traj] == [2, 4, 6]
  for row in traj:
    for key in ("domain_weights", "average_domain_weights"):
      assert sum(row[key].values()) == pytest.approx(1.0, abs=1e-5)
  average = summary["average_domain_weights"]
  assert average == pytest.approx(traj[-1]["average_domain_weights"], abs=1e-6)
  exports = summary["export"]
  for fmt, path in exports.items():
    assert os.path.isfile(path), fmt
  assert sorted(os.path.basename(p) for p in exports.values()) == sorted(
      "synthetic_uniform_doremi" + ext for ext in EXPORT_FORMATS)
  with open(exports["json"]) as f:
    payload = json.load(f)
  weights = payload["domain_weights"]
  assert set(weights) == set(summary["domains"])
  assert sum(weights.values()) == pytest.approx(1.0, abs=1e-9)
  assert all(w > 0 for w in weights.values())
  assert weights == pytest.approx(average, rel=1e-5)
  assert payload["metadata"]["steps"] == STEPS
  with open(exports["doremi"]) as f:
    assert json.load(f)["train_domain_weights"] == pytest.approx(weights)


def test_exported_module_registers_mixture_in_fresh_process(runs, tmp_path):
  module = _summary(runs["proxy"])["export"]["module"]
  code = (
      "import json, sys, seqio\n"
      "from doremi_jax import mixture_files\n"
      f"m = mixture_files.load_module({module!r})\n"
      "mix = seqio.get_mixture_or_task(m.MIXTURE_NAME)\n"
      "rates = {t.name: float(mix.get_rate(t)) for t in mix.tasks}\n"
      "ds = mix.get_dataset({'targets': 32}, split='validation', shuffle=False)\n"
      "ex = next(ds.as_numpy_iterator())\n"
      "print(json.dumps({'name': m.MIXTURE_NAME, 'rates': rates,\n"
      "                  'targets_len': len(ex['targets'])}))\n")
  proc = ok(subprocess.run([sys.executable, "-c", code], cwd=str(tmp_path), env=ENV,
                           capture_output=True, text=True, timeout=300))
  out = json.loads(proc.stdout.strip().splitlines()[-1])
  with open(_summary(runs["proxy"])["export"]["json"]) as f:
    weights = json.load(f)["domain_weights"]
  assert out["name"] == "synthetic_uniform_doremi"
  assert out["rates"] == pytest.approx(weights)
  assert out["targets_len"] == 32


def test_refuses_non_empty_model_dir_and_leaves_it_untouched(runs):
  before = snapshot(runs["ref"])
  proc = cli(*REF, f"--gin.MODEL_DIR={gin_str(runs['ref'])}", f"--gin.TRAIN_STEPS={STEPS}")
  error_line(proc, "not empty", "RESUME")
  assert snapshot(runs["ref"]) == before


def test_rerunning_a_finished_run_with_resume_does_nothing(runs):
  before = snapshot(runs["ref"])
  t0 = time.time()
  ok(cli(*REF, f"--gin.MODEL_DIR={gin_str(runs['ref'])}", f"--gin.TRAIN_STEPS={STEPS}",
         "--gin.RESUME=True"))
  assert snapshot(runs["ref"]) == before  # no retraining: no new checkpoint, event or config
  assert time.time() - t0 < runs["ref_seconds"] + 5


def test_resume_continues_from_the_last_checkpoint(runs):
  resumed = str(runs["base"] / "proxy_resumed")
  shutil.copytree(runs["proxy"], resumed)
  ok(cli(*PROXY, f"--gin.MODEL_DIR={gin_str(resumed)}", "--gin.TRAIN_STEPS=9",
         f"--gin.REFERENCE_MODEL_DIR={gin_str(runs['ref'])}", "--gin.RESUME=True",
         """--gin.RESUME_IGNORE_CHANGES=["train.train_steps"]"""))  # more steps: consented
  assert _checkpoint_steps(resumed)[-1] == 9
  summary = _summary(resumed)
  assert summary["steps"] == 9
  # Started at step 6 (not 0): the trajectory continues 2, 4, 6 -> 8, 9 without repeats.
  assert [r["step"] for r in _trajectory(resumed)] == [2, 4, 6, 8, 9]
  with open(summary["export"]["json"]) as f:
    assert json.load(f)["metadata"]["steps"] == 9
  # The first start's config is kept byte for byte; the resumed start's is config.6.gin.
  with open(os.path.join(runs["proxy"], "config.gin"), "rb") as f:
    first = f.read()
  with open(os.path.join(resumed, "config.gin"), "rb") as f:
    assert f.read() == first and b"TRAIN_STEPS = 6" in first
  with open(os.path.join(resumed, "config.6.gin")) as f:
    assert "TRAIN_STEPS = 9" in f.read()
  assert sorted(n for n in os.listdir(resumed) if n.startswith("config")) == [
      "config.6.gin", "config.gin"]


# --- one-line errors ---------------------------------------------------------------------

def _error_cases(base, ref):
  d = lambda name: gin_str(os.path.join(base, name))  # noqa: E731
  return {
      "unknown_mixture": (REF + [f"--gin.MODEL_DIR={d('e1')}", "--gin.TRAIN_STEPS=2",
                                 '--gin.BASELINE_MIXTURE="no_such_mixture"'],
                          ("unknown task or mixture", "no_such_mixture")),
      "bad_binding": (REF + [f"--gin.MODEL_DIR={d('e2')}", "--gin.TRAIN_STEPS=2",
                             "--gin.nonexistent.x=1"], ("nonexistent",)),
      "missing_gin_file": (REF + [f"--gin.MODEL_DIR={d('e3')}", "--gin.TRAIN_STEPS=2",
                                  "--gin_file=no_such_file.gin"], ("no_such_file.gin",)),
      "zero_steps": (REF + [f"--gin.MODEL_DIR={d('e4')}", "--gin.TRAIN_STEPS=0"],
                     ("TRAIN_STEPS",)),
      "negative_steps": (REF + [f"--gin.MODEL_DIR={d('e5')}", "--gin.TRAIN_STEPS=-3"],
                         ("TRAIN_STEPS",)),
      "nonexistent_reference": (PROXY + [f"--gin.MODEL_DIR={d('e6')}", "--gin.TRAIN_STEPS=2",
                                         f"--gin.REFERENCE_MODEL_DIR={d('no_such_ref')}"],
                                ("no_such_ref",)),
      "missing_model_dir": (REF + ["--gin.TRAIN_STEPS=2"], ("MODEL_DIR",)),
      "proxy_without_reference": (PROXY + [f"--gin.MODEL_DIR={d('e8')}", "--gin.TRAIN_STEPS=2"],
                                  ("REFERENCE_MODEL_DIR",)),
  }


FRESH_PROCESS_CASES = ("zero_steps",)  # the only stderr line of a fresh process


@pytest.fixture(scope="module")
def error_runs(tmp_path_factory):
  """Every error case: in this process, but ``FRESH_PROCESS_CASES`` as a user's shell
  starts them (whose stderr must hold only the one line, no start-up noise)."""
  base = str(tmp_path_factory.mktemp("errors"))
  cases = _error_cases(base, None)
  return base, {name: ((cli_subprocess if name in FRESH_PROCESS_CASES else cli)(*args), needles)
                for name, (args, needles) in cases.items()}


@pytest.mark.parametrize("case", [
    "unknown_mixture", "bad_binding", "missing_gin_file", "zero_steps", "negative_steps",
    "nonexistent_reference",
    "missing_model_dir", "proxy_without_reference",
])
def test_one_line_error(error_runs, case):
  _, results = error_runs
  proc, needles = results[case]
  error_line(proc, *needles)


def test_failed_start_leaves_model_dir_reusable(error_runs):
  base, _ = error_runs
  for name in ("e1", "e6"):  # unknown mixture, nonexistent reference
    path = os.path.join(base, name)
    assert not os.path.exists(path) or not os.listdir(path), (name, os.listdir(path))


def test_error_is_the_only_stderr_line(error_runs):
  _, results = error_runs
  proc, _ = results["zero_steps"]
  assert [ln for ln in proc.stderr.splitlines() if ln.strip()] == [
      "error: TRAIN_STEPS must be a positive integer, got 0"]


def test_nan_loss_is_a_one_line_error(tmp_path):
  model_dir = str(tmp_path / "nan")
  proc = cli("--gin_file=runs/reference.gin", "--gin_file=experiments/synthetic.gin",
             f'--gin.MODEL_DIR="{model_dir}"', "--gin.TRAIN_STEPS=10",
             "--gin.train.log_every=2", "--gin.train.progress=False",
             "--gin.make_optimizer.learning_rate=1e38", "--gin.make_optimizer.warmup_steps=0")
  assert proc.returncode == 2
  lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
  assert len(lines) == 1 and lines[0].startswith("error: loss is nan"), lines
