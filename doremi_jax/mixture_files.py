"""A mixture's files, all written from one weights JSON so every format agrees.

  * ``<name>.json``          weights + metadata (steps, eta, smoothing, tokenizer, domain specs)
  * ``<name>.py``            ``import``-ing it registers SeqIO Mixture ``<name>`` (and its
                             domains; over a user's own Tasks it imports only SeqIO and
                             the user's task modules)
  * ``<name>.gin``           t5x's macros only: ``MIXTURE_OR_TASK_NAME`` and
                             ``MIXTURE_OR_TASK_MODULE`` (the module, by name)
  * ``<name>.doremi.json``   the reference implementation's train/eval weights format, its
                             domains named as its loaders name them (the Pile's ``Pile-CC``)
  * ``<name>.maxtext.json``  MaxText grain mixture ``{domain: {"path", "weight"}}``, only
                             when every domain is prepared (MaxText reads shard files)

The weights JSON carries the domains' registration specs (``mixtures.record_spec``), so
the other formats can be written, and the mixture registered, in any process.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import pprint
import re
import sys
from typing import Any, Mapping, Sequence

import doremi_jax

doremi_jax.import_tensorflow_quietly()  # TF's start-up lines would precede one-line errors
import seqio  # noqa: E402

from doremi_jax import errors, mixtures, storage  # noqa: E402
from doremi_jax.corpora import pile_format  # noqa: E402
from doremi_jax.data import corpus_reader  # noqa: E402
from doremi_jax.data.prepared_source import prepared_source  # noqa: E402

FORMATS = {"json": ".json", "module": ".py", "gin": ".gin", "doremi": ".doremi.json",
           "maxtext": ".maxtext.json"}
_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def export_name(*parts: str) -> str:
  """A Python identifier made of ``parts`` (sweep tags hold dots and dashes)."""
  return re.sub(r"\W", "_", "_".join(p for p in parts if p))


def write_weights(path: str, name: str, weights: Mapping[str, float],
                  metadata: Mapping[str, Any]) -> str:
  """The weights JSON: validated weights, metadata, and the domains' registration specs."""
  if not _NAME_RE.match(name):
    raise errors.DoremiError(f"export name {name!r} must be a Python identifier")
  weights = mixtures.check_weights(weights)
  metadata = dict(metadata)
  metadata.setdefault("domain_specs", mixtures.registration_specs(weights))
  payload = {"name": name, "domain_weights": weights, "metadata": metadata}
  storage.write_atomic(path, json.dumps(payload, indent=2) + "\n")
  return path


@dataclasses.dataclass(frozen=True)
class WeightsFile:
  """A weights JSON, read and validated once: its mixture name (None in the reference
  implementation's format), weights and metadata."""
  path: str
  name: str | None
  weights: dict[str, float]
  metadata: dict[str, Any]


def read_weights(path: str, domains: Sequence[str] | None = None) -> WeightsFile:
  """Reads a weights JSON (ours, or the reference implementation's, whose names are mapped
  to the tasks among ``domains`` they name) and validates it."""
  if not os.path.exists(path):
    raise errors.DoremiError(f"weights file {path!r} not found")
  try:
    with open(path) as f:
      payload = json.load(f)
  except json.JSONDecodeError as exc:
    raise errors.DoremiError(f"weights file {path!r} is not valid JSON: {exc}") from None
  weights = payload.get("domain_weights", payload.get("train_domain_weights"))
  if not isinstance(weights, dict):
    raise errors.DoremiError(f"weights file {path!r} has no 'domain_weights' mapping")
  if "domain_weights" not in payload:  # the reference implementation's names
    weights = _from_official_names(weights, domains)
  return WeightsFile(path, payload.get("name"), mixtures.check_weights(weights, what=path),
                     dict(payload.get("metadata", {})))


def load_weights(path: str, domains: Sequence[str] | None = None
                 ) -> tuple[dict[str, float], dict[str, Any]]:
  """(weights, metadata) of a weights JSON (``read_weights``)."""
  file = read_weights(path, domains)
  return file.weights, file.metadata


def _literal(value: Any) -> str:
  """A Python literal (specs hold None and booleans, which JSON would spell otherwise)."""
  return pprint.pformat(value, indent=2, width=96, sort_dicts=False)


USER_REGISTRAR = "doremi_jax.tasks.seqio_tasks.register_seqio_tasks"


def _user_modules(specs: list) -> list[str] | None:
  """The user's task modules when every domain is a user's own SeqIO Task
  (``register_seqio_tasks``), else None."""
  if not specs or any(s.get("registrar") != USER_REGISTRAR for s in specs):
    return None
  return list(dict.fromkeys(m for s in specs for m in s["kwargs"].get("modules", ())))


