"""Benchmarks of the exact ground truth (``pgbench.exact``) on garnets.

Run with ``.venv/bin/python -m pytest benchmarks/bench_exact.py --benchmark-only``.
Nothing here asserts a time: the figures are measured and reported. Goals on a 2-core
machine: <= 2 ms for S <= 100, <= 0.1 s for S = 1000, <= 5 s for S = 10^5 (sparse) with a
peak resident memory well under 2 GB.

Two figures per size:
- ``exact``: ``exact(problem, theta)`` on a problem built beforehand, evaluated at a random theta
  (the steady state of a study that evaluates many thetas on one problem);
- ``cold``: ``make(spec)`` then ``exact`` on the fresh problem (nothing cached anywhere), the cost
  of ``pgbench exact SPEC`` minus interpreter start-up.

On a 2-core machine that is busy with something else, OpenBLAS's default of one thread per core
makes the dense LU (S = 1000) and GMRES's vector operations (S = 10^5) several times slower and
very noisy (threads wait for a core the other job holds). For stable figures on a shared machine
run with ``OPENBLAS_NUM_THREADS=1``; compare ``min`` rather than ``mean`` otherwise.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from pgbench import make
from pgbench.exact import exact

CASES = [
    ("garnet:S=10,A=4,b=3", "dense"),
    ("garnet:S=100,A=4,b=3", "dense"),
    ("garnet:S=1000,A=4,b=3", "dense"),
    ("garnet:S=10000,A=4,b=5", "sparse"),
    ("garnet:S=100000,A=4,b=5", "sparse"),
]
IDS = [f"S={spec.split('S=')[1].split(',')[0]}-{method}" for spec, method in CASES]


def _theta(problem):
    return np.random.default_rng(0).normal(size=problem.policy.theta_shape)


@pytest.mark.parametrize("spec,method", CASES, ids=IDS)
def test_exact(benchmark, spec, method):
    problem = make(spec)
    theta = _theta(problem)
    benchmark.group = "exact (problem built beforehand)"
    benchmark.extra_info.update(spec=spec, method=method)
    gt = benchmark(exact, problem, theta, method=method)
    assert gt.method == method and np.isfinite(gt.J) and np.all(np.isfinite(gt.grad))


@pytest.mark.parametrize("spec,method", CASES, ids=IDS)
def test_cold(benchmark, spec, method):
    benchmark.group = "make + exact (cold)"
    benchmark.extra_info.update(spec=spec, method=method)
    rounds = 3 if "100000" in spec else 10 if "10000" in spec else 30
    gt = benchmark.pedantic(lambda: exact(make(spec), method=method), rounds=rounds, iterations=1, warmup_rounds=1)
    assert np.isfinite(gt.J)


_MEMORY_PROBE = r"""
import json, resource, sys, time
import numpy as np
from pgbench import make
from pgbench.exact import exact

def peak_kb():
    # VmHWM: the high-water mark of this process image. ru_maxrss is not enough on Linux: a child
    # forked from a big parent keeps the parent's ru_maxrss across exec.
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

base = peak_kb()
t0 = time.perf_counter()
p = make(sys.argv[1])
t1 = time.perf_counter()
gt = exact(p, np.random.default_rng(0).normal(size=p.policy.theta_shape), method=sys.argv[2])
t2 = time.perf_counter()
print(json.dumps(dict(import_kb=base, peak_kb=peak_kb(), make_s=t1 - t0, exact_s=t2 - t1, J=gt.J)))
"""


def test_peak_memory_sparse_1e5(benchmark, record_note):
    """Peak resident memory of a fresh process that builds ``garnet:S=100000,A=4,b=5`` and solves it
    exactly (the child's own high-water mark, so nothing from this test process counts)."""
    spec, method = CASES[-1]
    benchmark.group = "peak memory (subprocess)"
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))

    def probe():
        r = subprocess.run([sys.executable, "-c", _MEMORY_PROBE, spec, method], capture_output=True, text=True,
                           env=env, timeout=600, check=True)
        return json.loads(r.stdout)

    out = benchmark.pedantic(probe, rounds=1, iterations=1)
    peak_mb, import_mb = out["peak_kb"] / 1024, out["import_kb"] / 1024
    benchmark.extra_info.update(peak_rss_mb=round(peak_mb, 1), after_import_rss_mb=round(import_mb, 1),
                                make_s=round(out["make_s"], 3), exact_s=round(out["exact_s"], 3))
    record_note(f"{spec} ({method}): peak RSS {peak_mb:.0f} MB (after imports {import_mb:.0f} MB); "
                f"in the fresh process make {out['make_s']:.3f} s, exact {out['exact_s']:.3f} s")
    assert peak_mb < 2048
