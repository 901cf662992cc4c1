"""pgbench's pytest plugin (``pgbench.pytest_plugin``, entry point ``pytest11``), run in
throw-away pytest sessions (pytester). The measured cell is cheap: three_step_bandit at N=16 with
20 trials (well under a second)."""
from __future__ import annotations

import json
import os

import pandas as pd
import pytest

from pgbench.pytest_plugin import P_FLAG, summary_lines
# pytester's in-process sessions drop the modules they imported afterwards; numba registers its
# types globally and cannot be imported twice, so what the sessions use is imported here first
# (`import pgbench` alone is lazy and imports none of it)
import pgbench.measure.api  # noqa: E402,F401
import pgbench.reports.report  # noqa: E402,F401
import pgbench.suites.runner  # noqa: E402,F401
from numba.core.registry import cpu_target  # noqa: E402

cpu_target.target_context.refresh()  # numba's lazily loaded registries (first compile or cache load)
from pgbench.suites.store import RunDir, cell_filename

pytest_plugins = ["pytester"]

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHEAP = ("--pgbench-quick", "--pgbench-trials", "20")
LADDER = {"reinforce", "reinforce_rtg", "value_baseline", "rloo"}

CELL_TEST = """
def test_ladder(pgbench_cell):
    rec = pgbench_cell("ladder/three-step-bandit", 16)
    assert rec["cell"] == "ladder/three-step-bandit/N=16"
    assert rec["K"] == 20 and rec["quick"] is True and rec["seed"] == 0
    assert {r["estimator"] for r in rec["rows"]} == {"reinforce", "reinforce_rtg", "value_baseline", "rloo"}
"""


@pytest.fixture(autouse=True)
def _figures_in_process(monkeypatch):
    """pytester's in-process sessions restore sys.modules afterwards, which breaks pickling for
    the report's spawned figure workers in a second session: draw in the process itself."""
    monkeypatch.setenv("PGBENCH_REPORT_WORKERS", "1")


def _json(path):
    with open(path) as f:
        return json.load(f)


def test_options_are_registered(pytester):
    res = pytester.runpytest("--help")
    for opt in ("--pgbench-quick", "--pgbench-trials", "--pgbench-out", "--pgbench-seed"):
        res.stdout.fnmatch_lines([f"*{opt}*"])


def test_inert_in_sessions_that_do_not_use_it(pytester):
    pytester.makepyfile("def test_plain():\n    assert True\n")
    before = set(os.listdir(pytester.path))
    res = pytester.runpytest("-p", "no:cacheprovider")
    res.assert_outcomes(passed=1)
    # pytest's header lists the plugin ("plugins: pgbench-0.1.0, ..."); nothing else mentions it
    lines = [ln for ln in res.stdout.lines + res.stderr.lines if not ln.startswith("plugins:")]
    assert not [ln for ln in lines if "pgbench" in ln]
    assert set(os.listdir(pytester.path)) - {".benchmarks"} == before  # (.benchmarks: pytest-benchmark's storage)


def test_bad_trials_is_a_usage_error(pytester):
    pytester.makepyfile("def test_plain():\n    pass\n")
    res = pytester.runpytest("--pgbench-trials", "1")
    assert res.ret == pytest.ExitCode.USAGE_ERROR
    assert "--pgbench-trials" in res.stderr.str()


def test_cell_metrics_in_benchmark_json_and_summary(pytester):
    pytester.makepyfile(CELL_TEST)
    res = pytester.runpytest(*CHEAP, "--benchmark-json", "bench.json")
    res.assert_outcomes(passed=1)
    bench = _json(pytester.path / "bench.json")
    (b,) = bench["benchmarks"]
    assert b["stats"]["rounds"] == 1  # the cell is measured exactly once, and timed
    info = b["extra_info"]
    assert info["cell"] == "ladder/three-step-bandit/N=16" and info["K"] == 20 and info["quick"] is True
    assert set(info["metrics"]) == LADDER
    for m in info["metrics"].values():
        for k in ("bias_norm", "bias_norm_se", "variance", "variance_se", "mse", "mse_se", "p_value", "cosine"):
            assert isinstance(m[k], float), k
        assert m["unbiased"] is True
    assert bench["pgbench"] == {"quick": True, "trials": 20, "seed": 0, "out": None}
    out = res.stdout.str()
    res.stdout.fnmatch_lines(["*pgbench: statistical metrics*",
                              "ladder/three-step-bandit/N=16  (K=20, seed=0, *",
                              "*estimator*unb*|bias| ± se*variance ± se*MSE ± se*p-value*",
                              "1 cell(s); *"])
    for est in LADDER:
        assert f"  {est} " in out


