"""The whole DoReMi pipeline: reference -> proxy (x rounds) -> main runs -> eval -> report.

Stages resume: a finished stage is skipped, an interrupted one continues from its latest
checkpoint. Round k+1's reference trains on round k's weights (registered from the
proxy's weights JSON). Export formats are written once, at the end, into
``<experiment>/export`` from the final weights JSON.
"""
from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

import gin
import jax
import seqio

from doremi_jax import errors, mixture_files, mixtures, unimax
from doremi_jax.core import steps
from doremi_jax.data.prepared_source import PreparedDataSource
from doremi_jax.run import comparison, ladder, lock, paths, regmix_arm, report
from doremi_jax.run import rounds as rounds_lib
from doremi_jax.run import settings as settings_lib
from doremi_jax.run import stages as stages_lib


def _check_experiment_dir(experiment_dir: str, fingerprint: dict[str, Any],
                          overwrite: bool) -> None:
  """An experiment dir belongs to one configuration; reruns of it reuse finished stages."""
  path = os.path.join(experiment_dir, paths.PIPELINE_FILE)
  if os.path.exists(path):
    previous = paths.read_json(path)
    if previous.get("config_sha256") != fingerprint["config_sha256"] and not overwrite:
      raise errors.DoremiError(
          f"{experiment_dir!r} holds a different experiment (its gin config changed); "
          "choose a new pipeline.experiment_dir or pass --gin.pipeline.overwrite=True")
    if overwrite and previous.get("config_sha256") != fingerprint["config_sha256"]:
      lock.clear_outputs(experiment_dir)  # all but the lock this process holds
  elif os.path.isdir(experiment_dir) and lock.holds_outputs(experiment_dir) and not overwrite:
    raise errors.DoremiError(f"{experiment_dir!r} is not empty and is not a pipeline dir; "
                             "choose a new pipeline.experiment_dir")
  os.makedirs(experiment_dir, exist_ok=True)
  paths.write_json(path, fingerprint)


def _unimax_arm(uniform_mixture: str, domains: Sequence[str], budget_tokens: int,
                max_epochs: float) -> dict[str, tuple[str, dict[str, float], dict[str, Any]]]:
  """UniMax (Chung et al. 2023): uniform over domains under a per-domain epoch cap, for the
  main runs' token budget; needs each domain's train token count (prepared domains)."""
  counts = {}
  for task in seqio.get_subtasks(mixtures.provider(uniform_mixture)):
    if not isinstance(task.source, PreparedDataSource):
      raise errors.DoremiError(
          f"the unimax arm needs each domain's token count; {task.name!r} is not prepared "
          "(prepare the corpus with `doremi-corpus prepare`, or set pipeline.unimax_epochs = "
          "None)")
    counts[task.name] = task.source.corpus.token_counts("train")[task.source.domain]
  weights = unimax.unimax_weights({d: counts[d] for d in domains}, budget_tokens, max_epochs)
  return {"unimax": ("unimax", weights, {"method": "UniMax (Chung et al. 2023)",
                                         "max_epochs": max_epochs,
                                         "budget_tokens": budget_tokens,
                                         "train_tokens": counts})}


def _check_settings(seeds: Sequence[int], **counts: int | None) -> None:
  """The pipeline's own numbers, named as the user wrote them (``pipeline.reference_steps``,
  not the ``TRAIN_STEPS`` a stage would complain about), before anything is written."""
  optional = ("reference_batch_size", "proxy_batch_size", "eval_every",
              "doremi_schedule_segments", "regmix_swarm", "regmix_steps", "regmix_batch_size")
  for name, value in counts.items():
    if value is None and name in optional:
      continue
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
      raise errors.DoremiError(f"pipeline.{name} must be a positive integer, got {value!r}")
  if (isinstance(seeds, (str, bytes)) or not hasattr(seeds, "__iter__")
      or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds)):
    raise errors.DoremiError(f"pipeline.seeds must be a list of integers >= 0, got {seeds!r}")


