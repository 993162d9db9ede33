"""What an online DoReMi run (``train.kind = "online"``) adds to a main run: the proxy and
its frozen reference (the reference run's model), the proxy's uniform input, and the main
input drawn step by step with the proxy's current weights (``data/online_input.py``).

The proxy's trajectory and averaged weights are written as a proxy run writes them
(``domain_weights.jsonl``, ``export/<name>.json``, by ``ProxyExtras``), so an online run
also leaves an averaged mixture behind.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Sequence

import jax
import numpy as np

from doremi_jax import errors, mixture_files, mixtures
from doremi_jax.core import flops, steps
from doremi_jax.core import model as model_lib
from doremi_jax.core import online as online_lib
from doremi_jax.data import online_input, seqio_input
from doremi_jax.run import paths, training_input
from doremi_jax.run.proxy import ProxyExtras
from doremi_jax.run.settings import RunSettings


def reference_model_config(reference_model_dir: str) -> model_lib.TransformerConfig:
  """The reference run's model (the online proxy has the same): from its summary."""
  path = os.path.join(reference_model_dir, paths.TRAIN_SUMMARY_FILE)
  if not os.path.exists(path):
    raise errors.DoremiError(f"an online run needs a finished reference run; "
                             f"{reference_model_dir!r} has no {paths.TRAIN_SUMMARY_FILE} "
                             "(train it to its end, RESUME=True)")
  model = paths.read_json(path).get("model") or {}
  names = {f.name for f in dataclasses.fields(model_lib.TransformerConfig)}
  return model_lib.TransformerConfig(**{k: v for k, v in model.items() if k in names})


def _host(x: jax.Array) -> np.ndarray:
  """A replicated array's value on this host (every host holds a whole copy)."""
  return np.asarray(x.addressable_shards[0].data)


class OnlineRun:
  """Set up before anything is written; ``start`` once the state is restored or built."""

  def __init__(self, run: RunSettings, provider, domains: Sequence[str],
               doremi_config: steps.DoremiConfig):
    if steps.num_proxies(doremi_config) > 1:  # before any warning about the proxy's batch
      raise errors.DoremiError(online_lib.ONE_SETTING)
    proxy_provider = mixtures.provider(run.online_proxy_mixture)
    if sorted(mixtures.domain_names(proxy_provider)) != sorted(domains):
      raise errors.DoremiError(
          f"train.online_proxy_mixture {run.online_proxy_mixture!r} has domains "
          f"{sorted(mixtures.domain_names(proxy_provider))}, the run {sorted(domains)}")
    self.proxy_batch_size = run.online_proxy_batch_size or run.batch_size
    self.extras = ProxyExtras(
        run.model_dir, run.reference_model_dir, proxy_provider, domains,
        run.export_name or mixture_files.export_name(provider.name, "online"),
        self.proxy_batch_size, doremi_config, run.allow_unfinished_reference)
    sources = training_input.prepared_sources(provider)
    if sources is None:
      raise errors.DoremiError(f"an online run needs prepared data; {provider.name!r} is "
                               "streamed (prepare the corpus with doremi-corpus prepare)")
    self.proxy_input = training_input.mixture_input(
        proxy_provider, domains, run.sequence_length, self.proxy_batch_size, run.seed)
    if self.proxy_input is None:
      raise errors.DoremiError(f"train.online_proxy_mixture {run.online_proxy_mixture!r} must "
                               "be a mixture of the same prepared domain Tasks")
    corpus = next(iter(sources.values())).corpus
    self.main_input = online_input.OnlineMixtureInput(
        corpus, [sources[t].domain for t in domains], run.batch_size, seed=run.seed,
        process_index=jax.process_index(), process_count=jax.process_count())
    self._proxy_batches = self._shardings = None

  def start(self, state, built, start_step: int, write: bool):
    """Loads the reference, replays the main input's rows of the steps already trained
    (from the checkpointed trajectory) and opens the proxy's input at ``start_step``."""
    state = self.extras.start(state, None, built.online.model_state, start_step, write)
    self.main_input.replay(_host(state.domains.trajectory)[:start_step])
    self._shardings = built.batch_shardings
    self._proxy_batches = seqio_input.global_batches(
        self.proxy_input.batches_from(start_step), self._shardings)
    return state

  def next_batches(self, state) -> tuple[dict[str, jax.Array], dict[str, jax.Array]]:
    """(main batch drawn with the state's current weights, the proxy's batch); waits for
    the step that computed those weights (one host sync per step)."""
    weights = _host(state.domains.proxy.domains.weights)
    local = self.main_input.next_batch(weights)
    main = next(seqio_input.global_batches([local], self._shardings))
    return main, next(self._proxy_batches)

  def flops(self, main_config, proxy_config, sequence_length: int, batch_size: int,
            train_steps: int) -> float:
    """The main model's training plus the proxy's (forward, backward, reference forward)."""
    per_step = (flops.train_flops_per_token(main_config, sequence_length) * batch_size
                + flops.proxy_flops_per_token(proxy_config, sequence_length)
                * self.proxy_batch_size)
    return float(per_step * sequence_length * train_steps)

  def results(self, state, train_steps: int, write: bool) -> dict[str, Any]:
    """The summary's online part: the proxy's averaged weights (exported as a proxy run's)
    and the mean of the weights the main batches were drawn with."""
    out = self.extras.results(state.domains.proxy, train_steps, write)
    drawn = _host(state.domains.trajectory)[:train_steps].mean(axis=0)
    out["online"] = {"proxy_batch_size": self.proxy_batch_size,
                     "mean_drawn_weights": dict(zip(self.extras.domains, drawn.tolist())),
                     "trajectory": paths.trajectory_file(self.extras.model_dir)}
    return out
