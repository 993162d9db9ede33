"""Prepare a corpus once, as an Apache Beam pipeline, into packed token sequences.

    doremi-corpus prepare --source=pile:/data/pile --out=/data/pile_prepared \\
        --vocab_size=50000 [--sequence_length=1024] [Beam options, e.g. --runner=...]

Reads every source file once, splits documents deterministically
(``corpus_reader.split_of``, or the Pile's ``val*``/``test*`` files), groups them by
(domain, split, shard), sorts each shard's documents by a hash of their text, tokenizes
them, appends EOS (id 1) and packs them *within the domain* into ``sequence_length``
records (the trailing partial record of a shard is dropped). Each shard is an ArrayRecord
file ``OUT/<domain>/<split>-NNNNN-of-MMMMM.array_record`` (``group_size:1`` for random
access; a record is a ``tf.train.Example`` holding the ``sequence_length`` ids as an
int64 list under ``"text"``, ``data.example_records``, which MaxText's grain input reads
with ``tokenize_train_data=false``); ``OUT/manifest.json``
lists per domain and split the documents, tokens, sequences and shards (with sha256),
and the tokenizer. The same input gives byte-identical files on any runner.

SeqIO's ``beam_utils``/``cache_tasks_main`` cache one Task at a time (each Pile domain
Task would read all of the Pile again) and pack per source shard, so this is a plain
Beam pipeline. Unrecognised flags are Beam pipeline options: ``--runner=DataflowRunner
--project=P --region=R --temp_location=gs://...`` (or FlinkRunner / SparkRunner); workers
need this package installed (``--setup_file`` or a custom container).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from typing import Sequence

import numpy as np

from doremi_jax import errors, storage, tables
from doremi_jax.corpora import prepare_io, prepare_seqio, prepare_sources
from doremi_jax.data import corpus_reader, example_records, prepared_corpus, tokenizer

DEFAULT_SEQUENCE_LENGTH = 1024
DEFAULT_SHARD_BYTES = 256 << 20  # text per shard: a shard is packed in one worker's memory
DEFAULT_ARRAY_RECORD_OPTIONS = "group_size:1,uncompressed"
MANIFEST = prepared_corpus.MANIFEST
TOKENIZER_DIR = "tokenizer"
EOS_ID = 1
FORMAT_VERSION = prepared_corpus.FORMAT_VERSION
BAD_LINES = prepare_io.BAD_LINES


def make_encoder(model_proto: bytes | None):
  """texts -> lists of ids: SentencePiece from its serialized model, or seqio's byte ids."""
  if model_proto is None:
    return lambda texts: [(np.frombuffer(t.encode("utf-8"), np.uint8).astype(np.int32) + 3)
                          for t in texts]
  import sentencepiece as spm  # pylint: disable=g-import-not-at-top
  sp = spm.SentencePieceProcessor(model_proto=model_proto)
  return lambda texts: [np.asarray(ids, np.int32) for ids in sp.encode(list(texts))]


def pack(token_lists: Sequence[np.ndarray], length: int) -> tuple[np.ndarray, int]:
  """(sequences [n, length], tokens incl. EOS): documents joined with EOS, cut in order."""
  if not token_lists:
    return np.zeros((0, length), np.int32), 0
  eos = np.asarray([EOS_ID], np.int32)
  flat = np.concatenate([part for ids in token_lists for part in (ids, eos)])
  n = len(flat) // length
  return flat[:n * length].reshape(n, length), len(flat)




_ENCODERS: dict = {}  # model proto -> encoder, loaded once per worker process


def pack_shard(element, out_dir: str, model_proto: bytes | None, length: int,
               options: str) -> dict:
  """One (domain, split, shard) group -> its ArrayRecord file and its counts."""
  (domain, split, bucket, buckets), texts = element
  encode = _ENCODERS.get(model_proto)
  if encode is None:
    encode = _ENCODERS[model_proto] = make_encoder(model_proto)
  docs = sorted(texts, key=lambda t: (prepare_sources.document_key(t), t))
  sequences, tokens = pack(encode(docs), length)
  shard = prepare_io.shard_path(domain, split, bucket, buckets)
  record = {"domain": domain, "split": split, "bucket": bucket, "documents": len(docs),
            "tokens": tokens, "sequences": len(sequences)}
  if len(sequences):
    record["shard"] = {"path": shard, "sequences": len(sequences),
                       "sha256": prepare_io.write_shard(out_dir, shard, sequences, options)}
  return record


def read_documents(item: prepare_sources.InputFile, validation_fraction: float,
                   skip_bad_lines: bool):
  """``read_file`` for Beam; when skipping bad lines, their count for the file goes to the
  ``BAD_LINES`` output once the file is read."""
  bad = corpus_reader.BadLines() if skip_bad_lines else None
  yield from prepare_sources.read_file(item, validation_fraction, bad)
  if bad is not None and bad.files:
    from apache_beam import pvalue  # pylint: disable=g-import-not-at-top
    yield pvalue.TaggedOutput(BAD_LINES, bad.files)


