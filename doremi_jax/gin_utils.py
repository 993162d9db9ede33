"""t5x-style gin command lines: ``--gin_file``, ``--gin.X=Y``, ``--gin_search_paths``."""
from __future__ import annotations

import argparse
import logging
import os
from typing import Sequence

import gin
from gin import config as gin_config
from gin import resource_reader

from doremi_jax import errors

def _safe_system_path_exists(config_path: str) -> bool:
  """gin's "gin file inside a Python package" lookup, minus its crash on namespace
  packages (a ``runs/`` output dir in the working directory looks like package ``runs``)."""
  try:
    return resource_reader.system_path_file_exists(config_path)
  except (TypeError, ValueError, ImportError):
    return False


gin_config._FILE_READERS[:] = [  # pylint: disable=protected-access
    (reader, _safe_system_path_exists if exists is resource_reader.system_path_file_exists
     else exists) for reader, exists in gin_config._FILE_READERS]  # pylint: disable=protected-access

REPO_GIN_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "gin")


def parse_args(argv: Sequence[str], description: str) -> argparse.Namespace:
  """Parses gin flags; ``--gin.A.b=1`` and ``--gin.MACRO=2`` become gin bindings."""
  parser = argparse.ArgumentParser(description=description)
  parser.add_argument("--gin_file", action="append", default=[],
                      help="gin file (repeatable; later files override earlier ones)")
  parser.add_argument("--gin_search_paths", default="",
                      help="comma-separated directories in which to look for gin files")
  parser.add_argument("--gin_bindings", action="append", default=[],
                      help="a gin binding, e.g. 'train.batch_size = 8' (repeatable)")
  args, rest = parser.parse_known_args(list(argv))
  bindings = list(args.gin_bindings)
  for arg in rest:
    if arg.startswith("--gin.") and "=" in arg:
      key, value = arg[len("--gin."):].split("=", 1)
      bindings.append(f"{key} = {value}")
    else:
      parser.error(f"unrecognised argument {arg!r} (use --gin_file, --gin.X=Y, --gin_search_paths)")
  args.bindings = bindings
  return args


def configure(gin_files: Sequence[str], bindings: Sequence[str], search_paths: str = "") -> None:
  """Parses gin files and bindings, failing with one line that names the bad piece."""
  # Register every configurable (train, evaluate, pipeline, ...) so any gin file parses.
  import doremi_jax.pipeline  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
  paths = [p for p in search_paths.split(",") if p] + [os.getcwd(), REPO_GIN_DIR]
  for path in paths:
    gin.add_config_file_search_path(path)
  for f in gin_files:
    if not os.path.isabs(f) and not any(os.path.exists(os.path.join(p, f)) for p in paths):
      raise errors.DoremiError(f"gin file {f!r} not found (search paths: {', '.join(paths)})")
  root = logging.getLogger()
  level = root.level
  root.setLevel(logging.CRITICAL)  # gin logs every search-path miss as an ERROR
  try:
    gin.parse_config_files_and_bindings(list(gin_files), list(bindings), finalize_config=False)
  except (ValueError, KeyError, SyntaxError, ImportError, TypeError, IOError) as exc:
    raise errors.DoremiError(f"bad gin configuration: {_first_line(exc)}") from None
  finally:
    root.setLevel(level)


def _first_line(exc: BaseException) -> str:
  lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
  msg = lines[0] if lines else type(exc).__name__
  for ln in lines[1:]:
    if ln.startswith("In file") or ln.startswith("In bindings"):
      msg += f" ({ln})"
      break
  return msg


def call_configured(fn, *args, **kwargs):
  """Calls a gin-configured function, turning missing REQUIRED values into one line."""
  try:
    return fn(*args, **kwargs)
  except (RuntimeError, ValueError, TypeError) as exc:
    text = str(exc)
    if "Required bindings" in text or "gin.REQUIRED" in text or "REQUIRED" in text:
      raise errors.DoremiError(f"missing required gin value: {_first_line(exc)}") from None
    raise


def write_operative_config(path: str) -> None:
  with open(path, "w") as f:
    f.write(gin.operative_config_str())


_NO_DEFAULT = object()


def macro_value(name: str, default=_NO_DEFAULT):
  """The value of gin macro ``name`` (``default`` if unbound), for task modules that read
  settings at import time. It is evaluated the way a binding is, so the macro shows up
  in the operative ``config.gin``; an unbound macro without default, or one left at
  ``%gin.REQUIRED``, is a one-line error."""
  try:
    gin.query_parameter(f"%{name}")
  except ValueError:
    if default is _NO_DEFAULT:
      raise errors.DoremiError(f"missing required gin value: {name} (pass --gin.{name}=...)") from None
    return default
  value = gin.config.parse_value(f"%{name}").scoped_configurable_fn()
  if value is gin.REQUIRED:
    raise errors.DoremiError(f"missing required gin value: {name} (pass --gin.{name}=...)")
  return value


def macro_is_bound(name: str) -> bool:
  try:
    gin.query_parameter(f"%{name}")
    return True
  except ValueError:
    return False


def check_required(**values) -> None:
  """Fails with one line naming the first ``%gin.REQUIRED`` macro left unset.

  Keys are the macro names (``MODEL_DIR=model_dir``), as users pass them on the command line.
  """
  for macro, value in values.items():
    if value is gin.REQUIRED or repr(value) == "%gin.REQUIRED":
      raise errors.DoremiError(f"missing required gin value: {macro} (pass --gin.{macro}=...)")
