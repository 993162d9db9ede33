"""A t5x user's own task module, as it would be written without doremi-jax: three SeqIO
Tasks registered at import over text files (one document a line), with their own
SentencePiece vocabulary and their own preprocessors. It imports nothing of doremi-jax.

``BYO_TASKS_DIR`` holds ``<task>.<split>.txt`` files and ``spm.model`` (``write_data``).
"""
import os
import random

import seqio

TASKS = ("byo_web", "byo_code", "byo_books")
SPLITS = ("train", "validation", "test")
DATA_DIR = os.environ.get("BYO_TASKS_DIR", "")

_WORDS = {
    "byo_web": "the best deals click here free shipping today only sign up now news blog".split(),
    "byo_code": "def return if else for in range import self x y print None True".split(),
    "byo_books": "she walked slowly through the quiet garden and remembered his voice".split(),
}


def write_data(data_dir: str, lines_per_split=(400, 60, 60), vocab_size: int = 128) -> None:
  """Writes each task's lines and trains the user's SentencePiece model on them."""
  import sentencepiece as spm  # pylint: disable=g-import-not-at-top
  os.makedirs(data_dir, exist_ok=True)
  rng = random.Random(0)
  for task, words in _WORDS.items():
    for split, n in zip(SPLITS, lines_per_split):
      with open(os.path.join(data_dir, f"{task}.{split}.txt"), "w") as f:
        for _ in range(n):
          f.write(" ".join(rng.choice(words) for _ in range(rng.randint(8, 40))) + "\n")
  spm.SentencePieceTrainer.train(
      input=[os.path.join(data_dir, f"{t}.train.txt") for t in TASKS],
      model_prefix=os.path.join(data_dir, "spm"), vocab_size=vocab_size,
      model_type="unigram", pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
      hard_vocab_limit=False, minloglevel=2)


def _as_targets(dataset):
  return dataset.map(lambda line: {"targets": line})


def register(data_dir: str = DATA_DIR) -> None:
  vocab = seqio.SentencePieceVocabulary(os.path.join(data_dir, "spm.model"))
  for task in TASKS:
    if task in seqio.TaskRegistry.names():
      seqio.TaskRegistry.remove(task)
    seqio.TaskRegistry.add(
        task,
        source=seqio.TextLineDataSource(
            {s: os.path.join(data_dir, f"{task}.{s}.txt") for s in SPLITS}),
        preprocessors=[_as_targets, seqio.preprocessors.tokenize,
                       seqio.CacheDatasetPlaceholder(),
                       seqio.preprocessors.append_eos_after_trim],
        output_features={"targets": seqio.Feature(vocab, add_eos=True)},
        metric_fns=[])


if DATA_DIR:
  register()