def test_generic_measure_fixture(pytester):
    pytester.makepyfile("""
        def test_measure(pgbench_measure):
            df = pgbench_measure("three_step_bandit", ["reinforce", "reinforce_rtg"], batch=8, trials=20, seed=3)
            assert list(df["estimator"]) == ["reinforce", "reinforce_rtg"] and (df["K"] == 20).all()
    """)
    res = pytester.runpytest("--benchmark-json", "bench.json")
    res.assert_outcomes(passed=1)
    info = _json(pytester.path / "bench.json")["benchmarks"][0]["extra_info"]
    assert info["cell"] == "three_step_bandit/N=8" and info["seed"] == 3
    assert set(info["metrics"]) == {"reinforce", "reinforce_rtg"}
    res.stdout.fnmatch_lines(["three_step_bandit/N=8  (K=20, seed=3, *"])


def test_out_writes_a_run_directory(pytester):
    pytester.makepyfile(CELL_TEST)
    res = pytester.runpytest(*CHEAP, "--benchmark-json", "bench.json", "--pgbench-out", "run")
    res.assert_outcomes(passed=1)
    run = pytester.path / "run"
    meta = _json(run / "meta.json")
    assert meta["status"] == "complete" and meta["source"] == "pytest"
    assert meta["suites"] == ["ladder/three-step-bandit"] and meta["quick"] is True and meta["trials"] == 20
    assert meta["ended"] is not None
    cell = _json(run / "cells" / cell_filename("ladder/three-step-bandit/N=16"))
    assert cell["K"] == 20 and {r["estimator"] for r in cell["rows"]} == LADDER
    df = pd.read_csv(run / "results.csv")
    assert len(df) == 4 and set(df["cell"]) == {"ladder/three-step-bandit/N=16"}
    assert (run / "paired.csv").exists()
    # the report files a run directory holds, as `pgbench run` writes them
    assert "ladder/three-step-bandit" in (run / "report.md").read_text()
    assert (run / "report.html").stat().st_size > 0
    res.stdout.fnmatch_lines([f"pgbench: report {run / 'report.md'} and report.html"])
    assert (run / "benchmark.json").read_bytes() == (pytester.path / "bench.json").read_bytes()
    assert _json(run / "benchmark.json")["pgbench"]["out"] == str(run)
    assert len(RunDir.open(str(run)).cells()) == 1
    res.stdout.fnmatch_lines([f"pgbench: run directory {run}"])
    # a second session does not overwrite the run
    res = pytester.runpytest(*CHEAP, "--pgbench-out", "run")
    assert res.ret == pytest.ExitCode.USAGE_ERROR
    assert "already holds a pgbench run" in res.stderr.str()


def test_out_without_benchmark_json(pytester):
    pytester.makepyfile(CELL_TEST)
    pytester.runpytest(*CHEAP, "--pgbench-out", "run").assert_outcomes(passed=1)
    assert sorted(os.listdir(pytester.path / "run" / "cells")) == [cell_filename("ladder/three-step-bandit/N=16")]
    assert not (pytester.path / "run" / "benchmark.json").exists()


def test_a_failed_measurement_leaves_the_run_incomplete(pytester):
    pytester.makepyfile("""
        import pytest
        from pgbench.errors import PGBenchError

        def test_bad_batch(pgbench_cell):
            with pytest.raises(PGBenchError):
                pgbench_cell("ladder/three-step-bandit", 0)
    """)
    pytester.runpytest(*CHEAP, "--pgbench-out", "run").assert_outcomes(passed=1)
    meta = _json(pytester.path / "run" / "meta.json")
    assert meta["status"] == "incomplete" and os.listdir(pytester.path / "run" / "cells") == []


