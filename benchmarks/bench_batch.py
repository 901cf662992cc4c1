"""Cost of a Python batch estimator against the built-in it reimplements, same cell.

Run with ``.venv/bin/python -m pytest benchmarks/bench_batch.py -s``. Nothing is asserted: the
sampler's seconds (``SampleResult.seconds``, what ``measure`` reports as cost) for
``reinforce_rtg`` and for a NumPy batch estimator computing the same weights are measured in
the same run, best of a few rounds, and their ratio is printed; so is the ratio of the whole
``measure()`` call's wall time (exact solution, sampling and statistics: what a user waits for).
The cell is a garnet with horizon T = 50 at batch size N = 64.
"""
from __future__ import annotations

import time

import numpy as np

from pgbench import make
from pgbench.estimators import register_batch_estimator, unregister_batch_estimator
from pgbench.measure.engine import sample_mdp

PROBLEM = "garnet:S=20,A=4,b=3,seed=0,gamma=0.95,horizon=50"
N, K, ROUNDS = 64, 2000, 5


def np_rtg(batch):
    G = batch.reward_to_go()
    return batch.discount() * G


def _best(prob, name):
    sample_mdp(prob, [name], N=N, K=4, seed=0)  # compile / warm
    return min(sample_mdp(prob, [name], N=N, K=K, seed=r).seconds for r in range(ROUNDS))


def _timed(f) -> float:
    t0 = time.perf_counter()
    f()
    return time.perf_counter() - t0


def test_batch_estimator_cost_ratio(record_note):
    register_batch_estimator("bench_np_rtg", unbiased=True, replace=True)(np_rtg)
    try:
        prob = make(PROBLEM)
        builtin = _best(prob, "reinforce_rtg")
        mine = _best(prob, "bench_np_rtg")
        wall = {}
        from pgbench.measure import measure
        for name in ("reinforce_rtg", "bench_np_rtg"):
            measure(prob, [name], batch=N, trials=4, seed=1, exact=False)  # warm
            wall[name] = min(_timed(lambda: measure(prob, [name], batch=N, trials=K, seed=r, exact=False))
                             for r in range(2))
    finally:
        unregister_batch_estimator("bench_np_rtg")
    line = (f"N={N}, T=50, K={K}: reinforce_rtg {builtin / K * 1e6:.1f} us/trial, NumPy batch estimator "
            f"{mine / K * 1e6:.1f} us/trial, ratio {mine / builtin:.2f}; whole measure() call "
            f"{wall['reinforce_rtg']:.2f} s vs {wall['bench_np_rtg']:.2f} s, ratio "
            f"{wall['bench_np_rtg'] / wall['reinforce_rtg']:.2f}")
    print(line)
    record_note(line)
    assert np.isfinite(mine / builtin)
