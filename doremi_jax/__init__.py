"""doremi-jax: DoReMi (Domain Reweighting with Minimax Optimization) in JAX."""
import importlib.util as _importlib_util
import logging as _logging
import os as _os
import sys as _sys
from pathlib import Path as _Path

# TensorFlow (used by SeqIO for data only) and XLA are chatty on stderr; keep errors only.
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
_os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
_logging.getLogger("absl").setLevel(_logging.ERROR)

__version__ = "0.1.0"

# The repo keeps domain registrations in ``tasks/`` and configs in ``gin/``; a wheel installs
# them as ``doremi_jax/tasks`` and ``doremi_jax/gin``. Run from a checkout (not installed),
# ``doremi_jax.tasks`` is the repo's ``tasks/`` folder, set up here, once.
CHECKOUT_ROOT = _Path(__file__).resolve().parent.parent


def _link_checkout_tasks() -> None:
  if "doremi_jax.tasks" in _sys.modules or _os.path.isdir(_os.path.join(__path__[0], "tasks")):
    return
  init = CHECKOUT_ROOT / "tasks" / "__init__.py"
  if not init.is_file():
    return
  spec = _importlib_util.spec_from_file_location(
      "doremi_jax.tasks", init, submodule_search_locations=[str(init.parent)])
  module = _importlib_util.module_from_spec(spec)
  _sys.modules["doremi_jax.tasks"] = module
  spec.loader.exec_module(module)


_link_checkout_tasks()


def import_tensorflow_quietly() -> None:
  """Imports TensorFlow with fd 2 silenced and hides accelerators from it (JAX owns them;
  TF only reads data): its C++ start-up lines, and a failed CUDA probe when it lists
  devices, ignore TF_CPP_MIN_LOG_LEVEL and would otherwise precede every one-line error
  of our CLIs."""
  if "tensorflow" in _sys.modules:
    return
  saved, devnull = _os.dup(2), _os.open(_os.devnull, _os.O_WRONLY)
  try:
    _os.dup2(devnull, 2)
    import tensorflow  # here, not at the top: seconds to load, only where data is read
    # TF is only a data library here: keep it off accelerators (JAX owns them). Done inside
    # the silenced window because probing for CUDA logs "failed call to cuInit" on machines
    # with CUDA libraries but no GPU, whatever TF_CPP_MIN_LOG_LEVEL says.
    tensorflow.config.set_visible_devices([], "GPU")
  finally:
    _os.dup2(saved, 2)
    _os.close(saved)
    _os.close(devnull)
