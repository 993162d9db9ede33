"""The side-by-side step benchmark's bookkeeping: targets judged only on measured seconds."""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

import step_time  # noqa: E402


def _run(median):
  return {"median_s": median, "compiles": 1}


def test_targets_use_only_measured_contenders():
  reps = {"ours_plain": [_run(1.0), _run(3.0)], "ours_proxy": [_run(2.0), _run(2.0)],
          "levanter_doremi": [_run(4.0), _run(4.0)], "ours_proxy_swiglu": [_run(3.2)]}
  r = step_time.summarize(512, reps)
  assert r["ratios"]["swiglu proxy/levanter"] == 0.8  # our default MLP: reported, not judged
  assert set(r["targets"]) == {"proxy/levanter", "plain/nanodo"}
  assert r["seconds"]["ours_plain"] == 2.0  # median of the repetitions' medians
  assert r["ratios"]["proxy/levanter"] == 0.5 and r["targets"]["proxy/levanter"]["met"]
  assert r["targets"]["plain/nanodo"]["met"] is None  # nanodo not run: no verdict
  table = step_time.format_table([r], {"nanodo": "no venv"})
  assert "vocab 512 0.50 pass" in table and "not measured (no venv)" in table


def test_failed_repetition_is_not_averaged_away():
  reps = {"ours_plain": [_run(1.0)], "ours_proxy": [_run(1.2)],
          "nanodo_plain": [_run(1.0), {"error": "exit 1: boom"}]}
  r = step_time.summarize(512, reps)
  assert "nanodo_plain" not in r["seconds"]
  assert "repetition 2: exit 1: boom" in step_time.format_table([r], {})


def test_unreachable_peer_source_is_one_line_and_exit_0(tmp_path):
  env = dict(os.environ, LEVANTER_GIT=str(tmp_path / "missing"), PEERS_DIR=str(tmp_path))
  proc = subprocess.run([os.path.join(ROOT, "benchmarks", "peers", "build_envs.sh"), "levanter"],
                        env=env, capture_output=True, text=True, timeout=60)
  assert proc.returncode == 0
  assert proc.stderr.strip().splitlines() == [
      f"peers: levanter not built: commit 83f3f346 not found in {tmp_path / 'missing'}; set "
      "LEVANTER_GIT to a git URL or local clone that has it"]
