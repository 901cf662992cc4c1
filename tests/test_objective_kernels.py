"""Kernels for stochastic objectives (pgbench.kernels.objectives) against brute force and theory.

Every statistical test below uses fixed seeds, so it is deterministic; the thresholds are
chosen so that, were the seed changed, a correct kernel would fail with negligible
probability (5 standard errors: about 6e-7 two-sided per comparison under normality).
"""
from __future__ import annotations

import math

import numba
import numpy as np
import pytest
from numba import njit
from scipy import stats

from pgbench.errors import PGBenchError
from pgbench.kernels.objectives import CHUNK, OBJECTIVE_ESTIMATORS, sample_objective
from pgbench.kernels.rng import normal, seed_u64, stream
from pgbench.problems.objectives import CategoricalObjective, GaussianToy

from naive_objectives import box_muller, reference_objective, replay

GAUSS = ["naive", "score_function", "reparameterization"]
CAT = ["score_function", "rloo", "gumbel_softmax", "straight_through"]


def cat_problem():
    return CategoricalObjective(target=[0.2, 0.5, -0.1, 1.0], theta=[0.3, -0.2, 0.5, -0.6])


def close(a, b, rel=1e-12):
    """Equal to ~rel relative to each estimator's scale (coordinates of a gradient can be ~0)."""
    assert a.shape == b.shape
    for j in range(b.shape[1]):
        scale = float(np.abs(b[:, j]).max())
        np.testing.assert_allclose(a[:, j], b[:, j], rtol=rel, atol=rel * scale, err_msg=f"estimator {j}")


# ----------------------------------------------------------------------------- references

@njit
def _rng_normal(seed, cell, k, i):
    s0, s1 = stream(seed, cell, k, i)
    z, s0, s1 = normal(s0, s1)
    return z


def test_reference_box_muller_matches_rng_normal_bitwise():
    for k in range(3):
        for i in range(50):
            u = replay(7, 99, k, i, 2)
            assert box_muller(u[0], u[1]) == _rng_normal(seed_u64(7), np.uint64(99), np.uint64(k), np.uint64(i))


@pytest.mark.parametrize("theta", [1.0, -0.37, 2.5])
def test_gaussian_matches_reference(theta):
    g = GaussianToy(theta=[theta])
    close(sample_objective(g, GAUSS, [{}] * 3, 9, 4, 123, 5), reference_objective(g, GAUSS, None, 9, 4, 123, 5))


def test_categorical_matches_reference():
    c = cat_problem()
    names = CAT + ["gumbel_softmax", "straight_through", "straight_through"]
    params = [{}, {}, {"tau": 0.5}, {"tau": 0.5}, {"tau": 3.0}, {}, {"tau": 0.2}]
    close(sample_objective(c, names, params, 11, 4, 2024, 77),
          reference_objective(c, names, params, 11, 4, 2024, 77))
    # a different parameter vector than the problem's own
    th = [-1.0, 0.0, 2.0, 0.5]
    close(sample_objective(c, CAT, None, 5, 3, 1, 2, theta=th),
          reference_objective(c, CAT, None, 5, 3, 1, 2, theta=th))


def test_chunk_boundary_matches_reference():
    """N just over one chunk: the chunked sums equal the straight sums (to rounding)."""
    N = CHUNK + 3
    g = GaussianToy(theta=[0.8])
    close(sample_objective(g, GAUSS, None, N, 2, 9, 9), reference_objective(g, GAUSS, None, N, 2, 9, 9))
    c = CategoricalObjective(target=[1.0, 0.0, 0.3])
    close(sample_objective(c, CAT, None, N, 1, 9, 9), reference_objective(c, CAT, None, N, 1, 9, 9))


# ----------------------------------------------------------------------------- determinism

def _threads_result(nt, seed):
    old = numba.get_num_threads()
    numba.set_num_threads(nt)
    try:
        N = 2 * CHUNK + 17
        a = sample_objective(GaussianToy(theta=[1.0]), GAUSS, None, N, 3, seed, 4)
        b = sample_objective(cat_problem(), CAT, None, N, 3, seed, 4)
    finally:
        numba.set_num_threads(old)
    return a, b


def test_bit_identical_across_thread_counts():
    nmax = min(2, numba.config.NUMBA_NUM_THREADS)
    if nmax < 2:
        pytest.skip("numba has a single thread here")
    a1, b1 = _threads_result(1, 31)
    a2, b2 = _threads_result(2, 31)
    assert np.array_equal(a1, a2) and np.array_equal(b1, b2)
    a3, b3 = _threads_result(2, 32)
    assert not np.any(a3 == a1) and not np.allclose(b3, b1)


