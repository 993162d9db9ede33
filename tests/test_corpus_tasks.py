"""Corpus dirs, the embedded corpus and the Pile as SeqIO Tasks; tokenizer; corpus CLI."""
from __future__ import annotations

import gzip
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import gin
import numpy as np
import pytest
import seqio
import zstandard

from doremi_jax import corpus as corpus_cli
from doremi_jax import errors, mixture_files, mixtures
from doremi_jax.corpora import corpus_build
from doremi_jax.data import corpus_reader, tokenizer
from doremi_jax.run import config, pipeline  # noqa: F401  (pipeline: every configurable the gin files bind)
from doremi_jax.tasks import corpus as corpus_tasks
from doremi_jax.tasks import pile

REPO = Path(__file__).resolve().parents[1]
VOCAB = 320
LEN = 32
_NOISE = re.compile(r"^(WARNING: All log messages|[IWEF]\d{4} |To enable the following)")


def _words(rng: np.random.Generator, letters: str, n: int) -> str:
  return " ".join("".join(rng.choice(list(letters), size=rng.integers(2, 8))) for _ in range(n))


def _docs(seed: int, letters: str, count: int) -> list[str]:
  rng = np.random.default_rng(seed)
  return [_words(rng, letters, int(rng.integers(20, 60))) for _ in range(count)]


def write_user_corpus(root: Path) -> dict[str, list[str]]:
  """Every layout: .jsonl, .jsonl.gz, .jsonl.zst files and a folder of .jsonl + .txt."""
  root.mkdir(parents=True)
  docs = {"alpha": _docs(1, "abcdefgh", 60), "beta": _docs(2, "ijklmnop", 40),
          "gamma": _docs(3, "qrstuvwx", 30)}
  def lines(ds):
    return "".join(json.dumps({"text": d, "id": i}) + "\n" for i, d in enumerate(ds))

  (root / "alpha.jsonl").write_text(lines(docs["alpha"]) + "\n", "utf-8")  # blank line ok
  (root / "beta.jsonl.gz").write_bytes(gzip.compress(lines(docs["beta"]).encode()))
  (root / "gamma.jsonl.zst").write_bytes(
      zstandard.ZstdCompressor().compress(lines(docs["gamma"]).encode()))
  folder = root / "Delta Set"
  folder.mkdir()
  delta = _docs(4, "aeiouyz", 30)
  (folder / "a.jsonl").write_text(lines(delta[:20]), "utf-8")
  for i, d in enumerate(delta[20:]):
    (folder / f"doc{i:02d}.txt").write_text(d, "utf-8")
  docs["delta_set"] = delta
  (root / "manifest.json").write_text("{}", "utf-8")  # not a domain
  return docs


@pytest.fixture(scope="module")
def user_corpus(tmp_path_factory) -> tuple[Path, dict[str, list[str]], list[str]]:
  root = tmp_path_factory.mktemp("user") / "corpus"
  docs = write_user_corpus(root)
  names = corpus_tasks.register_corpus(str(root), prefix="uc", vocab_size=VOCAB)
  return root, docs, names


def test_layouts_and_split_determinism(user_corpus):
  root, docs, names = user_corpus
  assert names == ["uc_alpha", "uc_beta", "uc_delta_set", "uc_gamma"]
  found = corpus_reader.discover(str(root))
  assert sorted(found) == sorted(docs)
  for name, files in found.items():
    assert list(corpus_reader.iter_documents(files)) == docs[name]
    train = list(corpus_reader.iter_split(files, "train", 0.2))
    val = list(corpus_reader.iter_split(files, "validation", 0.2))
    test = list(corpus_reader.iter_split(files, "test", 0.2))
    assert sorted(train + val + test) == sorted(docs[name])
    assert not set(train) & set(val) and not set(train) & set(test) and not set(val) & set(test)
    assert val == [d for d in docs[name] if corpus_reader.split_of(d, 0.2) == "validation"]
    assert train == list(corpus_reader.iter_split(files, "train", 0.2))


def _chunks(task_name: str, split: str = "train") -> list[dict]:
  ds = seqio.get_mixture_or_task(task_name).get_dataset(
      {"targets": LEN}, split=split, shuffle=False, num_epochs=1)
  return list(ds.as_numpy_iterator())


