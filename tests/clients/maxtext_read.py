"""Run with MaxText's own environment: one training batch through MaxText's grain input
(``create_data_iterator``, i.e. ``make_grain_train_iterator``) from an exported MaxText
mixture, checked row by row against the prepared shards it names.

    python maxtext_read.py MIXTURE.maxtext.json SEQUENCE_LENGTH TOKENIZER.model

Prints one JSON line: rows read, rows whose ``inputs`` are a prepared row of a domain the
mixture names, rows whose ``targets`` are that row shifted by one, and the batch's keys.
"""
import glob
import json
import os
import sys

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from array_record.python.array_record_module import ArrayRecordReader  # noqa: E402
from jax.sharding import Mesh  # noqa: E402
from maxtext.configs import pyconfig  # noqa: E402
from maxtext.input_pipeline import input_pipeline_interface  # noqa: E402
from maxtext.utils import maxtext_utils  # noqa: E402


def prepared_rows(mixture: dict) -> dict:
  """Every row of every shard the mixture names -> its domain (parsed with tf.io, as
  MaxText's ParseFeatures does)."""
  rows = {}
  for name, entry in mixture.items():
    for path in glob.glob(entry["path"]):
      for record in ArrayRecordReader(path).read_all():
        ids = tf.io.parse_single_example(record, {"text": tf.io.VarLenFeature(tf.int64)})
        rows[tuple(tf.sparse.to_dense(ids["text"]).numpy().tolist())] = name
  return rows


def main(mixture_path: str, length: int, tokenizer: str) -> None:
  base = os.path.join(os.path.dirname(pyconfig.__file__), "base.yml")
  config = pyconfig.initialize([
      sys.argv[0], base, "run_name=read", "base_output_directory=/tmp/maxtext_read",
      "dataset_type=grain", "grain_file_type=arrayrecord",
      f"grain_train_mixture_config_path={mixture_path}", "tokenize_train_data=false",
      "train_data_columns=['text']", f"max_target_length={length}",
      f"tokenizer_path={tokenizer}", "per_device_batch_size=8", "eval_interval=-1",
      "grain_worker_count=0", "enable_checkpointing=false", "packing=false", "steps=1"])
  mesh = Mesh(maxtext_utils.create_device_mesh(config), config.mesh_axes)
  train, _ = input_pipeline_interface.create_data_iterator(config, mesh)
  batch = next(train)
  with open(mixture_path) as f:
    rows = prepared_rows(json.load(f))
  inputs, targets = np.asarray(batch["inputs"]), np.asarray(batch["targets"])
  found = [rows.get(tuple(r.tolist())) for r in inputs]
  shifted = [bool((t[:-1] == i[1:]).all()) for i, t in zip(inputs, targets)]
  print(json.dumps({"rows": len(inputs), "rows_from_shards": sum(f is not None for f in found),
                    "domains": sorted({f for f in found if f}), "targets_shifted": sum(shifted),
                    "keys": sorted(batch)}))
  os._exit(0)  # MaxText's iterator raises in __del__ at interpreter exit


if __name__ == "__main__":
  main(sys.argv[1], int(sys.argv[2]), sys.argv[3])
