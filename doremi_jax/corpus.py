"""Corpus command line: build the embedded corpus, or print any corpus dir's sizes.

    python -m doremi_jax.corpus build [--out DIR] [--cap-bytes N]
    python -m doremi_jax.corpus stats DIR [--vocab 8000|bytes] [--tokenizer PATH]
    python -m doremi_jax.corpus prepare --source=pile:DIR|dir:DIR|embedded --out=DIR \\
        [--vocab_size=N | --tokenizer=PATH] [--sequence_length=L] [--skip_bad_lines] [Beam options]
    python -m doremi_jax.corpus prepare --source=seqio:TASK,TASK,... --task_module=MODULE \\
        --out=DIR [--sequence_length=L] [Beam options]   # your own SeqIO Tasks, as registered

``prepare`` is the Apache Beam job of ``doremi_jax.corpora.prepare``: packed per-domain
ArrayRecord shards plus ``manifest.json``, for training at scale (DirectRunner here;
``--runner=DataflowRunner|FlinkRunner|SparkRunner ...`` elsewhere).

``stats`` prints one row per domain - documents, characters and tokens of the train
and validation splits, and the domain's rate in the token-count baseline mixture -
training (and caching) the corpus's SentencePiece tokenizer first if needed. Tokens
include one EOS per document, as in the packed Tasks.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Sequence

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # before anything imports TensorFlow

from doremi_jax import errors, tables  # noqa: E402
from doremi_jax.corpora import corpus_build, corpus_sources
from doremi_jax.corpora import prepare as prepare_lib  # noqa: E402  (Beam is imported when it runs)
from doremi_jax.corpora.corpus_build import DEFAULT_CAP_BYTES, embedded_corpus_dir  # noqa: E402
from doremi_jax.data import corpus_reader, tokenizer  # noqa: E402


def build(out: str | None, cap_bytes: int, domains: str | None, cache_dir: str | None) -> None:
  out = out or embedded_corpus_dir()
  start = time.perf_counter()
  manifest = corpus_build.build_corpus(out, cap_bytes, domains.split(",") if domains else None,
                                       cache_dir)
  rows = [[name, d["documents"], d["characters"], d["bytes"], d["source"]]
          for name, d in manifest["domains"].items()]
  rows.append(["total", sum(r[1] for r in rows), sum(r[2] for r in rows),
               sum(r[3] for r in rows), ""])
  print(tables.text(["domain", "documents", "characters", "bytes", "source"], rows))
  for name, why in manifest.get("skipped", {}).items():
    print(f"skipped {name}: {why}")
  print(f"{out} (cap {cap_bytes:,} bytes per domain) ready in {time.perf_counter() - start:.1f}s")


def _vocab_arg(value: str) -> str | int:
  if value == tokenizer.BYTES:
    return value
  try:
    return int(value)
  except ValueError:
    raise argparse.ArgumentTypeError(f"--vocab must be an integer or 'bytes', got {value!r}")


def stats(corpus_dir: str, vocab: str | int, tokenizer_path: str | None,
          validation_fraction: float, domains: str | None, sample_chars: int) -> None:
  found = corpus_reader.select(corpus_reader.discover(corpus_dir),
                               [d for d in (domains or "").split(",") if d])
  # Imported here: they load TensorFlow (seconds), which argument errors should not wait for.
  from doremi_jax import mixtures
  from doremi_jax.data import corpus_stats
  t0 = time.perf_counter()
  fps = corpus_reader.corpus_fingerprints(found, corpus_dir)
  if tokenizer_path:
    vocabulary = tokenizer_path
  else:
    vocabulary = tokenizer.BYTES if vocab == tokenizer.BYTES else tokenizer.SENTENCEPIECE
  vocab_size = vocab if isinstance(vocab, int) else tokenizer.DEFAULT_VOCAB_SIZE
  seq_vocab, tok_dir = corpus_stats.corpus_vocabulary(
      corpus_dir, found, fps, vocabulary, vocab_size, validation_fraction, sample_chars)
  if tokenizer_path and isinstance(vocab, int):
    tokenizer.check_vocab_matches(vocab, seq_vocab, what="--vocab", exact=True)
  t1 = time.perf_counter()
  table = corpus_stats.domain_stats(found, fps, seq_vocab, validation_fraction, tok_dir)
  rates = mixtures.normalise(corpus_stats.token_counts(table),
                             what=f"{corpus_dir} baseline (token counts of the train split)")
  t2 = time.perf_counter()
  keys = [("documents", "docs"), ("characters", "chars"), ("tokens", "tokens")]
  header = ["domain"] + [f"{short} {s[:5]}" for _, short in keys for s in corpus_reader.SPLITS]
  header.append("baseline")
  rows = [[name] + [st[s][k] for k, _ in keys for s in corpus_reader.SPLITS]
          + [f"{rates[name]:.4f}"] for name, st in table.items()]
  rows.append(["total"] + [sum(r[i] for r in rows) for i in range(1, len(header) - 1)]
              + ["1.0000"])
  print(tables.text(header, rows))
  model = getattr(seq_vocab, "sentencepiece_model_file", None)
  print(f"tokenizer: {model or type(seq_vocab).__name__} ({seq_vocab.vocab_size} tokens, "
        f"{t1 - t0:.1f}s); counts {t2 - t1:.1f}s; validation fraction {validation_fraction}")


def prepare(args: argparse.Namespace, beam_args: Sequence[str]) -> None:
  """Runs the Beam job; flags it does not know are Beam pipeline options."""
  start = time.perf_counter()
  manifest = prepare_lib.prepare(
      args.source, args.out, args.tokenizer, args.vocab_size, args.sequence_length,
      args.validation_fraction, args.shard_bytes, args.sample_chars,
      args.array_record_options, beam_args, skip_bad_lines=args.skip_bad_lines,
      task_modules=[m for arg in args.task_module for m in arg.split(",") if m],
      overwrite=args.overwrite)
  print(prepare_lib.summary(manifest))
  for line in corpus_reader.warnings(manifest.get(prepare_lib.BAD_LINES, {})):
    print(line, file=sys.stderr, flush=True)
  few = prepare_lib.few_sequences_warning(manifest)
  if few:
    print(few, file=sys.stderr, flush=True)
  print(f"{args.out}/{prepare_lib.MANIFEST}: {len(manifest['domains'])} domains, sequence "
        f"length {manifest['sequence_length']}, tokenizer "
        f"{manifest['tokenizer'].get('path', 'bytes')}, {time.perf_counter() - start:.1f}s")


@errors.exit_on_user_error
def main(argv: Sequence[str] | None = None) -> None:
  ap = errors.ArgumentParser(prog="python -m doremi_jax.corpus",
                               description=__doc__.splitlines()[0])
  sub = ap.add_subparsers(dest="command", required=True)
  b = sub.add_parser("build", help="build (or find cached) the embedded corpus")
  b.add_argument("--out", help=f"output dir (default {embedded_corpus_dir()})")
  b.add_argument("--cap-bytes", type=int, default=DEFAULT_CAP_BYTES,
                 help="UTF-8 bytes of text per domain")
  b.add_argument("--domains", help=f"comma-separated subset of {sorted(corpus_sources.DOMAINS)}")
  b.add_argument("--cache-dir", help="where downloaded packages are kept")
  s = sub.add_parser("stats", help="documents, characters and tokens per domain and split")
  s.add_argument("corpus_dir")
  s.add_argument("--vocab", type=_vocab_arg, default=tokenizer.DEFAULT_VOCAB_SIZE,
                 help="SentencePiece vocab size (trained if missing) or 'bytes'")
  s.add_argument("--tokenizer", help="an existing SentencePiece .model to count with")
  s.add_argument("--validation-fraction", type=float, default=0.05)
  s.add_argument("--domains", help="comma-separated subset of the corpus's domains")
  s.add_argument("--sample-chars", type=int, default=tokenizer.DEFAULT_SAMPLE_CHARS,
                 help="characters per domain used to train the tokenizer")
  p = sub.add_parser("prepare", help="the Beam job: packed per-domain token shards + manifest")
  p.add_argument("--source", required=True,
                 help="pile:DIR, dir:DIR, embedded, or seqio:TASK,TASK,... (your own Tasks)")
  p.add_argument("--overwrite", action="store_true",
                 help="replace whatever --out holds (another prepared corpus) whole")
  p.add_argument("--task_module", action="append", default=[],
                 help="a module that registers the seqio: source's Tasks (repeatable)")
  p.add_argument("--out", required=True, help="output dir (local or a Beam filesystem URL)")
  p.add_argument("--tokenizer", help="SentencePiece .model to use, or 'bytes'")
  p.add_argument("--vocab_size", type=int, help="train a SentencePiece model of this size")
  p.add_argument("--sequence_length", type=int, default=prepare_lib.DEFAULT_SEQUENCE_LENGTH)
  p.add_argument("--validation_fraction", type=float, default=0.05)
  p.add_argument("--shard_bytes", type=int, default=prepare_lib.DEFAULT_SHARD_BYTES,
                 help="text bytes per output shard (each is packed in one worker's memory)")
  p.add_argument("--sample_chars", type=int, default=tokenizer.DEFAULT_SAMPLE_CHARS,
                 help="characters per domain to train the tokenizer on")
  p.add_argument("--array_record_options", default=prepare_lib.DEFAULT_ARRAY_RECORD_OPTIONS)
  p.add_argument("--skip_bad_lines", action="store_true",
                 help="skip lines that are not a JSON object with the document, counting them "
                      "per file (manifest.json 'bad_lines'), instead of stopping at the first")
  args, beam_args = ap.parse_known_args(argv)
  if args.command == "prepare":
    prepare(args, beam_args)
    return
  if beam_args:
    ap.error(f"unrecognized arguments: {' '.join(beam_args)}")
  if args.command == "build":
    build(args.out, args.cap_bytes, args.domains, args.cache_dir)
  else:
    if not 0.0 <= args.validation_fraction <= 0.5:
      raise errors.DoremiError(f"--validation-fraction must be in [0, 0.5], got "
                               f"{args.validation_fraction}")
    stats(args.corpus_dir, args.vocab, args.tokenizer, args.validation_fraction, args.domains,
          args.sample_chars)


def console_main() -> None:
  main()


if __name__ == "__main__":
  main()
