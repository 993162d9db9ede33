"""The training input of a run: global batches by step, as sharded ``jax.Array``s.

A mixture (or Task) whose domains are all prepared Tasks of one prepared corpus
(``doremi-corpus prepare``) is read through grain (``data.grain_input``): batch ``t`` is
a pure function of (corpus, weights, seed, t), each host reads only its rows of it, and
resuming at step ``s`` starts reading at ``s`` (nothing replayed). Any other provider
streams through SeqIO/tf.data (``data.seqio_input``), resuming by skipping batches.
"""
from __future__ import annotations

from typing import Iterator, Mapping, Sequence

import jax
import seqio

from doremi_jax import errors, mixtures
from doremi_jax.data import grain_input, scheduled_input, seqio_input
from doremi_jax.data.prepared_source import PreparedDataSource


def prepared_sources(provider: seqio.Task | seqio.Mixture) -> dict[str, PreparedDataSource] | None:
  """Task name -> prepared source, when every subtask is a prepared Task of one corpus."""
  sources = {t.name: t.source for t in seqio.get_subtasks(provider)}
  if not sources or not all(isinstance(s, PreparedDataSource) for s in sources.values()):
    return None
  if len({s.corpus.root for s in sources.values()}) != 1:
    return None
  return sources


def mixture_input(provider: seqio.Task | seqio.Mixture, domains: Sequence[str],
                  sequence_length: int, batch_size: int, seed: int,
                  schedule: str | None = None, train_steps: int | None = None
                  ) -> grain_input.MixtureInput | None:
  """The grain input of a prepared provider (None for any other provider); with a
  ``schedule`` (a JSON path), its weights follow it over ``train_steps``."""
  sources = prepared_sources(provider)
  if sources is None:
    if schedule:
      raise errors.DoremiError(
          f"train.domain_schedule needs prepared data; {provider.name!r} is streamed "
          "(prepare the corpus with doremi-corpus prepare)")
    return None
  rates = mixtures.mixture_rates(provider)
  if set(rates) != set(sources):  # a mixture of mixtures: SeqIO resolves its rates
    if schedule:
      raise errors.DoremiError(f"train.domain_schedule needs a mixture of prepared domain "
                               f"Tasks; {provider.name!r} is a mixture of mixtures")
    return None
  corpus = next(iter(sources.values())).corpus
  if corpus.sequence_length != sequence_length:
    raise errors.DoremiError(
        f"TASK_FEATURE_LENGTHS targets={sequence_length} but {corpus.root} was prepared with "
        f"sequence_length={corpus.sequence_length}; set TASK_FEATURE_LENGTHS to "
        f"{{'targets': {corpus.sequence_length}}} or prepare again")
  hosts = {"process_index": jax.process_index(), "process_count": jax.process_count()}
  by_domain = [sources[t].domain for t in domains]
  if schedule:
    segments = scheduled_input.read_schedule(schedule, int(train_steps))
    unknown = sorted({t for _, w in segments for t in w} - set(sources))
    if unknown:
      raise errors.DoremiError(f"domain schedule {schedule!r} names {unknown}, not domains of "
                               f"{provider.name!r}")
    return scheduled_input.ScheduledMixtureInput(
        corpus, [(s, {sources[t].domain: w for t, w in ws.items()}) for s, ws in segments],
        batch_size, seed=seed, domains=by_domain, **hosts)
  return grain_input.MixtureInput(
      corpus, {sources[t].domain: rate for t, rate in rates.items()}, batch_size, seed=seed,
      domains=by_domain, **hosts)


def training_batches(prepared: grain_input.MixtureInput | None,
                     provider: seqio.Task | seqio.Mixture, domains: Sequence[str],
                     feature_lengths: Mapping[str, int], batch_size: int, seed: int,
                     start_step: int, shardings: Mapping[str, jax.sharding.Sharding]
                     ) -> tuple[Iterator[dict[str, jax.Array]], str]:
  """(global batches from ``start_step`` on, "grain" or "seqio"): ``prepared`` (the
  provider's ``mixture_input``) when it has one, SeqIO otherwise."""
  if prepared is not None:
    return seqio_input.global_batches(prepared.batches_from(start_step), shardings), "grain"
  ds = seqio_input.seqio_dataset(provider, feature_lengths, "train", batch_size, domains,
                                 shuffle=True, seed=seed, skip_batches=start_step)
  return seqio_input.global_batches(ds.as_numpy_iterator(), shardings), "seqio"
