"""Per-domain held-out log-perplexity and bits per byte of a checkpoint.

Domains are the SeqIO subtasks of the evaluation mixture (``seqio.get_subtasks``), each
read once, unshuffled, from the chosen split, as t5x evaluates (``run/heldout.py``). The
model's own ``config.gin`` (written by training) is parsed first, so the architecture
always matches.
"""
from __future__ import annotations

import math
import os
from typing import Any, Mapping

import gin
import jax

from doremi_jax import errors, mixtures, tables
from doremi_jax.core import model as model_lib
from doremi_jax.data import seqio_input
from doremi_jax.run import checkpoints, heldout, paths, step_builder


@gin.configurable(denylist=["model_dir", "mixture_or_task_name"])
def evaluate(model_dir: str, mixture_or_task_name: str, split: str = "validation",
             batch_size: int = 16, max_batches_per_domain: int | None = 50,
             task_feature_lengths: Mapping[str, int] | None = None) -> dict[str, Any]:
  """Mean token NLL (nats) and bits per byte per domain; writes ``MODEL_DIR/eval_<split>.json``.

  Bits per byte = summed NLL / (ln 2 x UTF-8 bytes of the evaluated tokens' text): unlike
  nats per token it compares models across tokenizers. ``task_feature_lengths`` defaults
  to the ``TASK_FEATURE_LENGTHS`` the model was trained with (``eval.gin`` binds it).
  """
  if task_feature_lengths is None:
    raise errors.DoremiError("missing required gin value: evaluate.task_feature_lengths "
                             "(pass --gin.TASK_FEATURE_LENGTHS=...)")
  cfg = model_lib.TransformerConfig()  # the run's own config.gin is parsed first
  provider = mixtures.provider(mixture_or_task_name)
  seqio_input.check_vocabulary(provider, cfg.vocab_size)
  domains = mixtures.domain_names(provider)
  lengths = dict(task_feature_lengths)
  built = step_builder.build_eval(cfg, int(lengths["targets"]))
  params = checkpoints.restore_params(model_dir, built.params)
  heldout_ = heldout.HeldOut(built.lm, built.mesh, built.params_shardings, built.rules,
                             provider, domains, lengths, batch_size)
  sums = heldout_.sums(params, heldout_.batches(split, max_batches_per_domain))
  result = {"model_dir": os.path.abspath(model_dir),
            "mixture_or_task_name": mixture_or_task_name,
            **heldout_.metrics(*sums, split)}
  log_ppl = result["log_perplexity"]
  if not all(math.isfinite(v) for v in log_ppl.values()):
    raise errors.DoremiError(f"non-finite log-perplexity for {model_dir}: {log_ppl}")
  if jax.process_index() == 0:
    paths.write_json(paths.eval_file(model_dir, split), result)
  return result


@gin.configurable
def evaluate_main(model_dir: str = gin.REQUIRED,
                  mixture_or_task_name: str = gin.REQUIRED) -> dict[str, Any]:
  return evaluate(model_dir, mixture_or_task_name)


def format_table(results: Mapping[str, Mapping[str, Any]]) -> str:
  """One row per domain, one column per evaluated model, then the average and worst rows."""
  names = list(results)
  domains = list(next(iter(results.values()))["log_perplexity"])
  rows = [[d] + [f"{results[n]['log_perplexity'][d]:.3f}" for n in names] for d in domains]
  rows.append(["**average**"] + [f"**{results[n]['average_log_perplexity']:.3f}**" for n in names])
  rows.append(["**worst**"] + [f"**{results[n]['worst_log_perplexity']:.3f}**" for n in names])
  return tables.markdown(["domain"] + names, rows)
