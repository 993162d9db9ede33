"""Local paths or any Beam filesystem URL (gs://, s3://, hdfs://) for the prepare job's
outputs: files are written locally, then moved or copied to their destination."""
from __future__ import annotations

import os
import shutil
import tempfile

from doremi_jax import errors


def is_remote(path: str) -> bool:
  return "://" in path


def join(*parts: str) -> str:
  return "/".join(p.rstrip("/") for p in parts)


def publish(local_path: str, dest: str) -> None:
  """Moves a finished local file to ``dest`` (a local path or any Beam filesystem URL)."""
  if not is_remote(dest):
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    shutil.move(local_path, dest)
    return
  from apache_beam.io.filesystems import FileSystems  # pylint: disable=g-import-not-at-top
  with open(local_path, "rb") as src, FileSystems.create(dest) as out:
    shutil.copyfileobj(src, out, 1 << 20)
  os.remove(local_path)


def write_text(dest: str, text: str) -> None:
  fd, tmp = tempfile.mkstemp(prefix=".prepare-", dir=None if is_remote(dest) else
                             os.path.dirname(dest) or ".")
  with os.fdopen(fd, "w", encoding="utf-8") as f:
    f.write(text)
  publish(tmp, dest)


def read_bytes(path: str) -> bytes:
  if is_remote(path):
    from apache_beam.io.filesystems import FileSystems  # pylint: disable=g-import-not-at-top
    with FileSystems.open(path) as f:
      return f.read()
  if not os.path.isfile(os.path.expanduser(path)):
    raise errors.DoremiError(f"{path!r} not found")
  with open(os.path.expanduser(path), "rb") as f:
    return f.read()