def test_streams_are_keyed_not_positional():
    """Trial k's numbers do not depend on K, nor on which other estimators are asked for
    (common random numbers: every estimator sees the same draws)."""
    g = GaussianToy(theta=[1.0])
    full = sample_objective(g, GAUSS, None, 50, 5, 3, 8)
    assert np.array_equal(sample_objective(g, GAUSS, None, 50, 2, 3, 8), full[:2])
    assert np.array_equal(sample_objective(g, ["reparameterization"], None, 50, 5, 3, 8)[:, 0], full[:, 2])
    c = cat_problem()
    full = sample_objective(c, CAT, None, 40, 4, 3, 8)
    assert np.array_equal(sample_objective(c, ["straight_through", "rloo"], None, 40, 4, 3, 8),
                          full[:, [3, 1]])
    assert not np.array_equal(sample_objective(c, CAT, None, 40, 4, 3, 9), full)  # another cell


# ----------------------------------------------------------------------------- bias

def mean_se(r):
    K = r.shape[0]
    return r.mean(axis=0), r.std(axis=0, ddof=1) / math.sqrt(K)


@pytest.mark.parametrize("theta", [1.0, -0.5])
def test_gaussian_bias(theta):
    g = GaussianToy(theta=[theta])
    exact = g.grad()[0]                                   # 1 + 3 theta^2
    r = sample_objective(g, GAUSS, None, 64, 4000, 11, 1)[:, :, 0]
    m, se = mean_se(r)
    for j in (1, 2):                                      # score function, reparameterisation
        assert abs(m[j] - exact) < 5 * se[j], (GAUSS[j], m[j], exact, se[j])
    # naive = x^2: mean theta^2 + 1 (2 at theta = 1), bias -2 theta^2, far beyond 5 se
    assert abs(m[0] - (theta ** 2 + 1)) < 5 * se[0]
    assert (m[0] - exact) / se[0] < -5


def test_gaussian_toy_closed_form_at_one():
    g = GaussianToy(theta=[1.0])
    assert g.grad()[0] == 4.0


def test_categorical_unbiased():
    c = cat_problem()
    exact = c.grad()
    r = sample_objective(c, ["score_function", "rloo"], None, 32, 3000, 5, 6)
    m, se = mean_se(r)
    assert np.all(np.abs(m - exact[None, :]) < 5 * se), ((m - exact) / se)
    # the leave-one-out baseline helps here (f > 0 everywhere, so the raw score function is noisy)
    assert np.sum(se[1] ** 2) < 0.5 * np.sum(se[0] ** 2)


def test_relaxed_estimators_biased_at_large_tau():
    """Why this is robust (holds for every seed, not only with high probability).

    Each per-sample estimate is (1/tau) (diag(y) - y y^T) v with v = 2 (y - t) (Gumbel-softmax)
    or 2 (e_x - t) (straight-through). The matrix is PSD with eigenvalues in [0, max_j y_j] c [0, 1],
    and ||v|| <= 2 (1 + ||t||); so every estimate, and every mean of estimates, has norm at most
    B = 2 (1 + ||t||) / tau, and the sample std of any coordinate is at most B sqrt(K/(K-1)).
    Here t = e_0, theta = 0: grad J = (-4/9, 2/9, 2/9); with tau = 50, B = 0.08, so on coordinate 0
    |mean - grad| >= 4/9 - 0.08 = 0.36 while 5 se <= 5 * 0.08 / sqrt(K - 1) = 0.02.
    """
    c = CategoricalObjective(target=[1.0, 0.0, 0.0])
    exact = c.grad()
    np.testing.assert_allclose(exact, [-4 / 9, 2 / 9, 2 / 9], rtol=1e-14)
    tau, K = 50.0, 400
    r = sample_objective(c, ["gumbel_softmax", "straight_through"], [{"tau": tau}] * 2, 16, K, 1, 1)
    B = 2 * (1 + 1) / tau
    assert np.all(np.linalg.norm(r, axis=2) <= B * (1 + 1e-12))
    m, se = mean_se(r)
    assert np.all(np.abs(m[:, 0] - exact[0]) > 5 * se[:, 0])
    assert np.all(np.abs(m[:, 0] - exact[0]) > 0.3)


def test_straight_through_biased_at_tau_one():
    """At tau = 1 the straight-through bias on this problem is about 200 se with these sizes
    (measured); requiring 5 se leaves a wide margin."""
    c = CategoricalObjective(target=[1.0, 0.0, 0.0])
    r = sample_objective(c, ["straight_through", "score_function"], None, 100, 2000, 3, 4)
    m, se = mean_se(r)
    z = (m - c.grad()[None, :]) / se
    assert np.max(np.abs(z[0])) > 5
    assert np.max(np.abs(z[1])) < 5


# ----------------------------------------------------------------------------- variance ~ 1/N