def _vocab(task: str) -> seqio.Vocabulary:
  return errors.require_task(task).output_features["targets"].vocabulary


def _tf_len(vocab: seqio.Vocabulary, text: str) -> int:
  return int(vocab.encode_tf(text).shape[0])  # the Task's own tokenizer op


def test_packing_within_domain_with_eos(user_corpus):
  _, docs, _ = user_corpus
  for name in ("uc_alpha", "uc_delta_set"):
    chunks = _chunks(name)
    assert chunks and all(c["domain"] == name.encode() and c["targets"].shape == (LEN,)
                          for c in chunks)
    vocab = _vocab(name)
    train = [d for d in docs[name[3:]] if corpus_reader.split_of(d, 0.05) == "train"]
    stream = np.concatenate([c["targets"] for c in chunks])
    assert len(stream) == sum(_tf_len(vocab, d) + 1 for d in train) // LEN * LEN
    pieces = np.split(stream, np.flatnonzero(stream == 1) + 1)  # EOS (1) ends each document
    assert len(pieces) - 1 == (stream == 1).sum() >= len(train) - 2
    for doc, piece in zip(train, pieces[:-1]):
      assert piece[-1] == 1 and vocab.decode(piece[:-1].tolist()) == doc
    assert _chunks(name, "validation")[0]["domain"] == name.encode()


def test_baseline_rates_are_train_token_counts(user_corpus):
  _, docs, names = user_corpus
  vocab = _vocab("uc_alpha")
  counts = {f"uc_{d}": sum(_tf_len(vocab, t) + 1 for t in ds
                           if corpus_reader.split_of(t, 0.05) == "train")
            for d, ds in docs.items()}
  total = sum(counts.values())
  rates = mixtures.mixture_rates("uc_baseline")
  assert rates == pytest.approx({k: v / total for k, v in counts.items()})
  assert mixtures.mixture_rates("uc_uniform") == pytest.approx({n: 0.25 for n in names})
  tok_dir = Path(vocab.sentencepiece_model_file).parent  # under the cache root
  assert not (user_corpus[0] / "tokenizer").exists()  # nothing written into the corpus
  cache = json.loads((tok_dir / "token_counts.json").read_text())
  assert len(cache["entries"]) == 4


def test_mixture_sampling(user_corpus):
  ds = seqio.get_mixture_or_task("uc_baseline").get_dataset(
      {"targets": LEN}, split="train", shuffle=True, seed=3)
  seen = [ex["domain"].decode() for ex in ds.take(200).as_numpy_iterator()]
  assert set(seen) <= set(user_corpus[2]) and len(set(seen)) >= 3


def test_tokenizer_cache_and_determinism(user_corpus, tmp_path, monkeypatch):
  model = Path(_vocab("uc_alpha").sentencepiece_model_file)
  copy = tmp_path / "copy"
  write_user_corpus(copy)  # the same texts
  corpus_tasks.register_corpus(str(copy), prefix="uc2", vocab_size=VOCAB)
  trained = Path(_vocab("uc2_alpha").sentencepiece_model_file)
  assert trained.read_bytes() == model.read_bytes()  # deterministic

  def no_training(*args, **kwargs):
    raise AssertionError("retrained a cached tokenizer")

  monkeypatch.setattr(tokenizer, "train_sentencepiece", no_training)
  corpus_tasks.register_corpus(str(copy), prefix="uc2", vocab_size=VOCAB)  # cached
  with open(copy / "gamma.jsonl.zst", "ab") as f:  # a changed domain invalidates the model
    f.write(zstandard.ZstdCompressor().compress(b'{"text": "zzz new document"}\n'))
  with pytest.raises(AssertionError, match="retrained"):
    corpus_tasks.register_corpus(str(copy), prefix="uc2", vocab_size=VOCAB)


def test_bytes_vocabulary_and_vocab_check(user_corpus):
  root, docs, _ = user_corpus
  corpus_tasks.register_corpus(str(root), prefix="ucb", vocabulary="bytes")
  vocab = errors.require_task("ucb_beta").output_features["targets"].vocabulary
  assert isinstance(vocab, seqio.ByteVocabulary)
  counts = {d: sum(len(t.encode()) + 1 for t in ds if corpus_reader.split_of(t, 0.05) == "train")
            for d, ds in docs.items()}
  assert mixtures.mixture_rates("ucb_baseline")["ucb_beta"] == pytest.approx(
      counts["beta"] / sum(counts.values()))
  tokenizer.check_vocab_matches(259, vocab)
  with pytest.raises(errors.DoremiError, match="vocab/tokenizer mismatch"):
    tokenizer.check_vocab_matches(256, vocab)


