"""doremi-jax: DoReMi (Domain Reweighting with Minimax Optimization) in JAX."""
import logging as _logging
import os as _os
import sys as _sys

# TensorFlow (used by SeqIO for data only) and XLA are chatty on stderr; keep errors only.
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
_os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
_logging.getLogger("absl").setLevel(_logging.ERROR)

__version__ = "0.1.0"


def import_tensorflow_quietly() -> None:
  """Imports TensorFlow with fd 2 silenced: its C++ start-up lines ignore TF_CPP_MIN_LOG_LEVEL
  and would otherwise precede every one-line error of our CLIs."""
  if "tensorflow" in _sys.modules:
    return
  saved, devnull = _os.dup(2), _os.open(_os.devnull, _os.O_WRONLY)
  try:
    _os.dup2(devnull, 2)
    import tensorflow  # pylint: disable=g-import-not-at-top
    # TF is only a data library here: keep it off accelerators (JAX owns them). Done inside
    # the silenced window because probing for CUDA logs "failed call to cuInit" on machines
    # with CUDA libraries but no GPU, whatever TF_CPP_MIN_LOG_LEVEL says.
    tensorflow.config.set_visible_devices([], "GPU")
  finally:
    _os.dup2(saved, 2)
    _os.close(saved)
    _os.close(devnull)
