"""The package's layers point down only: every import statement (lazy ones included) of a
module names a module of a lower layer or of its own folder; a training run never imports
the corpus downloader."""
from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Lowest first. A module may import its own folder and anything in an earlier layer.
LAYERS = (
    ("doremi_jax", "doremi_jax.errors", "doremi_jax.storage", "doremi_jax.tables"),
    ("doremi_jax.core", "doremi_jax.data"),
    ("doremi_jax.corpora",),
    ("doremi_jax.mixtures", "doremi_jax.unimax"),
    ("doremi_jax.mixture_files",),
    ("doremi_jax.run", "doremi_jax.tasks"),
    ("doremi_jax.train", "doremi_jax.evaluate", "doremi_jax.pipeline", "doremi_jax.corpus",
     "doremi_jax.export", "doremi_jax.compile_check"),
)


def _modules() -> dict[str, Path]:
  found = {}
  for root, package in ((REPO / "doremi_jax", "doremi_jax"), (REPO / "tasks", "doremi_jax.tasks")):
    for path in root.rglob("*.py"):
      parts = [package, *path.relative_to(root).with_suffix("").parts]
      if parts[-1] == "__init__":
        parts.pop()
      found[".".join(parts)] = path
  return found


def _group(module: str) -> tuple[int, str]:
  """(layer, group) of a module: the longest LAYERS entry that is it or a parent of it."""
  best = None
  for rank, names in enumerate(LAYERS):
    for name in names:
      if (module == name or module.startswith(name + ".")) and (
          best is None or len(name) > len(best[1])):
        best = (rank, name)
  assert best is not None, module
  return best


def _imports(path: Path, module: str) -> set[str]:
  package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
  out = set()
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.Import):
      out.update(a.name for a in node.names)
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ""
      if node.level:
        parts = package.split(".")[: len(package.split(".")) - node.level + 1]
        base = ".".join(parts + ([base] if base else []))
      out.update([base] + [f"{base}.{a.name}" for a in node.names])
  return {m for m in out if m == "doremi_jax" or m.startswith("doremi_jax.")}


def test_imports_point_down():
  modules = _modules()
  upward = []
  for module, path in modules.items():
    rank, group = _group(module)
    for target in _imports(path, module):
      if target not in modules:
        continue  # a name imported from a module, e.g. doremi_jax.core.steps.DoremiConfig
      target_rank, target_group = _group(target)
      if target_group != group and target_rank >= rank:
        upward.append(f"{module} -> {target}")
  assert not upward, upward


def test_training_does_not_reach_the_corpus_downloader():
  modules = _modules()
  seen, todo = set(), ["doremi_jax.train"]
  while todo:
    module = todo.pop()
    if module in seen or module not in modules:
      continue
    seen.add(module)
    todo += [t for t in _imports(modules[module], module) if t in modules]
  assert "doremi_jax.corpora.corpus_build" not in seen
  assert "doremi_jax.tasks.embedded" not in seen  # task modules come from the gin files
