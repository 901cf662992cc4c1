"""Measurement: the sampling engine, metrics with standard errors, and ``measure()``.

``pgbench.measure.measure`` is the function; the module that defines it, :func:`run_cell` (the K
trial estimates of a cell, before any statistics) and :func:`summarize_cell` is
:mod:`pgbench.measure.api`."""
from pgbench.measure.api import Cell, measure, run_cell, summarize_cell, RESULT_COLUMNS

__all__ = ["measure", "run_cell", "summarize_cell", "Cell", "RESULT_COLUMNS"]
