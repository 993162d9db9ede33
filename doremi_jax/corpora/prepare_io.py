"""The prepare jobs' outputs (text sources and SeqIO Tasks alike): shards, manifest, and
local paths or any Beam filesystem URL (gs://, s3://, hdfs://) for them; files are written
locally, then moved or copied to their destination."""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from typing import Iterable

import numpy as np

from doremi_jax import errors, storage
from doremi_jax.data import corpus_reader, example_records, prepared_corpus

BAD_LINES = "bad_lines"  # manifest key and Beam output tag (``--skip_bad_lines``)


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


def write_bytes(dest: str, data: bytes) -> None:
  """Writes ``data`` to a temporary file next to ``dest`` (the system temp dir for a remote
  one), then publishes it: ``dest`` is whole or absent."""
  fd, tmp = tempfile.mkstemp(prefix=".prepare-", dir=None if is_remote(dest) else
                             os.path.dirname(dest) or ".")
  with os.fdopen(fd, "wb") as f:
    f.write(data)
  publish(tmp, dest)


def write_text(dest: str, text: str) -> None:
  write_bytes(dest, text.encode("utf-8"))


def read_bytes(path: str) -> bytes:
  if is_remote(path):
    from apache_beam.io.filesystems import FileSystems  # pylint: disable=g-import-not-at-top
    with FileSystems.open(path) as f:
      return f.read()
  if not os.path.isfile(os.path.expanduser(path)):
    raise errors.DoremiError(f"{path!r} not found")
  with open(os.path.expanduser(path), "rb") as f:
    return f.read()


def shard_path(domain: str, split: str, bucket: int, buckets: int) -> str:
  return f"{domain}/{split}-{bucket:05d}-of-{buckets:05d}.array_record"


TMP_PREFIX = ".tmp-"  # a shard being written; a killed job's leftovers go at the next start


def write_shard(out_dir: str, shard: str, sequences: np.ndarray, options: str) -> str:
  """Writes the records next to their destination (under ``--out``, never the system temp
  dir), publishes the file and returns its sha256; a full disk is one line."""
  from array_record.python.array_record_module import ArrayRecordWriter  # pylint: disable=g-import-not-at-top
  dest = join(out_dir, shard)
  local_dir = None if is_remote(out_dir) else os.path.dirname(dest)
  tmp = None
  try:
    if local_dir:
      os.makedirs(local_dir, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, suffix=".array_record", dir=local_dir)
    os.close(fd)
    writer = ArrayRecordWriter(tmp, options)
    for row in sequences:
      writer.write(example_records.encode(row))
    writer.close()
    digest = storage.file_sha256(tmp)
    publish(tmp, dest)
    return digest
  except (OSError, RuntimeError) as exc:  # ArrayRecord reports a failed write as RuntimeError
    raise errors.DoremiError(errors.storage_line(exc) or _write_failure(dest, exc)) from None
  finally:
    if tmp and os.path.exists(tmp):
      os.remove(tmp)


_NO_ROOM_TEXT = ("File too large", "No space left on device", "Disk quota exceeded")


def _write_failure(dest: str, exc: BaseException) -> str:
  """ArrayRecord's RuntimeError as the line an OSError would give (it carries the text)."""
  text = " ".join(str(exc).split())
  reason = next((t for t in _NO_ROOM_TEXT if t in text), None)
  if reason:
    return (f"no room to write {dest!r}: {reason}; free space (or raise the quota) and run the "
            "command again")
  return f"cannot write {dest!r}: {text[:160]}; fix the permissions or write elsewhere"


def remove_leftovers(out_dir: str) -> None:
  """Shards a killed job was writing (``TMP_PREFIX``), under a local ``--out``."""
  if is_remote(out_dir) or not os.path.isdir(out_dir):
    return
  for folder, _, files in os.walk(out_dir):
    for name in files:
      if name.startswith(TMP_PREFIX):
        os.remove(os.path.join(folder, name))


def assemble_manifest(records: Iterable[dict], header: dict,
                      bad_lines: Iterable[dict[str, dict]] = ()) -> dict:
  """Per-shard records -> per domain and split totals and the sorted list of shards; with
  ``--skip_bad_lines``, the skipped lines per file under ``bad_lines``."""
  domains: dict[str, dict] = {}
  for r in sorted(records, key=lambda r: (r["domain"], r["split"], r["bucket"])):
    splits = domains.setdefault(r["domain"], {s: {"documents": 0, "tokens": 0, "sequences": 0,
                                                  "shards": []}
                                              for s in ("train", "validation", "test")})
    entry = splits[r["split"]]
    for key in ("documents", "tokens", "sequences"):
      entry[key] += r[key]
    if "shard" in r:
      entry["shards"].append(r["shard"])
  manifest = {**header, "domains": domains}
  if BAD_LINES in header:
    counts = corpus_reader.BadLines()
    for files in bad_lines:
      counts.merge(files)
    manifest[BAD_LINES] = dict(sorted(counts.files.items()))
  return manifest


def manifest_json(manifest: dict) -> str:
  return json.dumps(manifest, indent=1, sort_keys=True) + "\n"


def check_out_contents(out_dir: str, source: str, sequence_length: int,
                        overwrite: bool) -> None:
  """``--out`` must be new, empty, or this same job's earlier output (a rerun writes the
  same bytes); another corpus there is refused, or removed whole with ``--overwrite``."""
  if is_remote(out_dir) or not os.path.isdir(out_dir) or not os.listdir(out_dir):
    return
  manifest_path = os.path.join(out_dir, prepared_corpus.MANIFEST)
  held = None
  if os.path.exists(manifest_path):
    try:
      with open(manifest_path, encoding="utf-8") as f:
        old = json.load(f)
      held = (old.get("source"), old.get("sequence_length"))
    except (OSError, ValueError):
      held = ("an unreadable manifest", None)
  if held == (source, sequence_length) or (held is None and _unfinished_prepare(out_dir)):
    return
  if overwrite:
    for entry in os.listdir(out_dir):
      path = os.path.join(out_dir, entry)
      shutil.rmtree(path) if os.path.isdir(path) and not os.path.islink(path) else os.remove(path)
    return
  what = (f"another prepared corpus ({held[0]}, sequence_length {held[1]})" if held
          else "files that are not a prepared corpus")
  raise errors.DoremiError(f"--out={out_dir} holds {what}; choose another --out, or pass "
                           "--overwrite to replace it whole")


def _unfinished_prepare(out_dir: str) -> bool:
  """Shards (and a tokenizer) with no manifest yet: a prepare job that stopped part way,
  which the rerun finishes."""
  for folder, _, files in os.walk(out_dir):
    top = os.path.relpath(folder, out_dir).split(os.sep)[0]
    if folder == out_dir and files:
      return False
    if top != "tokenizer" and not all(f.endswith(".array_record") for f in files):
      return False
  return True
