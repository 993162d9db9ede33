"""Your own SeqIO Tasks as DoReMi domains, used as they are registered.

    # my_tasks.py registers my_web, my_code and my_books when imported, with their own
    # sources, preprocessors and vocabulary (a t5x user's task module)
    register_seqio_tasks(tasks=["my_web", "my_code", "my_books"], modules=["my_tasks"])
    # -> Mixtures seqio_natural and seqio_uniform over those Tasks

Nothing is re-registered: the training input samples the Tasks itself and labels each
sequence with the Task it was drawn from (``data.seqio_input.task_sequences``), so the
Tasks need no ``domain`` feature, and exports name the user's own Tasks (the exported
SeqIO module imports only SeqIO and ``modules``). ``tasks`` may name one Mixture instead;
its subtasks are the domains and its rates the natural mixture. Otherwise the natural
mixture is ``rates`` or, without them, each Task's train tokens, counted once here in
one pass over its train split (name a Mixture or pass ``rates`` for large Tasks).
Importing this module registers nothing.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import gin
import seqio

from doremi_jax import errors, mixtures
from doremi_jax.data import domains, tokenizer

_COUNTS: dict[tuple[str, int], int] = {}  # (task, length) -> train tokens, per process


def train_tokens(task: seqio.Task, sequence_length: int) -> int:
  """Target tokens of a Task's train split as the input reads it (after its own
  preprocessors, each example trimmed to ``sequence_length``)."""
  key = (task.name, int(sequence_length))
  if key not in _COUNTS:
    ds = task.get_dataset({domains.TARGETS_KEY: int(sequence_length)}, split="train",
                          shuffle=False, num_epochs=1)
    _COUNTS[key] = int(sum(int(ex[domains.TARGETS_KEY].shape[0])
                           for ex in ds.as_numpy_iterator()))
  return _COUNTS[key]


def _one_vocabulary(tasks: Sequence[seqio.Task]) -> None:
  """One model reads every domain: their ``targets`` must share one vocabulary."""
  seen = {}
  for task in tasks:
    if domains.TARGETS_KEY not in task.output_features:
      raise errors.DoremiError(f"task {task.name!r} has no 'targets' output feature: DoReMi "
                               "trains a decoder-only model on each domain's 'targets'")
    vocab = task.output_features[domains.TARGETS_KEY].vocabulary
    seen[task.name] = mixtures.describe_vocabulary(vocab)
  if len({repr(sorted(v.items())) for v in seen.values()}) > 1:
    raise errors.DoremiError(f"the tasks use different vocabularies ({seen}); one model is "
                             "trained on all domains, so they must share one")


@gin.configurable
def register_seqio_tasks(tasks: Sequence[str] | str = gin.REQUIRED,
                         modules: Sequence[str] = (), prefix: str = "seqio",
                         natural_name: str | None = None, uniform_name: str | None = None,
                         rates: Mapping[str, float] | None = None,
                         sequence_length: int | None = None,
                         model_vocab_size: int | None = None) -> list[str]:
  """Registers ``<prefix>_natural`` and ``<prefix>_uniform`` over existing Tasks (or a
  Mixture's subtasks), after importing ``modules``; returns the task names, sorted."""
  domains.import_task_modules(modules)
  mixture = None
  if isinstance(tasks, str):
    mixture = errors.require_mixture_or_task(tasks)
    found = seqio.get_subtasks(mixture)
  else:
    found = [errors.require_task(t) for t in tasks]
  if len(found) < 2:
    raise errors.DoremiError(f"DoReMi needs at least two domains; {tasks!r} names "
                             f"{[t.name for t in found]}")
  _one_vocabulary(found)
  names = sorted(t.name for t in found)
  natural_name = natural_name or f"{prefix}_natural"
  uniform_name = uniform_name or f"{prefix}_uniform"
  if rates is not None:
    natural = mixtures.normalise(rates, names, what=f"{natural_name} (rates)")
  elif isinstance(mixture, seqio.Mixture):
    natural = mixtures.mixture_rates(mixture)
  elif sequence_length is None:
    raise errors.DoremiError(
        "register_seqio_tasks: give rates=, name a Mixture, or give sequence_length= to "
        "count each task's train tokens for the natural mixture")
  else:
    natural = mixtures.normalise({t.name: train_tokens(t, sequence_length) for t in found},
                                 names, what=f"{natural_name} (train token counts)")
  mixtures.register_mixture(natural_name, natural)
  mixtures.register_uniform_mixture(uniform_name, names)
  mixtures.record_spec(names, register_seqio_tasks, dict(
      tasks=names, modules=list(modules), prefix=prefix, natural_name=natural_name,
      uniform_name=uniform_name, rates=dict(natural)))
  if model_vocab_size is not None:
    vocab = found[0].output_features[domains.TARGETS_KEY].vocabulary
    tokenizer.check_vocab_matches(int(model_vocab_size), vocab)
  return names

