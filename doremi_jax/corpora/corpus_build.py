"""Build the embedded multi-domain corpus from real text shipped inside pinned packages.

Each domain (``corpus_sources.DOMAINS``) reads text out of one pinned PyPI wheel
(``pip download``, read as a zip, never installed) or Debian package (``apt-get
download``, ``.deb`` parsed here), caps it at ``cap_bytes`` of UTF-8 text and writes
``OUT/<domain>.jsonl`` (``{"text": ...}`` a line) plus ``OUT/manifest.json``. Builds are
deterministic and cached; ``python -m doremi_jax.corpus build`` runs one by hand.
"""
from __future__ import annotations

import bz2
import fnmatch
import gzip
import hashlib
import io
import json
import lzma
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.parse
import zipfile
from pathlib import Path
from typing import Callable, Iterable, Sequence

from doremi_jax import errors, storage
from doremi_jax.corpora.corpus_sources import DEFAULT_DOMAINS, DOMAINS, Members

DEFAULT_CAP_BYTES = 2_000_000


class CorpusBuildError(errors.DoremiError):
  """A corpus build failed; the message names the problem in one line."""


class SourceUnavailable(CorpusBuildError):
  """An optional (Debian) source could not be fetched; its domain is skipped."""


def embedded_corpus_dir() -> str:
  """Where the embedded corpus is built by default."""
  return str(storage.cache_root() / "embedded_corpus")


# ----------------------------------------------------------------------------- fetching
def _cached(pkg_dir: Path, match: Callable[[str], bool]) -> Path | None:
  hits = sorted(p for p in pkg_dir.iterdir() if p.is_file() and match(p.name))
  return hits[-1] if hits else None


def _download(pkg_dir: Path, commands: list[list[str]], label: str,
              error: type[CorpusBuildError]) -> list[Path]:
  """Run the first command that succeeds in a scratch dir; move its files to pkg_dir."""
  pkg_dir.mkdir(parents=True, exist_ok=True)
  scratch = Path(tempfile.mkdtemp(dir=pkg_dir, prefix=".download-"))
  try:
    reason = "no command tried"
    for cmd in commands:
      try:
        proc = subprocess.run(cmd, cwd=scratch, capture_output=True, text=True,
                                      stdin=subprocess.DEVNULL, timeout=1800)
      except (OSError, subprocess.SubprocessError) as exc:
        reason = f"{cmd[0]}: {exc}"
        continue
      if proc.returncode == 0 and (files := sorted(scratch.iterdir())):
        for f in files:
          os.replace(f, pkg_dir / f.name)
        return [pkg_dir / f.name for f in files]
      lines = (proc.stderr + proc.stdout).strip().splitlines()
      reason = lines[-1].strip() if lines else f"exit code {proc.returncode}"
    raise error(f"download of {label} failed: {reason}")
  finally:
    shutil.rmtree(scratch, ignore_errors=True)


def fetch_pypi(package: str, version: str, pkg_dir: Path) -> Path:
  """Return the cached wheel (or sdist) of package==version, downloading it if missing."""
  name_re = "[-_.]+".join(map(re.escape, re.split(r"[-_.]+", package.lower())))
  ours = re.compile(rf"{name_re}-{re.escape(version)}(-.+\.whl|\.tar\.gz|\.zip)", re.I).fullmatch
  if pkg_dir.is_dir() and (hit := _cached(pkg_dir, ours)):
    return hit
  base = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", "."]
  spec = f"{package}=={version}"
  files = _download(pkg_dir, [base + ["--only-binary=:all:", spec],
                base + ["--no-binary=:all:", spec]], spec, CorpusBuildError)
  hit = next((f for f in files if ours(f.name)), None)
  if hit is None:
    raise CorpusBuildError(f"download of {spec} produced no matching archive")
  return hit


def fetch_deb(package: str, version: str, pkg_dir: Path) -> Path:
  """Return the cached .deb of package (pinned version preferred), via ``apt-get download``."""
  def version_of(p: Path) -> str:
    return urllib.parse.unquote(p.name.split("_")[1])

  def ours(name: str) -> bool:
    return name.startswith(package + "_") and name.endswith(".deb")

  if pkg_dir.is_dir() and (hit := _cached(pkg_dir, ours)):
    exact = _cached(pkg_dir, lambda n: ours(n) and version_of(Path(n)) == version)
    return exact or hit
  files = _download(pkg_dir, [["apt-get", "download", f"{package}={version}"],
                ["apt-get", "download", package]],
                      f"Debian package {package}", SourceUnavailable)
  return next(f for f in files if ours(f.name))


def read_members(archive: Path, pattern: str) -> Members:
  """Members of a wheel/zip, sdist tarball or .deb whose path matches ``*pattern``,
  in a stable pseudo-random order (sha1 of the path) so capped domains mix sources."""
  glob = "*" + pattern
  found: dict[str, bytes] = {}
  if archive.suffix in (".whl", ".zip"):
    with zipfile.ZipFile(archive) as zf:
      for name in zf.namelist():
        if fnmatch.fnmatchcase(name, glob):
          found[name] = zf.read(name)
  else:
    fileobj: io.IOBase = open(archive, "rb")
    if archive.suffix == ".deb":
      fileobj = io.BytesIO(_deb_data_tar(fileobj.read()))
    with fileobj, tarfile.open(fileobj=fileobj, mode="r:*") as tf:
      for info in tf:
        if info.isfile() and fnmatch.fnmatchcase(info.name, glob):
          found[info.name] = tf.extractfile(info).read()
  key = lambda n: hashlib.sha1(n.split("/", 1)[-1].encode()).hexdigest()  # noqa: E731
  return [(n, found[n]) for n in sorted(found, key=key)]


