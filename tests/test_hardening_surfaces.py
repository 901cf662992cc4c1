"""The surfaces added last, hardened: child processes, batch sizes, the run lock, what user code
receives, LogitsPolicy checks, --json and plug-in exits, non-finite exact results, extreme
magnitudes. Each case ends in a correct result or one clear error naming the input."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from pgbench import PGBenchError, make
from pgbench.estimators import register_batch_estimator, unregister_batch_estimator
from pgbench.measure.measure import measure

SMALL = "garnet:S=3,A=2,b=2,seed=0,horizon=3"


@pytest.fixture
def registered():
    names = []

    def reg(name, fn, **kw):
        register_batch_estimator(name, unbiased=kw.pop("unbiased", True), replace=True, **kw)(fn)
        names.append(name)
        return name

    yield reg
    for n in names:
        unregister_batch_estimator(n)


# ------------------------------------------------------------------ 1. no child imports from the cwd


def _plant(directory, module: str, marker) -> None:
    (directory / f"{module}.py").write_text(
        f"open({str(marker)!r}, 'w').write('ran')\nraise ImportError('planted {module}')\n")


def test_warmup_child_does_not_import_from_the_working_directory(tmp_path, monkeypatch):
    from pgbench.suites import warmup
    marker = tmp_path / "marker"
    _plant(tmp_path, "numpy", marker)
    monkeypatch.chdir(tmp_path)
    proc = warmup._start()
    assert proc is not None
    assert proc.wait(timeout=600) == 0  # it compiled (or loaded) the sampler with the real numpy
    assert not marker.exists()


def _double(x):
    return 2 * x


def test_report_figure_workers_do_not_import_from_the_working_directory(tmp_path, monkeypatch):
    from pgbench.reports import report
    marker = tmp_path / "marker"
    _plant(tmp_path, "multiprocessing", marker)
    monkeypatch.setenv(report.REPORT_WORKERS_ENV, "2")
    monkeypatch.chdir(tmp_path)
    r = report._Renderer()
    try:
        from pgbench.reports.figures import render
        from concurrent.futures.process import BrokenProcessPool
        from pgbench.children import SAFE_PATH_ENV
        before = os.environ.get(SAFE_PATH_ENV)
        job = r.submit(_double, (1,), {})
        assert os.environ.get(SAFE_PATH_ENV) == before  # the environment is restored
        try:
            job.result(timeout=300)
        except BrokenProcessPool:
            pytest.fail("the worker died (it imported the planted multiprocessing.py)")
        except Exception:
            pass  # _double's result is no figure: png_bytes refuses it in the worker, which ran
    finally:
        r.close()
    assert not marker.exists()


# ------------------------------------------------------------ 2. common and large batch sizes


def test_count_batches_beyond_a_float_is_infinite():
    from pgbench.exact.moments import count_batches
    assert count_batches(10, 3) == 220.0
    assert count_batches(1, 4096) == 1.0
    assert count_batches(400, 4096) == float("inf")  # about 1e590
    assert count_batches(1e12, 4096) == float("inf")


MDP_ESTIMATORS = ["reinforce", "reinforce_rtg", "rtg_no_gamma_t", "const_baseline:b=0.5", "batch_mean_baseline",
                  "rloo", "w_baseline", "w_baseline_loo", "score_norm_baseline", "optimal_const_baseline",
                  "value_baseline", "time_baseline_loo", "true_advantage", "all_action", "gae",
                  "gae:critic=fitted", "td0", "geometric_termination", "importance_sampling", "entropy_bonus",
                  "natural", "ppo_gae", "normalized_advantage", "gpomdp_baseline"]


def _mean_psi(batch):
    return batch.rewards - batch.rewards.mean()


@pytest.mark.parametrize("N", [100, 128, 200, 4096])
def test_every_estimator_runs_at_common_and_large_batch_sizes(registered, N):
    user = registered("t_mean_psi", _mean_psi, unbiased=False)
    df = measure(SMALL, MDP_ESTIMATORS + [user], batch=N, trials=2)
    assert len(df) == len(MDP_ESTIMATORS) + 1
    assert np.isfinite(df["bias_norm"]).all()


@pytest.mark.parametrize("problem,ests", [
    ("gaussian_toy", ["naive", "score_function", "reparameterization"]),
    ("categorical", ["score_function", "rloo", "gumbel_softmax", "straight_through"]),
    ("lqg:n=2,m=1,T=5", ["reinforce", "reinforce_rtg", "value_baseline", "svg_inf", "svg0", "mppi"]),
])
def test_objective_and_lqg_estimators_run_at_n_4096(problem, ests):
    df = measure(problem, ests, batch=4096, trials=2)
    assert len(df) == len(ests) and np.isfinite(df["bias_norm"]).all()


# ----------------------------------------------------------------------------------- 3. the run lock


def _cli(capsys, *argv):
    from conftest import run_cli
    return run_cli(capsys, *argv)


def test_a_planted_lock_symlink_is_refused_and_its_target_untouched(capsys, tmp_path):
    from pgbench.errors import RunLockedError
    from pgbench.suites.store import RunLock
    out = tmp_path / "run"
    out.mkdir()
    target = tmp_path / "precious.txt"
    target.write_text("the user's file\n")
    os.symlink(target, out / ".lock")
    with pytest.raises(RunLockedError, match="symbolic link"):
        RunLock(str(out)).acquire()
    rc, stdout, err = _cli(capsys, "run", "--quick", "ladder/three-step-bandit", "--out", str(out), "--no-report")
    assert rc == 1 and stdout == "" and err.startswith("pgbench: error: ") and err.count("\n") == 1, err
    assert ".lock" in err and "symbolic link" in err
    assert target.read_text() == "the user's file\n"
    assert os.path.islink(out / ".lock") and sorted(os.listdir(out)) == [".lock"]
    os.unlink(out / ".lock")
    os.mkdir(out / ".lock")  # a directory is no lock file either
    with pytest.raises(RunLockedError, match="not a regular file"):
        RunLock(str(out)).acquire()


def test_taking_over_a_stale_lock_writes_no_nul_padding(tmp_path):
    import json
    from pgbench.errors import RunLockedError
    from pgbench.suites.store import RunLock
    out = tmp_path / "run"
    out.mkdir()
    stale = {"pid": 999999, "host": "a-host-with-a-rather-long-name.example.org", "since": "2020-01-01T00:00:00",
             "padding": "x" * 200}
    (out / ".lock").write_text(json.dumps(stale))  # no process holds its flock: stale
    lock = RunLock(str(out)).acquire()
    try:
        assert lock.took_over and "pid 999999" in lock.took_over
        data = (out / ".lock").read_bytes()
        assert b"\0" not in data
        assert json.loads(data)["pid"] == os.getpid()
        code = ("import sys; from pgbench.suites.store import RunLock; RunLock(sys.argv[1]).acquire()")
        res = subprocess.run([sys.executable, "-c", code, str(out)], capture_output=True, text=True, timeout=120)
        assert res.returncode != 0 and RunLockedError.__name__ in res.stderr
        assert f"pid {os.getpid()} on" in res.stderr  # the holder is named in the refusal
    finally:
        lock.release()
