"""doremi-corpus prepare (the Beam job of doremi_jax.corpora.prepare) on Beam's DirectRunner:
counts, packing, determinism, errors."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import sentencepiece as spm
import zstandard

from doremi_jax import corpus as corpus_cli
from doremi_jax.corpora import corpus_build, prepare, prepare_sources, synthetic_text
from doremi_jax.data import corpus_reader, prepared_corpus

LEN = 64
VOCAB = 320


def _tree_digests(root: Path) -> dict[str, str]:
  return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
          for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory) -> Path:
  root = tmp_path_factory.mktemp("synthetic")
  synthetic_text.write_corpus(str(root), scale=0.05)
  return root


@pytest.fixture(scope="module")
def prepared_dir(corpus_dir, tmp_path_factory) -> Path:
  out = tmp_path_factory.mktemp("prepared")
  prepare.prepare(f"dir:{corpus_dir}", str(out), vocab_size=VOCAB, sequence_length=LEN)
  return out


def _docs_by_split(corpus_dir: Path) -> dict[tuple[str, str], list[str]]:
  out: dict[tuple[str, str], list[str]] = {}
  for name in synthetic_text.DOMAINS:
    for line in (corpus_dir / f"{name}.jsonl").read_text().splitlines():
      text = json.loads(line)["text"]
      out.setdefault((name, corpus_reader.split_of(text)), []).append(text)
  return out


def _expected_stream(texts, encode) -> np.ndarray:
  ordered = sorted(texts, key=lambda t: (prepare_sources.document_key(t), t))
  return np.concatenate([np.append(np.asarray(encode(t), np.int32), prepare.EOS_ID)
                         for t in ordered])


def test_manifest_counts_equal_a_direct_count(corpus_dir, prepared_dir):
  corpus = prepared_corpus.load(str(prepared_dir))
  sp = spm.SentencePieceProcessor(model_file=corpus.tokenizer_path())
  assert corpus.manifest["tokenizer"]["vocab_size"] == VOCAB
  assert corpus.domains == sorted(synthetic_text.DOMAINS)
  docs = _docs_by_split(corpus_dir)
  for domain in corpus.domains:
    for split in prepared_corpus.SPLITS:
      texts = docs.get((domain, split), [])
      tokens = sum(len(sp.encode(t)) + 1 for t in texts)
      info = corpus.split_info(domain, split)
      assert (info["documents"], info["tokens"], info["sequences"]) == (
          len(texts), tokens, tokens // LEN), (domain, split)
      assert len(corpus.sequences(domain, split)) == tokens // LEN
  total = sum(corpus.token_counts().values())
  assert corpus.natural_weights() == {d: c / total for d, c in corpus.token_counts().items()}
  corpus.verify()
  assert not (corpus_dir / "tokenizer").exists()  # nothing written into the source


def test_packed_sequences_decode_to_the_documents_in_order(corpus_dir, prepared_dir):
  corpus = prepared_corpus.load(str(prepared_dir))
  sp = spm.SentencePieceProcessor(model_file=corpus.tokenizer_path())
  docs = _docs_by_split(corpus_dir)
  for domain in corpus.domains:
    packed = np.concatenate(list(corpus.sequences(domain, "train")))
    stream = _expected_stream(docs[(domain, "train")], sp.encode)
    np.testing.assert_array_equal(packed, stream[:len(packed)])
    pieces = np.split(packed, np.flatnonzero(packed == prepare.EOS_ID) + 1)[:-1]
    ordered = sorted(docs[(domain, "train")], key=lambda t: (prepare_sources.document_key(t), t))
    assert [sp.decode(p[:-1].tolist()) for p in pieces] == ordered[:len(pieces)]


def test_same_input_same_bytes_and_sharding_keeps_counts(corpus_dir, prepared_dir, tmp_path):
  again = tmp_path / "again"
  prepare.prepare(f"dir:{corpus_dir}", str(again), vocab_size=VOCAB, sequence_length=LEN)
  assert _tree_digests(again) == _tree_digests(prepared_dir)
  sharded = tmp_path / "sharded"
  model = str(prepared_dir / "tokenizer" / f"spm_{VOCAB}.model")
  manifest = prepare.prepare(f"dir:{corpus_dir}", str(sharded), model=model,
                             sequence_length=LEN, shard_bytes=4000)
  one = prepared_corpus.load(str(prepared_dir)).manifest["domains"]
  for domain, splits in manifest["domains"].items():
    train = splits["train"]
    assert len(train["shards"]) > 1
    assert (train["documents"], train["tokens"]) == (one[domain]["train"]["documents"],
                                                     one[domain]["train"]["tokens"])
    assert train["sequences"] == sum(s["sequences"] for s in train["shards"])


def _write_zst(path: Path, rows: list[dict]) -> None:
  data = "".join(json.dumps(r) + "\n" for r in rows).encode()
  path.write_bytes(zstandard.ZstdCompressor().compress(data))


def _pile_rows(seed: int, count: int) -> list[dict]:
  rng = np.random.default_rng(seed)
  names = ["Pile-CC", "Gutenberg (PG-19)", "Github"]
  word = lambda: "".join(rng.choice(list("abcdefghijklmnop"), rng.integers(2, 9)))  # noqa: E731
  return [{"text": " ".join(word() for _ in range(rng.integers(5, 80))),
           "meta": {"pile_set_name": names[i % 3]}} for i in range(count)]


@pytest.mark.parametrize("with_val_files", [False, True])
def test_pile_sample(tmp_path, with_val_files):
  pile = tmp_path / "pile"
  (pile / "train").mkdir(parents=True)
  files = {"train/00.jsonl.zst": _pile_rows(0, 60), "train/01.jsonl.zst": _pile_rows(1, 60)}
  if with_val_files:
    files.update({"val.jsonl.zst": _pile_rows(2, 12), "test.jsonl.zst": _pile_rows(3, 9)})
  for name, rows in files.items():
    _write_zst(pile / name, rows)
  manifest = prepare.prepare(f"pile:{pile}", str(tmp_path / "out"), model="bytes",
                             sequence_length=LEN)
  assert sorted(manifest["domains"]) == ["github", "gutenberg_pg_19", "pile_cc"]
  expected: dict[tuple[str, str], list[str]] = {}
  for name, rows in files.items():
    for r in rows:
      split = ("validation" if name.startswith("val") else "test" if name.startswith("test")
               else "train" if with_val_files else corpus_reader.split_of(r["text"]))
      domain = {"Pile-CC": "pile_cc", "Gutenberg (PG-19)": "gutenberg_pg_19"}.get(
          r["meta"]["pile_set_name"], "github")
      expected.setdefault((domain, split), []).append(r["text"])
  corpus = prepared_corpus.load(str(tmp_path / "out"))
  assert corpus.tokenizer_path() is None
  for domain in corpus.domains:
    for split in prepared_corpus.SPLITS:
      texts = expected.get((domain, split), [])
      stream = (_expected_stream(texts, lambda t: np.frombuffer(t.encode(), np.uint8) + 3)
                if texts else np.zeros(0, np.int32))
      info = corpus.split_info(domain, split)
      assert (info["documents"], info["tokens"]) == (len(texts), len(stream))
      seqs = list(corpus.sequences(domain, split))
      if seqs:
        np.testing.assert_array_equal(np.concatenate(seqs), stream[:len(seqs) * LEN])


def test_reference_format_names_pile_domains_as_its_loaders_do(tmp_path):
  """sangmichaelxie/doremi's scripts/preprocess_pile.py writes OUT/<split>/<pile_set_name>/,
  and doremi/dataloader.py's get_pile_datasets looks each such folder's name up in the
  weights' keys (``domain_name_to_skip_num[domain_dir.name]``): the export must use the
  Pile's published names, not our task names."""
  from doremi_jax import mixture_files  # pylint: disable=g-import-not-at-top
  from doremi_jax.tasks import prepared  # pylint: disable=g-import-not-at-top
  pile = tmp_path / "pile"
  pile.mkdir()
  _write_zst(pile / "00.jsonl.zst", _pile_rows(0, 90))
  prepare.prepare(f"pile:{pile}", str(tmp_path / "out"), model="bytes", sequence_length=LEN)
  tasks = prepared.register_prepared(str(tmp_path / "out"), prefix="pilesample")
  paths = mixture_files.write_exports(str(tmp_path / "export"), "pile_mix",
                                      dict(zip(tasks, (0.5, 0.3, 0.2))), {})
  weights = json.loads(Path(paths["doremi"]).read_text())["train_domain_weights"]
  official_dirs = {"Pile-CC", "Gutenberg (PG-19)", "Github"}  # pile_set_name folders
  assert set(weights) == official_dirs
  skip = dict.fromkeys(sorted(weights), 0)  # what determine_skip_per_domain returns
  assert all(name in skip for name in official_dirs)
  assert sum(weights.values()) == pytest.approx(1.0)
  back = mixture_files.read_weights(paths["doremi"], tasks).weights  # published configs too
  assert back == pytest.approx(dict(zip(tasks, (0.5, 0.3, 0.2))))


