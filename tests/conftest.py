"""Test-session environment.

Importing seqio (TensorFlow) in the pytest process sets ``TF_CPP_MIN_LOG_LEVEL=1`` in
``os.environ``, which every CLI started by a test would inherit; a user's shell has no
such setting, so the CLIs' own quiet default must apply in tests too.
"""
import atexit
import gzip
import json
import os
import shutil
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# One persistent XLA compilation cache for this test session, inherited by every CLI a test
# starts: the same tiny steps are compiled by dozens of processes. A fresh dir per session,
# so no test reads what another session compiled.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  _CACHE = tempfile.mkdtemp(prefix="doremi-xla-cache-")
  os.environ["JAX_COMPILATION_CACHE_DIR"] = _CACHE
  atexit.register(shutil.rmtree, _CACHE, ignore_errors=True)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")

import pytest  # noqa: E402

PREPARED_LENGTH = 64  # sequence length of the shared prepared corpus
PREPARED_VOCAB = 320


@pytest.fixture(scope="session")
def prepared_dir(tmp_path_factory) -> str:
  """A small generated corpus prepared once by the Beam job (SentencePiece 320, length 64),
  shared by the tests that train on prepared data; none of them modify it."""
  from doremi_jax.corpora import prepare, synthetic_text  # pylint: disable=g-import-not-at-top
  src = tmp_path_factory.mktemp("synthetic")
  synthetic_text.write_corpus(str(src), scale=0.05)
  out = tmp_path_factory.mktemp("prepared")
  prepare.prepare(f"dir:{src}", str(out), vocab_size=PREPARED_VOCAB,
                  sequence_length=PREPARED_LENGTH)
  return str(out)


@pytest.fixture
def bad_lines_corpus(tmp_path) -> Path:
  """A corpus dir whose domain ``news`` (the returned .jsonl.gz) has 30 documents around 3
  bad lines (11: broken JSON, 12: not an object, 13: no text), next to a good domain."""
  good = [json.dumps({"text": f"story {i} " * 8}) for i in range(30)]
  lines = good[:10] + ['{"text": "cut sh', "[1, 2]", '{"title": "no text"}'] + good[10:]
  root = tmp_path / "bad_lines_src"
  root.mkdir()
  (root / "news.jsonl.gz").write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
  (root / "ok.jsonl").write_text("\n".join(good[:5]) + "\n")
  return root / "news.jsonl.gz"


def pytest_collection_modifyitems(items):
  """The files marked ``pytestmark = pytest.mark.heavy`` (minutes each) first: ``make test``
  runs one file per worker in this order (``-n 2 --dist loadfile --no-loadscope-reorder``;
  xdist's own order puts files of one test last), so the longest start first and both
  workers end together. A stable sort: each file keeps its own order."""
  items.sort(key=lambda item: 0 if item.get_closest_marker("heavy") else 1)


@pytest.fixture(scope="module")
def synthetic_prepared(tmp_path_factory):
  """The generated text domains (scale 0.05) prepared with byte ids, 32-token sequences:
  the grain input tests' corpus (a PreparedCorpus)."""
  from doremi_jax.corpora import prepare, synthetic_text  # pylint: disable=g-import-not-at-top
  from doremi_jax.data import prepared_corpus  # pylint: disable=g-import-not-at-top
  src = tmp_path_factory.mktemp("synthetic")
  synthetic_text.write_corpus(str(src), scale=0.05)
  out = tmp_path_factory.mktemp("prepared")
  prepare.prepare(f"dir:{src}", str(out), model="bytes", sequence_length=32)
  return prepared_corpus.load(str(out))
