"""Online DoReMi (issue 23 item 3): the main model's batch t drawn with the proxy's
weights at step t, in one jitted step with the proxy's update; exact resume from the
checkpointed trajectory; the same global batches on 1 or N hosts."""
from __future__ import annotations

import json
import os
import shutil

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from in_process import run_main

from doremi_jax import train as train_cli
from doremi_jax.core import model as model_lib
from doremi_jax.core import steps
from doremi_jax.data import online_input
from doremi_jax.run import settings as settings_lib
from doremi_jax.run import step_builder

LEN = 64  # conftest.prepared_dir's sequence length


def _weights_sequence(k, n, seed=0):
  return np.random.default_rng(seed).dirichlet(np.ones(k) * 0.5, size=n).astype(np.float32)


def test_rows_follow_the_running_target_of_the_weights():
  batch, trajectory = 16, _weights_sequence(5, 200)
  owed_target, taken = np.zeros(5), np.zeros(5, np.int64)
  for w in trajectory:
    owed_target += w.astype(np.float64) * batch
    counts = online_input.allocate(owed_target - taken, batch)
    assert counts.sum() == batch and (counts >= 0).all()
    taken += counts
    assert np.abs(taken - owed_target).max() < 2.0  # within two rows of the target, always
  assert list(online_input.allocate(np.array([2.5, 1.5, -0.5, 0.5]), 4)) == [3, 1, 0, 0]


def test_replay_reads_the_same_batches_and_hosts_glue_to_one(synthetic_prepared):
  corpus, trajectory = synthetic_prepared, _weights_sequence(len(synthetic_prepared.domains), 12)

  def make(**hosts):
    return online_input.OnlineMixtureInput(corpus, corpus.domains, 8, seed=2, **hosts)

  one = make()
  batches = [one.next_batch(w) for w in trajectory]
  resumed = make()
  resumed.replay(trajectory[:7])
  for t in range(7, 12):
    b = resumed.next_batch(trajectory[t])
    assert all(np.array_equal(b[k], batches[t][k]) for k in b)
  parts = [make(process_index=i, process_count=2) for i in range(2)]
  for t, w in enumerate(trajectory):  # each host reads only its half of the global rows
    halves = [q.next_batch(w) for q in parts]
    glued = {k: np.concatenate([h[k] for h in halves]) for k in batches[t]}
    assert all(np.array_equal(glued[k], batches[t][k]) for k in glued)
  assert one.rows.taken.sum() == 12 * 8 and one.rows.step == 12


def _settings(kind, **extra):
  return settings_lib.RunSettings(
      model_dir="/tmp/unused", mixture_or_task_name="unused",
      task_feature_lengths={"targets": 16}, train_steps=5, kind=kind, batch_size=8, **extra)


def _batch(seed, k, batch=8, length=16, vocab=64):
  rng = np.random.default_rng(seed)
  targets = rng.integers(1, vocab, (batch, length)).astype(np.int32)
  inputs = np.zeros_like(targets)
  inputs[:, 1:] = targets[:, :-1]
  return {"inputs": inputs, "targets": targets,
          "loss_mask": np.ones((batch, length), np.float32),
          "domain_ids": rng.integers(0, k, (batch,)).astype(np.int32)}


def _equal(a, b):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=2e-6, atol=2e-7)


