"""The CUDA kernels compile for real GPUs (sm_80, sm_90) through NVVM, with no GPU present.

The simulator tests (test_cuda_sim.py) run the device code as Python; this one shows it types
and compiles as device code. It needs the NVVM and NVRTC libraries, which the 'cuda' extra
installs from wheels (numba-cuda[cu13]); it skips, saying so, where they are missing."""
import json
import os
import subprocess
import sys

import pytest

# numba itself still ships a deprecated built-in numba.cuda: ask for the numba-cuda package
pytest.importorskip("numba_cuda", reason="numba-cuda (the 'cuda' extra) is not installed")

HERE = os.path.dirname(__file__)


def test_pass1_and_pass2_compile_to_ptx():
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    proc = subprocess.run([sys.executable, os.path.join(HERE, "cuda_ptx_check.py")], capture_output=True, text=True,
                          env=env, timeout=900)
    if proc.returncode == 3:
        pytest.skip(json.loads(proc.stdout)["skipped"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(proc.stdout)
    assert len(res) == 8  # 2 kernels x 2 architectures x tabular/linear policies
    for key, r in res.items():
        assert r["entry"] and r["target"], key
        # accumulation goes through atomic adds on the device (one thread per episode)
        assert r["f64_atomic_adds"] > 0, key
