"""Per-domain held-out log-perplexity of a checkpoint (uniform average and worst case).

Domains are the SeqIO subtasks of the evaluation mixture (``seqio.get_subtasks``),
each read once, unshuffled, from its ``validation`` split, as t5x evaluates.

    python -m doremi_jax.evaluate --gin.MODEL_DIR=\"runs/x/main\" \
        --gin.MIXTURE_OR_TASK_NAME=\"synthetic_uniform\"

The model's own ``config.gin`` (written by training) is parsed first, so the
architecture always matches the checkpoint.
"""
from __future__ import annotations

if __name__ == "__main__":  # run the package module, so gin sees each configurable once
  from doremi_jax.evaluate import main as _main  # pylint: disable=g-import-not-at-top
  _main()
  raise SystemExit(0)

import json
import math
import os
import sys
from typing import Any, Sequence

import gin
import jax
import numpy as np

from doremi_jax import checkpoints, data, distributed, errors, gin_utils, tokenizer
from doremi_jax.core import partitioning, steps
from doremi_jax.core import model as model_lib
from doremi_jax import train as train_lib
from doremi_jax.core import train_state as ts

EVAL_FILE = "eval_{split}.json"


@gin.configurable(denylist=["model_dir", "mixture_or_task_name"])
def evaluate(model_dir: str, mixture_or_task_name: str, split: str = "validation",
             batch_size: int = 16, max_batches_per_domain: int | None = 50,
             task_feature_lengths: dict[str, int] | None = None) -> dict[str, Any]:
  """Mean token NLL (nats) and bits per byte per domain; writes ``MODEL_DIR/eval_<split>.json``.

  Bits per byte = summed NLL / (ln 2 x UTF-8 bytes of the evaluated tokens' text): unlike
  nats per token it compares models across tokenizers.
  """
  cfg = model_lib.TransformerConfig()
  lm = model_lib.TransformerLM(cfg)
  data.check_vocabulary(mixture_or_task_name, cfg.vocab_size)
  domains = data.domains_of(mixture_or_task_name)
  lengths = dict(task_feature_lengths or gin_utils.macro_value("TASK_FEATURE_LENGTHS"))
  mesh = partitioning.make_mesh()
  rules = partitioning.logical_axis_rules()
  abstract, _ = ts.state_shardings(lm, ts.make_optimizer(1), mesh, int(lengths["targets"]),
                                   None, rules)
  params = checkpoints.restore_params(model_dir, abstract.params)
  eval_step = steps.make_eval_step(lm, mesh, jax.tree.map(lambda x: x.sharding, abstract.params),
                                   len(domains), rules)
  shardings = steps.batch_shardings(mesh, rules)
  vocab = errors.require_mixture_or_task(mixture_or_task_name).output_features["targets"].vocabulary
  token_bytes = jax.device_put(tokenizer.token_byte_lengths(vocab), partitioning.replicated(mesh))
  sums, counts, nbytes = (np.zeros(len(domains)) for _ in range(3))
  for domain in domains:
    ds = data.seqio_dataset(domain, lengths, split, batch_size, domains, shuffle=False,
                            seed=None, num_epochs=1)
    if max_batches_per_domain:
      ds = ds.take(max_batches_per_domain)
    for batch in data.global_batches(ds, shardings):
      s, c, b = eval_step(params, batch, token_bytes)
      sums += np.asarray(s)
      counts += np.asarray(c)
      nbytes += np.asarray(b)
  empty = [d for d, c in zip(domains, counts) if c == 0]
  if empty:
    raise errors.DoremiError(f"no {split} tokens for domain(s) {empty} (split too small for "
                             f"one batch of {batch_size} x {lengths['targets']} tokens?)")
  log_ppl = dict(zip(domains, (sums / counts).tolist()))
  bpb = dict(zip(domains, (sums / (math.log(2) * np.maximum(nbytes, 1))).tolist()))
  result = {
      "model_dir": os.path.abspath(model_dir), "mixture_or_task_name": mixture_or_task_name,
      "split": split, "log_perplexity": log_ppl, "tokens": dict(zip(domains, counts.tolist())),
      "average_log_perplexity": float(np.mean(list(log_ppl.values()))),
      "worst_log_perplexity": float(max(log_ppl.values())),
      "worst_domain": max(log_ppl, key=log_ppl.get),
      "bits_per_byte": bpb, "bytes": dict(zip(domains, nbytes.tolist())),
      "average_bits_per_byte": float(np.mean(list(bpb.values()))),
      "worst_bits_per_byte": float(max(bpb.values())),
      "worst_bits_per_byte_domain": max(bpb, key=bpb.get),
  }
  if not all(math.isfinite(v) for v in log_ppl.values()):
    raise errors.DoremiError(f"non-finite log-perplexity for {model_dir}: {log_ppl}")
  if jax.process_index() == 0:
    with open(os.path.join(model_dir, EVAL_FILE.format(split=split)), "w") as f:
      json.dump(result, f, indent=2)
  return result


@gin.configurable
def evaluate_main(model_dir: str = gin.REQUIRED,
                  mixture_or_task_name: str = gin.REQUIRED) -> dict[str, Any]:
  return evaluate(model_dir, mixture_or_task_name)


def format_table(results: dict[str, dict[str, Any]]) -> str:
  """A markdown table: one row per domain, one column per evaluated model."""
  names = list(results)
  domains = list(next(iter(results.values()))["log_perplexity"])
  head = "| domain | " + " | ".join(names) + " |\n|---|" + "---:|" * len(names) + "\n"
  rows = [f"| {d} | " + " | ".join(f"{results[n]['log_perplexity'][d]:.3f}" for n in names) + " |"
          for d in domains]
  rows.append("| **average** | " + " | ".join(
      f"**{results[n]['average_log_perplexity']:.3f}**" for n in names) + " |")
  rows.append("| **worst** | " + " | ".join(
      f"**{results[n]['worst_log_perplexity']:.3f}**" for n in names) + " |")
  return head + "\n".join(rows) + "\n"


@errors.exit_on_user_error
def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
  distributed.maybe_initialize()
  args = gin_utils.parse_args(sys.argv[1:] if argv is None else argv,
                              "Per-domain held-out log-perplexity of a trained model.")
  model_dir = next((b.split("=", 1)[1].strip().strip("\"'") for b in args.bindings
                    if b.replace(" ", "").startswith("MODEL_DIR=")), None)
  if model_dir is None:
    raise errors.DoremiError("missing required gin value: MODEL_DIR (--gin.MODEL_DIR=\\\"...\\\")")
  config = os.path.join(model_dir, "config.gin")
  if not os.path.exists(config):
    raise errors.DoremiError(f"{config!r} not found: is {model_dir!r} a trained model dir?")
  files = [config, "runs/eval.gin"] + list(args.gin_file)
  gin_utils.configure(files, args.bindings, args.gin_search_paths)
  gin_utils.call_configured(train_lib.import_task_modules)
  result = gin_utils.call_configured(evaluate_main)
  print(format_table({os.path.basename(os.path.normpath(model_dir)): result}))
  return result

