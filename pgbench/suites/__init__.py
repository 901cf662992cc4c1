"""Suites declared as data, the runner and the results store."""
from pgbench.suites.registry import SUITES, Suite, get_suite, select

__all__ = ["SUITES", "Suite", "get_suite", "select"]
