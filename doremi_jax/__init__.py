"""doremi-jax: DoReMi (Domain Reweighting with Minimax Optimization) in JAX."""
import logging as _logging
import os as _os

# TensorFlow (used by SeqIO for data only) and XLA are chatty on stderr; keep errors only.
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
_os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
_logging.getLogger("absl").setLevel(_logging.ERROR)

__version__ = "0.1.0"
