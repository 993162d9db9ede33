"""Prepared data as SeqIO Tasks, and the grain input: determinism, host slices, resume, mixing."""
from __future__ import annotations

import time

import numpy as np
import pytest

from doremi_jax import errors
from doremi_jax.data import grain_input, prepared_corpus

LEN = 32


@pytest.fixture(scope="module")
def corpus(synthetic_prepared) -> prepared_corpus.PreparedCorpus:
  return synthetic_prepared


def _same(a: dict, b: dict) -> bool:
  return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_registered_tasks_yield_the_prepared_sequences(corpus):
  import seqio  # pylint: disable=g-import-not-at-top

  from doremi_jax import mixtures  # pylint: disable=g-import-not-at-top
  from doremi_jax.data import domains  # pylint: disable=g-import-not-at-top
  from doremi_jax.tasks import prepared as prepared_tasks  # pylint: disable=g-import-not-at-top
  names = prepared_tasks.register_prepared(corpus.root, prefix="prep")
  assert names == [f"prep_{d}" for d in corpus.domains]
  for domain in ("constant", "random"):
    ds = seqio.get_mixture_or_task(f"prep_{domain}").get_dataset(
        {"targets": LEN}, split="train", shuffle=False)
    got = list(ds.as_numpy_iterator())
    want = list(corpus.sequences(domain))
    assert len(got) == len(want) > 0
    for ex, seq in zip(got, want):
      np.testing.assert_array_equal(ex["targets"], seq)
      assert ex[domains.DOMAIN_KEY] == f"prep_{domain}".encode()
  natural = mixtures.mixture_rates("prep_natural")
  assert natural == pytest.approx({f"prep_{d}": w for d, w in corpus.natural_weights().items()})
  assert set(mixtures.mixture_rates("prep_uniform").values()) == {0.25}
  import glob  # pylint: disable=g-import-not-at-top
  import json  # pylint: disable=g-import-not-at-top
  import tempfile  # pylint: disable=g-import-not-at-top

  from doremi_jax import mixture_files  # pylint: disable=g-import-not-at-top
  with tempfile.TemporaryDirectory() as out:  # MaxText's mixture: each domain's shards
    files = mixture_files.write_exports(out, "prep_mix", natural, {})
    with open(files["maxtext"]) as f:
      maxtext = json.load(f)
  assert {k: v["weight"] for k, v in maxtext.items()} == pytest.approx(natural)
  for domain in corpus.domains:
    pattern = maxtext[f"prep_{domain}"]["path"]
    assert sorted(glob.glob(pattern)) == corpus.shard_paths(domain, "train")