def test_the_online_step_is_a_main_step_beside_a_proxy_step():
  k = 3
  main_cfg = model_lib.TransformerConfig(vocab_size=64, num_layers=2, emb_dim=32, num_heads=2,
                                         head_dim=16, mlp_dim=64)
  proxy_cfg = model_lib.TransformerConfig(vocab_size=64, num_layers=1, emb_dim=16,
                                          num_heads=2, head_dim=8, mlp_dim=32)
  doremi = steps.DoremiConfig(step_size=1.0)
  online = step_builder.build(
      _settings("online", reference_model_dir="r", online_proxy_mixture="u"), k, main_cfg,
      doremi, proxy_config=proxy_cfg)
  plain = step_builder.build(_settings("plain"), k, main_cfg)
  proxy = step_builder.build(_settings("proxy", reference_model_dir="r"), k, proxy_cfg, doremi)
  reference = proxy.init_model_state(7).params
  state = online.init_model_state(0)
  main_state, proxy_state = plain.init_model_state(0), proxy.init_model_state(0)
  for t in range(3):
    main_batch, proxy_batch = _batch(t, k), _batch(100 + t, k)
    state, m = online.step(state, reference, main_batch, proxy_batch)
    main_state, pm = plain.step(main_state, main_batch)
    drawn = np.asarray(proxy_state.domains.weights)
    proxy_state, xm = proxy.step(proxy_state, reference, proxy_batch)
    _equal(state.params, main_state.params)
    _equal(state.domains.proxy, proxy_state)
    np.testing.assert_array_equal(np.asarray(state.domains.trajectory[t]), drawn)
    np.testing.assert_allclose(m["loss"], pm["loss"], rtol=1e-6)
    np.testing.assert_allclose(m["proxy_loss"], xm["loss"], rtol=1e-6)
    np.testing.assert_array_equal(m["drawn_weights"], drawn)
  assert np.abs(np.asarray(state.domains.proxy.domains.weights) - 1 / k).max() > 1e-4


def _train(run_gin, prepared_dir, model_dir, *extra):
  proc = run_main(train_cli.main, [
      f"--gin_file={run_gin}", "--gin_file=experiments/prepared.gin",
      "--gin_file=models/micro.gin",
      f'--gin.PREPARED_DIR="{prepared_dir}"', f"--gin.SEQUENCE_LENGTH={LEN}",
      "--gin.VOCAB_SIZE=320", f'--gin.MODEL_DIR="{model_dir}"', "--gin.TRAIN_STEPS=8",
      "--gin.train.progress=False", "--gin.train.log_every=2", "--gin.BATCH_SIZE=8",
      "--gin.train.checkpoint_every=4", *extra])
  assert proc.returncode == 0, proc.stderr[-3000:]
  with open(os.path.join(model_dir, "train_summary.json")) as f:
    return json.load(f)


def _state(model_dir, step):
  path = os.path.join(model_dir, "checkpoints", str(step))
  return [np.asarray(x) for x in jax.tree.leaves(
      [ocp.StandardCheckpointer().restore(os.path.join(path, item)) for item in ("params",
                                                                                 "state")])]


def test_an_online_run_resumes_bit_for_bit(prepared_dir, tmp_path):
  ref = str(tmp_path / "ref")
  _train("runs/reference.gin", prepared_dir, ref)
  online = [f'--gin.REFERENCE_MODEL_DIR="{ref}"', "--gin.UNIFORM_MIXTURE='prepared_uniform'",
            "--gin.MIXTURE_OR_TASK_NAME='prepared_natural'", "--gin.DoremiConfig.step_size=1.0",
            "--gin.PROXY_BATCH_SIZE=16", "--gin_file=models/tiny.gin"]
  full = str(tmp_path / "full")
  summary = _train("runs/online.gin", prepared_dir, full, *online)
  assert summary["kind"] == "online" and summary["input"] == "grain online"
  assert summary["model"]["emb_dim"] > 0 and os.path.exists(summary["export"]["json"])
  drawn = summary["online"]["mean_drawn_weights"]
  assert sum(drawn.values()) == pytest.approx(1.0, abs=1e-5)
  assert max(abs(w - 0.25) for w in drawn.values()) > 1e-3  # the weights moved
  # Cut the run back to its step-4 checkpoint, as kill -9 after step 4 would, and resume.
  resumed = str(tmp_path / "resumed")
  shutil.copytree(full, resumed)
  shutil.rmtree(os.path.join(resumed, "checkpoints", "8"))
  os.remove(os.path.join(resumed, "train_summary.json"))
  _train("runs/online.gin", prepared_dir, resumed, *online, "--gin.RESUME=True")
  a, b = _state(full, 8), _state(resumed, 8)
  assert len(a) == len(b) > 0
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x, y)
  with open(os.path.join(resumed, "domain_weights.jsonl")) as f:
    assert [json.loads(line)["step"] for line in f] == [2, 4, 6, 8]
