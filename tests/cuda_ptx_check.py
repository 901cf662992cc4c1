"""Run by tests/test_cuda_ptx.py in a fresh process: compile the CUDA pass-1 and pass-2 kernels
through NVVM to PTX for real GPU architectures, with no GPU present. The simulator runs the
device code as Python, so only this shows that it types and compiles for the device.

numba-cuda asks the current device for its compute capability when it compiles a device
function called from a kernel; with no device, that one lookup is answered with the target
architecture (which is why this runs in its own process). Prints JSON; exit status 3 when the
NVVM/NVRTC libraries are missing (install the 'cuda' extra)."""
import json
import sys

import numpy as np
import numba
import numba.cuda.dispatcher as cuda_dispatcher
from numba import cuda

import pgbench
from pgbench.exact import exact
from pgbench.kernels import cuda as kc
from pgbench.kernels.rng import seed_u64
from pgbench.measure.engine import make_tables, oracle_tables

ARCHS = [(8, 0), (9, 0)]


class _Target:
    compute_capability = ARCHS[0]


def kernel_arguments(name: str, linear: bool):
    """Host stand-ins with the types the host wrappers pass (device arrays type like host arrays)."""
    p = pgbench.make("garnet:S=5,A=3,b=2,seed=1,horizon=5,noise=0.5")
    if linear:
        p = pgbench.MDPProblem.linear(p.mdp, np.random.default_rng(0).normal(size=(5, 3, 2)), theta=np.ones(2))
    t = make_tables(p, p.theta)
    V, Q = oracle_tables(exact(p, p.theta))
    z = np.zeros
    n, cap, (S, A) = 32, t.cap, t.pi.shape
    i64, f64 = np.int64, np.float64
    head = (seed_u64(0), np.uint64(1), i64(0), i64(1), i64(4), i64(4), t.rho_thr, t.rho_alias, i64(t.n_slots), t.step_thr,
            t.step_off, t.step_word, t.step_r, i64(t.noise_kind), t.noise_scale, t.pi)
    scratch = (z((n, cap + 1), i64), z((n, cap), i64), z((n, cap)), z((n, cap)), z((n, S, A)), z((n, S)), z((n, 2)))
    if name == "pass1":
        return head + (t.pi2sum, t.terminal, f64(t.gamma), t.gpow, i64(cap), t.finite, t.linear, t.score, True,
                       t.rho_ratio) + scratch + (z((4, 6)), z((4, cap)), z((4, cap, S)), z((4, cap, S)), z((4, cap)))
    n_est = 19
    return head + (t.logpi, t.pi2sum, t.terminal, f64(t.gamma), t.gpow, i64(cap), t.finite, t.linear, t.score,
                   np.arange(n_est, dtype=i64), z((n_est, 2)), z(n_est, i64), np.stack([V, V]), V, Q, t.rho_ratio,
                   z((1, 6)), z((1, cap)), z((1, cap + 1, S)), z((1, cap)), True, True, f64(0.5), True, True, True) \
        + scratch + (z((4, n_est, S, A)), z((4, 8)))


def main():
    cuda_dispatcher.get_current_device = lambda: _Target
    try:
        from numba.cuda.cudadrv import nvvm
        nvvm.NVVM()
    except Exception as exc:  # no libnvvm: nothing to check here
        print(json.dumps({"skipped": f"NVVM unavailable: {exc}"}))
        return 3
    out = {}
    for arch in ARCHS:
        _Target.compute_capability = arch
        for name, kern in (("pass1", kc._pass1_kernel), ("pass2", kc._pass2_kernel)):
            for linear in (False, True):
                sig = tuple(numba.typeof(a) for a in kernel_arguments(name, linear))
                try:
                    ptx, _ = cuda.compile_ptx(kern.py_func, sig, cc=arch)
                except Exception as exc:
                    if "nvrtc" in str(exc).lower() or "nvvm" in str(exc).lower():
                        print(json.dumps({"skipped": f"CUDA compiler libraries unavailable: {exc}"[:500]}))
                        return 3
                    raise
                key = f"{name}/sm_{arch[0]}{arch[1]}/{'linear' if linear else 'tabular'}"
                out[key] = {"chars": len(ptx), "entry": ".entry" in ptx, "target": f".target sm_{arch[0]}{arch[1]}" in ptx,
                            "f64_atomic_adds": ptx.count("atom.global.add.f64")}
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