@gin.configurable(denylist=["stages"])
def pipeline(stages: stages_lib.Stages, experiment_dir: str = gin.REQUIRED,
             baseline_mixture: str = gin.REQUIRED, uniform_mixture: str = gin.REQUIRED,
             reference_steps: int = gin.REQUIRED, proxy_steps: int = gin.REQUIRED,
             main_steps: int = gin.REQUIRED, rounds: int = 1, tolerance: float | None = None,
             run_main: bool = True, export_prefix: str = "doremi",
             main_gin_files: Sequence[str] = (), overwrite: bool = False,
             seeds: Sequence[int] = (0,), extra_arms: Mapping[str, str] | None = None,
             selection_split: str = "validation", report_split: str = "test",
             reference_batch_size: int | None = None, proxy_batch_size: int | None = None,
             main_models: Mapping[str, str | None] | None = None,
             eval_every: int | None = None, unimax_epochs: float | None = None,
             control_domains: Sequence[str] = (),
             doremi_schedule_segments: int | None = None, regmix_swarm: int | None = None,
             regmix_steps: int | None = None, regmix_batch_size: int | None = None,
             regmix_concentration: float = 1.0,
             regmix_model: Mapping[str, Any] | None = None, doremi_online: bool = False
             ) -> dict[str, Any]:
  """Runs all stages; returns (and writes) ``summary.json``.

  Main runs: arms ``natural`` (token counts), ``uniform``, ``unimax`` (with
  ``unimax_epochs``), the DoReMi mixture(s) and any ``extra_arms`` ({arm: mixture name or
  weights JSON}), each with every seed of ``seeds``, at every size of ``main_models``
  ({label: model gin file, None for the experiment's model}; the first size trains every
  arm, later ones the baselines and the chosen DoReMi arm). A sweep (several DoReMi
  settings) gives one arm per setting; the setting whose main models do best on
  ``selection_split`` (at the first size) is exported as ``export_prefix``, and numbers
  are reported on ``report_split`` (choices never look at it). ``reference_batch_size``
  and ``proxy_batch_size`` give those stages their own batch (default ``BATCH_SIZE``);
  ``eval_every`` records main runs' learning curves on ``report_split`` (steps-to-target;
  no choice looks at them); ``control_domains``
  (e.g. junk) are left out of the "learnable" average. ``doremi_schedule_segments``,
  ``regmix_swarm`` and ``doremi_online`` add those arms (``docs/study.md``; ``regmix_model``:
  TransformerConfig fields of the swarm's smaller models).
  """
  experiment_dir = os.path.abspath(experiment_dir)
  _check_settings(reference_steps=reference_steps, proxy_steps=proxy_steps,
                  main_steps=main_steps, rounds=rounds, reference_batch_size=reference_batch_size,
                  proxy_batch_size=proxy_batch_size, eval_every=eval_every, seeds=seeds,
                  doremi_schedule_segments=doremi_schedule_segments, regmix_swarm=regmix_swarm,
                  regmix_steps=regmix_steps, regmix_batch_size=regmix_batch_size)
  if not isinstance(doremi_online, bool):
    raise errors.DoremiError(f"pipeline.doremi_online must be True or False, got "
                             f"{doremi_online!r}")
  if len(steps.DoremiConfig().settings()) > 1 and rounds > 1:
    raise errors.DoremiError("a DoReMi sweep (several step sizes/estimators/smoothings) runs "
                             "one round; set pipeline.rounds = 1 or give one setting")
  if not seeds or len(set(seeds)) != len(seeds):
    raise errors.DoremiError(f"pipeline.seeds must be distinct integers, got {list(seeds)}")
  baseline_rates = mixtures.mixture_rates(baseline_mixture)
  domains = mixtures.domain_names(uniform_mixture)
  if sorted(baseline_rates) != sorted(domains):
    raise errors.DoremiError(f"{baseline_mixture!r} and {uniform_mixture!r} have different domains")
  unknown = sorted(set(control_domains) - set(domains))
  if unknown:
    raise errors.DoremiError(f"pipeline.control_domains names {unknown}, which are not "
                             f"domains of {uniform_mixture!r} ({domains})")
  learnable = [d for d in domains if d not in set(control_domains)] if control_domains else None
  sizes = ladder.main_sizes(main_models)
  # The experiment's BATCH_SIZE, read now: each stage re-parses gin with its own bindings
  # (the proxy stage's batch would be read after it).
  batch_size = settings_lib.bound_setting("batch_size")
  user_arms = stages_lib.load_arms(dict(extra_arms or {}), domains)
  if unimax_epochs is not None and run_main:
    budget = main_steps * batch_size * _sequence_length()
    user_arms.update(_unimax_arm(uniform_mixture, domains, budget, float(unimax_epochs)))
  # One live pipeline per experiment dir (each stage also locks its own MODEL_DIR).
  with lock.RunLock(experiment_dir, "experiment dir", enabled=jax.process_index() == 0):
    _check_experiment_dir(experiment_dir, stages_lib.fingerprint(stages.gin_files, stages.bindings),
                          overwrite)
    extra = stages_lib.arm_mixtures(experiment_dir, user_arms)
    plan = rounds_lib.RoundsPlan(baseline_mixture, baseline_rates, uniform_mixture, domains,
                                 rounds, tolerance, reference_steps, proxy_steps, export_prefix,
                                 reference_batch_size, proxy_batch_size)
    rounds_out = rounds_lib.run_rounds(stages, experiment_dir, plan)
    doremi_arms = rounds_lib.export_doremi_arms(experiment_dir, rounds_out[-1], export_prefix,
                                                len(rounds_out))
    result: dict[str, Any] = {
        "experiment_dir": experiment_dir, "domains": domains, "baseline_mixture": baseline_mixture,
        "baseline_weights": baseline_rates, "rounds": [r.as_json() for r in rounds_out],
        "doremi_arms": {a: v.as_json() for a, v in doremi_arms.items()},
        "tokenizer": mixtures.tokenizer_record(uniform_mixture), "seeds": list(seeds),
        "arm_weights": {a: w for a, (_, w, _) in user_arms.items() if w is not None}}
    with_reference = [a for a, v in doremi_arms.items() if v.setting.get("use_reference", True)]
    selected = (with_reference or list(doremi_arms))[0]
    if run_main:
      arms = {"natural": (baseline_mixture, []), "uniform": (uniform_mixture, []), **extra,
              **{a: (v.mixture, [v.export["json"]]) for a, v in doremi_arms.items()}}
      if regmix_swarm:
        plan_ = regmix_arm.SwarmPlan(regmix_swarm, regmix_steps or proxy_steps,
                                     regmix_batch_size or batch_size,
                                     float(regmix_concentration),
                                     model=dict(regmix_model or {}))
        plan_.model_config()  # a bad field is one line before the swarm trains
        found = regmix_arm.run_swarm(experiment_dir, uniform_mixture, baseline_rates, plan_)
        arms["regmix"] = ("regmix_weights", [found["weights_json"]])
        result["regmix"] = {k: found.get(k) for k in ("weights", "fit", "cost", "plan", "model")}
      if doremi_online:
        arms["doremi_online"] = rounds_lib.online_arm(
            rounds_out[0].reference_dir, uniform_mixture, baseline_mixture,
            doremi_arms[selected].setting, proxy_batch_size)
      if doremi_schedule_segments:
        arms["doremi_schedule"] = rounds_lib.schedule_arm(
            experiment_dir, rounds_out[-1], selected, doremi_arms[selected],
            doremi_schedule_segments)
      splits = list(dict.fromkeys([selection_split, report_split]))
      cost = {"seconds": sum(r.reference_seconds + r.proxy_seconds for r in rounds_out),
              "flops": sum(r.flops for r in rounds_out)}
      reference_eval = stages.evaluate(rounds_out[-1].reference_dir, uniform_mixture,
                                       report_split)
      result["sizes"] = {}
      for i, size in enumerate(sizes):
        size_arms = arms if i == 0 else ladder.later_size_arms(arms, list(doremi_arms), selected)
        files = list(main_gin_files) + ([size.model_gin] if size.model_gin else [])
        runs = stages_lib.main_runs(stages, experiment_dir, size_arms, seeds, main_steps, files,
                                    uniform_mixture, splits, size.label or None, eval_every,
                                    report_split)
        analysis = ladder.analyse(runs, splits, report_split, reference_eval, cost, learnable)
        if i == 0:
          selected = comparison.best_arm(analysis["comparison"][selection_split],
                                         candidates=with_reference or list(doremi_arms))
          result.update({"main": runs.evals, "comparison": analysis["comparison"],
                         "cost_seconds": {"reference_and_proxy": cost["seconds"],
                                          "main_run_median": analysis["main_run_seconds_median"]}})
        result["sizes"][size.label or "main"] = {"model_gin": size.model_gin, **analysis}
      result.update({"selected_arm": selected, "doremi_cost": cost,
                     "selection": f"lowest mean average_bits_per_byte on {selection_split}",
                     "report_split": report_split, "learnable_domains": learnable})
    chosen = doremi_arms[selected]
    result["doremi_weights"] = chosen.weights
    result["export"] = (chosen.export if chosen.mixture == export_prefix else
                        mixture_files.write_exports(
                            os.path.join(experiment_dir, paths.EXPORT_SUBDIR), export_prefix,
                            chosen.weights, {"selected_arm": selected, **chosen.setting},
                            overwrite=True))
    paths.write_json(os.path.join(experiment_dir, paths.SUMMARY_FILE), result)
    result["report"] = report.write_report(experiment_dir, result)
    return result


def _sequence_length() -> int:
  lengths = settings_lib.bound_setting("task_feature_lengths")
  if not isinstance(lengths, Mapping) or not isinstance(lengths.get("targets"), int):
    raise errors.DoremiError("the unimax arm needs TASK_FEATURE_LENGTHS = {'targets': N}")
  return int(lengths["targets"])
