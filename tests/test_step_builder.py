"""The run settings object and the one step builder, in process: what the trainer runs is
what the compile check lowers, settings are validated once, bad batches are one message."""
from __future__ import annotations

import gin
import jax
import numpy as np
import pytest
import step_fixtures as fx

from doremi_jax import errors
from doremi_jax.compile_check import memory
from doremi_jax.core import steps
from doremi_jax.run import config, registry, settings, step_builder, trainer


def _settings(tmp_path, **overrides) -> settings.RunSettings:
  values = dict(model_dir=str(tmp_path / "run"), mixture_or_task_name="synthetic_baseline",
                task_feature_lengths={"targets": fx.SEQ}, train_steps=3, batch_size=8,
                log_every=1, checkpoint_every=3, progress=False)
  values.update(overrides)
  return settings.RunSettings(**values)


@pytest.fixture
def clean_gin():
  gin.clear_config()
  yield
  gin.clear_config()


def test_settings_are_validated_once_and_configured_by_gin_as_train(tmp_path, clean_gin):
  with pytest.raises(errors.DoremiError,
                     match=r"train.kind must be one of \('plain', 'proxy', 'online'\)"):
    _settings(tmp_path, kind="dpo")
  with pytest.raises(errors.DoremiError, match="TASK_FEATURE_LENGTHS must be a mapping"):
    _settings(tmp_path, task_feature_lengths=[64])
  registry.register_configurables()
  config.configure(["runs/base.gin"], ["MODEL_DIR = 'x'", "MIXTURE_OR_TASK_NAME = 'm'",
                                       "TASK_FEATURE_LENGTHS = {'targets': 32}"])
  with pytest.raises(errors.DoremiError, match="missing required gin value: TRAIN_STEPS"):
    config.build_configured(settings.RunSettings, "train")
  gin.parse_config(["TRAIN_STEPS = 5", "train.microbatches = 2", "BATCH_SIZE = 4"])
  run = config.build_configured(settings.RunSettings, "train")
  assert (run.train_steps, run.batch_size, run.microbatches, run.sequence_length) == (5, 4, 2, 32)
  assert run.model_dir.endswith("/x") and settings.bound_setting("batch_size") == 4
  gin.parse_config(["TRAIN_STEPS = %STEPS", "STEPS = %TRAIN_STEPS"])  # a cycle: one line
  with pytest.raises(errors.DoremiError, match=r"gin macro \w+ refers to itself"):
    config.build_configured(settings.RunSettings, "train")
  assert settings.bound_setting("train_steps") is gin.REQUIRED  # no endless loop


def test_bad_batch_is_the_one_message():
  with pytest.raises(errors.DoremiError) as info:
    settings.check_batch(16, 3, 8)
  assert str(info.value).startswith("train.microbatches=3: batch size 16 does not divide into "
                                    "3 micro-batch(es) over the mesh's 8 data shards")
  settings.check_batch(16, 2, 8)


def test_the_compile_check_lowers_the_step_the_trainer_runs(tmp_path):
  """A two-proxy sweep: one build gives the stacked state, the step and its abstract
  arguments; the compiled step takes the real arrays the trainer would pass."""
  cfg = fx.tiny_config()
  doremi = steps.DoremiConfig(step_size=[1.0, 0.1])
  built = step_builder.build(_settings(tmp_path, kind="proxy"), fx.K, cfg, doremi)
  assert built.num_proxies == 2
  state, reference, batch = built.abstract_args
  assert jax.tree.leaves(state.params)[0].shape[0] == 2  # stacked on the proxies axis
  assert batch["inputs"].shape == (8, fx.SEQ)
  compiled = memory.compile_step(built)
  assert memory.measure(built, compiled)["kind"] == "proxy"
  one = built.init_model_state(0)
  stacked = jax.tree.map(lambda x: np.broadcast_to(x, (2,) + x.shape), one)
  host = {k: v[:8] for k, v in fx.make_batch(0).items()}
  with jax.set_mesh(built.mesh):
    new_state, metrics = compiled(stacked, one.params, host)
  assert np.asarray(metrics["loss"]).shape == (2,) and int(new_state.step[0]) == 1
  with pytest.raises(ValueError, match="DoremiConfig"):
    step_builder.build(_settings(tmp_path, kind="proxy"), fx.K, cfg, None)
  # The evaluator restores a checkpoint into the layout the train step gave its params.
  evaluated = step_builder.build_eval(cfg, fx.SEQ, built.mesh)
  assert evaluated.params_shardings == built.model_shardings.params
  assert (jax.tree.map(lambda x: x.shape, evaluated.params)
          == jax.tree.map(lambda x: x.shape, built.model_state.params))


def test_trainer_in_process_on_the_synthetic_domains(tmp_path, clean_gin):
  from doremi_jax.tasks import synthetic  # pylint: disable=g-import-not-at-top
  registry.register_configurables()
  config.configure(["runs/base.gin"], ["VOCAB_SIZE = 256"])
  synthetic.register_synthetic()
  run = _settings(tmp_path)
  summary = trainer.Trainer(run, fx.tiny_config()).run()
  assert summary["steps"] == 3 and summary["batch_size"] == 8
  assert np.isfinite(summary["final_loss"]) and sorted(summary["domains"]) == sorted(
      "synthetic_" + d for d in synthetic.DOMAINS)
  assert (tmp_path / "run" / "checkpoints" / "3").is_dir()
