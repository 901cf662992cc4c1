"""What a run says on stderr when nobody is watching a terminal (CI, a redirect)."""
from __future__ import annotations

import re

from pgbench.suites.runner import run

SUITES = ["objectives/gaussian-toy"]  # quick cells, no MDP kernel, well under a second


def test_a_line_per_finished_cell_and_report_progress_without_a_terminal(tmp_path, capsys):
    out = run(SUITES, quick=True, out=str(tmp_path / "run"), seed=0)  # progress=None: auto
    err = capsys.readouterr().err
    from pgbench.suites.registry import get_suite
    n = len(get_suite(SUITES[0]).cells(True))
    done = re.findall(r"^pgbench: cell (\d+)/(\d+) done: (\S+) N=(\d+)", err, flags=re.M)
    assert [(int(i), int(t)) for i, t, _, _ in done] == [(i + 1, n) for i in range(n)]
    assert {s for _, _, s, _ in done} == set(SUITES)
    assert "pgbench: writing the report" in err and f"report: suite 1/1 {SUITES[0]}" in err
    assert out.endswith("run")


def test_progress_false_is_silent(tmp_path, capsys):
    run(SUITES, quick=True, out=str(tmp_path / "run"), seed=0, progress=False)
    assert capsys.readouterr().err == ""


def test_a_cold_kernel_cache_is_announced(tmp_path, capsys, monkeypatch):
    import pgbench.suites.runner as R
    monkeypatch.setattr(R, "kernels_cached", lambda: False)
    run(SUITES, quick=True, out=str(tmp_path / "run"), seed=0, report=False)
    assert "pgbench: compiling kernels (first run only" in capsys.readouterr().err
    monkeypatch.setattr(R, "kernels_cached", lambda: True)
    run(SUITES, quick=True, out=str(tmp_path / "run2"), seed=0, report=False)
    assert "compiling" not in capsys.readouterr().err


def test_kernels_cached_reads_numba_s_cache_index():
    import os
    from pgbench.kernels import mdp
    from pgbench.suites.runner import kernels_cached
    paths = [getattr(mdp, n)._cache._cache_file._index_path for n in ("_batch_stats", "_score_weights")]
    assert kernels_cached() == all(os.path.exists(p) for p in paths)
