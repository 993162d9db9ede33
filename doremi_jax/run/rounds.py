"""Iterated DoReMi as typed stage results: each round trains a reference on the previous
round's weights (the baseline first), then the proxy (or a sweep of proxies) against it;
the final proxies' weights become the DoReMi arms, exported once.

``summary.json`` keeps its shape: ``RoundResult.as_json`` and ``DoremiArm.as_json`` give
the entries it has always held."""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Mapping, Sequence

from doremi_jax import mixture_files, mixtures
from doremi_jax.data import scheduled_input
from doremi_jax.run import paths
from doremi_jax.run.stages import Stages


@dataclasses.dataclass(frozen=True)
class RoundsPlan:
  """What the rounds need from the pipeline's settings."""
  baseline_mixture: str
  baseline_rates: Mapping[str, float]
  uniform_mixture: str
  domains: Sequence[str]
  rounds: int
  tolerance: float | None  # stop when the weights move less than this (L1)
  reference_steps: int
  proxy_steps: int
  export_prefix: str
  reference_batch_size: int | None = None  # None: the experiment's BATCH_SIZE
  proxy_batch_size: int | None = None


@dataclasses.dataclass(frozen=True)
class ProxyResult:
  """One proxy (one DoReMi setting) of a round: its averaged weights and weights JSON."""
  tag: str
  setting: dict[str, Any]
  weights: dict[str, float]
  weights_json: str
  entry: dict[str, Any]  # the proxy's entry of its train summary, as summary.json holds it

  @classmethod
  def from_entry(cls, entry: Mapping[str, Any]) -> "ProxyResult":
    return cls(entry["tag"], dict(entry["setting"]), dict(entry["average_domain_weights"]),
               entry["export"]["json"], dict(entry))


@dataclasses.dataclass(frozen=True)
class RoundResult:
  round: int
  reference_mixture: str
  reference_dir: str
  proxies: list[ProxyResult]
  l1_change: float  # of the first proxy's weights from the previous round's (or baseline)
  reference_seconds: float
  proxy_seconds: float
  proxy_model: dict[str, Any]
  flops: float  # the reference's and the proxies' estimated FLOPs

  @property
  def weights(self) -> dict[str, float]:
    return self.proxies[0].weights

  def as_json(self) -> dict[str, Any]:
    return {"round": self.round, "reference_mixture": self.reference_mixture,
            "average_domain_weights": self.weights, "l1_change": self.l1_change,
            "export": self.proxies[0].entry["export"],
            "proxies": [p.entry for p in self.proxies],
            "reference_seconds": self.reference_seconds, "proxy_seconds": self.proxy_seconds,
            "reference_dir": self.reference_dir, "proxy_model": self.proxy_model,
            "flops": self.flops}


@dataclasses.dataclass(frozen=True)
class DoremiArm:
  """A final proxy's weights as a main-run arm, with every export format written."""
  mixture: str
  weights: dict[str, float]
  export: dict[str, str]  # format -> path
  setting: dict[str, Any]

  def as_json(self) -> dict[str, Any]:
    return dataclasses.asdict(self)


def _batch(batch_size: int | None) -> list[str]:
  return [] if batch_size is None else [f"BATCH_SIZE = {int(batch_size)}"]


def run_rounds(stages: Stages, experiment_dir: str, plan: RoundsPlan) -> list[RoundResult]:
  """Until the weights move less than ``plan.tolerance`` or ``plan.rounds`` rounds."""
  out: list[RoundResult] = []
  reference_mixture, reference_files, previous = plan.baseline_mixture, [], plan.baseline_rates
  for k in range(1, plan.rounds + 1):
    round_dir = paths.round_dir(experiment_dir, k)
    ref_dir, proxy_dir = os.path.join(round_dir, "reference"), os.path.join(round_dir, "proxy")
    ref_summary = stages.train("runs/reference.gin", ref_dir, plan.reference_steps,
                               [f"BASELINE_MIXTURE = {reference_mixture!r}",
                                *_batch(plan.reference_batch_size)], reference_files)
    name = f"{plan.export_prefix}_round{k}"
    summary = stages.train("runs/proxy.gin", proxy_dir, plan.proxy_steps,
                           [f"UNIFORM_MIXTURE = {plan.uniform_mixture!r}",
                            f"REFERENCE_MODEL_DIR = {ref_dir!r}", f"EXPORT_NAME = {name!r}",
                            *_batch(plan.proxy_batch_size)])
    proxies = [ProxyResult.from_entry(entry) for entry in summary["proxies"]]
    change = mixtures.l1_distance(proxies[0].weights, previous, plan.domains)
    out.append(RoundResult(
        k, reference_mixture, ref_dir, proxies, change, ref_summary["wall_seconds"],
        summary["wall_seconds"], summary["model"],
        (ref_summary.get("estimated_flops") or 0.0) + (summary.get("estimated_flops") or 0.0)))
    print(f"[pipeline] round {k}: L1 change of the weights {change:.4f}", flush=True)
    if plan.tolerance is not None and change < plan.tolerance:
      break
    reference_mixture, reference_files = name, [proxies[0].weights_json]
    previous = proxies[0].weights
  return out


