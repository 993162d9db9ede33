"""Test-session environment.

Importing seqio (TensorFlow) in the pytest process sets ``TF_CPP_MIN_LOG_LEVEL=1`` in
``os.environ``, which every CLI started by a test would inherit; a user's shell has no
such setting, so the CLIs' own quiet default must apply in tests too.
"""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
