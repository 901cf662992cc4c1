"""benchmarks/gpu_check.py: runs end to end in numba's CUDA simulator (tiny sizes) and, where no
GPU is usable, says why, writes that to its JSON and exits with status 1."""
import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("numba.cuda", reason="numba-cuda (the 'cuda' extra) is not installed")

SCRIPT = os.path.join(os.path.dirname(__file__), os.pardir, "benchmarks", "gpu_check.py")


def _run(tmp_path, **env):
    out = tmp_path / "gpu.json"
    proc = subprocess.run([sys.executable, SCRIPT, str(out)], capture_output=True, text=True, timeout=900,
                          env=dict(os.environ, **env))
    return proc, json.loads(out.read_text())


def test_gpu_check_in_the_simulator(tmp_path):
    proc, res = _run(tmp_path, NUMBA_ENABLE_CUDASIM="1")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert res["simulator"] and len(res["equality"]) == 3
    assert all(v["max_rel_diff"] <= 1e-12 for v in res["equality"].values())
    assert res["throughput"]["reinforce_rtg"]["gpu_steps_per_s"] > 0


def test_gpu_check_without_a_gpu(tmp_path):
    from pgbench.measure.backend import cuda_status
    if cuda_status()[0]:
        pytest.skip("a GPU is usable here")
    proc, res = _run(tmp_path, NUMBA_ENABLE_CUDASIM="0")
    assert proc.returncode == 1
    assert res == {"available": False, "reason": cuda_status()[1]}
    assert "no GPU to check" in proc.stderr and "Traceback" not in proc.stderr
