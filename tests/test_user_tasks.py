"""A t5x user's own SeqIO Tasks (tests/clients/byo_tasks.py: their own sources, vocabulary
and preprocessors), used as registered: the pipeline end to end on them, then the export
read in a fresh process the way t5x reads it, with nothing of ours imported."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import seqio

from doremi_jax import errors, mixture_files
from doremi_jax.data import seqio_input
from doremi_jax.tasks import seqio_tasks

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLIENTS = os.path.join(REPO, "tests", "clients")
sys.path.insert(0, CLIENTS)
import byo_tasks  # noqa: E402  (the user's module)

LENGTH = 64


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  path = str(tmp_path_factory.mktemp("byo_data"))
  byo_tasks.write_data(path)
  byo_tasks.register(path)
  return path


def _env(data_dir: str, *paths: str) -> dict[str, str]:
  return {**os.environ, "BYO_TASKS_DIR": data_dir,
          "PYTHONPATH": os.pathsep.join([*paths, CLIENTS, REPO])}


def test_each_sequence_keeps_the_task_it_was_drawn_from(data_dir):
  """No domain feature in the user's Tasks: the input samples them itself. The three
  tasks use disjoint words, so every row decodes to words of its own task only."""
  names = seqio_tasks.register_seqio_tasks(list(byo_tasks.TASKS), modules=["byo_tasks"],
                                           sequence_length=LENGTH)
  assert names == sorted(byo_tasks.TASKS) and not seqio_input.carries_domain(
      seqio.get_mixture_or_task("seqio_natural"))
  ds = seqio_input.seqio_dataset(seqio.get_mixture_or_task("seqio_uniform"), {"targets": LENGTH},
                                 "train", 24, names, seed=0)
  batch = next(ds.as_numpy_iterator())
  vocab = seqio.get_mixture_or_task("byo_web").output_features["targets"].vocabulary
  assert batch["targets"].shape == (24, LENGTH) and batch["loss_mask"].all()  # packed: no pad
  assert len(set(batch["domain_ids"].tolist())) == 3
  for row, domain in zip(batch["targets"], batch["domain_ids"]):
    words = set(vocab.decode([int(t) for t in row if t != vocab.eos_id]).split())
    own = set(byo_tasks._WORDS[names[domain]])  # pylint: disable=protected-access
    assert words and len(words - own) <= 2, (names[domain], words - own)  # cut words at ends


def test_natural_is_the_train_token_counts(data_dir):
  seqio_tasks.register_seqio_tasks(list(byo_tasks.TASKS), modules=["byo_tasks"],
                                   sequence_length=LENGTH, prefix="counted")
  mixture = seqio.get_mixture_or_task("counted_natural")
  counts = {t: seqio_tasks.train_tokens(seqio.get_mixture_or_task(t), LENGTH)
            for t in byo_tasks.TASKS}
  for task in mixture.tasks:
    assert mixture.get_rate(task) == pytest.approx(counts[task.name] / sum(counts.values()))


def test_a_named_mixture_gives_its_rates(data_dir):
  if "byo_mix" in seqio.MixtureRegistry.names():
    seqio.MixtureRegistry.remove("byo_mix")
  seqio.MixtureRegistry.add("byo_mix", [("byo_web", 3.0), ("byo_code", 1.0), ("byo_books", 1.0)])
  seqio_tasks.register_seqio_tasks("byo_mix", prefix="named")
  mixture = seqio.get_mixture_or_task("named_natural")
  assert {t.name: mixture.get_rate(t) for t in mixture.tasks} == pytest.approx(
      {"byo_web": 0.6, "byo_code": 0.2, "byo_books": 0.2})


@pytest.mark.parametrize("tasks,message", [
    (["byo_web"], "at least two domains"),
    (["byo_web", "no_such_task"], "unknown task 'no_such_task'"),
])
def test_bad_task_lists_are_one_line(data_dir, tasks, message):
  with pytest.raises(errors.DoremiError, match=message):
    seqio_tasks.register_seqio_tasks(tasks, sequence_length=LENGTH)


def test_tasks_with_two_vocabularies_are_refused(data_dir):
  if "byo_bytes" in seqio.TaskRegistry.names():
    seqio.TaskRegistry.remove("byo_bytes")
  seqio.TaskRegistry.add("byo_bytes", source=seqio.get_mixture_or_task("byo_web").source,
                         preprocessors=[], metric_fns=[],
                         output_features={"targets": seqio.Feature(seqio.ByteVocabulary())})
  with pytest.raises(errors.DoremiError, match="different vocabularies"):
    seqio_tasks.register_seqio_tasks(["byo_web", "byo_bytes"], sequence_length=LENGTH)


def test_unimportable_module_is_one_line():
  with pytest.raises(errors.DoremiError, match="cannot import task module 'no_such_mod'"):
    seqio_tasks.register_seqio_tasks(["a", "b"], modules=["no_such_mod"])


@pytest.fixture(scope="module")
def experiment(data_dir, tmp_path_factory):
  out = str(tmp_path_factory.mktemp("byo") / "exp")
  cmd = [sys.executable, "-m", "doremi_jax.pipeline", "--gin_file=experiments/seqio_tasks.gin",
         "--gin_file=models/micro.gin", f"--gin.DOMAINS={list(byo_tasks.TASKS)!r}",
         "--gin.TASK_MODULE='byo_tasks'", "--gin.VOCAB_SIZE=128",
         f"--gin.SEQUENCE_LENGTH={LENGTH}", "--gin.BATCH_SIZE=8",
         f"--gin.pipeline.experiment_dir='{out}'", "--gin.pipeline.reference_steps=10",
         "--gin.pipeline.proxy_steps=10", "--gin.pipeline.main_steps=6",
         "--gin.pipeline.seeds=[0]", "--gin.train.progress=False", "--gin.train.log_every=5",
         "--gin.evaluate.max_batches_per_domain=2"]
  proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900,
                        env=_env(data_dir))
  assert proc.returncode == 0, proc.stderr[-3000:]
  return out


@pytest.mark.heavy
def test_pipeline_over_user_tasks(experiment):
  with open(os.path.join(experiment, "summary.json")) as f:
    summary = json.load(f)
  assert summary["domains"] == sorted(byo_tasks.TASKS)
  test = summary["main"]["test"]
  assert sorted(test) == ["doremi", "natural", "uniform"]
  assert set(test["doremi"]["0"]["bits_per_byte"]) == set(byo_tasks.TASKS)
  export = os.path.join(experiment, "export")
  with open(os.path.join(export, "seqio_doremi.doremi.json")) as f:
    assert sorted(json.load(f)["train_domain_weights"]) == sorted(byo_tasks.TASKS)
  assert not os.path.exists(os.path.join(export, "seqio_doremi.maxtext.json"))  # streamed


READ_AS_T5X = """
import sys
import seqio
import seqio_doremi  # t5x: DatasetConfig.module, imported by name
assert not [m for m in sys.modules if m.split(".")[0] == "doremi_jax"], "imports doremi_jax"
ds = seqio.get_dataset("seqio_doremi", task_feature_lengths={"targets": 64},
                       dataset_split="train", shuffle=False, num_epochs=1, batch_size=4,
                       feature_converter=seqio.DecoderFeatureConverter(pack=True))
