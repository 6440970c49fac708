"""The ``autokd`` command line: thin typer commands, each calling one library function.

  ``app``      the Typer app, ``main``, and the commands models, datasets, train, search, studies
  ``distill``  ``autokd distill`` (over :func:`autokd.student.distill_student`)
  ``pareto``   ``autokd pareto`` and ``autokd export``
  ``latency``  ``autokd latency calibrate`` (over :func:`autokd.calibrate.calibrate`)
  ``common``   consoles, one-line errors, the epoch printer
  ``options``  options whose default and help come from the dataclass fields
"""
from .app import app, main

__all__ = ["app", "main"]
