"""Test-session environment.

Importing seqio (TensorFlow) in the pytest process sets ``TF_CPP_MIN_LOG_LEVEL=1`` in
``os.environ``, which every CLI started by a test would inherit; a user's shell has no
such setting, so the CLIs' own quiet default must apply in tests too.
"""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import pytest  # noqa: E402

PREPARED_LENGTH = 64  # sequence length of the shared prepared corpus
PREPARED_VOCAB = 320


@pytest.fixture(scope="session")
def prepared_dir(tmp_path_factory) -> str:
  """A small generated corpus prepared once by the Beam job (SentencePiece 320, length 64),
  shared by the tests that train on prepared data; none of them modify it."""
  from doremi_jax.data import prepare, synthetic_text  # pylint: disable=g-import-not-at-top
  src = tmp_path_factory.mktemp("synthetic")
  synthetic_text.write_corpus(str(src), scale=0.05)
  out = tmp_path_factory.mktemp("prepared")
  prepare.prepare(f"dir:{src}", str(out), vocab_size=PREPARED_VOCAB,
                  sequence_length=PREPARED_LENGTH)
  return str(out)
