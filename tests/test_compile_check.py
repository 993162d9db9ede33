"""The compile check on 8 simulated devices and the tiny model: its numbers are the real
shard sizes, the proxy's reference has no optimizer state, the fit verdicts follow the
budget, and a bad topology is one line. One subprocess (its own device count) runs it all."""
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--gin_file=models/tiny.gin", "--gin.VOCAB_SIZE=256",
        "--gin.TASK_FEATURE_LENGTHS={'targets': 64}", "--gin.make_mesh.mesh_shape=(1, -1, 1)"]

DRIVER = textwrap.dedent("""
    import sys, gin
    from doremi_jax import compile_check
    for argv in eval(sys.argv[1]):
      gin.clear_config()
      try:
        compile_check.main(argv)
      except SystemExit as exc:
        print(f"exit {exc.code}", flush=True)
""")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  out = tmp_path_factory.mktemp("compile_check")
  argvs = [["--topology=cpu:0", *TINY], ["--topology=v5p-300", *TINY],
           ["--topology=cpu:8", "--gin_file=runs/main.gin", *TINY, f"--json={out}/plain.json"],
           ["--topology=cpu:8", "--gin_file=runs/proxy.gin", *TINY, f"--json={out}/proxy.json",
            "--device_gib=0.001"],
           ["--topology=cpu:8", "--gin_file=runs/proxy.gin", *TINY, "--gin.train.microbatches=2",
            "--gin.LENGTH=64", "--gin.TASK_FEATURE_LENGTHS={'targets': %LENGTH}",
            f"--json={out}/proxy_m2.json"],
           ["--topology=cpu:8", "--gin_file=runs/proxy.gin", *TINY, "--gin.train.microbatches=3"]]
  proc = subprocess.run([sys.executable, "-c", DRIVER, repr(argvs)], cwd=ROOT,
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return proc, {k: json.loads((out / f"{k}.json").read_text())
                for k in ("plain", "proxy", "proxy_m2")}


def test_bad_topology_is_one_line(runs):
  proc, _ = runs
  assert proc.stdout.count("exit 2") == 3
  errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
  assert errors == [
      "error: unknown topology 'cpu:0': use cpu:N (N simulated devices) or a TPU slice such "
      "as v5p-256, v4-64, v5e-256, v6e-64",
      "error: topology 'v5p-300': only power-of-two slices from v5p-8 up are known here",
      "error: train.microbatches=3: batch size 16 does not divide into 3 micro-batch(es) "
      "over the mesh's 8 data shards (batch size must be a multiple of microbatches x data "
      "shards; make_mesh.mesh_shape sets the mesh)"]
  assert "Traceback" not in proc.stderr


def test_per_device_bytes_are_the_shards(runs):
  _, r = runs
  for result in r.values():
    assert result["backend"] == "cpu" and result["mesh"] == {"data": 1, "fsdp": 8, "model": 1}
    per, whole = result["per_device"], result["global"]
    # Every tiny weight has a dimension divisible by 8 on fsdp: an even split.
    assert per["parameters"] * 8 == whole["parameters"] == 4 * result["num_parameters"]
    # The compiler's argument bytes are exactly the inputs' shards (CPU pads nothing).
    assert result["compiler"]["arguments"] == sum(per.values())


def test_microbatches_reach_the_compiled_step(runs):
  _, r = runs
  assert r["proxy_m2"]["microbatches"] == 2 and r["proxy"]["microbatches"] == 1
  assert r["proxy_m2"]["sequence_length"] == 64  # a macro inside the lengths dict resolved
  # The same state, a different program: the micro-batched step scans over half batches.
  assert r["proxy_m2"]["per_device"] == r["proxy"]["per_device"]
  assert r["proxy_m2"]["compiler"]["temporaries"] != r["proxy"]["compiler"]["temporaries"]


def test_proxy_reference_is_frozen_params_only(runs):
  _, r = runs
  plain, proxy = r["plain"], r["proxy"]
  assert plain["per_device"]["reference_parameters"] == 0
  assert proxy["per_device"]["reference_parameters"] == proxy["per_device"]["parameters"]
  # Adam's two moments for the trained parameters only (plus its step counters).
  for result in (plain, proxy):
    extra = result["global"]["optimizer_state"] - 2 * result["global"]["parameters"]
    assert 0 <= extra <= 16
  assert (proxy["compiler"]["arguments"] - plain["compiler"]["arguments"]
          == proxy["per_device"]["reference_parameters"]
          + proxy["per_device"]["step_and_domain_state"]
          - plain["per_device"]["step_and_domain_state"])


def test_fit_verdicts(runs):
  proc, r = runs
  total = r["proxy"]["compiler"]["total"]
  assert total == (r["proxy"]["compiler"]["arguments"] + r["proxy"]["compiler"]["outputs"]
                   - r["proxy"]["compiler"]["aliased"] + r["proxy"]["compiler"]["temporaries"])
  fits = r["proxy"]["fits"]
  assert fits["given"]["fits"] is (total <= 0.001 * 1024 ** 3) is False
  assert fits["v5e"]["fits"] and fits["H100"]["fits"]
  assert "does NOT fit given (0.001 GiB)" in proc.stdout and "fits v5p (95 GiB)" in proc.stdout


@pytest.mark.parametrize("name,devices,libtpu_name", [
    ("v5p-256", 128, "v5:4x4x8"), ("v5p-512", 256, "v5:4x8x8"), ("v4-64", 32, "v4:2x4x4"),
    ("v4-8", 4, "v4:2x2x1"), ("v5e-256", 256, "v5e:16x16"), ("v6e-8", 8, "v6e:2x4"),
    ("cpu:256", 256, "")])
def test_topology_names(name, devices, libtpu_name):
  from doremi_jax.compile_check import topology  # pylint: disable=g-import-not-at-top
  topo = topology.parse(name)
  assert (topo.num_devices, topo.tpu_topology) == (devices, libtpu_name)


def test_a_refused_compile_fits_nothing():
  """A TPU compiler that runs out of HBM gives no total: the verdict is no, with its reason."""
  from doremi_jax.compile_check import memory  # pylint: disable=g-import-not-at-top
  verdict = memory.verdict(None, 32, "RESOURCE_EXHAUSTED: Ran out of memory on HBM")
  assert verdict["fits"] is False and verdict["reason"].startswith("RESOURCE_EXHAUSTED")
  assert memory.verdict(2 * 1024 ** 3, 4)["used_fraction"] == 0.5