batch = next(ds.as_numpy_iterator())
print(sorted(batch), batch["decoder_target_tokens"].shape)
"""


@pytest.mark.heavy
def test_export_is_plain_seqio_read_as_t5x_reads_it(experiment, data_dir):
  export = os.path.join(experiment, "export")
  source = open(os.path.join(export, "seqio_doremi.py")).read()
  assert "doremi_jax" not in source and "seqio.MixtureRegistry.add" in source
  proc = subprocess.run([sys.executable, "-c", READ_AS_T5X], capture_output=True, text=True,
                        timeout=300, cwd="/", env={**_env(data_dir, export),
                                                   "PYTHONPATH": f"{export}:{CLIENTS}"})
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert "decoder_target_tokens" in proc.stdout and "(4, 64)" in proc.stdout
  file = mixture_files.read_weights(os.path.join(export, "seqio_doremi.json"))
  assert sorted(file.weights) == sorted(byo_tasks.TASKS)


def test_prepare_materialises_user_tasks(data_dir, tmp_path):
  """doremi-corpus prepare --source=seqio:...: the Tasks after their own preprocessors, in
  the rows the streamed input would give, readable as prepared Tasks (and by MaxText)."""
  from doremi_jax import corpus as corpus_cli  # pylint: disable=g-import-not-at-top
  from doremi_jax.tasks import prepared  # pylint: disable=g-import-not-at-top
  out = str(tmp_path / "prepared")
  corpus_cli.main(["prepare", f"--source=seqio:{','.join(byo_tasks.TASKS)}",
                   "--task_module=byo_tasks", f"--out={out}", f"--sequence_length={LENGTH}"])
  names = prepared.register_prepared(out, prefix="byo_prepared")
  assert names == sorted(f"byo_prepared_{t}" for t in byo_tasks.TASKS)
  streamed = seqio_input.task_sequences(seqio.get_mixture_or_task("byo_code"),
                                        {"targets": LENGTH}, "validation", shuffle=False,
                                        num_epochs=1)
  want = [ex["targets"] for ex in streamed.as_numpy_iterator()]
  got = list(seqio_input.eval_batches(seqio.get_mixture_or_task("byo_prepared_byo_code"),
                                      {"targets": LENGTH}, "validation", len(want), names))
  assert len(got) == 1 and (got[0]["targets"] == want).all()
  ours = seqio.get_mixture_or_task("byo_prepared_byo_code").output_features["targets"]
  theirs = seqio.get_mixture_or_task("byo_code").output_features["targets"]
  assert ours.vocabulary.vocab_size == theirs.vocabulary.vocab_size  # their SentencePiece


def test_prepare_seqio_bad_input_is_one_line(data_dir, tmp_path):
  from doremi_jax.corpora import prepare  # pylint: disable=g-import-not-at-top
  with pytest.raises(errors.DoremiError, match="drop --tokenizer and --vocab_size"):
    prepare.prepare("seqio:byo_web", str(tmp_path / "a"), vocab_size=100)
  with pytest.raises(errors.DoremiError, match="names no Tasks"):
    prepare.prepare("seqio:", str(tmp_path / "b"))
  with pytest.raises(errors.DoremiError, match="--task_module is for seqio"):
    prepare.prepare("dir:/nonexistent", str(tmp_path / "c"), task_modules=["x"])
