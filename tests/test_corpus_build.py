"""Tests for doremi_jax.corpus_build (a small real build plus offline unit tests)."""
from __future__ import annotations

import bz2
import hashlib
import io
import json
import lzma
import os
import tarfile
from pathlib import Path

import pytest

from doremi_jax.corpora import corpus_build as cb
from doremi_jax.corpora import corpus_sources
from doremi_jax.data import corpus_reader

CAP = 50_000
SMALL_DOMAINS = ("dialogue", "code")


def _cache_dir() -> str:
  return os.environ.get("DOREMI_CACHE") or os.path.expanduser("~/.cache/doremi_jax")


_DOWNLOAD_FAILURE: list[str] = []  # remembered so that later tests skip at once


def _build(out: Path, domains: tuple[str, ...] = SMALL_DOMAINS) -> dict:
  if _DOWNLOAD_FAILURE:
    pytest.skip(_DOWNLOAD_FAILURE[0])
  try:
    return cb.build_corpus(str(out), cap_bytes=CAP, domains=domains, cache_dir=_cache_dir())
  except cb.CorpusBuildError as exc:
    if "download" not in str(exc):
      raise
    _DOWNLOAD_FAILURE.append(f"package download impossible here: {exc}")
    pytest.skip(_DOWNLOAD_FAILURE[0])


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, dict]:
  out = tmp_path_factory.mktemp("corpus") / "embedded"
  return out, _build(out)


def test_manifest_matches_files(built):
  out, manifest = built
  assert json.loads((out / "manifest.json").read_text("utf-8")) == manifest
  assert manifest["name"] == "embedded" and manifest["version"] == 1
  assert manifest["cap_bytes"] == CAP
  assert list(manifest["domains"]) == list(SMALL_DOMAINS)
  for name, info in manifest["domains"].items():
    path = out / f"{name}.jsonl"
    data = path.read_bytes()
    assert info["bytes"] == len(data)
    assert info["sha256"] == hashlib.sha256(data).hexdigest()
    texts = [json.loads(line)["text"] for line in data.decode("utf-8").splitlines()]
    assert len(texts) == info["documents"] > 0
    assert sum(map(len, texts)) == info["characters"]
    assert all(isinstance(t, str) and t.strip() == t and t for t in texts)
    assert sum(len(t.encode()) for t in texts) <= CAP or len(texts) == 1
    assert "==" in info["source"]
  assert sorted(p.name for p in out.iterdir()) == sorted(
    ["manifest.json"] + [f"{d}.jsonl" for d in SMALL_DOMAINS])


def test_build_is_deterministic(built, tmp_path):
  out, manifest = built
  again = _build(tmp_path / "again")
  assert again["domains"] == manifest["domains"]
  for name in SMALL_DOMAINS:
    assert (tmp_path / "again" / f"{name}.jsonl").read_bytes() == (
      out / f"{name}.jsonl").read_bytes()


def test_cached_build_is_not_rewritten(built):
  out, manifest = built
  mtimes = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
  assert _build(out) == manifest
  assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == mtimes


def test_corrupted_build_is_rebuilt(tmp_path):
  out = tmp_path / "corpus"
  manifest = _build(out)
  (out / "dialogue.jsonl").write_text('{"text": "tampered"}\n', "utf-8")
  assert _build(out) == manifest
  assert hashlib.sha256((out / "dialogue.jsonl").read_bytes()).hexdigest() == \
    manifest["domains"]["dialogue"]["sha256"]
  assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp leftovers


def test_unknown_domain_raises(tmp_path):
  with pytest.raises(cb.CorpusBuildError, match="unknown domain"):
    cb.build_corpus(str(tmp_path / "x"), domains=["legal", "no-such-domain"])
  assert not (tmp_path / "x").exists()


def test_unavailable_debian_domain_is_skipped(tmp_path, monkeypatch):
  def no_apt(package, version, pkg_dir):
    raise cb.SourceUnavailable(f"download of Debian package {package} failed: no apt")

  monkeypatch.setattr(cb, "fetch_deb", no_apt)
  manifest = _build(tmp_path / "c", ("dialogue", "quotes"))
  assert list(manifest["domains"]) == ["dialogue"]
  assert "no apt" in manifest["skipped"]["quotes"]


def test_fetch_deb_without_apt_get(tmp_path, monkeypatch):
  monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
  with pytest.raises(cb.SourceUnavailable, match="fortunes"):
    cb.fetch_deb("fortunes", "1:1.99.1-7.3", tmp_path / "pkgs")


