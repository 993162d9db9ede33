"""Build an embedded multi-domain corpus of real text shipped inside pinned packages.

Each domain reads text out of one pinned PyPI wheel (``pip download``, read as a zip,
never installed) or Debian package (``apt-get download``, ``.deb`` parsed here), caps it
at ``cap_bytes`` of UTF-8 text and writes ``OUT/<domain>.jsonl`` (``{"text": ...}`` a
line) plus ``OUT/manifest.json``. Builds are deterministic and cached; run
``python -m doremi_jax.corpus_build OUT`` to build from the command line.
"""
from __future__ import annotations

import argparse
import bz2
import fnmatch
import gzip
import hashlib
import html
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
import time
import urllib.parse
import xml.etree.ElementTree as ET
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import yaml

Members = list[tuple[str, bytes]]  # (archive member name, raw bytes), in stable order


class CorpusBuildError(Exception):
  """A corpus build failed; the message names the problem in one line."""


class SourceUnavailable(CorpusBuildError):
  """An optional (Debian) source could not be fetched; its domain is skipped."""


@dataclass(frozen=True)
class Domain:
  """Where a domain's text lives and how to turn the matching files into documents."""
  kind: str  # "pypi" or "deb"
  package: str
  version: str
  pattern: str  # fnmatch pattern on member paths (a leading "*" is implied)
  extract: Callable[[Members], Iterator[str]]


def split_of(text: str, validation_fraction: float = 0.05) -> str:
  """Return "validation", "test" or "train" for ``text``, stably across runs and machines.

  The first 8 bytes of sha1(text) as a fraction u in [0, 1) decide: u < f is validation,
  f <= u < 2f is test, the rest is train (f = ``validation_fraction``, at most 0.5). So
  each held-out split gets a fraction f of the documents, and a document never moves.
  """
  if not 0.0 <= validation_fraction <= 0.5:
    raise ValueError(f"validation_fraction must be in [0, 0.5], got {validation_fraction}")
  unit = int.from_bytes(hashlib.sha1(text.encode("utf-8")).digest()[:8], "big") / 2.0**64
  if unit < validation_fraction:
    return "validation"
  return "test" if unit < 2 * validation_fraction else "train"


# ----------------------------------------------------------------------------- markup
_WIKI_DROP_TAGS = re.compile(
  r"<(ref|gallery|timeline|math|score|syntaxhighlight|source|imagemap)\b[^>]*?/>"
  r"|<(ref|gallery|timeline|math|score|syntaxhighlight|source|imagemap)\b.*?</\2\s*>",
  re.S | re.I)
_WIKI_DROP_LINK = re.compile(r"^\s*:?\s*(file|image|media|category|[a-z]{2,3}(-[a-z]+)?)\s*:", re.I)


def _wiki_link(m: re.Match) -> str:
  target, _, label = m.group(1).partition("|")
  if _WIKI_DROP_LINK.match(target):
    return ""
  return (label.rsplit("|", 1)[-1] if label else target).strip()


def _sub_until_stable(pattern: str, repl: str | Callable, text: str, flags: int = 0) -> str:
  while True:
    new = re.sub(pattern, repl, text, flags=flags)
    if new == text:
      return new
    text = new


def strip_wiki_markup(text: str) -> str:
  """Turn MediaWiki source into plain text (regex-based, good enough for LM data)."""
  text = re.sub(r"<!--.*?-->", "", text, flags=re.S)
  text = _WIKI_DROP_TAGS.sub("", text)
  text = _sub_until_stable(r"\{\{[^{}]*\}\}", "", text)  # templates, innermost first
  text = _sub_until_stable(r"\{\|(?:(?!\{\|).)*?\|\}", "", text, re.S)  # tables
  text = _sub_until_stable(r"\[\[([^\[\]]*)\]\]", _wiki_link, text)  # links, innermost first
  text = re.sub(r"\[\[(?:file|image):.*", "", text, flags=re.I)  # unbalanced file links
  text = re.sub(r"\[(?:https?:)?//[^\s\]]+\s*([^\]]*)\]", r"\1", text)  # external links
  text = re.sub(r"'{2,}", "", text)  # bold / italic
  text = re.sub(r"^(=+)\s*(.*?)\s*\1\s*$", r"\2", text, flags=re.M)  # headings
  text = re.sub(r"</?[a-zA-Z][^>]*>", "", text)  # remaining html tags
  text = re.sub(r"__[A-Z]+__", "", text)  # magic words (__TOC__)
  text = re.sub(r"^[*#:;]+\s*", "", text, flags=re.M)  # list / indent markers
  text = html.unescape(text)
  lines = [" ".join(line.split()) for line in text.splitlines()]
  return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


# ----------------------------------------------------------------------------- extractors
def _text(data: bytes) -> str:
  return data.decode("utf-8", errors="replace")


def _licences(members: Members) -> Iterator[str]:
  for _, data in members:  # drop the YAML front matter between the first two '---' lines
    yield re.sub(r"\A\s*---\n.*?\n---[ \t]*\n", "", _text(data), count=1, flags=re.S)


def _wikipedia(members: Members) -> Iterator[str]:
  for _, data in members:
    title, ns, redirect = "", "", False
    for _event, el in ET.iterparse(io.BytesIO(bz2.decompress(data))):
      tag = el.tag.rsplit("}", 1)[-1]
      if tag == "title":
        title = el.text or ""
      elif tag == "ns":
        ns = el.text or ""
      elif tag == "redirect":
        redirect = True
      elif tag == "text" and ns == "0" and not redirect:
        raw = el.text or ""
        if not raw.lstrip().upper().startswith("#REDIRECT"):
          body = strip_wiki_markup(raw)
          if body:
            yield f"{title}\n\n{body}"
      elif tag == "page":
        title, ns, redirect = "", "", False
        el.clear()