def _plain_module_source(name: str, weights: Mapping[str, float], modules: list[str]) -> str:
  """A SeqIO Mixture over the user's own Tasks: SeqIO and the user's modules, nothing else."""
  return "\n".join([
      f'"""SeqIO Mixture {name!r}: DoReMi domain weights over your own Tasks (exported by',
      "doremi-jax; this module needs only SeqIO and the modules that register the Tasks).",
      f"    seqio.get_mixture_or_task({name!r}).get_dataset(...)", '"""',
      "import importlib", "", "import seqio", "",
      f"TASK_MODULES = {_literal(modules)}",
      f"MIXTURE_NAME = {name!r}",
      f"DOMAIN_WEIGHTS = {_literal(dict(weights))}", "",
      "for _module in TASK_MODULES:",
      "  importlib.import_module(_module)",
      "if MIXTURE_NAME in seqio.MixtureRegistry.names():",
      "  seqio.MixtureRegistry.remove(MIXTURE_NAME)",
      "seqio.MixtureRegistry.add(MIXTURE_NAME, list(DOMAIN_WEIGHTS.items()))", ""])


def _module_source(name: str, weights: Mapping[str, float], specs: list,
                   tokenizer: Mapping[str, Any] | None) -> str:
  modules = _user_modules(specs)
  if modules is not None:
    return _plain_module_source(name, weights, modules)
  return "\n".join([
      f'"""SeqIO Mixture {name!r}: DoReMi domain weights exported by doremi-jax.', "",
      "Importing this module registers the mixture and its domain Tasks (their data is found",
      f"under ${storage.DATA_ROOT_ENV}, default $DOREMI_CACHE or ~/.cache/doremi_jax):",
      f"    seqio.get_mixture_or_task({name!r}).get_dataset(...)", '"""',
      "from doremi_jax import mixtures", "",
      f"MIXTURE_NAME = {name!r}",
      f"DOMAIN_WEIGHTS = {_literal(dict(weights))}",
      f"DOMAIN_SPECS = {_literal(specs)}",
      f"TOKENIZER = {_literal(dict(tokenizer or {}))}", "",
      "mixtures.register_exported(MIXTURE_NAME, DOMAIN_WEIGHTS, DOMAIN_SPECS, TOKENIZER)", ""])


def _gin_source(name: str) -> str:
  """Only t5x's own macros, the module named as t5x imports it (``DatasetConfig.module``):
  parses with ``skip_unknown=False`` after t5x's pretrain.gin, holds no path."""
  return "\n".join([
      f"# DoReMi mixture {name!r} (generated by doremi-jax). Put this folder on PYTHONPATH:",
      f"# t5x imports MIXTURE_OR_TASK_MODULE ({name}.py), which registers the mixture.",
      f"MIXTURE_OR_TASK_NAME = {name!r}",
      f"MIXTURE_OR_TASK_MODULE = {name!r}", ""])


def _official_name(task: str, pile: Mapping[str, str]) -> str:
  source = prepared_source(seqio.TaskRegistry.get(task))
  if source is not None:
    from_pile = str(source.corpus.manifest.get("source", "")).startswith("pile:")
    return pile.get(source.domain, source.domain) if from_pile else source.domain
  spec = mixtures.spec_of(task) or {}
  if spec.get("registrar", "").endswith("tasks.pile.register_pile"):
    prefix = spec["kwargs"].get("prefix", "pile") + "_"
    return pile.get(task[len(prefix):], task) if task.startswith(prefix) else task
  return task


def _pile_names() -> dict[str, str]:
  return {corpus_reader.sanitize(d): d for d in pile_format.PILE_DOMAINS}


def official_names(weights: Mapping[str, float]) -> dict[str, str]:
  """Task -> the domain name the reference implementation's loaders use (the folder under
  its preprocessed dir): a prepared domain's own name (the Pile's published one, e.g.
  ``Pile-CC``, for a corpus prepared from the Pile), a streamed Pile Task's Pile name,
  else the task name; the task names if two tasks would share one name."""
  pile = _pile_names()
  out = {task: _official_name(task, pile) for task in weights}
  return out if len(set(out.values())) == len(out) else {t: t for t in weights}


def _from_official_names(weights: dict[str, float], domains: Sequence[str] | None = None
                         ) -> dict[str, float]:
  """Weights keyed by the reference implementation's names (``Pile-CC``) -> by the task
  each names among ``domains`` (default: every registered task), when every name picks
  out exactly one."""
  registered = seqio.TaskRegistry.names()
  if all(k in registered for k in weights):
    return weights
  pile, tasks_of = _pile_names(), {}
  for task in registered if domains is None else [d for d in domains if d in registered]:
    tasks_of.setdefault(_official_name(task, pile), []).append(task)
  if all(len(tasks_of.get(k, ())) == 1 for k in weights):
    return {tasks_of[k][0]: v for k, v in weights.items()}
  return weights


def _official_source(weights: Mapping[str, float]) -> str:
  names = official_names(weights)
  train = {names[t]: w for t, w in weights.items()}
  return json.dumps({"train_domain_weights": train,
                     "eval_domain_weights": {d: 1.0 / len(train) for d in train}},
                    indent=2) + "\n"


