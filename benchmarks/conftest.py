"""Benchmarks live outside ``testpaths`` (plain ``pytest`` never runs them); run them explicitly,
``.venv/bin/python -m pytest benchmarks/bench_exact.py --benchmark-only`` (a file named on the
command line is collected whatever its name)."""
from __future__ import annotations

import pytest

_NOTES: list[str] = []


@pytest.fixture
def record_note():
    """Lines printed in the terminal summary (figures that are not timings, e.g. peak memory)."""
    return _NOTES.append


def pytest_terminal_summary(terminalreporter):
    if _NOTES:
        terminalreporter.section("benchmark notes")
        for line in _NOTES:
            terminalreporter.write_line(line)