def export_doremi_arms(experiment_dir: str, last_round: RoundResult, export_prefix: str,
                       rounds: int) -> dict[str, DoremiArm]:
  """Every format of each final proxy's weights, written once into ``<experiment>/export``
  (arm ``doremi``, or ``doremi_<tag>`` per setting of a sweep)."""
  arms: dict[str, DoremiArm] = {}
  single = len(last_round.proxies) == 1
  for proxy in last_round.proxies:
    arm = "doremi" if single else f"doremi_{proxy.tag}"
    name = export_prefix if single else mixture_files.export_name(export_prefix, proxy.tag)
    metadata = mixture_files.read_weights(proxy.weights_json).metadata
    files = mixture_files.write_exports(os.path.join(experiment_dir, paths.EXPORT_SUBDIR), name,
                                        proxy.weights, {**metadata, "rounds": rounds},
                                        overwrite=True)
    arms[arm] = DoremiArm(name, proxy.weights, files, proxy.setting)
  return arms


def schedule_arm(experiment_dir: str, last_round: RoundResult, arm: str,
                 doremi_arm: DoremiArm, segments: int) -> tuple[str, list[str], list[str]]:
  """Arm ``doremi_schedule``: ``arm``'s proxy weights at each of ``segments`` fractions of
  its run (the mean inside each, ``scheduled_input.schedule_from_trajectory``), followed by
  the main run at the same fractions of its own steps, instead of their average."""
  single = len(last_round.proxies) == 1
  proxy = next(p for p in last_round.proxies
               if ("doremi" if single else f"doremi_{p.tag}") == arm)
  trajectory = paths.trajectory_file(os.path.join(os.path.dirname(last_round.reference_dir),
                                                  "proxy"))
  with open(trajectory, encoding="utf-8") as f:
    rows = [r for r in map(json.loads, f) if r.get("setting") == proxy.tag]
  path = os.path.join(experiment_dir, "arms", "doremi_schedule.json")
  os.makedirs(os.path.dirname(path), exist_ok=True)
  scheduled_input.write_schedule(path, scheduled_input.schedule_from_trajectory(rows, segments),
                                 {"proxy_arm": arm, "trajectory": trajectory,
                                  "segments": segments})
  return doremi_arm.mixture, [doremi_arm.export["json"]], [f"train.domain_schedule = {path!r}"]


def online_arm(reference_dir: str, uniform_mixture: str, baseline_mixture: str,
               setting: Mapping[str, Any], proxy_batch_size: int | None
               ) -> tuple[str, list[str], list[str]]:
  """Arm ``doremi_online``: each main run is an online DoReMi run (``run/online.py``) whose
  proxy (the reference's model, on ``uniform_mixture``) updates the mixture every step,
  with the DoReMi ``setting`` of the arm it stands beside and the natural-mixture
  reference of round 0 (the online method has no rounds)."""
  bindings = ['train.kind = "online"', f"train.reference_model_dir = {reference_dir!r}",
              f"train.online_proxy_mixture = {uniform_mixture!r}",
              f"train.online_proxy_batch_size = {proxy_batch_size!r}",
              f"DoremiConfig.step_size = {float(setting['step_size'])!r}",
              f"DoremiConfig.smoothing = {float(setting['smoothing'])!r}",
              f"DoremiConfig.estimator = {setting['estimator']!r}",
              "DoremiConfig.use_reference = True"]
  return baseline_mixture, [], bindings
