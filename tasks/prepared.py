"""A prepared corpus (``doremi-corpus prepare``) as SeqIO domain Tasks and Mixtures.

    register_prepared("/data/pile_prepared", prefix="pile")
    # -> Tasks pile_<domain>, Mixtures pile_natural (train token counts) and pile_uniform

Each Task's source reads its domain's ArrayRecord shards (tokenized, EOS-joined and packed
to the prepared ``sequence_length`` by the Beam job) and emits the two features of every
domain Task here, ``targets`` and ``domain``, with no preprocessing at train time. So
``MIXTURE_OR_TASK_NAME = "pile_natural"`` works with SeqIO, and training on a mixture of
prepared Tasks reads them through the deterministic grain input (``data.grain_input``).

``register_prepared_source`` runs the Beam job first when its output is missing (the
demo's embedded corpus, prepared into the cache). Importing registers nothing.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil

import gin
import seqio

from doremi_jax import errors, mixtures, storage
from doremi_jax.data import corpus_reader, domains, prepared_corpus, tokenizer
from doremi_jax.data.prepared_source import PreparedDataSource


@gin.configurable
def register_prepared(prepared_dir: str = gin.REQUIRED, prefix: str = "prepared",
                      natural_name: str | None = None, uniform_name: str | None = None,
                      model_vocab_size: int | None = None) -> list[str]:
  """Registers ``<prefix>_<domain>`` Tasks, ``<prefix>_natural`` (train token counts from
  the manifest) and ``<prefix>_uniform``; returns the task names, sorted."""
  prepared_dir = os.path.abspath(os.path.expanduser(prepared_dir))
  corpus = prepared_corpus.load(prepared_dir)
  prefix = corpus_reader.sanitize(prefix)
  vocab = corpus.vocabulary()
  names: dict[str, str] = {}
  for domain in corpus.domains:
    name = f"{prefix}_{domain}"
    if name in seqio.TaskRegistry.names():
      seqio.TaskRegistry.remove(name)
    seqio.TaskRegistry.add(name, source=PreparedDataSource(corpus, domain, name),
                           preprocessors=[], metric_fns=[],
                           output_features=domains.output_features(vocab))
    names[domain] = name
  natural_name = natural_name or f"{prefix}_natural"
  uniform_name = uniform_name or f"{prefix}_uniform"
  natural = mixtures.normalise(corpus.token_counts("train"),
                               what=f"{natural_name} (token counts of the train split)")
  mixtures.register_mixture(natural_name, {names[d]: natural[d] for d in names})
  mixtures.register_uniform_mixture(uniform_name, names.values())
  task_names = sorted(names.values())
  mixtures.record_spec(task_names, register_prepared, dict(
      prepared_dir=prepared_dir, prefix=prefix, natural_name=natural_name,
      uniform_name=uniform_name), path_args=("prepared_dir",),
      data={names[d]: f"prepared {corpus.domain_digest(d)}" for d in names})
  if model_vocab_size is not None:
    tokenizer.check_vocab_matches(int(model_vocab_size), vocab)
  return task_names


def default_prepared_dir(source: str, settings: dict) -> str:
  """Where ``register_prepared_source`` keeps a source's prepared copy: the cache, keyed
  by the source and the settings (a changed setting prepares again, elsewhere)."""
  key = hashlib.sha256(json.dumps({"source": source, **settings}, sort_keys=True).encode())
  return str(storage.cache_root() / "prepared" / key.hexdigest()[:16])


def _prepared_matches(prepared_dir: str, fingerprints: dict[str, str]) -> bool:
  """A finished prepare of the same source files (by their fingerprints)."""
  try:
    with open(os.path.join(prepared_dir, prepared_corpus.MANIFEST), encoding="utf-8") as f:
      manifest = json.load(f)
  except (OSError, ValueError):
    return False
  return manifest.get("source_fingerprints") == dict(sorted(fingerprints.items()))


@gin.configurable
def register_prepared_source(source: str = gin.REQUIRED, prefix: str = gin.REQUIRED,
                             vocab_size: int = tokenizer.DEFAULT_VOCAB_SIZE,
                             sequence_length: int = 128, validation_fraction: float = 0.05,
                             sample_chars: int = tokenizer.DEFAULT_SAMPLE_CHARS,
                             prepared_dir: str | None = None, natural_name: str | None = None,
                             uniform_name: str | None = None,
                             model_vocab_size: int | None = None) -> list[str]:
  """Prepares ``source`` (``embedded``, ``dir:DIR``, ``pile:DIR``) with the Beam job on
  the DirectRunner unless an up-to-date prepared copy exists, then registers it."""
  from doremi_jax.corpora import prepare, prepare_sources  # Beam: imported only when used
  settings = {"vocab_size": int(vocab_size), "sequence_length": int(sequence_length),
              "validation_fraction": float(validation_fraction),
              "sample_chars": int(sample_chars), "format": prepare.FORMAT_VERSION}
  plan = prepare_sources.resolve(source)
  out = prepared_dir or default_prepared_dir(source, settings)
  if not _prepared_matches(out, plan.fingerprints):
    if os.path.isdir(out) and os.listdir(out):
      if prepared_dir:  # the user's dir: never overwritten
        raise errors.DoremiError(
            f"{prepared_dir!r} holds another preparation (or a partial one); choose a new "
            "prepared_dir or delete it")
      shutil.rmtree(out)  # our cache entry, left partial by an interrupted prepare
    print(f"preparing {source} into {out} (Apache Beam, DirectRunner) ...", flush=True)
    prepare.prepare(source, out, vocab_size=int(vocab_size), plan=plan,
                    sequence_length=int(sequence_length),
                    validation_fraction=float(validation_fraction),
                    sample_chars=int(sample_chars))
  return register_prepared(out, prefix, natural_name, uniform_name, model_vocab_size)
