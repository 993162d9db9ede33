"""Domain registrars, installed as ``doremi_jax.tasks`` (``setup.py`` maps this folder).

Each module defines gin-configurable functions that register SeqIO Tasks and Mixtures
when called (``register_tasks.registrars`` in an experiment's gin file); importing a
module registers nothing.
"""
