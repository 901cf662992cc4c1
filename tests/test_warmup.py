"""The cold-start helper process: cell order, waiting before the first MDP cell, and that the
second process really leaves the MDP sampler in numba's on-disk cache."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from pgbench.suites import warmup


class FakeProc:
    def __init__(self, running: bool):
        self.running = running
        self.waited = self.killed = False

    def poll(self):
        return None if self.running else 0

    def wait(self):
        self.waited = True
        self.running = False
        return 0

    def kill(self):
        self.killed = True


CELLS = [("ladder/a", 1), ("objectives/b", 10), ("ladder/a", 16), ("control/c", 16), ("oracles/d", 16)]
IS_MDP = {"ladder/a": True, "objectives/b": False, "control/c": False, "oracles/d": True}.__getitem__


def test_cold_start_puts_non_mdp_cells_first_and_waits_before_the_first_mdp_cell(monkeypatch):
    proc = FakeProc(running=True)
    compiled = []
    monkeypatch.setattr(warmup, "_start", lambda: proc)
    monkeypatch.setattr(warmup, "compile_exact", lambda: compiled.append(True))
    monkeypatch.setattr(warmup.os, "cpu_count", lambda: 2)
    cold = warmup.ColdStart(CELLS, IS_MDP)
    assert cold.cells == [("objectives/b", 10), ("control/c", 16), ("ladder/a", 1), ("ladder/a", 16),
                          ("oracles/d", 16)]
    assert sorted(cold.cells) == sorted(CELLS)  # the same cells, reordered
    cold.before("objectives/b")
    cold.before("control/c")
    assert not proc.waited and not compiled
    cold.before("ladder/a")  # still compiling: the DP is compiled here meanwhile, then we wait
    assert proc.waited and compiled == [True]
    cold.before("oracles/d")  # waited once only
    assert compiled == [True]
    cold.close()
    assert not proc.killed


def test_cold_start_without_a_second_core_or_process_keeps_the_order(monkeypatch):
    monkeypatch.setattr(warmup.os, "cpu_count", lambda: 1)
    monkeypatch.setattr(warmup, "_start", lambda: pytest.fail("no second process on one core"))
    assert warmup.ColdStart(CELLS, IS_MDP).cells == CELLS
    monkeypatch.setattr(warmup.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(warmup, "_start", lambda: None)  # could not start: run as before
    cold = warmup.ColdStart(CELLS, IS_MDP)
    assert cold.cells == CELLS
    cold.before("ladder/a")


def test_an_interrupted_run_stops_the_second_process(monkeypatch):
    proc = FakeProc(running=True)
    monkeypatch.setattr(warmup, "_start", lambda: proc)
    monkeypatch.setattr(warmup.os, "cpu_count", lambda: 2)
    cold = warmup.ColdStart(CELLS, IS_MDP)
    cold.close()
    assert proc.killed and proc.waited


def test_the_warmup_process_fills_numbas_cache(tmp_path):
    """A fresh cache: before, the runner's check says 'not cached'; the second process exits 0;
    after, the sampler's index files are there (a run would load, not compile)."""
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "cache"))
    import pgbench
    root = os.path.dirname(os.path.dirname(os.path.abspath(pgbench.__file__)))
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    check = [sys.executable, "-c", "from pgbench.suites.runner import kernels_cached; print(kernels_cached())"]
    assert subprocess.run(check, env=env, capture_output=True, text=True, check=True).stdout.strip() == "False"
    done = subprocess.run([sys.executable, "-m", "pgbench.suites.warmup"], env=env, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    assert subprocess.run(check, env=env, capture_output=True, text=True, check=True).stdout.strip() == "True"
