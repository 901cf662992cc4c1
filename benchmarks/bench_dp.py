"""Benchmarks of the exact-moment dynamic programme (``pgbench.exact.dp``).

Run with ``.venv/bin/python -m pytest benchmarks/bench_dp.py --benchmark-only``. Nothing here
asserts a time. One round is ``exact_moments(problem, every DP estimator, batch=4, method="dp")``:
the exact mean, variance and MSE of the 17 estimators of one cell (the ground truth it needs, the
critics and both forward passes included; the numba passes are compiled beforehand). Goals: S=20,
A=4, T=50 <= 1 s; S=100, A=4, T=50 <= 30 s; unbounded S=50, gamma=0.95 (449-step cap) <= 10 s.
Peak traced memory (tracemalloc) goes to the notes. ``vs_enumeration`` times the DP and the
trajectory enumeration on the same small problem in the same run (their ratio is the figure).
``covariance`` times ``cov=True`` against the variance alone on the same problems in the same run
(every DP estimator, tabular d = 80 and a linear softmax with d = 8).
"""
from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from pgbench import MDPProblem, make
from pgbench.exact import moments as M

ESTIMATORS = ["reinforce", "reinforce_rtg", "rtg_no_gamma_t", "const_baseline:b=0.7", "optimal_const_baseline",
              "value_baseline", "true_advantage", "all_action", "gae:lambda=0.7", "td0",
              "gae:lambda=1.0,critic=perturbed,scale=0.5", "td0:critic=perturbed,scale=0.3,seed=2",
              "geometric_termination", "entropy_bonus:beta=0.1", "importance_sampling:mu=mix,eps=0.3",
              "rloo", "batch_mean_baseline"]
CASES = ["garnet:S=20,A=4,b=3,seed=0,gamma=0.99,horizon=50,noise=0.5",
         "garnet:S=100,A=4,b=3,seed=0,gamma=0.99,horizon=50,noise=0.5",
         "garnet:S=50,A=4,b=3,seed=0,gamma=0.95,noise=0.5"]
IDS = ["S=20-T=50", "S=100-T=50", "S=50-unbounded"]


def _problem(spec):
    p = make(spec)
    return p.with_theta(np.random.default_rng(0).normal(size=p.policy.theta_shape))


def _peak(fn) -> float:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1] / 2 ** 20
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("spec", CASES, ids=IDS)
def test_dp_cell(benchmark, record_note, spec):
    prob = _problem(spec)
    M.exact_moments(_problem("garnet:S=3,A=2,b=2,seed=0,horizon=2"), ESTIMATORS, batch=4, method="dp")  # compile
    benchmark.group = "exact moments by DP, 17 estimators of one cell"
    benchmark.extra_info.update(spec=spec, cap=prob.mdp.episode_cap)
    em = benchmark.pedantic(M.exact_moments, (prob, ESTIMATORS), dict(batch=4, method="dp"), rounds=3,
                            iterations=1)
    assert np.isfinite(em.variance).all()
    mib = _peak(lambda: M.exact_moments(prob, ESTIMATORS, batch=4, method="dp"))
    record_note(f"dp {spec}: peak traced memory {mib:.1f} MiB, cap {em.cap}, cut mass {em.truncated_mass:.3g}")


@pytest.mark.parametrize("method", ["dp", "enumerate"])
def test_vs_enumeration(benchmark, method):
    """The calibration garnet (S=4, A=3, horizon 4: 5184 trajectories), per-episode estimators."""
    prob = _problem("garnet:S=4,A=3,b=2,seed=0,horizon=4,noise=0.3")
    names = ESTIMATORS[:-2]
    M.exact_moments(prob, names, method=method)  # compile
    benchmark.group = "DP vs enumeration, calibration garnet"
    benchmark(M.exact_moments, prob, names, method=method)


COV_ESTIMATORS = ESTIMATORS + ["time_baseline_loo", "ppo_gae:lambda=0.95"]


def _linear(spec, d):
    p = make(spec)
    rng = np.random.default_rng(1)
    return MDPProblem.linear(p.mdp, rng.normal(size=(p.mdp.S, p.mdp.A, d)), theta=rng.normal(size=d))


@pytest.mark.parametrize("cov", [False, True], ids=["variance", "covariance"])
@pytest.mark.parametrize("case", ["tabular-S=20-T=50-d=80", "linear-S=50-T=50-d=8"])
def test_covariance(benchmark, record_note, case, cov):
    """The 19 DP estimators at N=4: the full covariance (d + d(d-1)/2 score coordinates) against the
    variance alone."""
    spec = "garnet:S=20,A=4,b=3,seed=0,gamma=0.99,horizon=50,noise=0.5"
    prob = _problem(spec) if case.startswith("tabular") else _linear(spec.replace("S=20", "S=50"), 8)
    M.exact_moments(_problem("garnet:S=3,A=2,b=2,seed=0,horizon=2"), COV_ESTIMATORS, batch=4, method="dp",
                    cov=True)  # compile
    benchmark.group = f"exact moments by DP, covariance vs variance, {case}"
    em = benchmark.pedantic(M.exact_moments, (prob, COV_ESTIMATORS), dict(batch=4, method="dp", cov=cov),
                            rounds=1 if cov and case.startswith("tabular") else 3, iterations=1)
    assert np.isfinite(em.variance).all() and (em.cov is not None) == cov
    if cov:
        mib = _peak(lambda: M.exact_moments(prob, COV_ESTIMATORS, batch=4, method="dp", cov=True))
        record_note(f"dp covariance {case}: peak traced memory {mib:.1f} MiB")
