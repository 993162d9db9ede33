"""t5x-style gin command lines (``--gin_file``, ``--gin.X=Y``, ``--gin_search_paths``) and
the two configurables every run calls first: ``register_tasks`` and ``import_task_modules``.

The CLI modules import every module that defines configurables before they parse gin, so
this module imports nothing above it. Gin files are searched in ``--gin_search_paths``,
the working directory and the package's own ``gin/`` folder (``gin_dir``).
"""
from __future__ import annotations

import argparse
import importlib
import importlib.resources
import inspect
import logging
import os
import re
import sys
import tokenize
from pathlib import Path
from typing import Any, Callable, Sequence

import gin

import doremi_jax
from doremi_jax import errors, mixture_files, storage
from doremi_jax.data import domains
from doremi_jax.run import distributed

_INCLUDE = re.compile(r"""^\s*include\s+(['"])(?P<path>.+)\1\s*(#.*)?$""")


def gin_dir() -> Path:
  """The shipped gin files: package data ``doremi_jax/gin`` when installed, else the repo's
  ``gin/`` (a checkout run without installing)."""
  installed = importlib.resources.files(doremi_jax) / "gin"
  if installed.is_dir():
    return Path(str(installed))
  return doremi_jax.CHECKOUT_ROOT / "gin"


def parse_args(argv: Sequence[str], description: str) -> argparse.Namespace:
  """Parses gin flags; ``--gin.A.b=1`` and ``--gin.MACRO=2`` become gin bindings."""
  parser = errors.ArgumentParser(description=description)
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


def _find(path: str, search_paths: Sequence[str]) -> str:
  if os.path.isabs(path):
    if os.path.isfile(path):
      return path
  else:
    for base in search_paths:
      if os.path.isfile(os.path.join(base, path)):
        return os.path.abspath(os.path.join(base, path))
  raise errors.DoremiError(f"gin file {path!r} not found (search paths: {', '.join(search_paths)})")


def _expand(path: str, search_paths: Sequence[str], seen: tuple[str, ...] = ()) -> str:
  """The file's text with every ``include`` replaced by the included file's text.

  We resolve includes ourselves, through our search paths only: gin's own lookup also asks
  Python's import system, which fails on a working directory holding a folder named like
  the include's head (``runs/``, an output dir, is a namespace package there)."""
  if path in seen:
    raise errors.DoremiError(f"gin file {path!r} includes itself")
  lines = []
  with open(path) as f:
    for line in f:
      match = _INCLUDE.match(line)
      if match:
        lines.append(_expand(_find(match.group("path"), search_paths), search_paths,
                             seen + (path,)))
      else:
        lines.append(line.rstrip("\n"))
  return "\n".join(lines)


def configure(gin_files: Sequence[str], bindings: Sequence[str], search_paths: str = "") -> None:
  """Parses gin files and bindings, failing with one line that names the bad piece."""
  paths = [p for p in search_paths.split(",") if p] + [os.getcwd(), str(gin_dir())]
  texts = [(f, _expand(_find(f, paths), paths)) for f in gin_files]
  root = logging.getLogger()
  level = root.level
  root.setLevel(logging.CRITICAL)  # gin logs failed lookups as ERRORs before raising
  try:
    for name, text in texts:
      _parse(text, f"in {name}")
    for binding in bindings:  # one by one, so an error names its binding
      _parse(binding, f"in the binding {binding!r}")
  finally:
    root.setLevel(level)


_GIN_ERRORS = (ValueError, KeyError, SyntaxError, ImportError, TypeError, IOError,
               tokenize.TokenError)


def _parse(text: str, where: str) -> None:
  try:
    gin.parse_config(text)
  except _GIN_ERRORS as exc:
    raise errors.DoremiError(f"bad gin configuration: {_gin_message(exc, text)} ({where})"
                             ) from None


def _gin_message(exc: BaseException, text: str) -> str:
  """The parser's complaint and, for a syntax error, the line it is in."""
  if isinstance(exc, tokenize.TokenError):  # an unclosed bracket or string: at the end
    return f"unclosed bracket or string ({exc.args[0]})"
  lineno = getattr(exc, "lineno", None)
  lines = text.splitlines()
  if isinstance(exc, SyntaxError) and lineno and 0 < lineno <= len(lines):
    return f"syntax error at line {lineno}: {lines[lineno - 1].strip()!r} ({exc.msg})"
  return _first_line(exc)


def _first_line(exc: BaseException) -> str:
  lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
  return lines[0] if lines else type(exc).__name__


def _macro_name(value: Any) -> str | None:
  """The macro a value refers to (``%MACRO`` is the scope "MACRO" of gin.macro), or None."""
  if isinstance(value, gin.config.ConfigurableReference) and value.selector == "gin.macro":
    return "/".join(value.scopes)
  return None