@pytest.mark.parametrize("args, message", [
    (["--source=foo:/x", "--vocab_size=512"], "unknown source 'foo:/x'"),
    (["--source=dir:/no/such/dir", "--vocab_size=512"], "does not exist"),
    (["--source=dir:{empty}", "--vocab_size=512"], "has no domain files"),
    (["--source=dir:{corpus}", "--vocab_size=100"], "vocab size 100 is too small"),
    (["--source=dir:{corpus}"], "give --tokenizer=PATH"),
    (["--source=dir:{corpus}", "--tokenizer=/no/model"], "not found"),
    (["--source=dir:{corpus}", "--tokenizer=bytes", "--out={corpus}/inside"], "inside the source"),
])
def test_bad_input_is_one_line_and_exit_2(corpus_dir, tmp_path, capsys, args, message):
  (tmp_path / "empty").mkdir()
  fill = {"empty": tmp_path / "empty", "corpus": corpus_dir}
  argv = [a.format(**fill) for a in args]
  if not any(a.startswith("--out") for a in argv):
    argv.append(f"--out={tmp_path / 'out'}")
  with pytest.raises(SystemExit) as exit_info:
    corpus_cli.main(["prepare", *argv])
  assert exit_info.value.code == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err


def test_pile_sample_trains_its_tokenizer_on_the_train_split(tmp_path):
  pile = tmp_path / "pile"
  pile.mkdir()
  _write_zst(pile / "00.jsonl.zst", _pile_rows(4, 150))
  manifest = prepare.prepare(f"pile:{pile}", str(tmp_path / "out"), vocab_size=VOCAB,
                             sequence_length=LEN)
  assert manifest["tokenizer"]["vocab_size"] == VOCAB
  assert (tmp_path / "out" / "tokenizer" / f"spm_{VOCAB}.model").is_file()
  assert sorted(p.name for p in pile.iterdir()) == ["00.jsonl.zst"]


