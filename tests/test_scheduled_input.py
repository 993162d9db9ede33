"""The scheduled mixture input (issue 23 item 2): weights that change with the step, batch
``t`` still a pure function of (corpus, schedule, seed, t)."""
from __future__ import annotations

import numpy as np
import pytest

from doremi_jax import errors
from doremi_jax.corpora import prepare, synthetic_text
from doremi_jax.data import grain_input, prepared_corpus, scheduled_input

LEN = 32
BATCH = 16


@pytest.fixture(scope="module")
def corpus(synthetic_prepared) -> prepared_corpus.PreparedCorpus:
  return synthetic_prepared


def _schedule(corpus, starts=(0, 5, 12)):
  domains = corpus.domains
  rng = np.random.default_rng(0)
  return [(s, dict(zip(domains, rng.dirichlet(np.ones(len(domains)))))) for s in starts]


def _same(a: dict, b: dict) -> bool:
  return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_one_segment_is_the_plain_mixture(corpus):
  weights = corpus.natural_weights()
  plain = grain_input.MixtureInput(corpus, weights, BATCH, seed=3, window_batches=4)
  scheduled = scheduled_input.ScheduledMixtureInput(corpus, [(0, weights)], BATCH, seed=3,
                                                    window_batches=4)
  for step in (0, 3, 17, 1000):
    assert _same(plain.host_batch(step), scheduled.host_batch(step))


def test_draws_continue_across_segments_and_follow_each_segments_weights(corpus):
  schedule = _schedule(corpus)
  source = scheduled_input.ScheduledMixtureInput(corpus, schedule, BATCH, seed=0,
                                                 window_batches=2)
  domain, draw = source.rows(0, 40 * BATCH)
  for d in range(len(corpus.domains)):  # each domain's n rows read its draws 0..n-1, in order
    mine = draw[domain == d]
    assert np.array_equal(mine, np.arange(len(mine)))
  for i, (start, weights) in enumerate(schedule):
    stop = schedule[i + 1][0] if i + 1 < len(schedule) else 40
    segment = domain[start * BATCH: stop * BATCH]
    for d, name in enumerate(corpus.domains):
      assert abs(np.sum(segment == d) - weights[name] * len(segment)) < 2 + len(segment) / (
          2 * BATCH)  # within a row per window of the segment's own pattern


def test_resume_and_hosts_read_the_same_batches(corpus):
  schedule = _schedule(corpus)
  one = scheduled_input.ScheduledMixtureInput(corpus, schedule, BATCH, seed=1, window_batches=2)
  resumed = one.batches_from(11)
  assert [_same(next(resumed), one.host_batch(s)) for s in (11, 12, 13)] == [True] * 3
  parts = [scheduled_input.ScheduledMixtureInput(corpus, schedule, BATCH, seed=1,
                                                 window_batches=2, process_index=i,
                                                 process_count=2) for i in range(2)]
  for step in (0, 4, 5, 12, 30):
    glued = {k: np.concatenate([p.host_batch(step)[k] for p in parts]) for k in one.host_batch(0)}
    assert _same(glued, one.host_batch(step))


def test_schedule_from_a_trajectory_and_its_file(tmp_path):
  rows = [{"step": s, "domain_weights": {"a": 0.1 * (s <= 50) + 0.5, "b": 0.5}}
          for s in range(10, 101, 10)]
  segments = scheduled_input.schedule_from_trajectory(rows, 2)
  assert [f for f, _ in segments] == [0.0, 0.5]
  assert segments[0][1]["a"] > segments[1][1]["a"] and sum(segments[0][1].values()) == (
      pytest.approx(1.0))
  path = str(tmp_path / "schedule.json")
  scheduled_input.write_schedule(path, segments)
  assert scheduled_input.read_schedule(path, 300)[1][0] == 150
  (tmp_path / "bad.json").write_text('{"segments": [{"start_fraction": 0.5, "weights": {}}]}')
  with pytest.raises(errors.DoremiError, match="must start at fraction 0"):
    scheduled_input.read_schedule(str(tmp_path / "bad.json"), 10)