@pytest.mark.parametrize("length", [LEN, LEN - 5, LEN + 3])
def test_eval_batches_read_prepared_rows_as_seqio_would(corpus, monkeypatch, length):
  """Evaluation's numpy batches: a prepared domain read from its shards equals the same
  Task read through SeqIO; rows in order, trimmed/padded to the feature length, the last
  batch padded with masked rows, at most ``max_batches``."""
  from doremi_jax.data import prepared_source, seqio_input  # pylint: disable=g-import-not-at-top
  from doremi_jax.tasks import prepared as prepared_tasks  # pylint: disable=g-import-not-at-top
  names = prepared_tasks.register_prepared(corpus.root, prefix="evalb")
  import seqio  # pylint: disable=g-import-not-at-top
  task = seqio.get_mixture_or_task("evalb_grammar")
  lengths, batch = {"targets": length}, 8

  def read(max_batches=None):
    return list(seqio_input.eval_batches(task, lengths, "validation", batch, names, max_batches))

  direct = read()
  rows = corpus.num_sequences("grammar", "validation")
  assert len(direct) == -(-rows // batch) and rows % batch  # a partial last batch
  want = np.zeros((len(direct) * batch, length), np.int32)
  for i, seq in enumerate(corpus.sequences("grammar", "validation")):
    want[i, :min(length, LEN)] = seq[:length]
  got = np.concatenate([b["targets"] for b in direct])
  np.testing.assert_array_equal(got, want)
  last = direct[-1]
  assert last["loss_mask"][rows % batch:].sum() == 0 and last["loss_mask"][0].sum() > 0
  assert set(np.concatenate([b["domain_ids"] for b in direct])[:rows]) == {
      names.index("evalb_grammar")}
  np.testing.assert_array_equal(direct[0]["inputs"][:, 1:], direct[0]["targets"][:, :-1])
  assert [_same(a, b) for a, b in zip(read(2), direct)] == [True, True] and len(read(2)) == 2
  monkeypatch.setattr(prepared_source, "prepared_source", lambda t: None)  # through SeqIO
  through_seqio = read()
  assert len(through_seqio) == len(direct)
  assert all(_same(a, b) for a, b in zip(through_seqio, direct))


def test_gin_entry_registers_the_prepared_corpus(corpus):
  import gin  # pylint: disable=g-import-not-at-top

  from doremi_jax import mixtures  # pylint: disable=g-import-not-at-top
  from doremi_jax.run import config, pipeline  # noqa: F401  pylint: disable=g-import-not-at-top
  try:
    gin.clear_config()
    config.configure(["experiments/prepared.gin"], [
        f"PREPARED_DIR = '{corpus.root}'", "PREPARED_PREFIX = 'gp'", "VOCAB_SIZE = 259"])
    assert config.register_tasks() == [f"gp_{d}" for d in corpus.domains]
    assert sorted(mixtures.mixture_rates("gp_natural")) == [f"gp_{d}" for d in corpus.domains]
    gin.clear_config()
    config.configure(["experiments/prepared.gin"], [
        f"PREPARED_DIR = '{corpus.root}'", "PREPARED_PREFIX = 'gp'", "VOCAB_SIZE = 100"])
    with pytest.raises(errors.DoremiError, match="VOCAB_SIZE=100"):
      config.register_tasks()  # 100 < the byte vocabulary's 259 ids
  finally:
    gin.clear_config()


def test_prepared_gin_alone_configures_the_pipeline(corpus):
  """prepared.gin plus PREPARED_DIR leaves no pipeline value unset (configured as the
  pipeline CLI does, stopping before any stage), and its two mixtures share domains."""
  import gin  # pylint: disable=g-import-not-at-top

  from doremi_jax import mixtures  # pylint: disable=g-import-not-at-top
  from doremi_jax.run import config, pipeline, stages  # pylint: disable=g-import-not-at-top
  try:
    runner = stages.Stages(["experiments/prepared.gin"], [
        f"PREPARED_DIR = '{corpus.root}'", "VOCAB_SIZE = 259", f"SEQUENCE_LENGTH = {LEN}"], "")
    runner.configure("runs/base.gin", ["MODEL_DIR = ''", "TRAIN_STEPS = 1",
                                       "MIXTURE_OR_TASK_NAME = ''"])
    assert config.missing_required(pipeline.pipeline) == []
    baseline = config.bound_value("pipeline.baseline_mixture", None)
    uniform = config.bound_value("pipeline.uniform_mixture", None)
    assert (baseline, uniform) == ("prepared_natural", "prepared_uniform")
    assert sorted(mixtures.mixture_rates(baseline)) == mixtures.domain_names(uniform)
  finally:
    gin.clear_config()

def test_batches_are_a_pure_function_of_seed_and_step(corpus):
  weights = corpus.natural_weights()
  a = grain_input.MixtureInput(corpus, weights, 16, seed=3)
  b = grain_input.MixtureInput(corpus, weights, 16, seed=3)
  c = grain_input.MixtureInput(corpus, weights, 16, seed=4)
  for step in (0, 1, 57, 10**6):
    assert _same(a.host_batch(step), b.host_batch(step))
  assert not _same(a.host_batch(0), c.host_batch(0))
  batch = a.host_batch(5)
  assert batch["targets"].shape == (16, LEN) and batch["domain_ids"].dtype == np.int32
  np.testing.assert_array_equal(batch["inputs"][:, 1:], batch["targets"][:, :-1])
  assert (batch["inputs"][:, 0] == 0).all()
  np.testing.assert_array_equal(batch["loss_mask"], (batch["targets"] > 0).astype(np.float32))
  for row, d in zip(batch["targets"], batch["domain_ids"]):  # each row is its domain's data
    assert any(np.array_equal(row, s) for s in corpus.sequences(a.domains[d]))


@pytest.mark.parametrize("hosts", [2, 4])
def test_host_slices_concatenate_to_the_one_host_batch(corpus, hosts):
  weights = {"arithmetic": 0.5, "grammar": 0.3, "random": 0.2, "constant": 0.0}
  one = grain_input.MixtureInput(corpus, weights, 16, seed=1, domains=corpus.domains)
  parts = [grain_input.MixtureInput(corpus, weights, 16, seed=1, domains=corpus.domains,
                                    process_index=i, process_count=hosts) for i in range(hosts)]
  for step in (0, 7, 123_456):
    slices = [p.host_batch(step) for p in parts]
    glued = {k: np.concatenate([s[k] for s in slices]) for k in slices[0]}
    assert _same(glued, one.host_batch(step))


def test_resume_reads_only_the_resumed_batches(corpus, monkeypatch):
  source = grain_input.MixtureInput(corpus, corpus.natural_weights(), 8, seed=0)
  reads = []
  original = prepared_corpus.DomainSequences.read_rows
  monkeypatch.setattr(prepared_corpus.DomainSequences, "read_rows",
                      lambda self, idx: reads.extend(idx) or original(self, idx))
  start = time.perf_counter()
  it = source.batches_from(100_000)
  first = next(it)
  elapsed = time.perf_counter() - start
  assert _same(first, source.host_batch(100_000)) and it.get_state() == {"step": 100_001}
  assert 8 <= len(reads) <= 8 * 8  # this batch plus grain's read-ahead, never the 100k before
  assert elapsed < 5.0
  later = source.batches_from(7)
  assert [_same(next(later), source.host_batch(s)) for s in (7, 8, 9)] == [True] * 3


@pytest.mark.parametrize("weights", [
    {"arithmetic": 0.58, "constant": 0.07, "grammar": 0.2, "random": 0.15},
    {"arithmetic": 0.001, "constant": 0.009, "grammar": 0.09, "random": 0.9},
    {"arithmetic": 1.0, "constant": 1.0, "grammar": 1.0, "random": 1.0},
])
def test_domain_counts_match_the_weights_over_every_window(corpus, weights):
  batch = 16
  source = grain_input.MixtureInput(corpus, weights, batch, seed=2, window_batches=64)
  w = np.asarray([weights[d] for d in source.domains]) / sum(weights.values())
  counts = np.zeros(len(w))
  for step in range(64):
    ids = source.host_batch(step)["domain_ids"]
    counts += np.bincount(ids, minlength=len(w))
    assert np.abs(counts - w * batch * (step + 1)).max() <= 1.0, (step, counts)
  if len(set(weights.values())) == 1:  # uniform: equal counts in every batch
    assert all(np.bincount(source.host_batch(s)["domain_ids"], minlength=4).tolist() ==
               [4, 4, 4, 4] for s in range(10))


def test_each_epoch_of_a_domain_reads_every_sequence_once(corpus):
  source = grain_input.MixtureInput(corpus, {"constant": 1.0}, 4, seed=5,
                                    domains=corpus.domains)
  n = len(corpus.sequences("constant"))
  rows = np.concatenate([source.host_batch(s)["targets"] for s in range(-(-2 * n // 4))])
  first, second = rows[:n], rows[n:2 * n]
  want = sorted(map(bytes, corpus.sequences("constant")))
  assert sorted(map(bytes, first)) == want and sorted(map(bytes, second)) == want
  assert not np.array_equal(first, second)  # each epoch has its own order


def test_bad_arguments_are_user_errors(corpus):
  with pytest.raises(errors.DoremiError, match="missing from"):
    grain_input.MixtureInput(corpus, {"nope": 1.0}, 8, domains=corpus.domains)
  with pytest.raises(errors.DoremiError, match="does not divide"):
    grain_input.MixtureInput(corpus, corpus.natural_weights(), 9, process_count=2)
  with pytest.raises(errors.DoremiError, match="not all 0"):
    grain_input.MixtureInput(corpus, {d: 0.0 for d in corpus.domains}, 8)


def test_row_pattern_prefixes_stay_within_one_row_for_many_domains():
  rng = np.random.default_rng(0)
  for concentration in (0.1, 1.0, 10.0):
    w = rng.dirichlet(np.full(22, concentration))
    w[3] = 0.0
    domain, rank = grain_input.row_pattern(tuple(w), 1 << 14)
    onehot = np.zeros((len(domain), 22), np.int64)
    onehot[np.arange(len(domain)), domain] = 1
    prefix = np.cumsum(onehot, axis=0)
    ideal = np.arange(1, len(domain) + 1)[:, None] * (w / w.sum())[None, :]
    assert np.abs(prefix - ideal).max() < 1.0 and not prefix[:, 3].any()
    np.testing.assert_array_equal(rank, prefix[np.arange(len(domain)), domain] - 1)


def test_counts_across_windows_drift_less_than_one_row_per_window(corpus):
  weights = {"arithmetic": 0.013, "constant": 0.31, "grammar": 0.4, "random": 0.277}
  source = grain_input.MixtureInput(corpus, weights, 8, seed=0, window_batches=5)
  w = np.asarray([weights[d] for d in source.domains])
  counts = np.zeros(4)
  for step in range(40):
    counts += np.bincount(source.host_batch(step)["domain_ids"], minlength=4)
    windows_done = (step + 1) // 5
    assert np.abs(counts - w * 8 * (step + 1)).max() < windows_done + 1


_HOST_SCRIPT = """
import sys, numpy as np
from doremi_jax.data import grain_input, prepared_corpus
corpus = prepared_corpus.load(sys.argv[1])
index, count, out = int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
source = grain_input.MixtureInput(corpus, corpus.natural_weights(), 12, seed=9,
                                  process_index=index, process_count=count)
it = source.batches_from(40)
batches = [next(it) for _ in range(3)]
np.savez(out, **{f"{k}_{i}": b[k] for i, b in enumerate(batches) for k in b})
"""


def test_two_processes_read_the_one_process_batches(corpus, tmp_path):
  """Separate interpreters (different hash seeds) agree: nothing depends on process state."""
  import os  # pylint: disable=g-import-not-at-top
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  runs = {(0, 1): "0", (0, 2): "1", (1, 2): "2"}
  procs = {key: subprocess.Popen(
      [sys.executable, "-c", _HOST_SCRIPT, corpus.root, str(key[0]), str(key[1]),
       str(tmp_path / f"h{key[0]}of{key[1]}.npz")], cwd=repo,
      env={**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": repo}) for key, seed in runs.items()}
  assert all(p.wait(timeout=120) == 0 for p in procs.values())
  one = np.load(tmp_path / "h0of1.npz")
  halves = [np.load(tmp_path / f"h{i}of2.npz") for i in (0, 1)]
  for key in one.files:
    np.testing.assert_array_equal(np.concatenate([h[key] for h in halves]), one[key])