def test_strip_wiki_markup():
  raw = (
    "{{Infobox person|name=Ada {{nowrap|Lovelace}}}}\n"
    "'''Ada Lovelace''' was an [[England|English]] [[mathematician]].<ref>Toole 1998</ref>"
    " See [http://example.com the site].<ref name=x/>\n"
    "[[File:Ada.jpg|thumb|A [[portrait]] of Ada]]\n"
    "== Early life ==\n"
    "* Born in [[London]] &ndash; 1815.<!-- hidden -->\n"
    "{| class=\"wikitable\"\n|-\n| cell || cell\n|}\n"
    "[[Category:Mathematicians]]\n[[de:Ada Lovelace]]\n<small>small text</small>"
  )
  text = corpus_sources.strip_wiki_markup(raw)
  assert text == ("Ada Lovelace was an English mathematician. See the site.\n\n"
          "Early life\nBorn in London \u2013 1815.\n\nsmall text")


def test_wikipedia_extractor_skips_redirects_and_other_namespaces():
  xml = """<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.10/">
      <page><title>Old</title><ns>0</ns><redirect title="New"/>
    <revision><text>#REDIRECT [[New]]</text></revision></page>
      <page><title>Talk:New</title><ns>1</ns><revision><text>chat</text></revision></page>
      <page><title>New</title><ns>0</ns>
    <revision><text>'''New''' is a [[word|term]] &lt;b&gt;x&lt;/b&gt; &amp;lt;.</text>
      </revision></page>
  </mediawiki>"""
  docs = list(corpus_sources._wikipedia([("x.bz2", bz2.compress(xml.encode()))]))
  assert docs == ["New\n\nNew is a term x <."]


def _ar(members: list[tuple[str, bytes]]) -> bytes:
  out = b"!<arch>\n"
  for name, data in members:
    header = f"{name + '/':<16}{0:<12}{0:<6}{0:<6}{'100644':<8}{len(data):<10}`\n"
    out += header.encode("ascii") + data + (b"\n" if len(data) % 2 else b"")
  return out


def test_read_members_from_deb(tmp_path):
  buf = io.BytesIO()
  with tarfile.open(fileobj=buf, mode="w") as tf:
    for name, body in [("./usr/share/games/fortunes/a", b"One.\n%\nTwo.\n"),
                           ("./usr/share/games/fortunes/a.dat", b"\x00\x01"),
                           ("./usr/share/doc/other", b"no")]:
      info = tarfile.TarInfo(name)
      info.size = len(body)
      tf.addfile(info, io.BytesIO(body))
  deb = tmp_path / "fortunes_1%3a1.0-1_all.deb"
  deb.write_bytes(_ar([("debian-binary", b"2.0\n"), ("control.tar.xz", lzma.compress(b"")),
                         ("data.tar.xz", lzma.compress(buf.getvalue()))]))
  members = cb.read_members(deb, "usr/share/games/fortunes/*")
  assert sorted(n for n, _ in members) == ["./usr/share/games/fortunes/a",
                                             "./usr/share/games/fortunes/a.dat"]
  assert cb.take_capped(corpus_sources._fortunes(members), 1000) == ["One.", "Two."]
  assert cb.fetch_deb("fortunes", "1:1.0-1", tmp_path) == deb  # cached: no apt-get call


def test_take_capped_keeps_whole_documents():
  assert cb.take_capped(["a" * 10, "", "b" * 10, "c" * 10], 25) == ["a" * 10, "b" * 10]
  assert cb.take_capped(["x" * 100, "y"], 10) == ["x" * 100]  # always at least one
  assert cb.take_capped(["  \n", "ok \r\nline  \n"], 10) == ["ok\nline"]


def test_split_of_is_stable_and_proportional():
  texts = [f"document number {i}" for i in range(4000)]
  splits = [corpus_reader.split_of(t) for t in texts]
  assert splits == [corpus_reader.split_of(t) for t in texts]
  assert set(splits) == {"train", "validation", "test"}
  assert 0.03 < splits.count("validation") / len(texts) < 0.07
  assert 0.03 < splits.count("test") / len(texts) < 0.07
  assert {corpus_reader.split_of(t, 0.0) for t in texts} == {"train"}
  assert {corpus_reader.split_of(t, 0.5) for t in texts} == {"validation", "test"}
  with pytest.raises(ValueError):
    corpus_reader.split_of("x", 0.6)
