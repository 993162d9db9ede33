"""A command line's ``main`` run in the test process, seen as a finished subprocess
(``returncode``, ``stdout``, ``stderr``): for tests of what a CLI does, not of how a fresh
process starts (those stay subprocesses). gin is cleared before and after, as each CLI
start parses its own config; the TensorFlow/JAX start-up is paid once per test process."""
from __future__ import annotations

import contextlib
import io
import subprocess
from typing import Callable, Sequence

import gin


def run_main(main: Callable, argv: Sequence[str]) -> subprocess.CompletedProcess:
  out, err = io.StringIO(), io.StringIO()
  code = 0
  gin.clear_config()
  try:
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
      try:
        main(list(argv))
      except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
  finally:
    gin.clear_config()
  return subprocess.CompletedProcess(list(argv), code, out.getvalue(), err.getvalue())