def _unzstd(data: bytes) -> bytes:
  import zstandard  # only needed for .deb files compressed with zstd
  return zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data)).read()


def _deb_data_tar(deb: bytes) -> bytes:
  """Return the uncompressed data.tar of a .deb (an ``ar`` archive), without dpkg."""
  if not deb.startswith(b"!<arch>\n"):
    raise CorpusBuildError("not a Debian package (missing ar magic)")
  unpack: dict[str, Callable[[bytes], bytes]] = {
    "data.tar": bytes, "data.tar.xz": lzma.decompress, "data.tar.gz": gzip.decompress,
    "data.tar.bz2": bz2.decompress, "data.tar.zst": _unzstd}
  pos = 8
  while pos + 60 <= len(deb):
    name = deb[pos:pos + 16].decode("ascii").strip().rstrip("/")
    size = int(deb[pos + 48:pos + 58].decode("ascii").strip())
    if name in unpack:
      return unpack[name](deb[pos + 60:pos + 60 + size])
    pos += 60 + size + (size & 1)
  raise CorpusBuildError("Debian package has no data.tar member")


# ----------------------------------------------------------------------------- building
def _clean(doc: str) -> str:
  doc = doc.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "")
  return "\n".join(line.rstrip() for line in doc.strip("\n").splitlines()).strip()


def take_capped(docs: Iterable[str], cap_bytes: int) -> list[str]:
  """Clean docs and keep whole ones until the next would pass cap_bytes (at least one)."""
  kept: list[str] = []
  total = 0
  for doc in map(_clean, docs):
    if not doc:
      continue
    size = len(doc.encode("utf-8"))
    if kept and total + size > cap_bytes:
      break
    kept.append(doc)
    total += size
  return kept


def _valid_cache(out: Path, cap_bytes: int, domains: Sequence[str]) -> dict | None:
  try:
    manifest = json.loads((out / "manifest.json").read_text("utf-8"))
    built = manifest["domains"]
    if (manifest.get("name"), manifest.get("version"), manifest.get("cap_bytes")) != (
        "embedded", 1, cap_bytes):
      return None
    if set(built) | set(manifest.get("skipped", {})) != set(domains):
      return None
    if all(storage.file_sha256(out / f"{d}.jsonl") == built[d]["sha256"] for d in built):
      return manifest
  except (OSError, ValueError, KeyError, TypeError):
    pass
  return None


def build_corpus(out_dir: str, cap_bytes: int = DEFAULT_CAP_BYTES,
                 domains: Sequence[str] | None = None, cache_dir: str | None = None) -> dict:
  """Build (or reuse) the embedded corpus in ``out_dir`` and return its manifest.

  Debian-sourced domains whose package can't be fetched are skipped with a warning on
  stderr and listed under ``manifest["skipped"]``; any other failure raises
  CorpusBuildError. ``bytes`` in the manifest is the size of the domain's .jsonl file.
  """
  names = list(dict.fromkeys(DEFAULT_DOMAINS if domains is None else domains))
  unknown = [d for d in names if d not in DOMAINS]
  if unknown or not names:
    raise CorpusBuildError(f"unknown domain(s) {unknown}; known: {sorted(DOMAINS)}")
  if cap_bytes <= 0:
    raise CorpusBuildError(f"cap_bytes must be positive, got {cap_bytes}")
  out = Path(out_dir)
  if (cached := _valid_cache(out, cap_bytes, names)) is not None:
    return cached
  pkg_dir = (Path(cache_dir).expanduser() if cache_dir else storage.cache_root()) / "packages"
  out.parent.mkdir(parents=True, exist_ok=True)
  tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))
  try:
    manifest = {"name": "embedded", "version": 1, "domains": {}, "cap_bytes": cap_bytes,
          "skipped": {}}
    for name in names:
      spec = DOMAINS[name]
      fetch = fetch_pypi if spec.kind == "pypi" else fetch_deb
      try:
        archive = fetch(spec.package, spec.version, pkg_dir)
      except SourceUnavailable as exc:
        print(f"corpus_build: skipping domain {name!r}: {exc}", file=sys.stderr)
        manifest["skipped"][name] = str(exc)
        continue
      docs = take_capped(spec.extract(read_members(archive, spec.pattern)), cap_bytes)
      if not docs:
        raise CorpusBuildError(f"domain {name!r} produced no documents from {archive.name}")
      path = tmp / f"{name}.jsonl"
      with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.writelines(json.dumps({"text": d}, ensure_ascii=False) + "\n" for d in docs)
      version = (spec.version if spec.kind == "pypi"
                       else urllib.parse.unquote(archive.name.split("_")[1]))
      sep = "==" if spec.kind == "pypi" else "="
      manifest["domains"][name] = {
        "documents": len(docs), "characters": sum(map(len, docs)),
        "bytes": path.stat().st_size, "sha256": storage.file_sha256(path),
        "source": f"{spec.kind}:{spec.package}{sep}{version} / {spec.pattern}"}
    if not manifest["domains"]:
      raise CorpusBuildError("no domain could be built")
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", "utf-8")
    storage.replace_dir(tmp, out)
    return manifest
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
