"""The controls corpus: byte shares, deterministic bytes, caching, what each control holds."""
from __future__ import annotations

import hashlib
import json
import zlib
from pathlib import Path

import pytest

from doremi_jax import errors
from doremi_jax.corpora import controls
from doremi_jax.data import corpus_reader

REAL = ("alpha", "beta", "gamma")
CAP = 20_000


@pytest.fixture(scope="module")
def real_dir(tmp_path_factory) -> Path:
  """Three small real-looking domains of numbered sentences (~30 KB each)."""
  root = tmp_path_factory.mktemp("real")
  for k, name in enumerate(REAL):
    docs = [" ".join(f"The {name} report {i} notes item {j * (k + 2)} of the survey."
                     for j in range(8)) for i in range(60)]
    (root / f"{name}.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in docs))
  return root


def _write(out: Path, real_dir: Path, **kw) -> Path:
  kw = {"real_domains": REAL, "real_cap_bytes": CAP, **kw}
  return Path(controls.write_controls_corpus(str(out), str(real_dir), **kw))


def _hashes(root: Path) -> dict[str, str]:
  return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.iterdir())}


def _docs(root: Path, name: str) -> list[str]:
  return list(corpus_reader.iter_documents([root / f"{name}.jsonl"]))


def test_shares_and_layout(real_dir, tmp_path):
  out = _write(tmp_path / "c", real_dir)
  assert sorted(corpus_reader.discover(str(out))) == sorted(REAL + controls.CONTROL_DOMAINS)
  sizes = {n: sum(len(t.encode()) for t in _docs(out, n)) for n in REAL + controls.CONTROL_DOMAINS}
  total = sum(sizes.values())
  assert sizes["junk"] / total == pytest.approx(0.4, abs=0.005)
  assert sizes["boilerplate"] / total == pytest.approx(0.1, abs=0.01)
  assert all(CAP - 600 < sizes[n] <= CAP for n in REAL)  # whole documents up to the cap
  manifest = json.loads((out / controls.MANIFEST).read_text())
  assert {n: e["text_bytes"] for n, e in manifest["domains"].items()} == sizes
  assert manifest["domains"]["junk"]["role"] == "junk"
  assert manifest["domains"]["alpha"]["role"] == "real"
  assert _docs(out, "alpha")[0] == _docs(real_dir, "alpha")[0]
  assert len(_docs(out, "junk")) >= 20 and len(_docs(out, "boilerplate")) >= 20  # splits
  other = _write(tmp_path / "d", real_dir, junk_fraction=0.2, boilerplate_fraction=0.3)
  manifest = json.loads((other / controls.MANIFEST).read_text())["domains"]
  assert manifest["junk"]["share"] == pytest.approx(0.2, abs=0.005)
  assert manifest["boilerplate"]["share"] == pytest.approx(0.3, abs=0.01)


def test_long_documents_are_cut_at_line_breaks(tmp_path):
  (tmp_path / "real").mkdir()
  doc = "\n".join(f"line {i} of a long source file " + "x" * (1 + i % 50) for i in range(2000))
  (tmp_path / "real" / "long.jsonl").write_text(json.dumps({"text": doc}) + "\n")
  out = controls.write_controls_corpus(str(tmp_path / "c"), str(tmp_path / "real"),
                                       real_domains=("long",), real_cap_bytes=10**6)
  pieces = _docs(Path(out), "long")
  assert len(pieces) > 10 and max(map(len, pieces)) <= controls.PIECE_CHARS
  assert "\n".join(pieces) == doc


def test_deterministic_and_cached(real_dir, tmp_path):
  a, b = _write(tmp_path / "a", real_dir), _write(tmp_path / "b", real_dir)
  assert _hashes(a) == _hashes(b)
  stamps = {p.name: p.stat().st_mtime_ns for p in a.iterdir()}
  inode = a.stat().st_ino
  assert _write(tmp_path / "a", real_dir) == a  # same arguments: nothing written
  assert {p.name: p.stat().st_mtime_ns for p in a.iterdir()} == stamps
  assert a.stat().st_ino == inode
  _write(tmp_path / "a", real_dir, seed=1)  # another seed: rewritten as a whole
  assert _hashes(a)["junk.jsonl"] != _hashes(b)["junk.jsonl"]
  assert _hashes(a)["alpha.jsonl"] == _hashes(b)["alpha.jsonl"]
  (a / "junk.jsonl").write_text("")  # a damaged file is noticed and replaced
  _write(tmp_path / "a", real_dir)
  assert _hashes(a) == _hashes(b)
  assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp dirs left


