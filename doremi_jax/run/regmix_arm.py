"""The ``regmix`` arm (RegMix, Liu et al. 2024): a swarm of small models trained in one
compiled step (``core/swarm.py``), each on its own mixture drawn from a Dirichlet around
the natural one and read through the deterministic prepared input; their validation
losses fit a regression (``core/regmix.py``), whose best predicted mixture is the arm.

Its result (mixtures, losses, fit, weights, cost) is ``<experiment>/regmix/result.json``,
reused by a rerun of the same settings; the weights are an arm's weights JSON.
"""
from __future__ import annotations

import dataclasses
import os
import time
from typing import Any, Mapping, Sequence

import jax
import numpy as np

from doremi_jax import errors, mixture_files, mixtures
from doremi_jax.core import flops, partitioning, regmix, steps, swarm
from doremi_jax.core import model as model_lib
from doremi_jax.core import train_state as ts
from doremi_jax.data import grain_input, seqio_input, tokenizer
from doremi_jax.run import paths, training_input


@dataclasses.dataclass(frozen=True)
class SwarmPlan:
  size: int  # S models
  steps: int
  batch_size: int  # per model
  concentration: float = 1.0
  seed: int = 0
  eval_batches_per_domain: int = 4
  # TransformerConfig fields that make the swarm's models smaller than the experiment's
  # (RegMix's are ~1M parameters), e.g. {"emb_dim": 32, "mlp_dim": 128}; {}: the same model.
  model: Mapping[str, Any] = dataclasses.field(default_factory=dict)

  def model_config(self) -> model_lib.TransformerConfig:
    """The experiment's model (gin's TransformerConfig) with ``model``'s fields replaced."""
    base = model_lib.TransformerConfig()
    unknown = sorted(set(self.model) - {f.name for f in dataclasses.fields(base)})
    if unknown:
      raise errors.DoremiError(f"pipeline.regmix_model names {unknown}, not TransformerConfig "
                               "fields (e.g. {'emb_dim': 32, 'mlp_dim': 128})")
    return dataclasses.replace(base, **dict(self.model))

  def as_json(self) -> dict[str, Any]:
    return dataclasses.asdict(self)


def _stack(batches: Sequence[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
  return {k: np.stack([b[k] for b in batches]) for k in batches[0]}


def _validation_losses(built_eval, params, provider, domains, length, batch_size,
                       max_batches, num_models) -> np.ndarray:
  """Every model's mean validation log-perplexity per domain, ``[S, K]``."""
  vocab = provider.output_features["targets"].vocabulary
  token_bytes = jax.device_put(tokenizer.token_byte_lengths(vocab),
                               partitioning.replicated(built_eval["mesh"]))
  sums = np.zeros((num_models, len(domains)))
  counts = np.zeros((num_models, len(domains)))
  for domain in domains:
    local = seqio_input.eval_batches(errors.require_task(domain), {"targets": length},
                                     "validation", batch_size, domains, max_batches)
    for batch in seqio_input.global_batches(local, built_eval["batch_shardings"]):
      s, c, _ = built_eval["step"](params, batch, token_bytes)
      sums += np.asarray(s)
      counts += np.asarray(c)
  if (counts == 0).any():
    raise errors.DoremiError("the regmix swarm needs validation tokens in every domain")
  return sums / counts


def run_swarm(experiment_dir: str, uniform_mixture: str, natural: Mapping[str, float],
              plan: SwarmPlan) -> dict[str, Any]:
  """Trains the swarm (or reads its finished result), fits, writes the arm's weights JSON."""
  out_dir = os.path.join(experiment_dir, "regmix")
  result_path = os.path.join(out_dir, "result.json")
  if os.path.exists(result_path):
    previous = paths.read_json(result_path)
    if previous.get("plan") == plan.as_json():
      return previous
  provider = mixtures.provider(uniform_mixture)
  sources = training_input.prepared_sources(provider)
  if sources is None:
    raise errors.DoremiError("the regmix arm trains its swarm on prepared data; prepare the "
                             "corpus (doremi-corpus prepare) or set pipeline.regmix_swarm = None")
  domains = mixtures.domain_names(provider)
  corpus = next(iter(sources.values())).corpus
  prior = np.asarray([natural[d] for d in domains])
  mixes = regmix.dirichlet_mixtures(prior, plan.size, plan.concentration, plan.seed)
  cfg, mesh = plan.model_config(), partitioning.make_mesh()
  rules = partitioning.logical_axis_rules()
  lm, optimizer = model_lib.TransformerLM(cfg), ts.make_optimizer(plan.steps)
  length = corpus.sequence_length
  abstract, shardings = ts.state_shardings(lm, optimizer, mesh, length, None, rules)
  _, stacked_sh = ts.stack_proxies(abstract, shardings, plan.size, mesh, rules)
  step = swarm.make_swarm_step(lm, optimizer, mesh, stacked_sh, len(domains), rules)
  state = ts.broadcast_state(ts.init_state(lm, optimizer, mesh, length, plan.seed),
                             plan.size, stacked_sh)  # one init: the mixtures alone differ
  inputs = [grain_input.MixtureInput(
      corpus, {sources[t].domain: float(w) for t, w in zip(domains, mix)}, plan.batch_size,
      seed=plan.seed, domains=[sources[t].domain for t in domains],
      process_index=jax.process_index(), process_count=jax.process_count()) for mix in mixes]
  batch_sh = swarm.batch_shardings(mesh, rules)
  print(f"[pipeline] {os.path.relpath(out_dir)}: training a swarm of {plan.size} models, "
        f"{plan.steps} steps of {plan.batch_size} sequences each", flush=True)
  start = time.perf_counter()
  readers = [source.batches_from(0) for source in inputs]  # grain reads ahead of the step
  stacked = (_stack([next(r) for r in readers]) for _ in range(plan.steps))
  for batch in seqio_input.global_batches(stacked, batch_sh):
    state, metrics = step(state, batch)
  jax.block_until_ready(metrics["loss"])
  seconds = time.perf_counter() - start
  evaluator = {"mesh": mesh, "batch_shardings": steps.batch_shardings(mesh, rules),
               "step": swarm.make_swarm_eval_step(lm, mesh, stacked_sh.params, len(domains),
                                                  rules)}
  losses = _validation_losses(evaluator, state.params, provider, domains, length,
                              plan.batch_size, plan.eval_batches_per_domain, plan.size)
  target = losses.mean(axis=1)  # the comparison's average over domains
  fit = regmix.fit(mixes, target)
  best = regmix.best_mixture(fit, prior, plan.concentration, seed=plan.seed + 1)
  weights = dict(zip(domains, best.tolist()))
  cost = {"seconds": seconds, "flops": float(flops.train_flops_per_token(cfg, length)
                                             * plan.size * plan.batch_size * length * plan.steps)}
  result = {"plan": plan.as_json(), "domains": domains, "mixtures": mixes.tolist(),
            "model": {"num_params": cfg.num_params(), **dataclasses.asdict(cfg)},
            "validation_loss": target.tolist(), "fit": {"model": "log-linear ridge",
                                                        "coefficients": fit.coefficients.tolist(),
                                                        "r2": fit.r2},
            "weights": weights, "cost": cost,
            "weights_json": os.path.join(out_dir, "regmix_weights.json")}
  os.makedirs(out_dir, exist_ok=True)
  mixture_files.write_weights(result["weights_json"], "regmix_weights", weights,
                              {"method": "RegMix (Liu et al. 2024), log-linear fit",
                               "swarm": plan.as_json(), "r2": fit.r2, "cost": cost})
  paths.write_json(result_path, result)
  return result

