"""Every configurable the shipped ``gin/runs`` files bind, registered in one call that every
command line makes before it parses gin (the domain registrars in ``tasks/`` are imported
by the experiments' own gin files, t5x style: ``import doremi_jax.tasks.synthetic``).

Importing a module registers its ``@gin.configurable``s; nothing else happens here, and
nothing happens at this module's import."""
from __future__ import annotations


def register_configurables() -> None:
  """The model, optimizer, mesh and rules, DoReMi, run settings, task registration,
  evaluation and the pipeline (``train``, ``evaluate``, ``pipeline``, ...)."""
  # pylint: disable=g-import-not-at-top,unused-import
  from doremi_jax.core import model, partitioning, steps, train_state  # noqa: F401
  from doremi_jax.run import config, evaluate, pipeline, settings  # noqa: F401
