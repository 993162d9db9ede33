"""The tables of docs/study.md, printed from a pipeline's summary.json (what `make study`
writes into runs/study/ and runs/study_controls/):

    python docs/study_tables.py runs/study_controls/summary.json [START]

With START (a logged proxy step), also each proxy's weights averaged after START and its
last iterate (from the proxy's trajectory file). With the methods' arms (`make
study-methods`), also RegMix's and online DoReMi's weights and every method's cost.
"""
import json
import os
import sys

from doremi_jax.run import paths


def short(domain):
  return domain.split("_", 1)[1]


def ci(c, digits=4):
  return f"{c['mean']:+.{digits}f} [{c['ci_low']:+.{digits}f}, {c['ci_high']:+.{digits}f}]"


def table(header, rows):
  print("| " + " | ".join(header) + " |")
  print("|---|" + "---:|" * (len(header) - 1))
  for row in rows:
    print("| " + " | ".join(row) + " |")


def _read(path):
  with open(path) as f:
    return json.load(f)


def _online_runs(s, size_label):
  """The doremi_online arm's run summaries at one size (seed order)."""
  size = None if size_label == "main" else size_label  # the pipeline's label of one size
  found = [paths.main_run_dir(s["experiment_dir"], "doremi_online", seed, size)
           for seed in s["seeds"]]
  return [_read(os.path.join(d, "train_summary.json")) for d in found if os.path.isdir(d)]


def weights(s):
  cols = {"natural": s["baseline_weights"], **s.get("arm_weights", {}),
          **{a: v["weights"] for a, v in s["doremi_arms"].items()}}
  if "regmix" in s:
    cols["regmix"] = s["regmix"]["weights"]
  online = _online_runs(s, next(iter(s["sizes"])))
  if online:  # the mean over seeds of the weights each run's main batches were drawn with
    cols["online (drawn)"] = {d: sum(r["online"]["mean_drawn_weights"][d] for r in online)
                              / len(online) for d in s["domains"]}
  names = [a.replace("doremi_", "").replace("-token_clip-c0.001", "") for a in cols]
  table(["domain"] + names, [[short(d)] + [f"{cols[a][d]:.3f}" for a in cols]
                             for d in s["domains"]])
  print(f"\n(uniform = {1 / len(s['domains']):.3f})\n")


def settled(s, start):
  """Each proxy's average over the updates after ``start`` (what DoremiConfig.average_start
  = start gives; exact, from two logged all-steps averages: mean(w_0..w_T) x (T + 1)) and
  its last iterate, from the last round's trajectory file."""
  path = os.path.join(s["experiment_dir"], f"round_{len(s['rounds'])}", "proxy",
                      "domain_weights.jsonl")
  with open(path) as f:
    rows = [json.loads(line) for line in f]
  cols = {}
  for tag in dict.fromkeys(r["setting"] for r in rows):
    mine = {r["step"]: r for r in rows if r["setting"] == tag}
    last = max(mine)
    a, b = mine[last]["average_domain_weights"], mine[start]["average_domain_weights"]
    name = tag.replace("-token_clip-c0.001", "")
    cols[f"{name} after {start}"] = {d: ((last + 1) * a[d] - (start + 1) * b[d]) / (last - start)
                                     for d in a}
    cols[f"{name} last"] = mine[last]["domain_weights"]
  table(["domain"] + list(cols), [[short(d)] + [f"{cols[c][d]:.3f}" for c in cols]
                                  for d in s["domains"]])


def selection(s):
  first = next(iter(s["sizes"]))
  arms = s["sizes"][first]["comparison"]["validation"]["arms"]
  rows = []
  for arm, entry in arms.items():
    c = entry["average_bits_per_byte"]
    rows.append([arm, f"{c['mean']:.4f}", f"[{c['ci_low']:.4f}, {c['ci_high']:.4f}]"])
  table(["arm", f"avg bits/byte (validation, {first})", "95% CI"], rows)
  print(f"\nselected: {s['selected_arm']}")


def _speedup(entry):
  if entry is None:
    return "-"
  if entry["mean"] is None:
    return f"reached {entry['reached']}/{entry['of']}"
  return f"{entry['mean']:.2f}x [{entry['ci_low']:.2f}, {entry['ci_high']:.2f}]"


