"""Every export format, written from one weights dict and loaded back."""
from __future__ import annotations

import json
import os

import gin
import pytest
import seqio

from doremi_jax import errors, mixture_files, mixtures
from doremi_jax import export as export_cli
from doremi_jax.tasks import synthetic

synthetic.register_synthetic()

WEIGHTS = {"synthetic_markov1": 0.4, "synthetic_markov2": 0.35,
           "synthetic_noise": 0.05, "synthetic_repeat": 0.2}


@pytest.fixture()
def paths(tmp_path):
  meta = {"steps": 7, "tokenizer": mixtures.tokenizer_record("synthetic_uniform")}
  return mixture_files.write_exports(str(tmp_path), "test_mix", WEIGHTS, meta)


def test_json_roundtrip(paths):
  weights, meta = mixture_files.load_weights(paths["json"])
  assert weights == pytest.approx(WEIGHTS)
  assert meta["steps"] == 7 and meta["tokenizer"]["vocab_size"] == 256


def test_reference_implementation_format(paths):
  with open(paths["doremi"]) as f:
    payload = json.load(f)
  assert payload["train_domain_weights"] == pytest.approx(WEIGHTS)
  assert sum(payload["eval_domain_weights"].values()) == pytest.approx(1.0)
  weights, _ = mixture_files.load_weights(paths["doremi"])  # our loader reads it too
  assert weights == pytest.approx(WEIGHTS)


def test_no_maxtext_file_over_streamed_domains(paths):
  """The synthetic domains are streamed: MaxText would get made-up paths, so no file (the
  MaxText file of a prepared mixture: tests/test_prepared_input.py)."""
  assert "maxtext" not in paths and set(paths) == set(mixture_files.FORMATS) - {"maxtext"}
  assert not os.path.exists(paths["json"].replace(".json", ".maxtext.json"))
  assert mixture_files.streamed_domains(WEIGHTS) == sorted(WEIGHTS)


def test_export_cli_warns_once_and_writes_the_rest(paths, tmp_path, capsys):
  stale = tmp_path / "out" / "test_mix.maxtext.json"
  stale.parent.mkdir()
  stale.write_text("{}")  # an earlier export's MaxText file would now be wrong
  written = export_cli.main([paths["json"], "--out", str(tmp_path / "out")])
  assert set(written) == set(paths) and all(os.path.isfile(p) for p in written.values())
  assert not stale.exists()
  err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
  assert len(err) == 1 and err[0].startswith("warning: no MaxText mixture written: 4 domain(s)")
  assert "doremi-corpus prepare" in err[0]


def test_module_registers_mixture(paths):
  if "test_mix" in seqio.MixtureRegistry.names():
    seqio.MixtureRegistry.remove("test_mix")
  module = mixture_files.load_module(paths["module"])
  mixture = seqio.get_mixture_or_task(module.MIXTURE_NAME)
  rates = {t.name: mixture.get_rate(t) for t in mixture.tasks}
  assert rates == pytest.approx(WEIGHTS)


def test_gin_file_holds_only_t5x_macros(paths):
  """t5x parses its flags with skip_unknown=False after its pretrain.gin defines its macros:
  the export must bind nothing t5x lacks and hold no path."""
  gin.clear_config()
  text = open(paths["gin"]).read()
  assert "/" not in text.replace("# ", "").split("\n", 2)[-1]
  gin.parse_config(["MIXTURE_OR_TASK_NAME = %gin.REQUIRED", "MIXTURE_OR_TASK_MODULE = None",
                    "TASK_FEATURE_LENGTHS = %gin.REQUIRED"])
  # what a t5x command line then binds; the export must bind nothing else t5x lacks
  gin.parse_config_files_and_bindings([paths["gin"]], ["TASK_FEATURE_LENGTHS = {'targets': 64}"],
                                      skip_unknown=False)
  assert gin.query_parameter("%MIXTURE_OR_TASK_NAME") == "test_mix"
  assert gin.query_parameter("%MIXTURE_OR_TASK_MODULE") == "test_mix"
  gin.clear_config()


def test_our_commands_import_the_module_the_gin_names(paths, monkeypatch):
  """--gin_file=EXPORT.gin with our CLIs: base.gin passes MIXTURE_OR_TASK_MODULE to
  import_task_modules, which imports it by name (the export dir on PYTHONPATH), as t5x does."""
  from doremi_jax.run import config  # pylint: disable=g-import-not-at-top
  if "test_mix" in seqio.MixtureRegistry.names():
    seqio.MixtureRegistry.remove("test_mix")
  with pytest.raises(errors.DoremiError, match="cannot import task module 'test_mix'.*PYTHONPATH"):
    config.import_task_modules(mixture_or_task_module="test_mix")
  monkeypatch.syspath_prepend(os.path.dirname(paths["gin"]))
  config.import_task_modules(mixture_or_task_module="test_mix")
  assert "test_mix" in seqio.MixtureRegistry.names()


def test_refuses_to_overwrite(paths, tmp_path):
  with pytest.raises(errors.DoremiError, match="already exists"):
    mixture_files.write_exports(str(tmp_path), "test_mix", WEIGHTS, {})


@pytest.mark.parametrize("bad, message", [
    ({"a": 0.5, "b": 0.4}, "sum to 0.9"),
    ({"a": 1.2, "b": -0.2}, ">= 0"),
    ({"a": float("nan"), "b": 1.0}, "finite"),
    ({}, "no domains"),
])
def test_bad_weights(bad, message):
  with pytest.raises(errors.DoremiError, match=message):
    mixtures.check_weights(bad)


def test_tokenizer_mismatch_is_an_error():
  recorded = {"type": "SentencePieceVocabulary", "vocab_size": 8000, "sha256": "abc"}
  with pytest.raises(errors.DoremiError, match="tokenizer mismatch"):
    mixtures.check_same_tokenizer(recorded, "synthetic_uniform")
  mixtures.check_same_tokenizer(mixtures.tokenizer_record("synthetic_uniform"),
                                      "synthetic_uniform")


def test_missing_weights_file(tmp_path):
  with pytest.raises(errors.DoremiError, match="not found"):
    mixture_files.load_weights(os.path.join(str(tmp_path), "nope.json"))


def test_module_refuses_other_tokenizer(tmp_path):
  meta = {"tokenizer": {"type": "SentencePieceVocabulary", "vocab_size": 8000, "sha256": "abc"}}
  paths = mixture_files.write_exports(str(tmp_path), "other_tok_mix", WEIGHTS, meta)
  with pytest.raises(errors.DoremiError, match="tokenizer mismatch"):
    mixture_files.load_module(paths["module"])
