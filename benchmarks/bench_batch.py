"""Cost of a Python batch estimator against the built-in it reimplements, same cell.

Run with ``.venv/bin/python -m pytest benchmarks/bench_batch.py -s``. Nothing is asserted: the
sampler's seconds (``SampleResult.seconds``, what ``measure`` reports as cost) for
``reinforce_rtg`` and for a NumPy batch estimator computing the same weights are measured in
the same run, best of a few rounds, and their ratio is printed; so is the ratio of the whole
``measure()`` call's wall time (exact solution, sampling and statistics: what a user waits for).
Two cells at batch size N = 64: a garnet with horizon T = 50 (every episode is 50 steps), and
the 4x4 gridworld, unbounded with gamma = 0.95: a sampling cap of 449 steps for episodes of
about 20 to 60 steps, where the batches' trimming to their longest episode (``Batch.trim``) is
what keeps the Python path's cost in line with the episodes rather than the cap.
"""
from __future__ import annotations

import time

import numpy as np
import pytest

from pgbench import make
from pgbench.estimators import register_batch_estimator, unregister_batch_estimator
from pgbench.measure.engine import sample_mdp

PROBLEMS = ("garnet:S=20,A=4,b=3,seed=0,gamma=0.95,horizon=50", "gridworld")
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


@pytest.mark.parametrize("problem", PROBLEMS)
def test_batch_estimator_cost_ratio(record_note, problem):
    register_batch_estimator("bench_np_rtg", unbiased=True, replace=True)(np_rtg)
    try:
        prob = make(problem)
        builtin = _best(prob, "reinforce_rtg")
        mine = _best(prob, "bench_np_rtg")
        wall = {}
        from pgbench.measure import measure
        for name in ("reinforce_rtg", "bench_np_rtg"):
            measure(prob, [name], batch=N, trials=4, seed=1, exact=False)  # warm
            wall[name] = min(_timed(lambda: measure(prob, [name], batch=N, trials=K, seed=r, exact=False))
                             for r in range(2))
        steps = []  # the padded length T each batch reached the estimator with, and its mean episode length
        register_batch_estimator("bench_np_rtg", unbiased=True, replace=True)(
            lambda b: (steps.append((b.actions.shape[1], b.lengths.mean())), np_rtg(b))[1])
        sample_mdp(prob, ["bench_np_rtg"], N=N, K=200, seed=0)
    finally:
        unregister_batch_estimator("bench_np_rtg")
    T_mean, L_mean = np.mean(steps, axis=0)
    line = (f"{prob.name} (cap {prob.mdp.episode_cap}; episodes {L_mean:.1f} steps on average, batches "
            f"padded to {T_mean:.1f}), N={N}, K={K}: reinforce_rtg {builtin / K * 1e6:.1f} us/trial, NumPy batch estimator "
            f"{mine / K * 1e6:.1f} us/trial, ratio {mine / builtin:.2f}; whole measure() call "
            f"{wall['reinforce_rtg']:.2f} s vs {wall['bench_np_rtg']:.2f} s, ratio "
            f"{wall['bench_np_rtg'] / wall['reinforce_rtg']:.2f}")
    print(line)
    record_note(line)
    assert np.isfinite(mine / builtin)
