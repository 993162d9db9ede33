"""Bits per byte: token byte lengths of each vocabulary, and the eval step's byte sums."""
import math

import flax.linen as nn
import jax
import numpy as np
import pytest
import seqio
import step_fixtures as fx

from doremi_jax.core import partitioning, steps
from doremi_jax.data import tokenizer

TEXT = "Hello world, this is a tiny known text.\nIt has two lines; a tab\tand 42 digits."


def test_byte_vocabulary_counts_every_utf8_byte():
  vocab = seqio.ByteVocabulary()
  lengths = tokenizer.token_byte_lengths(vocab)
  text = "h\u00e9llo \u2713"  # 1 + 2 + 3 + 1 + 1 + 3 bytes of UTF-8
  assert sum(lengths[i] for i in vocab.encode(text)) == len(text.encode("utf-8")) == 10
  assert lengths[0] == 0 and lengths[vocab.eos_id] == 0


def test_sentencepiece_pieces_add_up_to_the_text(tmp_path):
  sentences = [TEXT, "another line of text with words", "digits 0123456789"] * 20
  path = tmp_path / "spm.model"
  tokenizer.train_sentencepiece(path, 300, sentences)
  vocab = tokenizer.load_vocabulary(path)
  lengths = tokenizer.token_byte_lengths(vocab)
  ids = vocab.encode(TEXT)
  # Every byte of the text, plus the one dummy-prefix space SentencePiece puts in front.
  assert sum(int(lengths[i]) for i in ids) == len(TEXT.encode("utf-8")) + 1
  assert lengths[0] == 0 and lengths[1] == 0  # pad, EOS


def test_eval_step_sums_nll_and_bytes_per_domain():
  mesh = fx.single_device_mesh()
  rig = fx.Rig(mesh, "plain")
  params = rig.init(0).params
  eval_step = steps.make_eval_step(rig.model, mesh, rig.shardings.params, fx.K)
  token_bytes = np.arange(fx.VOCAB, dtype=np.int32) % 4  # an arbitrary byte table
  batch = fx.BATCHES[0]
  nll, counts, nbytes = jax.device_get(eval_step(params, rig.put(batch), token_bytes))
  with mesh, nn.logical_axis_rules(partitioning.logical_axis_rules()):
    tl = np.asarray(steps.token_losses(rig.model, params, rig.put(batch)))
  mask, ids = batch["loss_mask"] != 0, batch["domain_ids"]
  for d in range(fx.K):
    sel = mask & (ids[:, None] == d)
    assert nll[d] == pytest.approx(tl[sel].sum(), rel=1e-4)
    assert counts[d] == sel.sum()
    assert nbytes[d] == pytest.approx(token_bytes[batch["targets"]][sel].sum())
  bpb = nll / (math.log(2) * nbytes)
  assert np.all(np.isfinite(bpb)) and np.all(bpb > 0)