def _lines(members: Members) -> Iterator[str]:
  for _, data in members:
    yield from _text(data).splitlines()


def _whole_files(exclude: str = "") -> Callable[[Members], Iterator[str]]:
  def extract(members: Members) -> Iterator[str]:
    for name, data in members:
      if not (exclude and exclude in name):
        yield _text(data)
  return extract


def _conversations(members: Members) -> Iterator[str]:
  for _, data in members:
    for conv in (yaml.safe_load(data) or {}).get("conversations") or []:
      turns = conv if isinstance(conv, list) else [conv]
      yield "\n".join(" ".join(str(t).split()) for t in turns if t is not None)


def _dictd(members: Members) -> Iterator[str]:
  files = dict(members)
  dict_name = next(n for n in files if n.endswith(".dict.dz"))
  body = gzip.decompress(files[dict_name])
  index = _text(files[dict_name[: -len(".dict.dz")] + ".index"])
  b64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
  num = lambda s: sum(b64.index(c) * 64**i for i, c in enumerate(reversed(s)))  # noqa: E731
  spans = set()
  for line in index.splitlines():
    word, off, size = line.rsplit("\t", 2)
    if not word.startswith("00-database") and not word.startswith("00database"):
      spans.add((num(off), num(size)))
  for off, size in sorted(spans):
    yield "\n".join(line.strip() for line in _text(body[off:off + size]).splitlines())


def _fortunes(members: Members) -> Iterator[str]:
  for name, data in members:
    if not name.endswith((".dat", "/ascii-art", "/translate-me")):
      yield from re.split(r"^%\s*$", _text(data), flags=re.M)


DOMAINS: dict[str, Domain] = {
  "legal": Domain("pypi", "licensedcode-data", "32.1.0",
          "licensedcode/data/licenses/*.LICENSE", _licences),
  "encyclopedia": Domain("pypi", "gensim", "4.4.0",
                           "gensim/test/test_data/enwiki-latest-pages-articles1*-shortened.bz2",
                           _wikipedia),
  "news": Domain("pypi", "gensim", "4.4.0", "gensim/test/test_data/lee_background.cor", _lines),
  "code": Domain("pypi", "sympy", "1.14.0", "sympy/*.py", _whole_files(exclude="/tests/")),
  "dialogue": Domain("pypi", "chatterbot-corpus", "1.3.3",
                       "chatterbot_corpus/data/english/*.yml", _conversations),
  "dictionary": Domain("deb", "dict-foldoc", "20230119-1", "usr/share/dictd/foldoc.*", _dictd),
  "techdocs": Domain("deb", "python3.11-doc", "3.11.2-6+deb12u8",
                       "usr/share/doc/python3.11/html/_sources/*.rst.txt", _whole_files()),
  "quotes": Domain("deb", "fortunes", "1:1.99.1-7.3", "usr/share/games/fortunes/*", _fortunes),
}
DEFAULT_DOMAINS: tuple[str, ...] = (
  "legal", "encyclopedia", "news", "code", "dialogue", "dictionary", "techdocs", "quotes")


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


def _sha256(path: Path) -> str:
  return hashlib.sha256(path.read_bytes()).hexdigest()


def _valid_cache(out: Path, cap_bytes: int, domains: Sequence[str]) -> dict | None:
  try:
    manifest = json.loads((out / "manifest.json").read_text("utf-8"))
    built = manifest["domains"]
    if (manifest.get("name"), manifest.get("version"), manifest.get("cap_bytes")) != (
        "embedded", 1, cap_bytes):
      return None
    if set(built) | set(manifest.get("skipped", {})) != set(domains):
      return None
    if all(_sha256(out / f"{d}.jsonl") == built[d]["sha256"] for d in built):
      return manifest
  except (OSError, ValueError, KeyError, TypeError):
    pass
  return None


def build_corpus(out_dir: str, cap_bytes: int = 2_000_000, domains: Sequence[str] | None = None,
                 cache_dir: str | None = None) -> dict:
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
  cache = Path(cache_dir or os.environ.get("DOREMI_CACHE") or "~/.cache/doremi_jax")
  pkg_dir = cache.expanduser() / "packages"
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
        "bytes": path.stat().st_size, "sha256": _sha256(path),
        "source": f"{spec.kind}:{spec.package}{sep}{version} / {spec.pattern}"}
    if not manifest["domains"]:
      raise CorpusBuildError("no domain could be built")
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", "utf-8")
    os.chmod(tmp, 0o755)
    old = out.with_name(f".{out.name}.old-{os.getpid()}")
    if out.exists():
      os.rename(out, old)
    os.rename(tmp, out)
    shutil.rmtree(old, ignore_errors=True)
    return manifest
  finally:
    shutil.rmtree(tmp, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> None:
  """Command line: build the corpus and print a one-line summary per domain."""
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("out_dir")
  ap.add_argument("--cap-bytes", type=int, default=2_000_000)
  ap.add_argument("--domains", help=f"comma-separated, from {sorted(DOMAINS)}")
  ap.add_argument("--cache-dir")
  args = ap.parse_args(argv)
  start = time.perf_counter()
  domains = args.domains.split(",") if args.domains else None
  try:
    manifest = build_corpus(args.out_dir, args.cap_bytes, domains, args.cache_dir)
  except CorpusBuildError as exc:
    sys.exit(f"corpus_build: error: {exc}")
  for name, info in manifest["domains"].items():
    print(f"{name:13s} {info['documents']:7d} docs {info['characters']:10d} chars "
              f"{info['bytes']:10d} bytes  {info['source']}")
  print(f"{len(manifest['domains'])} domains in {time.perf_counter() - start:.1f}s")


if __name__ == "__main__":
  main()