def _unset(value: Any, seen: tuple[str, ...] = ()) -> str | None:
  """The macro left at ``%gin.REQUIRED`` behind a bound value (following macros), or None."""
  if value is gin.REQUIRED:
    return seen[-1] if seen else ""
  macro = _macro_name(value)
  if macro is not None:
    if macro in seen:
      cycle = " -> ".join(f"%{m}" for m in seen[seen.index(macro):] + (macro,))
      raise errors.DoremiError(f"gin macro {macro} refers to itself ({cycle}); bind it to "
                               f"a value, e.g. --gin.{macro}=...")
    return _unset(gin.query_parameter(f"%{macro}"), seen + (macro,))
  if isinstance(value, gin.config.ConfigurableReference) and value.selector == "gin.constant":
    return _unset(value.scoped_configurable_fn(), seen)
  return None


_UNRESOLVED = object()


def _resolve(value: Any) -> Any:
  """``value`` with macros and constants replaced by what they stand for, also inside
  dicts and lists (``TASK_FEATURE_LENGTHS = {"targets": %SEQUENCE_LENGTH}``)."""
  followed = set()
  while isinstance(value, gin.config.ConfigurableReference):
    macro = _macro_name(value)
    if macro is not None:
      if macro in followed:
        return _UNRESOLVED  # a cycle: missing_required names it
      followed.add(macro)
      value = gin.query_parameter(f"%{macro}")
    elif value.selector == "gin.constant":
      value = value.scoped_configurable_fn()
    else:
      return _UNRESOLVED
  if isinstance(value, dict):
    return {k: _resolve(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return type(value)(_resolve(v) for v in value)
  return value


def bound_value(key: str, default: Any) -> Any:
  """The value gin would pass for ``key`` (macros followed), or ``default`` if unbound,
  still ``%gin.REQUIRED`` or bound to a configurable (tools that read a run's settings
  without running it, e.g. the compile check)."""
  try:
    value = _resolve(gin.query_parameter(key))
  except ValueError:
    return default
  return default if value is gin.REQUIRED or value is _UNRESOLVED else value


def missing_required(fn: Callable, name: str | None = None) -> list[str]:
  """Parameters of configurable ``fn`` (registered as ``name``, by default its own) that
  would be ``gin.REQUIRED`` when called, named the way users set them (the macro behind a
  binding, else ``name.param``)."""
  missing = []
  for param in inspect.signature(fn).parameters.values():
    key = f"{name or fn.__name__}.{param.name}"
    try:
      value = gin.query_parameter(key)
    except ValueError:
      if param.default is gin.REQUIRED:
        missing.append(key)
      continue
    macro = _unset(value)
    if macro is not None:
      missing.append(macro or key)
  return missing


def call_configured(fn: Callable, *args, **kwargs):
  """Calls a gin-configured function after checking, by querying gin, that no required
  value is left unset (one-line error naming it)."""
  _require_bound(fn, fn.__name__)
  return fn(*args, **kwargs)


def build_configured(cls: type, name: str):
  """A gin-configured object (a config dataclass registered as ``name``, e.g.
  ``RunSettings`` as ``train``), after the same check."""
  _require_bound(cls, name)
  return cls()


def _require_bound(fn: Callable, name: str) -> None:
  missing = missing_required(fn, name)
  if missing:
    raise errors.DoremiError(f"missing required gin value: {missing[0]} "
                             f"(pass --gin.{missing[0]}=...)")


def write_operative_config(path: str) -> None:
  """Atomically: a start that fails to write it leaves no half file behind."""
  storage.write_atomic(path, gin.operative_config_str())


@gin.configurable
def register_tasks(registrars: Sequence[Callable[[], Sequence[str]]] = ()) -> list[str]:
  """Calls each registrar (bound in gin, e.g. ``[@register_embedded]``) once; returns the
  registered task names."""
  names: list[str] = []
  for registrar in registrars:
    names += list(call_configured(registrar))
  return names


@gin.configurable
def import_task_modules(modules: Sequence[str] = (),
                        mixture_or_task_module: str | None = None) -> None:
  """Registers exported mixtures (a ``.py`` module or weights ``.json`` by path) and imports
  user modules that register Tasks when imported; ``mixture_or_task_module`` is t5x's
  ``MIXTURE_OR_TASK_MODULE``, imported by name (an exported ``.gin`` sets it)."""
  for name in list(modules) + ([mixture_or_task_module] if mixture_or_task_module else []):
    if name.endswith(".py"):
      mixture_files.load_module(name)
    elif name.endswith(".json"):
      mixture_files.register_weights_file(name)
    elif name not in sys.modules:
      domains.import_task_modules([name])


def prepare_tasks() -> list[str]:
  """What every run does after parsing gin: register its domains, then exported mixtures."""
  names = call_configured(register_tasks)
  call_configured(import_task_modules)
  return names


def start_cli(argv: Sequence[str] | None, description: str) -> argparse.Namespace:
  """What every gin CLI does first: join the other hosts (when asked to), parse the flags."""
  distributed.maybe_initialize()
  return parse_args(sys.argv[1:] if argv is None else argv, description)