def test_provenance_reproduces_registration(user_corpus):
  names = user_corpus[2]
  specs = mixtures.registration_specs(names)
  code = "\n".join([
      "from doremi_jax import mixtures",
      f"mixtures.apply_specs({specs!r})",
      "print(mixtures.mixture_rates('uc_baseline'))"])
  proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                        timeout=120)
  assert proc.returncode == 0, proc.stderr[-2000:]
  rates = eval(proc.stdout.strip().splitlines()[-1])  # pylint: disable=eval-used
  assert rates == pytest.approx(mixtures.mixture_rates("uc_baseline"))


def test_gin_corpus_and_embedded_slice(user_corpus, tmp_path):
  root = user_corpus[0]
  try:
    gin.clear_config()
    config.configure(["experiments/corpus.gin"],
                        [f"CORPUS_DIR = '{root}'", "CORPUS_PREFIX = 'gc'", f"VOCAB_SIZE = {VOCAB}"])
    assert config.register_tasks() == ["gc_alpha", "gc_beta", "gc_delta_set", "gc_gamma"]
    assert "CORPUS_DIR = " in gin.operative_config_str()
    gin.bind_parameter("%VOCAB_SIZE", 300)  # the model's; the tokenizer keeps its 320
    gin.bind_parameter("%TOKENIZER_VOCAB_SIZE", VOCAB)
    with pytest.raises(errors.DoremiError, match="VOCAB_SIZE=300 .* has 320 tokens"):
      config.register_tasks()
    # A ~60 KB slice of the real embedded corpus, built from the package cache and prepared
    # by the Beam job.
    gin.clear_config()
    config.configure(["experiments/embedded.gin"], [
        f"EMBEDDED_CORPUS_DIR = '{tmp_path / 'emb'}'", "EMBEDDED_CAP_BYTES = 60000",
        "VOCAB_SIZE = 512", f"PREPARED_DIR = '{tmp_path / 'prep'}'"])
    try:
      config.register_tasks()
    except corpus_build.CorpusBuildError as exc:
      pytest.skip(f"embedded corpus cannot be built here: {exc}")
    built = json.loads((tmp_path / "emb" / "manifest.json").read_text())["domains"]
    rates = mixtures.mixture_rates("embedded_natural")  # from the prepared manifest
    assert sorted(rates) == sorted(f"embedded_{d}" for d in built) and min(rates.values()) > 0
    ex = next(seqio.get_mixture_or_task("embedded_uniform").get_dataset(
        {"targets": 128}, split="train", shuffle=True, seed=0).as_numpy_iterator())
    assert ex["domain"].decode() in rates and ex["targets"].max() < 512
  finally:
    gin.clear_config()


def test_tfds_domain_construction():
  task = errors.require_task(
      corpus_tasks.register_tfds_domain("Wiki EN", "wikipedia/20230601.en:1.0.0")[0])
  assert task.name == "wiki_en" and isinstance(task.source, seqio.TfdsDataSource)
  assert task.source.splits == ("train", "validation", "test")
  spec = mixtures.registration_specs(["wiki_en"])[0]
  assert spec["registrar"].endswith(".register_tfds_domain") and spec["kwargs"]["name"] == "Wiki EN"


def test_published_pile_tables():
  reference = ["Pile-CC", "PubMed Central", "Books3", "OpenWebText2", "ArXiv", "Github",
               "FreeLaw", "StackExchange", "USPTO Backgrounds", "PubMed Abstracts",
               "Gutenberg (PG-19)", "OpenSubtitles", "Wikipedia (en)", "DM Mathematics",
               "Ubuntu IRC", "BookCorpus2", "EuroParl", "HackerNews", "YoutubeSubtitles",
               "PhilPapers", "NIH ExPorter", "Enron Emails"]
  for table in (pile.PILE_BASELINE_WEIGHTS, pile.PILE_DOREMI_280M_WEIGHTS):
    assert list(table) == reference
    assert sum(table.values()) == pytest.approx(1.0, abs=2e-4)
  assert pile.PILE_BASELINE_WEIGHTS["Pile-CC"] == 0.1121
  assert pile.PILE_DOREMI_280M_WEIGHTS["Pile-CC"] == 0.6057
  assert pile.task_name("Gutenberg (PG-19)") == "pile_gutenberg_pg_19"