def _variance_ratio_ok(a, b, ratio=4.0, alpha=1e-6):
    """a: K1 trial estimates at batch N, b: K2 at batch 4N (independent cells).

    Under normality s_a^2 / s_b^2 / ratio ~ F(K1 - 1, K2 - 1). The trial estimates are batch means,
    only approximately normal; with excess kurtosis kappa, Var(s^2) = sigma^4 (2/(K-1) + kappa/K),
    which matches a scaled chi^2 with nu = 2 / (2/(K-1) + kappa/K) degrees of freedom. We estimate
    kappa from the trial estimates (clipped at 0), use those effective degrees of freedom in the F
    quantiles, and accept when the observed ratio lies in the central 1 - alpha interval.
    """
    def nu(x):
        K = x.size
        kappa = max(stats.kurtosis(x, fisher=True, bias=False), 0.0)
        return 2.0 / (2.0 / (K - 1) + kappa / K)

    obs = a.var(ddof=1) / b.var(ddof=1) / ratio
    n1, n2 = nu(a), nu(b)
    lo, hi = stats.f.ppf(alpha / 2, n1, n2), stats.f.ppf(1 - alpha / 2, n1, n2)
    return lo <= obs <= hi, (obs * ratio, lo * ratio, hi * ratio)


def test_variance_falls_as_one_over_n_gaussian():
    g = GaussianToy(theta=[1.0])
    a = sample_objective(g, GAUSS, None, 64, 4000, 21, 100)[:, :, 0]
    b = sample_objective(g, GAUSS, None, 256, 4000, 21, 101)[:, :, 0]
    for j, name in enumerate(GAUSS):
        ok, info = _variance_ratio_ok(a[:, j], b[:, j])
        assert ok, (name, info)


def test_variance_falls_as_one_over_n_categorical():
    """Estimators that average N i.i.d. per-sample terms (rloo is not one of them: its baseline
    couples the samples, and its variance is 1/N only to leading order)."""
    c = cat_problem()
    names = ["score_function", "gumbel_softmax", "straight_through"]
    a = sample_objective(c, names, None, 32, 4000, 22, 200)
    b = sample_objective(c, names, None, 128, 4000, 22, 201)
    for j, name in enumerate(names):
        for q in range(c.dim):
            ok, info = _variance_ratio_ok(a[:, j, q], b[:, j, q])
            assert ok, (name, q, info)


def test_variance_ratio_check_has_power():
    """The same check rejects a wrong ratio (N vs 2N sold as N vs 4N)."""
    g = GaussianToy(theta=[1.0])
    a = sample_objective(g, ["reparameterization"], None, 64, 4000, 23, 300)[:, 0, 0]
    b = sample_objective(g, ["reparameterization"], None, 128, 4000, 23, 301)[:, 0, 0]
    assert not _variance_ratio_ok(a, b)[0]


# ----------------------------------------------------------------------------- refusals

def test_catalogue_shape():
    assert set(OBJECTIVE_ESTIMATORS) == {"gaussian", "categorical"}
    assert set(OBJECTIVE_ESTIMATORS["gaussian"]) == set(GAUSS)
    assert set(OBJECTIVE_ESTIMATORS["categorical"]) == set(CAT)
    for table in OBJECTIVE_ESTIMATORS.values():
        for entry in table.values():
            assert set(entry) == {"params", "unbiased", "doc"}
            assert isinstance(entry["unbiased"], bool) and isinstance(entry["doc"], str)
    assert OBJECTIVE_ESTIMATORS["categorical"]["gumbel_softmax"]["params"] == {"tau": 1.0}


@pytest.mark.parametrize("problem, names, params, N, match", [
    (GaussianToy(), ["nope"], None, 4, "nope"),
    (GaussianToy(), ["gumbel_softmax"], None, 4, "gumbel_softmax"),
    (GaussianToy(), ["rloo"], None, 4, "rloo"),
    (cat_problem(), ["naive"], None, 4, "naive"),
    (cat_problem(), ["reparameterization"], None, 4, "reparameterization"),
    (cat_problem(), ["gumbel_softmax"], [{"tau": 0.0}], 4, "tau"),
    (cat_problem(), ["straight_through"], [{"tau": -1.0}], 4, "tau"),
    (cat_problem(), ["gumbel_softmax"], [{"tau": float("nan")}], 4, "tau"),
    (cat_problem(), ["gumbel_softmax"], [{"tau": "1"}], 4, "tau"),
    (cat_problem(), ["gumbel_softmax"], [{"temperature": 1.0}], 4, "temperature"),
    (cat_problem(), ["score_function"], [{"tau": 1.0}], 4, "tau"),
    (cat_problem(), ["rloo"], None, 1, "rloo"),
    (cat_problem(), ["rloo", "score_function"], [{}], 4, "parameter"),
    (cat_problem(), [], None, 4, "no estimator"),
    (cat_problem(), ["score_function"], None, 0, "N"),
])
def test_refusals(problem, names, params, N, match):
    with pytest.raises(PGBenchError, match=match):
        sample_objective(problem, names, params, N, 3, 0, 0)


def test_refuses_bad_k_and_problem():
    with pytest.raises(PGBenchError, match="K"):
        sample_objective(GaussianToy(), ["naive"], None, 4, 0, 0, 0)
    with pytest.raises(PGBenchError, match="K"):
        sample_objective(GaussianToy(), ["naive"], None, 4, 2.5, 0, 0)
    with pytest.raises(PGBenchError, match="objective"):
        sample_objective(object(), ["naive"], None, 4, 2, 0, 0)
