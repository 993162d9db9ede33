"""Small corpora: a vocab size the corpus cannot support is lowered with one warning line,
one it cannot hold is an error naming the minimum, and nothing is written into the corpus
dir (tokenizers go under the cache root)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from doremi_jax import corpus as corpus_cli
from doremi_jax.corpora import synthetic_text


def _snapshot(root: Path) -> dict[str, bytes]:
  return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))}


def test_vocab_is_lowered_to_what_the_corpus_supports(tmp_path, monkeypatch, capsys):
  monkeypatch.setenv("DOREMI_CACHE", str(tmp_path / "cache"))
  synthetic_text.write_corpus(str(tmp_path / "small"), scale=0.05)  # ~75k characters
  before = _snapshot(tmp_path / "small")
  corpus_cli.main(["stats", str(tmp_path / "small")])  # default vocab 8000
  out, err = capsys.readouterr()
  warnings = [ln for ln in err.splitlines() if ln.strip()]
  assert len(warnings) == 1 and warnings[0].startswith("warning: this corpus supports at most")
  lowered = int(warnings[0].split("at most ")[1].split()[0])
  assert 300 <= lowered < 8000 and f"({lowered} tokens" in out
  assert _snapshot(tmp_path / "small") == before  # nothing written into the corpus
  assert list((tmp_path / "cache" / "tokenizers").rglob("*.model"))


def test_vocab_too_small_for_the_characters_names_the_minimum(tmp_path, monkeypatch, capsys):
  monkeypatch.setenv("DOREMI_CACHE", str(tmp_path / "cache"))
  chars = [chr(0x4E00 + i) for i in range(400)]  # 400 distinct CJK characters
  docs = ["".join(chars[(i * 7 + j) % 400] for j in range(300)) for i in range(200)]
  (tmp_path / "cjk").mkdir()
  (tmp_path / "cjk" / "han.jsonl").write_text(
      "".join(json.dumps({"text": d}) + "\n" for d in docs), encoding="utf-8")
  with pytest.raises(SystemExit) as exit_info:
    corpus_cli.main(["stats", str(tmp_path / "cjk"), "--vocab", "300"])
  err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
  assert exit_info.value.code == 2 and len(err) == 1, err
  assert "cannot hold this corpus's characters; choose a vocab size >= " in err[0]
