"""DoReMi in its regime (issue 18): the reference-free ablation, the proxy batch warning,
FLOP estimates, model sizes for the ladder, and the per-size analysis helpers."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import step_fixtures as fx

from doremi_jax import errors
from doremi_jax.core import accumulate, flops, steps
from doremi_jax.run import heldout, ladder, proxy


def test_reference_free_update_equals_doremi_with_zero_reference_loss():
  rig = fx.Rig(fx.single_device_mesh(), "proxy")
  update = steps._proxy_update(rig.model, rig.optimizer, fx.K, "domain_mean", 1)
  micro = accumulate.split(rig.put(fx.BATCHES[0]), 1, steps.BATCH_LOGICAL_AXES)
  reference_tl = jnp.asarray(np.random.default_rng(0).uniform(0, 5, (fx.BATCH, fx.SEQ)),
                             jnp.float32)
  args = (jnp.float32(1.0), jnp.float32(1e-3), jnp.int32(0))
  with jax.set_mesh(rig.mesh):
    ablation, ablation_metrics = update(rig.init(), reference_tl, micro, *args, jnp.float32(0.0))
    zero_ref, zero_metrics = update(rig.init(), jnp.zeros_like(reference_tl), micro, *args,
                                    jnp.float32(1.0))
  for key in ("domain_excess", "domain_weights", "loss"):
    np.testing.assert_allclose(ablation_metrics[key], zero_metrics[key], rtol=1e-6)
  for name, value in fx.flat(ablation.params).items():
    np.testing.assert_allclose(value, fx.flat(zero_ref.params)[name], rtol=1e-6, atol=1e-7)
  # The ablation's excess is the proxy's own loss: positive for every domain present.
  assert np.all(np.asarray(ablation_metrics["domain_excess"]) > 0)
  # DoremiConfig.average_start reaches the step: within it the average is the iterate.
  later = steps._proxy_update(rig.model, rig.optimizer, fx.K, "domain_mean", 1, average_start=1)
  with jax.set_mesh(rig.mesh):
    _, metrics = later(rig.init(), reference_tl, micro, *args, jnp.float32(1.0))
  np.testing.assert_allclose(metrics["average_domain_weights"], metrics["domain_weights"])
  assert not np.allclose(zero_metrics["average_domain_weights"], zero_metrics["domain_weights"])


def test_use_reference_settings_and_tags():
  cfg = steps.DoremiConfig(step_size=[1.0, 0.1], use_reference=[True, False])
  tags = [s.tag for s in cfg.settings()]
  assert tags == ["eta1-token_clip-c0.001", "eta0.1-token_clip-c0.001",
                  "eta1-token_clip-c0.001-noref", "eta0.1-token_clip-c0.001-noref"]
  with pytest.raises(errors.DoremiError, match="use_reference"):
    steps.DoremiConfig(use_reference="no")


def test_proxy_batch_warning(capsys):
  rates = {"a": 0.5, "b": 0.25, "c": 0.25}
  assert proxy.warn_if_few_sequences(rates, 32) is None
  line = proxy.warn_if_few_sequences(rates, 16)
  assert line.startswith("warning: proxy batch 16 gives 2 domain(s) fewer than 8")
  assert "(b: 4.0)" in line and "a batch of 32 gives every domain 8" in line
  assert capsys.readouterr().err.strip() == line


def test_flops_per_token_and_model_sizes():
  tiny = fx.tiny_config(vocab_size=2048, tied_embeddings=False)
  micro = fx.tiny_config(vocab_size=2048, tied_embeddings=False, emb_dim=64, num_heads=2,
                         mlp_dim=256)
  small = fx.tiny_config(vocab_size=2048, tied_embeddings=False, num_layers=4, emb_dim=192,
                         num_heads=6, mlp_dim=768)
  assert flops.non_embedding_params(tiny) == 2 * (4 * 128 * 128 + 3 * 128 * 512 + 2 * 128)
  assert flops.non_embedding_params(tiny) == 4 * flops.non_embedding_params(micro) - 2 * 128 * 2
  assert flops.non_embedding_params(small) >= 4 * flops.non_embedding_params(tiny)
  length = 128
  fwd = flops.forward_flops_per_token(tiny, length)
  assert flops.matrix_params(tiny) == 2 * (4 * 128 * 128 + 3 * 128 * 512) + 2048 * 128
  assert fwd == 2 * flops.matrix_params(tiny) + 4 * 2 * length * 4 * 32
  assert flops.train_flops_per_token(tiny, length) == 3 * fwd
  assert flops.proxy_flops_per_token(tiny, length, 3) == 3 * 3 * fwd + fwd


def test_main_sizes_and_later_arms():
  assert ladder.main_sizes(None) == [ladder.MainSize("", None)]
  sizes = ladder.main_sizes({"1x": None, "4x": "models/tiny.gin"})
  assert [(s.label, s.model_gin) for s in sizes] == [("1x", None), ("4x", "models/tiny.gin")]
  for bad in ({"a/b": None}, {"4x": 3}, ["models/tiny.gin"]):
    with pytest.raises(errors.DoremiError, match="pipeline.main_models"):
      ladder.main_sizes(bad)
  arms = {a: a for a in ("natural", "uniform", "unimax", "doremi_a", "doremi_b",
                         "doremi_a-noref", "doremi_b-noref")}
  later = ladder.later_size_arms(arms, ["doremi_a", "doremi_b", "doremi_a-noref",
                                        "doremi_b-noref"], "doremi_b")
  assert list(later) == ["natural", "uniform", "unimax", "doremi_b", "doremi_b-noref"]


def _eval(bpb):
  return {"bits_per_byte": bpb}


def test_excess_over_reference_and_learnable_average():
  reference = _eval({"a": 1.0, "junk": 4.0})
  evals = {"natural": {"0": _eval({"a": 1.5, "junk": 4.1}), "1": _eval({"a": 1.7, "junk": 4.1})},
           "doremi": {"0": _eval({"a": 1.2, "junk": 4.6}), "1": _eval({"a": 1.4, "junk": 4.4})}}
  excess = ladder.excess_over_reference(evals, reference)
  assert excess["doremi"]["bits_per_byte"]["a"]["mean"] == pytest.approx(0.3)
  assert excess["doremi"]["worst"]["values"] == pytest.approx([0.6, 0.4])
  assert excess["doremi"]["worst_domain"] == "junk" and excess["natural"]["worst_domain"] == "a"
  learnable = ladder.subset_average(evals, ["a"])
  diff = learnable["arms"]["doremi"]["paired_difference"]["natural"]
  assert diff["values"] == pytest.approx([-0.3, -0.3])
  assert "natural" not in learnable["arms"]["natural"]["paired_difference"]


def test_curve_series_averages_the_domains():
  rows = [{"step": 5, "bits_per_byte": {"a": 2.0, "b": 4.0}},
          {"step": 10, "bits_per_byte": {"a": 1.0, "b": 3.0}}]
  series = ladder.curve_series({"natural": {"0": rows}}, ["a", "b"])
  assert series == {"natural": {"0": {"steps": [5, 10], "values": [3.0, 2.0]}}}
  assert ladder.curve_series({"natural": {"0": rows}}, ["a"])["natural"]["0"]["values"] == [2, 1]


def test_curve_rows_past_a_checkpoint_are_dropped(tmp_path):
  path = tmp_path / "curve_test.jsonl"
  path.write_text('{"step": 5}\n{"step": 10}\n{"step": 15}\n{"step": 2')
  heldout.drop_rows_after(str(path), 10)
  assert path.read_text() == '{"step": 5}\n{"step": 10}\n'


@pytest.mark.parametrize("binding, message", [
    ("pipeline.control_domains=['nope']", "pipeline.control_domains names ['nope'], which are "
     "not domains of 'synthetic_uniform'"),
    ("pipeline.unimax_epochs=1.0", "the unimax arm needs each domain's token count; "
     "'synthetic_markov1' is not prepared"),
    ("pipeline.main_models=['models/tiny.gin']", "pipeline.main_models must map a size label"),
])
def test_pipeline_refuses_bad_regime_settings_in_one_line(tmp_path, capsys, binding, message):
  import gin

  from doremi_jax import pipeline as pipeline_cli
  out = tmp_path / "exp"
  with pytest.raises(SystemExit) as exit_info:
    try:
      pipeline_cli.main(["--gin_file=experiments/synthetic.gin", f"--gin.{binding}",
                         f"--gin.pipeline.experiment_dir='{out}'"])
    finally:
      gin.clear_config()
  err = capsys.readouterr().err.strip()
  assert exit_info.value.code == 2 and err.startswith(f"error: {message}") and "\n" not in err
  assert not out.exists()  # refused before anything was written


def test_average_after_start_is_the_mean_of_the_later_iterates():
  from doremi_jax.core import doremi
  rng = np.random.default_rng(0)
  iterates = rng.dirichlet(np.ones(4), size=9)  # w_1 .. w_9
  start = 3
  average = np.full(4, 0.25)
  for t, w in enumerate(iterates, start=1):
    average = np.asarray(doremi.average_weights_after(average, w, t, start))
    expected = iterates[t - 1] if t <= start else iterates[start:t].mean(axis=0)
    np.testing.assert_allclose(average, expected, rtol=1e-6)
  # The same mean from two logged all-steps averages (what docs/study_tables.py does):
  everything = np.vstack([np.full(4, 0.25), iterates])  # w_0 .. w_9
  avg = lambda t: everything[: t + 1].mean(axis=0)  # noqa: E731
  np.testing.assert_allclose((10 * avg(9) - (start + 1) * avg(start)) / (9 - start), average,
                             rtol=1e-6)
  with pytest.raises(errors.DoremiError, match="average_start"):
    steps.DoremiConfig(average_start=-1)