def test_pile_on_a_remote_filesystem(tmp_path, monkeypatch):
  """``pile:gs://...``-style sources are listed and read through Beam's FileSystems."""
  from apache_beam.io import filesystems  # pylint: disable=g-import-not-at-top
  local = tmp_path / "bucket"
  (local / "pile").mkdir(parents=True)
  rows = _pile_rows(7, 40)
  _write_zst(local / "pile" / "00.jsonl.zst", rows)
  to_local = lambda url: str(local / url[len("mem://"):])  # noqa: E731

  def match(patterns):
    assert patterns == ["mem://pile/**"]
    found = [type("Meta", (), {"path": "mem://pile/00.jsonl.zst"})()]
    return [type("Result", (), {"metadata_list": found})()]

  monkeypatch.setattr(filesystems.FileSystems, "match", staticmethod(match))
  monkeypatch.setattr(filesystems.FileSystems, "open",
                      staticmethod(lambda url, compression_type=None: open(to_local(url), "rb")))
  manifest = prepare.prepare("pile:mem://pile", str(tmp_path / "out"), model="bytes",
                             sequence_length=LEN)
  assert sum(s["documents"] for d in manifest["domains"].values() for s in d.values()) == 40


@pytest.mark.slow
def test_embedded_source(tmp_path):
  """``--source=embedded`` builds (or finds) the embedded corpus and prepares all of it."""
  try:
    built = corpus_build.build_corpus(corpus_build.embedded_corpus_dir())
  except corpus_build.CorpusBuildError as exc:
    pytest.skip(f"embedded corpus cannot be built here: {exc}")
  manifest = prepare.prepare("embedded", str(tmp_path / "out"), model="bytes",
                             sequence_length=1024)
  assert sorted(manifest["domains"]) == sorted(built["domains"])
  for name, info in built["domains"].items():
    assert sum(s["documents"] for s in manifest["domains"][name].values()) == info["documents"]



def test_bad_lines_stop_prepare_unless_skipped_then_counted(bad_lines_corpus, tmp_path, capsys):
  news = bad_lines_corpus
  argv = ["prepare", f"--source=dir:{news.parent}", "--tokenizer=bytes",
          "--sequence_length=16"]
  with pytest.raises(SystemExit) as exit_info:
    corpus_cli.main([*argv, f"--out={tmp_path / 'stopped'}"])
  err = capsys.readouterr().err.splitlines()
  assert exit_info.value.code == 2 and len(err) == 1, err
  assert err[0].startswith(f"error: {news}:11: not valid JSON") and "--skip_bad_lines" in err[0]
  corpus_cli.main([*argv, f"--out={tmp_path / 'out'}", "--skip_bad_lines"])
  err = capsys.readouterr().err.splitlines()
  assert len(err) == 1 and err[0].startswith(
      f"warning: {news}: skipped 3 bad line(s) (first at line 11: not valid JSON"), err
  manifest = json.loads((tmp_path / "out" / prepare.MANIFEST).read_text())
  assert list(manifest["bad_lines"]) == [str(news)]
  assert manifest["bad_lines"][str(news)]["lines"] == 3
  assert sum(manifest["domains"]["news"][s]["documents"] for s in prepared_corpus.SPLITS) == 30
