"""One-line user errors: bad input is reported as a single line and exit code 2."""
from __future__ import annotations

import argparse
import atexit
import errno
import functools
import os
import sys
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:  # seqio pulls in TensorFlow (seconds): imported where it is used
  import seqio


class DoremiError(Exception):
  """A problem with the user's input or configuration (not a bug)."""


class ArgumentParser(argparse.ArgumentParser):
  """argparse whose usage errors are one ``error:`` line (exit 2), not its usage block."""

  def error(self, message: str):
    raise DoremiError(f"{self.prog}: {message} (see --help)")


class Preempted(Exception):
  """A run stopped on a signal after checkpointing ``step``: not an error, so CLIs print
  one line without ``error:`` and exit with ``exit_code`` (128 + the signal's number)."""

  def __init__(self, step: int, exit_code: int):
    self.line = f"preempted at step {step}; resume with RESUME=True"
    super().__init__(self.line)  # gin adds lines to str(exc), not to ``line``
    self.step, self.exit_code = step, exit_code


def require_mixture_or_task(name: str) -> seqio.Task | seqio.Mixture:
  """Looks up a SeqIO provider, failing with the name and the registered choices."""
  import seqio  # pylint: disable=g-import-not-at-top,redefined-outer-name
  try:
    return seqio.get_mixture_or_task(name)
  except ValueError:
    known = sorted(set(seqio.TaskRegistry.names()) | set(seqio.MixtureRegistry.names()))
    hint = ", ".join(known[:12]) + (" ..." if len(known) > 12 else "")
    raise DoremiError(f"unknown task or mixture {name!r} (registered: {hint or 'none'})") from None


def require_task(name: str) -> seqio.Task:
  import seqio  # pylint: disable=g-import-not-at-top,redefined-outer-name
  if name not in seqio.TaskRegistry.names():
    raise DoremiError(f"unknown task {name!r}")
  return seqio.TaskRegistry.get(name)


def _one_line(exc: BaseException) -> str:
  # gin appends "In call to configurable ..." lines to errors raised inside configurables.
  lines = [ln for ln in str(exc).splitlines()
           if not ln.strip().startswith("In call to configurable")]
  text = " ".join(" ".join(lines).split())
  return text if len(text) < 400 else text[:397] + "..."


_NO_ROOM = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
_NOT_WRITABLE = (errno.EROFS, errno.EACCES, errno.EPERM)


def _storage_line(exc: BaseException) -> str | None:
  """A full disk, a quota or a read-only place as one line naming the file (None for other
  errors, which are bugs until shown otherwise). The OS error may be the cause or context
  of the one raised: gin re-raises a proxy without ``errno``, Beam a RuntimeError. Writes
  that replace a file go through ``storage.write_atomic``, so what was there stays."""
  seen = set()
  while exc is not None and id(exc) not in seen:
    seen.add(id(exc))
    if isinstance(exc, OSError) and exc.errno in _NO_ROOM + _NOT_WRITABLE:
      break
    exc = exc.__cause__ or exc.__context__
  else:
    return None
  target = exc.filename2 or exc.filename  # a copy or rename fails writing its target
  where = repr(target) if target else "a file"
  if exc.errno in _NO_ROOM:
    return (f"no room to write {where}: {exc.strerror}; free space (or raise the quota) and "
            "run the command again")
  return f"cannot write {where}: {exc.strerror}; fix the permissions or write elsewhere"


def _out_of_memory_line(exc: BaseException) -> str | None:
  """An accelerator or host running out of memory (XLA's RESOURCE_EXHAUSTED, or Python's
  MemoryError) as one line that says what to change."""
  if not (isinstance(exc, MemoryError) or "RESOURCE_EXHAUSTED" in str(exc)[:2000]):
    return None
  text = " ".join(str(exc).split())
  detail = text[text.find("RESOURCE_EXHAUSTED"):][:160] if "RESOURCE_EXHAUSTED" in text else (
      "MemoryError")
  return (f"out of memory ({detail}); lower BATCH_SIZE, the model size or VOCAB_SIZE, or use "
          "train.microbatches (python -m doremi_jax.compile_check estimates the memory first)")


def storage_line(exc: BaseException) -> str | None:
  """The one line for a full disk, a quota or a read-only place (None for other errors)."""
  return _storage_line(exc)


def _silence_stderr() -> None:
  """At exit after a user error: TensorFlow's C++ destructors (e.g. a cached dataset's
  iterator, read only in part) log past TF_CPP_MIN_LOG_LEVEL and would follow the one line."""
  sys.stderr.flush()
  devnull = os.open(os.devnull, os.O_WRONLY)
  os.dup2(devnull, 2)
  os.close(devnull)


def _exit_with(line: str) -> None:
  print(f"error: {line}", file=sys.stderr, flush=True)
  atexit.register(_silence_stderr)
  sys.exit(2)


def exit_on_user_error(main: Callable[..., int | None]) -> Callable[..., int | None]:
  """Decorates a CLI main: user errors, a full disk and a read-only place become
  ``error: <one line>`` and exit 2; a preempted run prints its one line and exits 128 + the
  signal's number."""

  @functools.wraps(main)
  def wrapper(*args, **kwargs):
    try:
      return main(*args, **kwargs)
    except Preempted as exc:
      print(exc.line, file=sys.stderr, flush=True)
      atexit.register(_silence_stderr)
      sys.exit(exc.exit_code)
    except (DoremiError, FileNotFoundError) as exc:
      _exit_with(_one_line(exc))
    except Exception as exc:  # pylint: disable=broad-except  (see _storage_line)
      line = _storage_line(exc) or _out_of_memory_line(exc)
      if line is None:
        raise
      _exit_with(line)
    except KeyboardInterrupt:
      print("error: interrupted (checkpoints written so far are kept)", file=sys.stderr)
      sys.exit(130)

  return wrapper
