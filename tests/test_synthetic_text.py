"""The generated real-text corpus: deterministic bytes, sizes, CLI errors, layout."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from doremi_jax import errors
from doremi_jax.corpora import synthetic_text
from doremi_jax.data import corpus_reader

REPO = Path(__file__).resolve().parents[1]
SCALE = 0.1
FILES = [f"{d}.jsonl" for d in synthetic_text.DOMAINS] + [synthetic_text.MANIFEST]


def _bytes(root: Path) -> dict[str, bytes]:
  return {name: (root / name).read_bytes() for name in FILES}


def test_same_bytes_every_write_and_no_needless_rewrite(tmp_path):
  a, b = tmp_path / "a", tmp_path / "b"
  assert synthetic_text.write_corpus(str(a), seed=3, scale=SCALE) == \
      synthetic_text.write_corpus(str(b), seed=3, scale=SCALE)
  assert _bytes(a) == _bytes(b)
  mtimes = {name: (a / name).stat().st_mtime_ns for name in FILES}
  synthetic_text.write_corpus(str(a), seed=3, scale=SCALE)
  assert {name: (a / name).stat().st_mtime_ns for name in FILES} == mtimes
  synthetic_text.write_corpus(str(b), seed=4, scale=SCALE)  # other settings: rewritten
  assert (b / "grammar.jsonl").read_bytes() != (a / "grammar.jsonl").read_bytes()
  assert json.loads((b / synthetic_text.MANIFEST).read_text())["seed"] == 4
  assert not [p for p in b.iterdir() if p.name.startswith(".")]  # no temp files left


def test_sizes_documents_and_growth_by_scale(tmp_path):
  chars = synthetic_text.write_corpus(str(tmp_path), scale=SCALE)
  for name, n in chars.items():
    target = synthetic_text.BASE_CHARS[name] * SCALE
    assert target <= n < target + 2 * synthetic_text.DOC_CHARS[1]
  assert min(chars["grammar"], chars["arithmetic"]) > chars["constant"] > chars["random"]
  docs = synthetic_text.generate(scale=SCALE)
  for name, texts in docs.items():
    lengths = [len(t) for t in texts]
    assert len(texts) >= 15 and min(lengths) >= synthetic_text.DOC_CHARS[0]
    assert max(lengths) < synthetic_text.DOC_CHARS[1] + 200
  assert len(set(docs["random"])) == len(docs["random"])
  assert all(set(t) <= set(synthetic_text._ALNUM + " \n") for t in docs["random"])
  assert "12 ships before dawn." in docs["constant"][0]
  assert "=" in docs["arithmetic"][0] and docs["grammar"][0][0].isupper()
  bigger = synthetic_text.generate(scale=2 * SCALE)  # each domain's stream only grows
  assert all(bigger[name][:len(texts)] == texts for name, texts in docs.items())


def test_discover_finds_the_four_domains(tmp_path):
  synthetic_text.write_corpus(str(tmp_path), scale=SCALE)
  found = corpus_reader.discover(str(tmp_path))
  assert sorted(found) == sorted(synthetic_text.DOMAINS)
  texts = list(corpus_reader.iter_documents(found["arithmetic"]))
  assert texts == synthetic_text.generate(scale=SCALE)["arithmetic"]


def test_bad_input_is_one_line(tmp_path):
  for args in (["--scale", "-1"], ["--scale", "nan"], ["--seed", "-2"]):
    proc = subprocess.run([sys.executable, "-m", "doremi_jax.corpora.synthetic_text",
                           str(tmp_path / "out"), *args], cwd=REPO, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error: ") and len(proc.stderr.strip().splitlines()) == 1
  (tmp_path / "other.jsonl").write_text('{"text": "x"}\n')
  with pytest.raises(errors.DoremiError, match="other domain files"):
    synthetic_text.write_corpus(str(tmp_path), scale=SCALE)


def test_cli_prints_one_line_per_domain(tmp_path, capsys):
  synthetic_text.main([str(tmp_path / "c"), "--scale", str(SCALE)])
  lines = capsys.readouterr().out.strip().splitlines()
  assert [ln.split()[0] for ln in lines] == list(synthetic_text.DOMAINS)
