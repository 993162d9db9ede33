"""Prepared records are tf.train.Examples that TensorFlow (so MaxText's grain input) parses
as ours does; prepared dirs of the earlier raw-int32 format still read."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

import doremi_jax
from doremi_jax import errors
from doremi_jax.data import example_records, prepared_corpus

doremi_jax.import_tensorflow_quietly()
import tensorflow as tf  # noqa: E402

CASES = [np.array([0, 1, 127, 128, 300, 16383, 16384, 2**31 - 1]),
         np.random.default_rng(0).integers(0, 50_000, 1024), np.zeros(0, np.int64)]


def _tf_example(tokens) -> bytes:
  feature = tf.train.Feature(int64_list=tf.train.Int64List(value=list(map(int, tokens))))
  return tf.train.Example(features=tf.train.Features(feature={"text": feature})
                          ).SerializeToString()


@pytest.mark.parametrize("tokens", CASES, ids=["varint_edges", "vocab_50k", "empty"])
def test_encoding_is_tensorflows_and_decodes_back(tokens):
  record = example_records.encode(tokens)
  assert record == _tf_example(tokens)  # byte for byte what TF's serializer writes
  np.testing.assert_array_equal(example_records.decode(record), tokens)
  assert example_records.decode(record).dtype == np.int32


def test_a_prepared_shard_parses_as_maxtext_parses_it(prepared_dir):
  """MaxText (tokenize_train_data=false) parses each record with tf.io.parse_example of an
  int64 FixedLenSequenceFeature under its data column: our rows must come out."""
  corpus = prepared_corpus.load(prepared_dir)
  from array_record.python import array_record_data_source  # pylint: disable=g-import-not-at-top
  domain = corpus.domains[0]
  source = array_record_data_source.ArrayRecordDataSource(corpus.shard_paths(domain))
  records = [source[i] for i in range(min(4, len(source)))]
  parsed = tf.io.parse_example(records, {example_records.FEATURE: tf.io.FixedLenSequenceFeature(
      [], dtype=tf.int64, allow_missing=True)})[example_records.FEATURE].numpy()
  want = corpus.sequences(domain).read_rows(range(len(records)))
  np.testing.assert_array_equal(parsed, want)
  assert parsed.shape == (len(records), corpus.sequence_length)
  assert corpus.manifest["record_feature"] == "text"


def test_version_1_dirs_still_read_and_unknown_versions_are_one_line(prepared_dir, tmp_path):
  corpus = prepared_corpus.load(prepared_dir)
  old = tmp_path / "v1"
  shutil.copytree(prepared_dir, old)
  manifest = json.loads((old / prepared_corpus.MANIFEST).read_text())
  manifest["version"] = 1
  from array_record.python.array_record_module import ArrayRecordWriter  # pylint: disable=g-import-not-at-top
  domain = corpus.domains[0]
  for path in corpus.shard_paths(domain):  # rewrite this domain's shards as raw int32
    rows = prepared_corpus.DomainSequences([path], corpus.sequence_length).read_rows(
        range(len(prepared_corpus.DomainSequences([path], corpus.sequence_length))))
    target = old / path[len(prepared_dir) + 1:]
    writer = ArrayRecordWriter(str(target), "group_size:1")
    for row in rows.astype("<i4"):
      writer.write(row.tobytes())
    writer.close()
  (old / prepared_corpus.MANIFEST).write_text(json.dumps(manifest))
  v1 = prepared_corpus.load(str(old))
  n = corpus.num_sequences(domain)
  np.testing.assert_array_equal(v1.sequences(domain).read_rows(range(n)),
                                corpus.sequences(domain).read_rows(range(n)))
  manifest["version"] = 99
  (old / prepared_corpus.MANIFEST).write_text(json.dumps(manifest))
  with pytest.raises(errors.DoremiError, match="version 99.*prepare it again"):
    prepared_corpus.load(str(old))


def test_rows_decode_at_once_as_one_by_one():
  rng = np.random.default_rng(1)
  rows = rng.integers(0, 70_000, (5, 16))
  ours = [example_records.encode(r) for r in rows]
  np.testing.assert_array_equal(example_records.decode_rows(ours, 16), rows)
  # Another writer's layout (a second feature first) takes the record-by-record path.
  other = [tf.train.Example(features=tf.train.Features(feature={
      "a_first": tf.train.Feature(int64_list=tf.train.Int64List(value=[7])),
      "text": tf.train.Feature(int64_list=tf.train.Int64List(value=r.tolist()))}))
           .SerializeToString() for r in rows]
  np.testing.assert_array_equal(example_records.decode_rows(other, 16), rows)
  with pytest.raises(ValueError, match="no feature 'text'"):
    example_records.decode(_tf_example([1, 2]).replace(b"text", b"txet"))
