"""Every console script exits 0 on success: setup.py's entry points name functions that
return None (a console script runs ``sys.exit(target())``; a returned dict exits 1)."""
from __future__ import annotations

import importlib
import re
import sys
from pathlib import Path

import pytest

from doremi_jax import mixture_files, mixtures
from doremi_jax.tasks import synthetic

SETUP = Path(__file__).resolve().parents[1] / "setup.py"


def _entry_points() -> dict[str, tuple[str, str]]:
  """script -> (module, function), as setup.py declares them."""
  found = re.findall(r'"(doremi-[\w-]+)=([\w.]+):(\w+)"', SETUP.read_text())
  return {script: (module, fn) for script, module, fn in found}


def test_every_cli_module_has_a_console_script():
  modules = {m for m, _ in _entry_points().values()}
  assert modules == {"doremi_jax.train", "doremi_jax.pipeline", "doremi_jax.evaluate",
                     "doremi_jax.corpus", "doremi_jax.export", "doremi_jax.compile_check"}


@pytest.mark.parametrize("script", sorted(_entry_points()))
def test_entry_point_exits_zero_when_main_succeeds(script, monkeypatch):
  module_name, fn = _entry_points()[script]
  module = importlib.import_module(module_name)
  calls = []
  monkeypatch.setattr(module, "main", lambda *a: calls.append(a) or {"result": 1})
  with pytest.raises(SystemExit) as exit_info:
    sys.exit(getattr(module, fn)())  # what the installed script does
  assert exit_info.value.code in (None, 0) and calls == [()]  # main() reads sys.argv


def test_doremi_export_script_exits_zero(tmp_path, monkeypatch, capsys):
  """A real export through the entry point returns None and writes the formats."""
  synthetic.register_synthetic()
  weights = {"synthetic_markov1": 0.4, "synthetic_markov2": 0.35,
             "synthetic_noise": 0.05, "synthetic_repeat": 0.2}
  path = mixture_files.write_weights(str(tmp_path / "mix.json"), "mix", weights, {
      "tokenizer": mixtures.tokenizer_record("synthetic_uniform")})
  module, fn = _entry_points()["doremi-export"]
  monkeypatch.setattr(sys, "argv", ["doremi-export", path, "--out", str(tmp_path / "out")])
  assert getattr(importlib.import_module(module), fn)() is None
  assert (tmp_path / "out" / "mix.py").is_file()
  assert "mix.py" in capsys.readouterr().out
