"""Measurement: the sampling engine, metrics with standard errors, and ``measure()``."""
from pgbench.measure.measure import measure, run_cell, summarize_cell, RESULT_COLUMNS

__all__ = ["measure", "run_cell", "summarize_cell", "RESULT_COLUMNS"]
