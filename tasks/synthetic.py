"""Synthetic domains with a known answer, generated deterministically in code.

  * ``synthetic_noise``  - i.i.d. uniform tokens: maximal entropy, nothing to learn.
  * ``synthetic_repeat`` - one fixed 8-token cycle, repeated: trivial, learned in a few steps.
  * ``synthetic_markov1`` - a sparse first-order chain over 144 tokens (learnable).
  * ``synthetic_markov2`` - a sparse second-order chain over 12 tokens (learnable, needs
    two tokens of context: harder).

DoReMi should move weight away from ``noise`` (no excess loss to reduce: the
reference is already at the entropy floor) and ``repeat`` (learned in a few
steps), and towards the Markov domains, where a proxy lags the reference longest.
``register_synthetic`` registers them (``gin/experiments/synthetic.gin`` lists it).

Token ids: 0 is padding, 1 is EOS, documents use ids ``2 .. VOCAB_SIZE - 1``.
"""
from __future__ import annotations

import zlib

import gin
import numpy as np
import seqio
import tensorflow as tf

from doremi_jax import mixtures
from doremi_jax.data import domains

VOCAB_SIZE = 256
DOMAINS = ("noise", "repeat", "markov1", "markov2")
TASK_PREFIX = "synthetic_"
BASELINE_MIXTURE = "synthetic_baseline"
UNIFORM_MIXTURE = "synthetic_uniform"
# Baseline rates: proportional to an (arbitrary, fixed) notion of domain size.
BASELINE_RATES = {"noise": 0.3, "repeat": 0.3, "markov1": 0.2, "markov2": 0.2}
_DOCS = {"train": 1500, "validation": 100, "test": 100}
_DOC_LEN = (96, 320)


def _rng(domain: str, split: str) -> np.random.Generator:
  return np.random.default_rng(zlib.crc32(f"{domain}/{split}".encode()))


# Each domain owns a disjoint token range, so one token tells the model which domain it
# is in: a domain's loss then depends only on how well that domain was learned.
# The two chains have the same number of contexts (144), so they are learned at similar
# speeds; the second-order one also needs two tokens of context.
TOKEN_RANGES = {"repeat": (2, 10), "markov1": (10, 154), "markov2": (154, 166),
                "noise": (166, 256)}


def _sparse_transitions(rng: np.random.Generator, states: int, branching: int, lo: int, hi: int):
  """Each state moves to one of ``branching`` tokens in [lo, hi) with Dirichlet probabilities."""
  nxt = rng.integers(lo, hi, size=(states, branching))
  probs = rng.dirichlet(np.ones(branching), size=states)
  return nxt, probs.cumsum(axis=1)


def _markov_documents(rng, table, order: int, lengths, lo: int, hi: int) -> list[np.ndarray]:
  """The chain's documents, drawn in the order one document at a time would draw them
  (its first ``order`` tokens, then one uniform per position), stepped for all at once."""
  nxt, cum = table
  starts, draws = [], []
  for n in lengths:
    starts.append(rng.integers(lo, hi, size=order))
    draws.append(rng.random(n))
  longest = int(max(lengths))
  docs = np.zeros((len(lengths), longest), np.int64)
  docs[:, :order] = np.stack(starts)
  padded = np.zeros((len(lengths), longest))
  for i, d in enumerate(draws):
    padded[i, :len(d)] = d
  for i in range(longest - order):
    pos = i + order
    prev = docs[:, pos - 1] - lo
    state = prev if order == 1 else prev * (hi - lo) + docs[:, pos - 2] - lo
    # np.searchsorted(cum[state], draw) row by row: how many cumulative sums lie below it.
    choice = (cum[state] < padded[:, i:i + 1]).sum(axis=1)
    docs[:, pos] = nxt[state, choice]
  return [docs[j, :n].astype(np.int32) for j, n in enumerate(lengths)]


def generate_documents(domain: str, split: str) -> list[np.ndarray]:
  """All documents of one domain/split; the chains are shared across splits."""
  if domain not in TOKEN_RANGES:
    raise ValueError(f"unknown synthetic domain {domain!r}")
  rng = _rng(domain, split)
  lengths = rng.integers(*_DOC_LEN, size=_DOCS[split])
  table_rng = _rng(domain, "table")
  lo, hi = TOKEN_RANGES[domain]
  if domain == "noise":
    return [rng.integers(lo, hi, size=n, dtype=np.int32) for n in lengths]
  if domain == "repeat":
    cycle = np.arange(lo, hi, dtype=np.int32)
    return [np.tile(cycle, n // len(cycle) + 2)[(o := rng.integers(len(cycle))):o + n]
            for n in lengths]
  order = 1 if domain == "markov1" else 2
  table = _sparse_transitions(table_rng, (hi - lo) ** order, 4, lo, hi)
  return _markov_documents(rng, table, order, lengths, lo, hi)


def _dataset_fn(domain: str):
  cache: dict[str, tf.data.Dataset] = {}

  def dataset_fn(split: str, shuffle_files: bool, seed: int | None = None) -> tf.data.Dataset:
    del shuffle_files, seed  # a single in-memory shard; seqio shuffles examples.
    if split not in cache:
      docs = generate_documents(domain, split)
      ragged = tf.RaggedTensor.from_row_lengths(  # from arrays: no per-token Python walk
          np.concatenate(docs), np.asarray([len(d) for d in docs], np.int64))
      cache[split] = tf.data.Dataset.from_tensor_slices(ragged).map(lambda d: {"targets": d})
    return cache[split]

  return dataset_fn


@gin.configurable
def register_synthetic(vocab_size: int = VOCAB_SIZE) -> list[str]:
  """Registers the four domain Tasks plus the baseline and uniform Mixtures."""
  if vocab_size != VOCAB_SIZE:
    raise ValueError(f"synthetic domains use vocab_size={VOCAB_SIZE}, got {vocab_size}")
  vocab = seqio.PassThroughVocabulary(size=VOCAB_SIZE, eos_id=1)
  names = []
  for domain in DOMAINS:
    source = seqio.FunctionDataSource(
        _dataset_fn(domain), splits=tuple(_DOCS),
        num_input_examples=dict(_DOCS))
    task = domains.register_domain_task(TASK_PREFIX + domain, source, vocab, tokenized=True)
    names.append(task.name)
  mixtures.register_mixture(
      BASELINE_MIXTURE, {TASK_PREFIX + d: r for d, r in BASELINE_RATES.items()})
  mixtures.register_uniform_mixture(UNIFORM_MIXTURE, names)
  mixtures.record_spec(names, register_synthetic, {"vocab_size": vocab_size})
  return names
