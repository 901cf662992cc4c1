"""Benchmarks of learning runs (``pgbench.dynamics.train``).

Run with ``.venv/bin/python -m pytest benchmarks/bench_dynamics.py --benchmark-only`` or as a
script (``.venv/bin/python benchmarks/bench_dynamics.py``, which prints the figures). Nothing here
asserts a time; the kernel is compiled by a small warm-up call first. Goals on a 2-core machine:
the ``dynamics/three-armed`` suite (8 baselines x 4000 runs x 1000 NPG updates, with its summaries
and 20 exact-NSR points per baseline) under 10 s warm; a garnet with S = 20 and horizon 50,
1000 runs x 200 SGD updates x N = 16 episodes, under a minute.
"""
from __future__ import annotations

import time

import numba
import pytest

from pgbench.dynamics import train
from pgbench.suites.registry import SUITES

THREE = SUITES["dynamics/three-armed"]
GARNET = "garnet:S=20,A=4,b=3,seed=0,horizon=50"


def three_armed():
    s = THREE
    return train(s.problem, list(s.estimators), optimizer=s.train.optimizer, lr=s.train.lr, steps=s.train.steps,
                 runs=s.trials, batch=1, seed=0, stuck_below=s.train.stuck_below, nsr_points=s.train.nsr_points)


def garnet():
    return train(GARNET, ["reinforce_rtg"], optimizer="sgd", lr=1.0, steps=200, runs=1000, batch=16, seed=0,
                 nsr_points=0)


def _warm():
    train(THREE.problem, ["value_baseline", "optimal_const_baseline"], optimizer="npg", lr=0.025, steps=5, runs=2,
          nsr_points=2)
    train(GARNET, ["reinforce_rtg"], optimizer="sgd", lr=1.0, steps=2, runs=2, batch=2, nsr_points=0)


@pytest.mark.parametrize("case", [three_armed, garnet], ids=["three-armed-suite", "garnet-S20-T50"])
def test_train(benchmark, case, record_note):
    _warm()
    res = benchmark.pedantic(case, rounds=1, iterations=1)
    record_note(f"{case.__name__}: kernel {res.seconds:.2f} s of the call")


if __name__ == "__main__":
    _warm()
    for case in (three_armed, garnet):
        t0, c0 = time.perf_counter(), time.process_time()
        res = case()
        print(f"{case.__name__}: {time.perf_counter() - t0:.2f} s in all (CPU {time.process_time() - c0:.2f} s "
              f"on {numba.get_num_threads()} threads), kernel {res.seconds:.2f} s")
