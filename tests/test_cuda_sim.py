"""The CUDA kernels, run in numba's simulator, against the CPU kernels: same trajectories,
same estimates (to 1e-12 relative) for every estimator family. The simulator must be enabled
before numba is imported, so the comparison runs in a fresh process."""
import json
import os
import subprocess
import sys

import pytest

# numba itself still ships a deprecated built-in numba.cuda: ask for the numba-cuda package
pytest.importorskip("numba_cuda", reason="numba-cuda (the 'cuda' extra) is not installed")

HERE = os.path.dirname(__file__)


@pytest.fixture(scope="module")
def sim_results():
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    proc = subprocess.run([sys.executable, os.path.join(HERE, "cuda_sim_check.py")], capture_output=True, text=True,
                          env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


def test_same_trajectories(sim_results):
    for name, r in sim_results.items():
        assert r["some_steps"] > 10, name
        assert r["same_states"], name
        assert r["same_actions"], name


def test_same_estimates_every_family(sim_results):
    for name, r in sim_results.items():
        for fam, d in r["max_rel_diff"].items():
            assert d <= 1e-12, (name, fam, d)
        assert r["proxy_max_abs_diff"] <= 1e-9, name


def test_cuda_backend_refused_clearly_without_device():
    # in this (non-simulator) process with no GPU, asking for cuda names the reason
    code = ("import pgbench.cli as c, sys; sys.exit(c.main(['measure','three_step_bandit','-e','reinforce',"
            "'-N','4','-K','3','--backend','cuda']))")
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    from numba import cuda
    if cuda.is_available():
        pytest.skip("a CUDA device is present")
    assert proc.returncode == 2
    assert proc.stderr.startswith("pgbench: error: backend 'cuda' requested but")
    assert "Traceback" not in proc.stderr