def test_pile_from_local_zst(tmp_path):
  root = tmp_path / "pile"
  (root / "train").mkdir(parents=True)
  rows = []
  for i, name in enumerate(pile.PILE_DOMAINS):
    rows += [{"text": d, "meta": {"pile_set_name": name}}
             for d in _docs(10 + i, "abcdefghijklm", 6)]
  rows.append({"text": "not a Pile domain", "meta": {"pile_set_name": "Other"}})
  data = "".join(json.dumps(r) + "\n" for r in rows).encode()
  (root / "train" / "00.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(data))
  val = [{"text": "validation text for arxiv " * 12, "meta": {"pile_set_name": "ArXiv"}}]
  test = [{"text": "test text for arxiv " * 12, "meta": {"pile_set_name": "ArXiv"}}]
  for fname, held_out in (("val.jsonl.zst", val), ("test.jsonl.zst", test)):
    (root / fname).write_bytes(zstandard.ZstdCompressor().compress(
        "".join(json.dumps(r) + "\n" for r in held_out).encode()))
  names = pile.register_pile(str(root), prefix="tp", vocab_size=VOCAB)
  assert len(names) == 22 and "tp_pile_cc" in names
  published = pile.PILE_DOREMI_280M_WEIGHTS
  rates = mixtures.mixture_rates("tp_doremi_280m")
  assert rates["tp_pile_cc"] == pytest.approx(published["Pile-CC"] / sum(published.values()))
  assert mixtures.mixture_rates("tp_baseline")["tp_arxiv"] == pytest.approx(
      0.1052 / sum(pile.PILE_BASELINE_WEIGHTS.values()))
  chunks = _chunks("tp_enron_emails")
  assert chunks and {c["domain"] for c in chunks} == {b"tp_enron_emails"}
  vocab = errors.require_task("tp_arxiv").output_features["targets"].vocabulary
  val_ids = np.concatenate([c["targets"] for c in _chunks("tp_arxiv", "validation")])
  assert vocab.decode(val_ids.tolist()).startswith("validation text")
  test_ids = np.concatenate([c["targets"] for c in _chunks("tp_arxiv", "test")])
  assert vocab.decode(test_ids.tolist()).startswith("test text")
  ex = next(seqio.get_mixture_or_task("tp_doremi_280m").get_dataset(
      {"targets": LEN}, split="train", shuffle=True, seed=1).as_numpy_iterator())
  assert ex["domain"].decode() in names
  assert mixtures.registration_specs(names)[0]["registrar"] == "doremi_jax.tasks.pile.register_pile"


def _cli(*args: str) -> subprocess.Popen:
  return subprocess.Popen([sys.executable, "-m", "doremi_jax.corpus", *args], cwd=REPO,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _error_line(what: str, returncode: int, err: str) -> str:
  lines = [ln for ln in err.splitlines() if ln.strip() and not _NOISE.match(ln)]
  assert returncode == 2, (what, err[-2000:])
  assert len(lines) == 1 and lines[0].startswith("error: "), (what, lines)
  assert what in lines[0], (what, lines[0])
  return lines[0]


def test_cli_stats_and_errors(user_corpus, tmp_path, capsys):
  root = user_corpus[0]
  (tmp_path / "empty").mkdir()
  (tmp_path / "hollow_dir" / "nothing_here").mkdir(parents=True)
  bad = tmp_path / "bad"
  bad.mkdir()
  (bad / "ok.jsonl").write_text('{"text": "fine"}\n', "utf-8")
  (bad / "hollow.jsonl").write_text('{"text": "  "}\n\n', "utf-8")
  model = _vocab("uc_alpha").sentencepiece_model_file
  subprocess_cases = {  # all but the last fail before TensorFlow is imported
      "unknown domain": ["stats", str(root), "--vocab", str(VOCAB), "--domains", "alpha,nope"],
      "no domain files": ["stats", str(tmp_path / "empty")],
      "has no documents": ["stats", str(tmp_path / "hollow_dir")],
      "vocab/tokenizer mismatch": ["stats", str(root), "--vocab", "8000", "--tokenizer", model],
  }
  procs = {k: _cli(*a) for k, a in subprocess_cases.items()}
  ok = _cli("stats", str(root), "--vocab", str(VOCAB))
  in_process = {"has no documents": ["stats", str(bad), "--vocab", "bytes"],
                "all zero": ["stats", str(root), "--vocab", "bytes",
                             "--validation-fraction", "0.5"]}
  for what, args in in_process.items():
    with pytest.raises(SystemExit) as exit_info:
      corpus_cli.main(args)
    _error_line(what, exit_info.value.code, capsys.readouterr().err)
  out, err = ok.communicate(timeout=120)
  assert ok.returncode == 0, err[-2000:]
  rows = {ln.split()[0]: ln.split() for ln in out.splitlines() if ln.strip()}
  assert rows["domain"][1:3] == ["docs", "train"] and rows["total"][-1] == "1.0000"
  for name, docs in user_corpus[1].items():
    split = {s: [d for d in docs if corpus_reader.split_of(d, 0.05) == s]
             for s in ("train", "validation", "test")}
    assert rows[name][1:4] == [f"{len(split[s]):,}" for s in ("train", "validation", "test")]
    assert rows[name][4] == f"{sum(map(len, split['train'])):,}"
  for what, proc in procs.items():
    _, err = proc.communicate(timeout=120)
    _error_line(what, proc.returncode, err)


def test_export_is_portable(tmp_path, monkeypatch):
  """An export made where the corpus lives under one data root imports on a "machine" where
  it lives under another: data paths are stored relative to $DOREMI_DATA_ROOT."""
  here, there = tmp_path / "here", tmp_path / "there"
  write_user_corpus(here / "corpus")
  monkeypatch.setenv("DOREMI_DATA_ROOT", str(here))
  names = corpus_tasks.register_corpus(str(here / "corpus"), prefix="port", vocab_size=VOCAB)
  weights = {n: w for n, w in zip(names, (0.4, 0.3, 0.2, 0.1))}
  paths = mixture_files.write_exports(str(tmp_path / "export"), "port_mix", weights,
                                      {"tokenizer": mixtures.tokenizer_record("port_uniform")})
  assert mixtures.registration_specs(names)[0]["kwargs"]["corpus_dir"] == "$DOREMI_DATA_ROOT/corpus"
  assert str(here) not in (tmp_path / "export" / "port_mix.py").read_text()
  here.rename(there)
  code = ("from doremi_jax import mixture_files, mixtures\n"
          f"m = mixture_files.load_module({paths['module']!r})\n"
          "print(mixtures.mixture_rates(m.MIXTURE_NAME))")
  proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                        text=True, timeout=120, env={**os.environ, "DOREMI_DATA_ROOT": str(there)})
  assert proc.returncode == 0, proc.stderr[-2000:]
  rates = eval(proc.stdout.strip().splitlines()[-1])  # pylint: disable=eval-used
  assert rates == pytest.approx(weights)


def test_skip_bad_lines_counts_them_once_and_says_so_each_start(bad_lines_corpus, capsys):
  news = bad_lines_corpus
  with pytest.raises(errors.DoremiError, match=r"news.jsonl.gz:11: not valid JSON"):
    corpus_tasks.register_corpus(str(news.parent), prefix="bad_stop", vocabulary="bytes")
  for prefix in ("bad_skip", "bad_skip_cached"):
    names = corpus_tasks.register_corpus(str(news.parent), prefix=prefix,
                                         vocabulary="bytes", skip_bad_lines=True)
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("warning")]
    assert len(err) == 1 and err[0].startswith(
        f"warning: {news}: skipped 3 bad line(s) (first at line 11: not valid JSON"), err
  task = seqio.get_mixture_or_task(f"{prefix}_news")
  assert task.num_input_examples("train") + task.num_input_examples("validation") + \
      task.num_input_examples("test") == 30
  assert mixtures.spec_of(names[0])["kwargs"]["skip_bad_lines"] is True
