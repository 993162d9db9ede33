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
from doremi_jax.data import corpus_reader, example_records

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


def shard_path(domain: str, split: str, bucket: int, buckets: int) -> str:
  return f"{domain}/{split}-{bucket:05d}-of-{buckets:05d}.array_record"


def write_shard(out_dir: str, shard: str, sequences: np.ndarray, options: str) -> str:
  """Writes the records, publishes the file and returns its sha256."""
  from array_record.python.array_record_module import ArrayRecordWriter  # pylint: disable=g-import-not-at-top
  fd, tmp = tempfile.mkstemp(suffix=".array_record")
  os.close(fd)
  writer = ArrayRecordWriter(tmp, options)
  for row in sequences:
    writer.write(example_records.encode(row))
  writer.close()
  digest = storage.file_sha256(tmp)
  publish(tmp, join(out_dir, shard))
  return digest


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
