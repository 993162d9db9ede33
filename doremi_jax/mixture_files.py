"""A mixture's files, all written from one weights JSON so every format agrees.

  * ``<name>.json``          weights + metadata (steps, eta, smoothing, tokenizer, domain specs)
  * ``<name>.py``            ``import``-ing it registers SeqIO Mixture ``<name>`` (and its domains)
  * ``<name>.gin``           binds ``MIXTURE_OR_TASK_NAME`` and imports the module
  * ``<name>.doremi.json``   the reference implementation's train/eval weights format
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
from typing import Any, Mapping

import doremi_jax

doremi_jax.import_tensorflow_quietly()  # TF's start-up lines would precede one-line errors
import seqio  # noqa: E402

from doremi_jax import errors, mixtures, storage  # noqa: E402
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


def read_weights(path: str) -> WeightsFile:
  """Reads a weights JSON (ours, or the reference implementation's) and validates it."""
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
  return WeightsFile(path, payload.get("name"), mixtures.check_weights(weights, what=path),
                     dict(payload.get("metadata", {})))


def load_weights(path: str) -> tuple[dict[str, float], dict[str, Any]]:
  """(weights, metadata) of a weights JSON (``read_weights``)."""
  file = read_weights(path)
  return file.weights, file.metadata


def _literal(value: Any) -> str:
  """A Python literal (specs hold None and booleans, which JSON would spell otherwise)."""
  return pprint.pformat(value, indent=2, width=96, sort_dicts=False)


def _module_source(name: str, weights: Mapping[str, float], specs: list,
                   tokenizer: Mapping[str, Any] | None) -> str:
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
      "gin": (f"# DoReMi mixture {name!r} (generated by doremi-jax)\n"
              f"import_task_modules.modules = [{paths['module']!r}]\n"
              f"MIXTURE_OR_TASK_NAME = {name!r}\n"),
      "doremi": json.dumps({"train_domain_weights": weights, "eval_domain_weights":
                            {k: 1.0 / len(weights) for k in weights}}, indent=2) + "\n",
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
  mixtures.register_exported(name, file.weights, file.metadata.get("domain_specs") or [],
                             file.metadata.get("tokenizer"))
  return name
