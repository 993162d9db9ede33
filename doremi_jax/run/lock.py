"""One live process per run dir: an advisory lock that names its holder.

``flock`` on ``<dir>/.lock`` is released by the kernel when its process dies (kill -9
included), so a lock left by a dead process is recognised without guessing from pids;
the file's JSON (host, pid, start time, command) names the holder in the refusal, and a
dead holder's record is reported in one warning line when the lock is taken over.
Local and most network filesystems support ``flock``; on object stores (gs://) a run dir
cannot be locked this way.
"""
from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import os
import shutil
import socket
import sys

from doremi_jax import errors

LOCK_FILE = ".lock"


def holds_outputs(directory: str) -> bool:
  """True if ``directory`` has any file but a lock (an aborted start leaves only folders)."""
  return any(f != LOCK_FILE for _, _, files in os.walk(directory) for f in files)


def clear_outputs(directory: str) -> None:
  """Removes everything in ``directory`` but its lock (the holder's own outputs)."""
  for entry in os.listdir(directory):
    path = os.path.join(directory, entry)
    if entry != LOCK_FILE:
      shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)


def _describe(holder: dict) -> str:
  return (f"pid {holder.get('pid', '?')} on {holder.get('host', '?')} since "
          f"{holder.get('started', '?')}")


def _read(fd: int) -> dict:
  os.lseek(fd, 0, os.SEEK_SET)
  try:
    return json.loads(os.read(fd, 1 << 16).decode() or "{}")
  except ValueError:
    return {}


class RunLock:
  """``with RunLock(model_dir, "MODEL_DIR"):`` holds the dir for this process."""

  def __init__(self, directory: str, what: str = "run dir", enabled: bool = True):
    self.path = os.path.join(directory, LOCK_FILE)
    self.what = what
    self.enabled = enabled  # multi-host: only process 0 holds the lock
    self._fd: int | None = None

  def acquire(self) -> "RunLock":
    if not self.enabled:
      return self
    directory = os.path.dirname(self.path)
    try:
      os.makedirs(directory, exist_ok=True)
    except OSError as exc:
      raise errors.DoremiError(f"cannot create {self.what} {directory!r}: {exc.strerror}; "
                               f"choose a {self.what} that can be created and written "
                               "(or fix its parent)") from None
    try:
      self._fd = self._take()
    except OSError as exc:  # read-only, full or over quota: nothing of the run is touched
      raise errors.DoremiError(f"cannot write {self.path!r}: {exc.strerror}; free space (or "
                               f"fix the permissions) or choose another {self.what}") from None
    return self

  def _take(self) -> int:
    """Locks the file and writes this process's record into it; the file goes again if
    the record cannot be written."""
    while True:
      fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
      try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
      except BlockingIOError:
        holder = _read(fd)
        os.close(fd)
        raise errors.DoremiError(
            f"{self.what} {os.path.dirname(self.path)!r} is in use by {_describe(holder)}; wait "
            "for that run to finish or choose another directory") from None
      if os.path.exists(self.path) and os.stat(self.path).st_ino == os.fstat(fd).st_ino:
        break
      os.close(fd)  # the file was replaced while we waited for it: lock the new one
    previous = _read(fd)
    if previous.get("pid"):
      print(f"warning: taking over the lock of {self.what} {os.path.dirname(self.path)!r} from "
            f"{_describe(previous)}, which is no longer running", file=sys.stderr, flush=True)
    record = {"host": socket.gethostname(), "pid": os.getpid(),
              "started": datetime.datetime.now(datetime.timezone.utc).isoformat(
                  timespec="seconds"), "command": " ".join(sys.argv)}
    try:
      os.ftruncate(fd, 0)
      os.lseek(fd, 0, os.SEEK_SET)
      os.write(fd, json.dumps(record).encode())
      os.fsync(fd)
    except OSError:
      with contextlib.suppress(OSError):
        os.unlink(self.path)
      os.close(fd)  # closing also unlocks
      raise
    return fd

  def release(self) -> None:
    """Removes the lock file (a clean exit leaves nothing behind) and unlocks; a process
    that opened the old file meanwhile sees it is gone and locks a new one."""
    if self._fd is None:
      return
    try:
      os.unlink(self.path)
    except FileNotFoundError:
      pass
    fcntl.flock(self._fd, fcntl.LOCK_UN)
    os.close(self._fd)
    self._fd = None

  def __enter__(self) -> "RunLock":
    return self.acquire()

  def __exit__(self, *exc) -> None:
    self.release()