def _check_no_empty_domain(seen: list, expected: Sequence[str], files) -> bool:
  """Before any shard is written: a domain whose files hold no text (empty, or only
  whitespace) is refused, as ``stats`` and the corpus Tasks refuse it."""
  empty = [d for d in expected if d not in set(seen)]
  if empty:
    where = sorted({os.path.basename(f.path) for f in files if f.domain == empty[0]})
    raise errors.DoremiError(f"domain {empty[0]!r} has no documents ({', '.join(where[:3])} "
                             "hold no text, or only whitespace); add text or remove it"
                             + (f" (also empty: {', '.join(empty[1:4])})" if empty[1:] else ""))
  return True


def _bucket(doc, buckets: dict, _checked: bool = True) -> tuple:
  domain, split, text = doc
  n = buckets[(domain, split)]
  return (domain, split, prepare_sources.document_key(text) % n, n), text


def build_pipeline(root, plan: prepare_sources.SourcePlan, out_dir: str, header: dict,
                   model_proto: bytes | None, validation_fraction: float,
                   sequence_length: int, shard_bytes: int, options: str):
  """Adds the prepare transforms to a Beam pipeline ``root``."""
  import apache_beam as beam  # pylint: disable=g-import-not-at-top
  read = (root | "ListFiles" >> beam.Create(list(plan.files))
          | "SpreadFiles" >> beam.Reshuffle()
          | "ReadDocuments" >> beam.FlatMap(read_documents, validation_fraction,
                                            BAD_LINES in header).with_outputs(
                                                BAD_LINES, main="docs"))
  docs = read.docs
  split_bytes = (docs | "TextBytes" >> beam.Map(
      lambda d: ((d[0], d[1]), len(d[2].encode("utf-8"))))
                 | "BytesPerSplit" >> beam.CombinePerKey(sum))
  buckets = split_bytes | "ShardCount" >> beam.Map(
      lambda kv: (kv[0], max(1, -(-kv[1] // shard_bytes))))
  expected = sorted({f.domain for f in plan.files if f.domain is not None})
  checked = (split_bytes | "DomainsWithText" >> beam.Map(lambda kv: kv[0][0])
             | "AllDomains" >> beam.combiners.ToList()
             | "NoEmptyDomain" >> beam.Map(_check_no_empty_domain, expected, plan.files))
  records = (docs | "AssignShard" >> beam.Map(_bucket, beam.pvalue.AsDict(buckets),
                                              beam.pvalue.AsSingleton(checked))
             | "GroupShards" >> beam.GroupByKey()
             | "PackShards" >> beam.Map(pack_shard, out_dir, model_proto, sequence_length,
                                        options))
  _ = (records | "AllShards" >> beam.combiners.ToList()
       | "WriteManifest" >> beam.Map(lambda rs, bad: prepare_io.write_text(
           prepare_io.join(out_dir, MANIFEST),
           prepare_io.manifest_json(prepare_io.assemble_manifest(rs, header, bad))),
                                      beam.pvalue.AsList(read[BAD_LINES])))


def resolve_tokenizer(plan: prepare_sources.SourcePlan, out_dir: str, model: str | None,
                      vocab_size: int | None, validation_fraction: float,
                      sample_chars: int, skip_bad_lines: bool = False
                      ) -> tuple[bytes | None, dict]:
  """(serialized SentencePiece model or None for bytes, manifest entry). A trained model
  lives under ``OUT/tokenizer`` (or the cache when OUT is remote), never in the source."""
  if model == tokenizer.BYTES:
    if vocab_size is not None:
      raise errors.DoremiError(f"--vocab_size={vocab_size} is for a trained SentencePiece "
                               "model; with --tokenizer=bytes the vocabulary is 259 ids: drop "
                               "--vocab_size")
    return None, {"type": tokenizer.BYTES, "vocab_size": 259}
  origin = model or f"trained on the train split ({vocab_size} tokens)"
  given = model is not None
  if model is None:
    if vocab_size is None:
      raise errors.DoremiError("give --tokenizer=PATH (or 'bytes') or --vocab_size=N to train one")
    local = os.path.join(out_dir, TOKENIZER_DIR)
    if prepare_io.is_remote(out_dir):  # train in the cache, keyed by the source's fingerprint
      key = hashlib.sha256(json.dumps(sorted(plan.fingerprints.items())).encode()).hexdigest()
      local = str(storage.cache_root() / "tokenizers" / key[:16])
    model = str(tokenizer.ensure_sentencepiece(
        local, vocab_size, plan.fingerprints,
        lambda: prepare_sources.train_documents(  # bad lines: counted by the pipeline
            plan, validation_fraction, corpus_reader.BadLines() if skip_bad_lines else None),
        sample_chars,
        settings={"validation_fraction": validation_fraction, "splits": plan.split_rule}))
  if not prepare_io.is_remote(model) and not os.path.isfile(os.path.expanduser(model)):
    raise errors.DoremiError(f"tokenizer model {model!r} not found")
  proto = prepare_io.read_bytes(model)
  import sentencepiece as spm  # pylint: disable=g-import-not-at-top
  try:
    size = spm.SentencePieceProcessor(model_proto=proto).get_piece_size()
  except RuntimeError:
    raise errors.DoremiError(f"{model!r} is not a SentencePiece model") from None
  if given and vocab_size is not None and vocab_size != size:
    raise errors.DoremiError(f"--vocab_size={vocab_size} but {model} has {size} tokens")
  origin = origin if given or size == vocab_size else (
      f"trained on the train split ({size} tokens: {vocab_size} asked, the most it supports)")
  name = f"{TOKENIZER_DIR}/{os.path.basename(model)}"
  dest = prepare_io.join(out_dir, name)
  if os.path.abspath(os.path.expanduser(model)) != os.path.abspath(dest):
    if not prepare_io.is_remote(dest):
      os.makedirs(os.path.dirname(dest), exist_ok=True)
    prepare_io.write_bytes(dest, proto)
  return proto, {"type": tokenizer.SENTENCEPIECE, "path": name, "origin": origin,
                 "sha256": hashlib.sha256(proto).hexdigest(), "vocab_size": size}


def _check_out_dir(plan: prepare_sources.SourcePlan, out_dir: str) -> None:
  """Writing into a corpus dir would add a "domain" to it (and change its fingerprint)."""
  if plan.root is None or prepare_io.is_remote(out_dir):
    return
  root = os.path.realpath(plan.root)
  out = os.path.realpath(out_dir)
  if out == root or out.startswith(root + os.sep):
    raise errors.DoremiError(f"--out={out_dir} is inside the source corpus {plan.root}; "
                             "write elsewhere")


def prepare(source: str, out_dir: str, model: str | None = None, vocab_size: int | None = None,
            sequence_length: int = DEFAULT_SEQUENCE_LENGTH, validation_fraction: float = 0.05,
            shard_bytes: int = DEFAULT_SHARD_BYTES,
            sample_chars: int = tokenizer.DEFAULT_SAMPLE_CHARS,
            array_record_options: str = DEFAULT_ARRAY_RECORD_OPTIONS,
            pipeline_args: Sequence[str] = (),
            plan: prepare_sources.SourcePlan | None = None, skip_bad_lines: bool = False,
            task_modules: Sequence[str] = (), overwrite: bool = False) -> dict:
  """Runs the pipeline (DirectRunner unless ``pipeline_args`` say otherwise); returns the
  manifest (read back from ``OUT/manifest.json``). ``plan``: ``source`` already resolved.
  ``skip_bad_lines``: lines that are not a JSON object with the document are skipped and
  counted per file in the manifest's ``bad_lines``, instead of stopping the job.
  ``seqio:TASK,...`` sources (``prepare_seqio``) import ``task_modules`` first."""
  if sequence_length < 2:
    raise errors.DoremiError(f"--sequence_length must be at least 2, got {sequence_length}")
  if not 0.0 <= validation_fraction <= 0.5:
    raise errors.DoremiError(f"--validation_fraction must be in [0, 0.5], got "
                             f"{validation_fraction}")
  if shard_bytes <= 0:
    raise errors.DoremiError(f"--shard_bytes must be positive, got {shard_bytes}")
  if not prepare_io.is_remote(out_dir):
    out_dir = os.path.abspath(os.path.expanduser(out_dir))
  prepare_io.check_out_contents(out_dir, source, sequence_length, overwrite)
  prepare_io.remove_leftovers(out_dir)
  if source.startswith(prepare_seqio.SCHEME):
    if model is not None or vocab_size is not None:
      raise errors.DoremiError("a seqio: source is tokenized by its Tasks' own vocabulary; "
                               "drop --tokenizer and --vocab_size")
    return _prepare_seqio(source, out_dir, task_modules, sequence_length,
                          array_record_options, pipeline_args)
  if task_modules:
    raise errors.DoremiError("--task_module is for seqio:TASK,... sources only")
  plan = plan or prepare_sources.resolve(source)
  _check_out_dir(plan, out_dir)
  if not prepare_io.is_remote(out_dir):
    os.makedirs(out_dir, exist_ok=True)
  proto, tok_entry = resolve_tokenizer(plan, out_dir, model, vocab_size, validation_fraction,
                                       sample_chars, skip_bad_lines)
  header = {"version": FORMAT_VERSION, "source": source, "sequence_length": sequence_length,
            "format": "array_record", "array_record_options": array_record_options,
            "record": f"tf.train.Example: {sequence_length} token ids, int64 list "
                      f"{example_records.FEATURE!r}",
            "record_feature": example_records.FEATURE,
            "eos_id": EOS_ID, "pad_id": 0, "tokenizer": tok_entry,
            "split_rule": {"rule": plan.split_rule, "validation_fraction": validation_fraction,
                           "function": "doremi_jax.data.corpus_reader.split_of",
                           "meaning": "sha1(text)[:8] as u in [0,1): validation u<f, "
                                      "test f<=u<2f, else train"},
            "shard_order": "documents sorted by sha1(text)[8:16], then text",
            "source_fingerprints": dict(sorted(plan.fingerprints.items()))}
  if skip_bad_lines:
    header[BAD_LINES] = {}  # filled by assemble_manifest
  _run_beam(pipeline_args, lambda root: build_pipeline(
      root, plan, out_dir, header, proto, validation_fraction, sequence_length, shard_bytes,
      array_record_options))
  return _read_manifest(source, out_dir)


def _prepare_seqio(source: str, out_dir: str, task_modules: Sequence[str],
                   sequence_length: int, options: str, pipeline_args: Sequence[str]) -> dict:
  tasks = prepare_seqio.resolve_tasks(source, task_modules)
  if not prepare_io.is_remote(out_dir):
    os.makedirs(out_dir, exist_ok=True)
  head = prepare_seqio.header(source, tasks, task_modules, sequence_length, options,
                              prepare_seqio.tokenizer_entry(tasks, out_dir))
  _run_beam(pipeline_args, lambda root: prepare_seqio.build_pipeline(
      root, tasks, task_modules, out_dir, head, sequence_length, options))
  return _read_manifest(source, out_dir)


def _run_beam(pipeline_args: Sequence[str], build) -> None:
  """Runs ``build(root)``'s pipeline (DirectRunner unless the args say otherwise)."""
  beam, PipelineOptions = _import_beam_quietly()
  if not any(a.startswith("--runner") for a in pipeline_args):  # errors come back as ours
    logging.getLogger("apache_beam.runners.common").setLevel(logging.CRITICAL)
  try:
    with beam.Pipeline(options=PipelineOptions(list(pipeline_args))) as root:
      build(root)
  except errors.DoremiError as exc:  # Beam appends the step name; keep the user's line first
    raise errors.DoremiError(str(exc).split(" [while running")[0].strip()) from None


def _read_manifest(source: str, out_dir: str) -> dict:
  manifest = json.loads(prepare_io.read_bytes(prepare_io.join(out_dir, MANIFEST)))
  if not manifest["domains"]:
    raise errors.DoremiError(f"source {source!r} has no documents")
  return manifest


def _import_beam_quietly():
  """apache_beam warns on the root logger about optional GCP clients at import."""
  root = logging.getLogger()
  level = root.level
  root.setLevel(logging.ERROR)
  try:
    import apache_beam as beam  # pylint: disable=g-import-not-at-top
    from apache_beam.options.pipeline_options import PipelineOptions  # pylint: disable=g-import-not-at-top
  finally:
    root.setLevel(level)
  return beam, PipelineOptions


FEW_SEQUENCES = 16  # the default BATCH_SIZE: a domain with fewer repeats within a batch


def few_sequences_warning(manifest: dict) -> str | None:
  """One line naming the domains too small to sample well (none: training refuses them)."""
  small = {d: s["train"]["sequences"] for d, s in manifest["domains"].items()
           if s["train"]["sequences"] < FEW_SEQUENCES}
  if not small:
    return None
  listed = ", ".join(f"{d} ({n})" for d, n in sorted(small.items())[:5])
  none = sum(1 for n in small.values() if n == 0)
  return (f"warning: {len(small)} domain(s) have fewer than {FEW_SEQUENCES} train sequences of "
          f"{manifest['sequence_length']} tokens: {listed}{' ...' if len(small) > 5 else ''}"
          f"; {none} have none, which training refuses: give them more text, merge them into "
          "related domains, or prepare with a shorter --sequence_length")


def summary(manifest: dict) -> str:
  rows = [[d] + [s[split][k] for split in ("train", "validation", "test")
                 for k in ("documents", "tokens", "sequences")] + [len(s["train"]["shards"])]
          for d, s in manifest["domains"].items()]
  header = ["domain"] + [f"{k} {s[:5]}" for s in ("train", "validation", "test")
                         for k in ("docs", "tokens", "seqs")] + ["train shards"]
  return tables.text(header, rows)
