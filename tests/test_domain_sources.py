"""What a domain Task's source may yield (``domains.register_domain_task``): documents under
``text_key``, or lines of text (a ``seqio.TextLineDataSource``); anything else is one line."""
from __future__ import annotations

import numpy as np
import pytest
import seqio
import tensorflow as tf

from doremi_jax import errors
from doremi_jax.data import domains

LINES = ["first document", "the second one", "and a third"]


def _packed(task: seqio.Task, length: int) -> np.ndarray:
  ds = task.get_dataset({"targets": length}, split="train", shuffle=False)
  return np.concatenate([ex["targets"] for ex in ds.as_numpy_iterator()])


def test_text_line_source_is_one_document_a_line(tmp_path):
  path = tmp_path / "docs.txt"
  path.write_text("\n".join(LINES) + "\n")
  vocab = seqio.ByteVocabulary()
  task = domains.register_domain_task(
      "lines_domain", seqio.TextLineDataSource({"train": str(path)}), vocab)
  want = np.concatenate([np.append(vocab.encode(line), vocab.eos_id) for line in LINES])
  got = _packed(task, 8)
  assert len(got) == len(want) // 8 * 8 and np.array_equal(got, want[:len(got)])


def test_text_line_source_with_another_text_key(tmp_path):
  path = tmp_path / "docs.txt"
  path.write_text("\n".join(LINES) + "\n")
  task = domains.register_domain_task(
      "lines_keyed", seqio.TextLineDataSource({"train": str(path)}), seqio.ByteVocabulary(),
      text_key="content")
  assert len(_packed(task, 4)) > 0


def test_source_without_the_text_field_is_one_line():
  def dataset_fn(split, shuffle_files, seed=None):  # pylint: disable=unused-argument
    return tf.data.Dataset.from_tensor_slices({"content": LINES})

  task = domains.register_domain_task(
      "no_text_domain", seqio.FunctionDataSource(dataset_fn, splits=["train"]),
      seqio.ByteVocabulary())
  with pytest.raises(errors.DoremiError, match=(
      r"domain task 'no_text_domain': its source must yield \{'text': <string>\} examples "
      r"\(or lines of text\), got \['content'\]")):
    task.get_dataset({"targets": 8}, split="train", shuffle=False)
