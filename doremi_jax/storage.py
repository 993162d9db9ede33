"""Where the package keeps data, and how it identifies and writes files.

Every generated corpus, tokenizer and downloaded package lives under one cache root;
data locations recorded in exports are resolved against one data root, so an export
made on one machine imports on another where the data lives elsewhere.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import threading
from pathlib import Path

CACHE_ENV = "DOREMI_CACHE"
DATA_ROOT_ENV = "DOREMI_DATA_ROOT"
_DEFAULT_CACHE = "~/.cache/doremi_jax"


def cache_root() -> Path:
  """``$DOREMI_CACHE`` or ``~/.cache/doremi_jax``: generated corpora, tokenizers, packages."""
  return Path(os.environ.get(CACHE_ENV) or _DEFAULT_CACHE).expanduser()


def data_root() -> Path:
  """``$DOREMI_DATA_ROOT``, else the cache root: where exported data paths are resolved."""
  root = os.environ.get(DATA_ROOT_ENV)
  return Path(root).expanduser() if root else cache_root()


def file_sha256(path: str | Path) -> str:
  """sha256 of a file's bytes, read in 1 MiB chunks (corpora and tokenizers can be large)."""
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
      digest.update(chunk)
  return digest.hexdigest()


def write_atomic(path: str | Path, data: str | bytes) -> None:
  """Writes through a temporary file and a rename, so readers never see half a file and a
  failed write (disk full) leaves the old file as it was and no temporary behind."""
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  # Not mkstemp: its files are private (0600); this one gets the umask's mode like open's.
  tmp = path.parent / f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp"
  fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
  mode = "wb" if isinstance(data, bytes) else "w"
  try:
    with os.fdopen(fd, mode, **({} if isinstance(data, bytes) else {"encoding": "utf-8"})) as f:
      f.write(data)
    os.replace(tmp, path)
  except BaseException as exc:
    with contextlib.suppress(OSError):
      os.unlink(tmp)
    if isinstance(exc, OSError) and exc.filename is None:  # a write names no file
      raise OSError(exc.errno, exc.strerror, str(path)) from exc
    raise


def replace_dir(tmp: str | Path, out: str | Path) -> None:
  """Moves a finished temporary dir (a sibling of ``out``) to ``out``, replacing what was
  there, so a reader never finds a half-written dir at ``out``."""
  tmp, out = Path(tmp), Path(out)
  os.chmod(tmp, 0o755)  # mkdtemp's dirs are private
  old = out.with_name(f".{out.name}.old-{os.getpid()}")
  if out.exists():
    os.rename(out, old)
  os.rename(tmp, out)
  shutil.rmtree(old, ignore_errors=True)