def _domain_path(task_name: str) -> str:
  """A prepared domain's train shard pattern (what MaxText's grain mixture reads)."""
  source = prepared_source(seqio.TaskRegistry.get(task_name))
  return str(source.corpus.shard_pattern(source.domain, "train"))


def streamed_domains(weights: Mapping[str, float]) -> list[str]:
  """Domains without prepared shards: MaxText has no files to read for them, so their
  mixture gets no MaxText file (a made-up path would fail only inside MaxText)."""
  return sorted(t for t in weights if prepared_source(seqio.TaskRegistry.get(t)) is None)


def maxtext_needs_prepared(streamed: list[str]) -> str:
  """The line saying why a mixture has no MaxText file and what to do."""
  listed = ", ".join(streamed[:4]) + (" ..." if len(streamed) > 4 else "")
  return (f"no MaxText mixture written: {len(streamed)} domain(s) are streamed, not prepared "
          f"({listed}); MaxText reads prepared shards: prepare the corpus first "
          "(doremi-corpus prepare --source=... --out=DIR), train on it "
          "(experiments/prepared.gin) and export again")


def write_formats(weights_json: str, out_dir: str | None = None, name: str | None = None,
                  overwrite: bool = True) -> dict[str, str]:
  """Every format from one weights JSON (into its folder unless ``out_dir``); returns the
  paths written: no ``maxtext`` when a domain is streamed (``streamed_domains``)."""
  file = read_weights(weights_json)
  weights, metadata, name = file.weights, file.metadata, name or file.name
  out_dir = out_dir or os.path.dirname(os.path.abspath(weights_json))
  paths = {fmt: os.path.join(out_dir, name + ext) for fmt, ext in FORMATS.items()}
  if not overwrite and any(os.path.exists(p) for p in paths.values()):
    raise errors.DoremiError(f"export {name!r} already exists in {out_dir!r}")
  specs = metadata.get("domain_specs") or mixtures.registration_specs(weights)
  if any(task not in seqio.TaskRegistry.names() for task in weights):
    mixtures.apply_specs(specs)
  if os.path.abspath(paths["json"]) != os.path.abspath(weights_json):
    write_weights(paths["json"], name, weights, {**metadata, "domain_specs": specs})
  texts = {
      "module": _module_source(name, weights, specs, metadata.get("tokenizer")),
      "gin": _gin_source(name),
      "doremi": _official_source(weights),
  }
  if streamed_domains(weights):
    del paths["maxtext"]
    if os.path.exists(os.path.join(out_dir, name + FORMATS["maxtext"])):
      os.remove(os.path.join(out_dir, name + FORMATS["maxtext"]))  # an earlier export's
  else:
    texts["maxtext"] = json.dumps({k: {"path": _domain_path(k), "weight": v}
                                   for k, v in weights.items()}, indent=2) + "\n"
  for fmt, text in texts.items():
    storage.write_atomic(paths[fmt], text)
  return paths


def write_exports(out_dir: str, name: str, weights: Mapping[str, float],
                  metadata: Mapping[str, Any], overwrite: bool = False) -> dict[str, str]:
  """Writes the weights JSON and, from it, every other format; refuses to overwrite an
  existing export unless told to."""
  path = os.path.join(out_dir, name + FORMATS["json"])
  if not overwrite and any(os.path.exists(os.path.join(out_dir, name + ext))
                           for ext in FORMATS.values()):
    raise errors.DoremiError(f"export {name!r} already exists in {out_dir!r}")
  write_weights(path, name, weights, metadata)
  return write_formats(path)


def load_module(path: str):
  """Imports an exported mixture module from its file path (registers the mixture)."""
  if not os.path.exists(path):
    raise errors.DoremiError(f"mixture module {path!r} not found")
  mod_name = "doremi_export_" + export_name(os.path.splitext(os.path.basename(path))[0])
  spec = importlib.util.spec_from_file_location(mod_name, path)
  module = importlib.util.module_from_spec(spec)
  sys.modules[mod_name] = module
  spec.loader.exec_module(module)
  return module


def register_weights_file(path: str) -> str:
  """Registers the mixture a weights JSON describes (domains first); returns its name."""
  file = read_weights(path)
  name = file.name or export_name(os.path.splitext(os.path.basename(path))[0])
  registered = seqio.TaskRegistry.names()
  unknown = sorted(t for t in file.weights if t not in registered)
  if unknown and not file.metadata.get("domain_specs"):  # nothing says how to register them
    known = sorted(registered)
    raise errors.DoremiError(
        f"{path} names domains {unknown[:6]} that no registered task has (registered: "
        f"{', '.join(known[:8])}{' ...' if len(known) > 8 else ''}); name the experiment's "
        "tasks, or the reference implementation's folder names of them")
  mixtures.register_exported(name, file.weights, file.metadata.get("domain_specs") or [],
                             file.metadata.get("tokenizer"))
  return name