def size_rows(s, size):
  comp = size["comparison"][s["report_split"]]["arms"]
  learn = size.get("learnable")
  speed = size.get("curves", {}).get("all", {}).get("summary", {})
  excess = size.get("excess_over_reference", {})
  better = size.get("domains_better_or_equal_vs_natural", {})
  header = ["arm", "avg bits/byte", "Δ vs natural", "Δ vs uniform"]
  if learn:
    header += ["learnable avg", "Δ learnable vs natural", "Δ learnable vs uniform"]
  header += ["worst bits/byte", "worst excess (domain)", "speed-up to natural's final",
             "domains ≥ natural"]
  rows = []
  for arm, entry in comp.items():
    diff = entry["paired_difference"]
    avg = entry["average_bits_per_byte"]
    row = [arm, f"{avg['mean']:.4f} ± {avg['half_width']:.4f}"]
    row += [ci(diff[b]["average_bits_per_byte"]) if b in diff else "-"
            for b in ("natural", "uniform")]
    if learn:
      le = learn["arms"][arm]
      row += [f"{le['average']['mean']:.4f}"] + [
          ci(le["paired_difference"][b]) if b in le["paired_difference"] else "-"
          for b in ("natural", "uniform")]
    row.append(f"{entry['worst_bits_per_byte']['mean']:.4f}")
    x = excess.get(arm)
    row.append(f"{x['worst']['mean']:+.3f} ({short(x['worst_domain'])})" if x else "-")
    row.append("-" if arm == "natural" else _speedup(speed.get(arm)))
    row.append(f"{better[arm]['k']}/{better[arm]['n']}" if arm in better else "-")
    rows.append(row)
  table(header, rows)


def per_domain(s, size):
  comp = size["comparison"][s["report_split"]]["arms"]
  table(["domain"] + list(comp), [[short(d)] + [
      f"{comp[a]['bits_per_byte'][d]['mean']:.3f}" for a in comp] for d in s["domains"]])
  excess = size.get("excess_over_reference", {})
  if excess:
    print("\nexcess over the reference (bits/byte):\n")
    table(["domain"] + list(excess), [[short(d)] + [
        f"{excess[a]['bits_per_byte'][d]['mean']:+.3f}" for a in excess] for d in s["domains"]])


def costs(s):
  """What finding each mixture cost, and each arm's main runs (FLOPs: core/flops.py)."""
  reference = _read(os.path.join(s["rounds"][0]["reference_dir"], "train_summary.json"))
  rows = [["DoReMi (reference + proxy)", f"{s['doremi_cost']['flops']:.3g}",
           f"{s['doremi_cost']['seconds']:.0f}"]]
  if "regmix" in s:
    c = s["regmix"]["cost"]
    rows.append([f"RegMix swarm ({s['regmix']['plan']['size']} models)", f"{c['flops']:.3g}",
                 f"{c['seconds']:.0f}"])
  rows.append(["online DoReMi's reference", f"{reference['estimated_flops']:.3g}",
               f"{reference['wall_seconds']:.0f}"])
  table(["mixture found by", "FLOPs", "seconds"], rows)
  for label, size in s["sizes"].items():
    cost = size.get("arm_cost")
    if not cost:
      continue
    base = cost["natural"]
    print(f"\nmain runs at {label} (per run: mean FLOPs, median seconds):\n")
    table(["arm", "FLOPs", "x natural's", "seconds", "x natural's"], [
        [a, f"{c['flops']:.3g}", f"{c['flops'] / base['flops']:.2f}",
         f"{c['seconds_median']:.0f}", f"{c['seconds_median'] / base['seconds_median']:.2f}"]
        for a, c in cost.items()])


def main(path, start=None):
  with open(path) as f:
    s = json.load(f)
  weights(s)
  if start is not None:
    settled(s, start)
  selection(s)
  for label, size in s["sizes"].items():
    params = size["model"]["non_embedding_params"] / 1e6
    print(f"\n### size {label}: {size['model_gin'] or 'the proxy model'} "
          f"({params:.2f}M non-embedding)\n")
    size_rows(s, size)
    frac = size["doremi_cost_fraction"]
    print(f"\nDoReMi stages: {s['doremi_cost']['seconds']:.0f} s, "
          f"{s['doremi_cost']['flops']:.3g} FLOPs = {frac['seconds']:.2f}x one main run's "
          f"seconds ({size['main_run_seconds_median']:.0f} s), {frac['flops']:.2f}x its FLOPs "
          f"({size['main_run_flops']:.3g})\n")
    per_domain(s, size)
  if "regmix" in s or any(_online_runs(s, label) for label in s["sizes"]):
    print()
    costs(s)


if __name__ == "__main__":
  main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else None)
