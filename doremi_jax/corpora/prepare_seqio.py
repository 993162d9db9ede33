"""``doremi-corpus prepare --source=seqio:TASK,TASK,... --task_module=MODULE``: a user's own
SeqIO Tasks materialised into prepared shards, in one Beam job.

Each (Task, split) is read by one worker, in SeqIO's order (unshuffled, once), after the
Task's own preprocessors and with its own vocabulary (``targets`` trimmed to
``sequence_length`` by SeqIO, with the EOS its feature adds); its examples' targets are
joined and cut into ``sequence_length`` records, as the training input packs a streamed
Task (``data.seqio_input.task_sequences``), and written as the text job writes them
(``prepare_io.write_shard``), with the same manifest. A prepared copy is read the same on
any number of hosts, resumes in O(1) and is what MaxText reads. ``seqio:MIXTURE`` takes
the Mixture's subtasks. The domains are the Task names (``corpus_reader.sanitize``d).
"""
from __future__ import annotations

import hashlib
import os
from typing import Sequence

import numpy as np

from doremi_jax import errors
from doremi_jax.corpora import prepare_io
from doremi_jax.data import corpus_reader, domains, example_records, prepared_corpus

SPLITS = prepared_corpus.SPLITS
SCHEME = "seqio:"


def resolve_tasks(source: str, modules: Sequence[str]) -> list[str]:
  """``seqio:a,b,c`` or ``seqio:MIXTURE`` -> the task names, after importing ``modules``."""
  import seqio  # pylint: disable=g-import-not-at-top
  domains.import_task_modules(modules)
  names = [n.strip() for n in source[len(SCHEME):].split(",") if n.strip()]
  if not names:
    raise errors.DoremiError(f"--source={source!r} names no Tasks; use seqio:TASK,TASK,...")
  tasks = []
  for name in names:
    tasks += [t.name for t in seqio.get_subtasks(errors.require_mixture_or_task(name))]
  domain_names = [corpus_reader.sanitize(t) for t in tasks]
  if len(set(domain_names)) != len(domain_names):
    raise errors.DoremiError(f"--source={source!r}: tasks {tasks} repeat a domain name")
  return tasks


def tokenizer_entry(tasks: Sequence[str], out_dir: str) -> dict:
  """The Tasks' one vocabulary in the manifest: a SentencePiece model copied under
  ``OUT/tokenizer`` (by sha256), or bytes; any other vocabulary cannot be re-read."""
  import seqio  # pylint: disable=g-import-not-at-top
  vocabs = {t: seqio.get_mixture_or_task(t).output_features["targets"].vocabulary
            for t in tasks}
  kinds = {t: (type(v).__name__, getattr(v, "sentencepiece_model_file", None))
           for t, v in vocabs.items()}
  if len(set(kinds.values())) > 1:
    raise errors.DoremiError(f"the tasks use different vocabularies ({kinds}); prepare "
                             "Tasks that share one")
  vocab = next(iter(vocabs.values()))
  if isinstance(vocab, seqio.ByteVocabulary):
    return {"type": "bytes", "vocab_size": int(vocab.vocab_size)}
  path = getattr(vocab, "sentencepiece_model_file", None)
  if not path:
    raise errors.DoremiError(f"{type(vocab).__name__} cannot be recorded in a prepared "
                             "corpus; prepare Tasks with a SentencePiece or byte vocabulary")
  proto = prepare_io.read_bytes(path)
  name = f"tokenizer/{os.path.basename(path)}"
  dest = prepare_io.join(out_dir, name)
  if not prepare_io.is_remote(dest):
    os.makedirs(os.path.dirname(dest), exist_ok=True)
  prepare_io.write_bytes(dest, proto)
  return {"type": "sentencepiece", "path": name, "origin": f"the Tasks' vocabulary ({path})",
          "sha256": hashlib.sha256(proto).hexdigest(), "vocab_size": int(vocab.vocab_size),
          "extra_ids": int(getattr(vocab, "extra_ids", 0) or 0)}


def pack_task_split(element, modules: Sequence[str], out_dir: str, length: int,
                    options: str) -> dict:
  """One (task, split) -> its ArrayRecord shard and counts (a record ``assemble_manifest``
  reads); a split the Task lacks gives an empty entry."""
  import seqio  # pylint: disable=g-import-not-at-top
  task_name, split = element
  domains.import_task_modules(modules)
  task = seqio.get_mixture_or_task(task_name)
  domain = corpus_reader.sanitize(task_name)
  record = {"domain": domain, "split": split, "bucket": 0, "documents": 0, "tokens": 0,
            "sequences": 0}
  if split not in task.splits:
    return record
  ds = task.get_dataset({"targets": length}, split=split, shuffle=False, num_epochs=1)
  parts = [np.asarray(ex["targets"], np.int32) for ex in ds.as_numpy_iterator()]
  flat = np.concatenate(parts) if parts else np.zeros(0, np.int32)
  n = len(flat) // length
  sequences = flat[:n * length].reshape(n, length)
  record.update(documents=len(parts), tokens=int(len(flat)), sequences=n)
  if n:
    shard = prepare_io.shard_path(domain, split, 0, 1)
    record["shard"] = {"path": shard, "sequences": n,
                       "sha256": prepare_io.write_shard(out_dir, shard, sequences, options)}
  return record


def header(source: str, tasks: Sequence[str], modules: Sequence[str], length: int,
           options: str, tok_entry: dict) -> dict:
  return {"version": prepared_corpus.FORMAT_VERSION, "source": source,
          "task_modules": list(modules), "sequence_length": length, "format": "array_record",
          "array_record_options": options,
          "record": f"tf.train.Example: {length} token ids, int64 list "
                    f"{example_records.FEATURE!r}",
          "record_feature": example_records.FEATURE, "eos_id": 1, "pad_id": 0,
          "tokenizer": tok_entry,
          "split_rule": {"rule": "seqio", "meaning": "each Task's own train, validation "
                         "and test splits"},
          "shard_order": "each Task's examples in SeqIO's order (unshuffled), after its "
                         "preprocessors",
          "source_fingerprints": {corpus_reader.sanitize(t): f"seqio:{t}" for t in tasks}}


def build_pipeline(root, tasks: Sequence[str], modules: Sequence[str], out_dir: str,
                   head: dict, length: int, options: str) -> None:
  import apache_beam as beam  # pylint: disable=g-import-not-at-top
  manifest = prepare_io.join(out_dir, prepared_corpus.MANIFEST)
  _ = (root | "ListTaskSplits" >> beam.Create([(t, s) for t in tasks for s in SPLITS])
       | "SpreadTaskSplits" >> beam.Reshuffle()
       | "PackTaskSplits" >> beam.Map(pack_task_split, list(modules), out_dir, length, options)
       | "AllShards" >> beam.combiners.ToList()
       | "WriteManifest" >> beam.Map(lambda rs: prepare_io.write_text(
           manifest, prepare_io.manifest_json(prepare_io.assemble_manifest(rs, head)))))