def test_junk_is_incompressible_and_boilerplate_compresses(real_dir, tmp_path):
  out = _write(tmp_path / "c", real_dir)

  def ratio(name: str) -> float:
    raw = "\n".join(_docs(out, name)).encode()
    return len(zlib.compress(raw, 9)) / len(raw)

  junk = _docs(out, "junk")
  assert set("".join(junk)) == set(controls.JUNK_ALPHABET)
  assert ratio("junk") > 0.8  # log2(95) / 8 = 0.82 bits per bit at best
  assert ratio("boilerplate") < 0.1
  assert ratio("alpha") < 0.3
  letters = _docs(out, "boilerplate")
  assert len(set(letters)) == len(letters)  # near-duplicates, never exact ones
  assert all(t.startswith("Dear ") and "order number" in t for t in letters)


def test_bad_input_is_one_line(real_dir, tmp_path):
  for kw, match in [({"junk_fraction": 0.7, "boilerplate_fraction": 0.3}, "must be < 1"),
                    ({"junk_fraction": -0.1}, "junk_fraction"),
                    ({"seed": -1}, "seed"), ({"real_cap_bytes": 0}, "real_cap_bytes")]:
    with pytest.raises(errors.DoremiError, match=match):
      _write(tmp_path / "c", real_dir, **kw)
  with pytest.raises(errors.DoremiError, match="has no delta.jsonl"):
    controls.write_controls_corpus(str(tmp_path / "c"), str(real_dir), real_domains=("delta",))
  with pytest.raises(errors.DoremiError, match="clash"):
    controls.write_controls_corpus(str(tmp_path / "c"), str(real_dir), real_domains=("junk",))
  (tmp_path / "mine").mkdir()
  (tmp_path / "mine" / "notes.txt").write_text("keep me")
  with pytest.raises(errors.DoremiError, match="holds no controls corpus"):
    _write(tmp_path / "mine", real_dir)
  assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
  (tmp_path / "mine" / controls.MANIFEST).write_text('{"name": "embedded"}')  # another corpus
  with pytest.raises(errors.DoremiError, match="holds no controls corpus"):
    _write(tmp_path / "mine", real_dir)


def test_gin_experiment_registers_and_prepares(real_dir, tmp_path, monkeypatch):
  """controls.gin end to end on the small real dir (the embedded build stubbed out)."""
  import gin

  from doremi_jax import mixtures
  from doremi_jax.corpora import corpus_build
  from doremi_jax.run import config, pipeline  # noqa: F401  (every configurable the gin binds)
  monkeypatch.setenv("DOREMI_CACHE", str(tmp_path / "cache"))  # the controls corpus goes here
  builds = []
  monkeypatch.setattr(corpus_build, "build_corpus", lambda *a, **k: builds.append(a))
  for name in controls.REAL_DOMAINS:
    (tmp_path / "real").mkdir(exist_ok=True)
    (tmp_path / "real" / f"{name}.jsonl").write_bytes((real_dir / "alpha.jsonl").read_bytes())
  try:
    gin.clear_config()
    config.configure(["experiments/controls.gin"], [
        f"EMBEDDED_CORPUS_DIR = '{tmp_path / 'real'}'", "CONTROLS_REAL_CAP_BYTES = 20000",
        "VOCAB_SIZE = 512", f"PREPARED_DIR = '{tmp_path / 'prep'}'"])
    tasks = [f"controls_{d}" for d in controls.REAL_DOMAINS + controls.CONTROL_DOMAINS]
    assert config.register_tasks() == sorted(tasks)
    assert builds == [(str(tmp_path / "real"), corpus_build.DEFAULT_CAP_BYTES)]
    assert [p.name[:9] for p in (tmp_path / "cache").iterdir()] == ["controls_"]
    assert gin.query_parameter("%CONTROL_DOMAINS") == ["controls_junk", "controls_boilerplate"]
    natural = mixtures.mixture_rates(gin.query_parameter("%BASELINE_MIXTURE"))
    assert max(natural, key=natural.get) == "controls_junk" and natural["controls_junk"] > 0.4
    uniform = mixtures.mixture_rates(gin.query_parameter("%UNIFORM_MIXTURE"))
    assert uniform == pytest.approx({t: 1 / 6 for t in tasks})
  finally:
    gin.clear_config()