def test_the_pipelines_doremi_schedule_regmix_and_online_arms(tmp_path):
  """pipeline.doremi_schedule_segments adds arm doremi_schedule: main runs whose input
  follows the proxy's weights over the run (arms/doremi_schedule.json); pipeline.regmix_swarm
  adds arm regmix (a swarm in one compiled step, its fit's best mixture);
  pipeline.doremi_online adds arm doremi_online (online DoReMi main runs); all compared
  with the others on the same held-out sets, each arm with its cost."""
  import json  # pylint: disable=g-import-not-at-top

  from in_process import run_main  # pylint: disable=g-import-not-at-top  (clears gin after)

  from doremi_jax import pipeline as pipeline_cli  # pylint: disable=g-import-not-at-top
  synthetic_text.write_corpus(str(tmp_path / "src"), scale=0.3)  # test splits of a batch
  prepare.prepare(f"dir:{tmp_path / 'src'}", str(tmp_path / "prepared"), model="bytes",
                  sequence_length=LEN)
  out = tmp_path / "exp"
  proc = run_main(pipeline_cli.main, [
      "--gin_file=experiments/prepared.gin", "--gin_file=models/micro.gin",
      f"--gin.PREPARED_DIR='{tmp_path / 'prepared'}'", f"--gin.SEQUENCE_LENGTH={LEN}",
      "--gin.VOCAB_SIZE=259", f"--gin.pipeline.experiment_dir='{out}'",
      "--gin.pipeline.reference_steps=8", "--gin.pipeline.proxy_steps=8",
      "--gin.pipeline.main_steps=6", "--gin.pipeline.seeds=[0]", "--gin.BATCH_SIZE=8",
      "--gin.pipeline.proxy_batch_size=16", "--gin.pipeline.eval_every=3",
      "--gin.pipeline.doremi_schedule_segments=2", "--gin.pipeline.regmix_swarm=4",
      "--gin.pipeline.regmix_steps=6", "--gin.pipeline.doremi_online=True",
      "--gin.pipeline.regmix_model={'emb_dim': 32, 'mlp_dim': 64}",
      "--gin.train.log_every=2",
      "--gin.train.progress=False", "--gin.evaluate.max_batches_per_domain=1"])
  assert proc.returncode == 0, proc.stderr[-3000:]
  summary = json.loads((out / "summary.json").read_text())
  assert sorted(summary["main"]["test"]) == ["doremi", "doremi_online", "doremi_schedule",
                                             "natural", "regmix", "uniform"]
  found = json.loads((out / "regmix" / "result.json").read_text())
  assert len(found["mixtures"]) == len(found["validation_loss"]) == 4
  assert found["plan"]["batch_size"] == 8  # BATCH_SIZE, not the proxy stage's batch
  assert found["model"]["emb_dim"] == 32 and found["model"]["num_layers"] == 2  # smaller swarm
  assert summary["regmix"]["weights"] == pytest.approx(found["weights"])
  assert sum(found["weights"].values()) == pytest.approx(1.0) and found["cost"]["flops"] > 0
  schedule = json.loads((out / "arms" / "doremi_schedule.json").read_text())
  assert [s["start_fraction"] for s in schedule["segments"]] == [0.0, 0.5]
  run = next((out / "main").rglob("doremi_schedule/seed_0"))
  assert "train.domain_schedule" in (run / "config.gin").read_text()
  assert json.loads((run / "train_summary.json").read_text())["input"] == "grain"
  online = json.loads(next((out / "main").rglob("doremi_online/seed_0/train_summary.json"))
                      .read_text())
  assert online["kind"] == "online" and online["reference_model_dir"].endswith("reference")
  cost = summary["sizes"]["main"]["arm_cost"]
  assert cost["doremi_online"]["flops"] > cost["natural"]["flops"] > 0
  curves = summary["sizes"]["main"]["curves"]["all"]["series"]  # learning curves of every arm
  assert curves["doremi_online"]["0"]["steps"] == [3, 6]