def test_summary_flags_claimed_unbiased_with_small_p():
    rows = [
        {"estimator": "honest", "unbiased": True, "bias_norm": 0.01, "bias_norm_se": 0.01, "variance": 1.0,
         "variance_se": 0.1, "mse": 1.0, "mse_se": 0.1, "p_value": 0.5},
        {"estimator": "suspect", "unbiased": True, "bias_norm": 0.5, "bias_norm_se": 0.01, "variance": 1.0,
         "variance_se": 0.1, "mse": 1.25, "mse_se": 0.1, "p_value": P_FLAG / 10},
        {"estimator": "biased_by_design", "unbiased": False, "bias_norm": 0.5, "bias_norm_se": 0.01,
         "variance": 1.0, "variance_se": 0.1, "mse": 1.25, "mse_se": 0.1, "p_value": 1e-30},
        {"estimator": "degenerate", "unbiased": True, "bias_norm": None, "bias_norm_se": None, "variance": None,
         "variance_se": None, "mse": None, "mse_se": None, "p_value": None},
    ]
    lines = summary_lines([{"cell": "x/N=4", "K": 10, "seed": 0, "seconds": 0.5, "rows": rows}])
    assert lines[0] == ("x/N=4  (K=10, seed=0, 0.50 s)", False)
    by_est = {line.split()[0]: (line, flag) for line, flag in lines[2:]}
    assert [e for e, (_, flag) in by_est.items() if flag] == ["suspect"]
    assert by_est["suspect"][0].endswith("!") and "1.00e-04" in by_est["suspect"][0]
    assert "5.000e-01 ± 1.0e-02" in by_est["suspect"][0]
    assert "nan ± nan" in by_est["degenerate"][0]
    assert summary_lines([]) == []


def test_suites_are_collected_one_test_per_cell(pytester):
    from pgbench.suites.registry import SUITES
    for quick in (True, False):
        res = pytester.runpytest(os.path.join(ROOT, "suites"), "--collect-only", "-q",
                                 "-p", "no:cacheprovider", *(["--pgbench-quick"] if quick else []))
        ids = [line.split("::", 1)[1] for line in res.stdout.lines if "test_suites.py::" in line]
        assert ids == [f"test_cell[{s.id}/N={N}]" for s in SUITES.values() for N in s.cells(quick)]
        assert any("test_throughput.py::test_kernel" in line for line in res.stdout.lines)


def test_plugin_import_is_cheap():
    """Loaded into every pytest session of the environment: importing it must not import numba,
    NumPy, SciPy, pandas or matplotlib (they cost about 0.5 s before any pgbench option or
    fixture is used)."""
    import subprocess
    import sys
    code = ("import sys, pgbench.pytest_plugin; "
            "print(sorted(m for m in ('numba', 'numpy', 'scipy', 'pandas', 'matplotlib', 'pgbench.problems') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_fixtures_work_without_pytest_benchmark(pytester):
    """pytest-benchmark is an extra, not a dependency: without it the fixtures still measure."""
    pytester.makepyfile(CELL_TEST)
    res = pytester.runpytest("-p", "no:benchmark", *CHEAP, "--pgbench-out", "run")
    res.assert_outcomes(passed=1)
    assert _json(pytester.path / "run" / "meta.json")["status"] == "complete"
    res.stdout.fnmatch_lines(["*ladder/three-step-bandit/N=16*"])


def test_pytest_packages_are_not_runtime_dependencies():
    import tomllib
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        project = tomllib.load(f)["project"]
    names = {d.split(">")[0].split("=")[0].split("[")[0].strip().lower() for d in project["dependencies"]}
    assert not names & {"pytest", "pytest-benchmark", "py-cpuinfo"}
    assert any(d.startswith("pytest-benchmark") for d in project["optional-dependencies"]["test"])
