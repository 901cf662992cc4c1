"""Tests of pgbench.stats.metrics: exact point formulas, calibration and coverage by simulation.

Every statistical check uses a fixed seed and a tolerance of four Monte-Carlo standard errors
(for a rate p over n repetitions, ``4 sqrt(p (1 - p) / n)``).
"""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from pgbench.errors import PGBenchError
from pgbench.stats.metrics import HOTELLING_MIN_RATIO, HOTELLING_MIN_DF, cost, paired, summarize

REPS = 400
MC_SE = math.sqrt(0.05 * 0.95 / REPS)  # Monte-Carlo se of a 5% rate (and of 95% coverage)


def _rate_ok(rate: float, nominal: float = 0.05) -> bool:
    return abs(rate - nominal) < 4.0 * MC_SE


# ---------------------------------------------------------------------------------------------
# exact point formulas


def test_point_formulas_match_direct_computation():
    rng = np.random.default_rng(1)
    K, d = 7, 3
    X = rng.normal(size=(K, d)) + np.array([0.5, -1.0, 2.0])
    X[3] = 0.0  # a zero trial: its cosine counts as 0
    g = np.array([0.4, -0.8, 2.5])
    r = summarize(X, g)

    m = np.array([sum(X[k, j] for k in range(K)) / K for j in range(d)])
    var = sum(sum((X[k, j] - m[j]) ** 2 for j in range(d)) for k in range(K)) / (K - 1)
    err2 = [sum((X[k, j] - g[j]) ** 2 for j in range(d)) for k in range(K)]
    mse = sum(err2) / K
    coss = []
    for k in range(K):
        nk = math.sqrt(sum(x * x for x in X[k]))
        coss.append(0.0 if nk == 0 else float(X[k] @ g) / (nk * math.sqrt(float(g @ g))))
    bias = m - g

    assert r["K"] == K and r["d"] == d
    np.testing.assert_allclose(r["mean"], m, rtol=1e-14)
    np.testing.assert_allclose(r["bias"], bias, rtol=1e-13)
    assert r["bias_norm"] == pytest.approx(math.sqrt(sum(bias ** 2)), rel=1e-13)
    assert r["rel_bias"] == pytest.approx(math.sqrt(sum(bias ** 2)) / math.sqrt(sum(g ** 2)), rel=1e-13)
    assert r["grad_norm"] == pytest.approx(math.sqrt(sum(g ** 2)), rel=1e-14)
    assert r["variance"] == pytest.approx(var, rel=1e-13)
    assert r["mse"] == pytest.approx(mse, rel=1e-13)
    assert r["cosine"] == pytest.approx(sum(coss) / K, rel=1e-13)
    # standard errors of means of iid terms
    assert r["mse_se"] == pytest.approx(np.std(err2, ddof=1) / math.sqrt(K), rel=1e-12)
    assert r["cosine_se"] == pytest.approx(np.std(coss, ddof=1) / math.sqrt(K), rel=1e-12)
    np.testing.assert_allclose(r["mean_se"], X.std(axis=0, ddof=1) / math.sqrt(K), rtol=1e-12)
    # identity: mse = (K-1)/K variance + ||bias||^2
    assert r["mse"] == pytest.approx((K - 1) / K * r["variance"] + r["bias_norm"] ** 2, rel=1e-12)
    for key in ("variance_ci", "mse_ci", "bias_norm_ci", "cosine_ci", "rel_bias_ci"):
        lo, hi = r[key]
        assert lo <= hi
    assert r["variance_ci"][0] < r["variance"] < r["variance_ci"][1]
    assert r["mse_ci"][0] < r["mse"] < r["mse_ci"][1]
    assert isinstance(r["variance"], float) and isinstance(r["p_value"], float)
    # the scaled chi-square interval with nu = 2 T^2 / se^2
    for est, se, ci in ((r["variance"], r["variance_se"], r["variance_ci"]), (r["mse"], r["mse_se"], r["mse_ci"])):
        nu = 2 * est ** 2 / se ** 2
        assert ci == pytest.approx((nu * est / stats.chi2.ppf(0.975, nu), nu * est / stats.chi2.ppf(0.025, nu)),
                                   rel=1e-10)


def test_variance_se_is_the_delete_one_jackknife():
    rng = np.random.default_rng(2)
    X = rng.standard_t(4, size=(25, 4))
    loo = np.array([np.delete(X, k, axis=0).var(axis=0, ddof=1).sum() for k in range(25)])
    jack = math.sqrt(24 / 25 * np.sum((loo - loo.mean()) ** 2))
    assert summarize(X, np.zeros(4))["variance_se"] == pytest.approx(jack, rel=1e-10)


def test_trial_shape_is_flattened_and_zero_gradient_gives_nan_rel_bias():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(30, 2, 3))
    g = np.zeros((2, 3))
    a = summarize(X, g)
    b = summarize(X.reshape(30, 6), g.ravel())
    assert a["d"] == 6
    for key in ("variance", "mse", "bias_norm", "p_value", "variance_se", "bias_norm_se"):
        assert a[key] == b[key]
    assert math.isnan(a["rel_bias"]) and a["cosine"] == 0.0


def test_two_trials_give_nan_variance_se_but_finite_point_estimates():
    r = summarize(np.array([[1.0, 2.0], [3.0, 1.0]]), np.array([2.0, 1.5]))
    assert r["variance"] == pytest.approx(((1.0 - 2.0) ** 2 * 2 + (2.0 - 1.5) ** 2 * 2) / 1)
    assert math.isnan(r["variance_se"]) and all(math.isnan(c) for c in r["variance_ci"])


def test_deterministic_estimator():
    g = np.array([1.0, -2.0, 0.5])
    r = summarize(np.tile(g, (20, 1)), g)
    assert r["variance"] == 0.0 and r["mse"] == 0.0 and r["bias_norm"] == 0.0
    assert r["p_value"] == 1.0 and r["rank"] == 0
    assert r["bias_norm_ci"] == (0.0, 0.0)
    shifted = summarize(np.tile(g + [0.0, 0.0, 1e-3], (20, 1)), g)
    assert shifted["p_value"] == 0.0
    assert shifted["bias_norm_ci"] == pytest.approx((1e-3, 1e-3))


# ---------------------------------------------------------------------------------------------
# the test of E g_k = g


def _p_values(rng, K, d, reps=REPS, bias=0.0, transform=None):
    g = rng.normal(size=d)
    out, tests = [], set()
    for _ in range(reps):
        Z = rng.normal(size=(K, d)) * np.linspace(0.5, 2.0, d)
        if transform is not None:
            Z = transform(Z)
        r = summarize(g + bias + Z, g)
        out.append(r["p_value"])
        tests.add(r["test"])
    return np.array(out), tests


def test_hotelling_branch_is_calibrated():
    p, tests = _p_values(np.random.default_rng(10), K=60, d=4)
    assert tests == {"hotelling"}
    assert _rate_ok(float(np.mean(p < 0.05)))
    assert abs(p.mean() - 0.5) < 4.0 * math.sqrt(1 / 12 / REPS)  # roughly uniform
    assert abs(float(np.mean(p < 0.2)) - 0.2) < 4.0 * math.sqrt(0.2 * 0.8 / REPS)


def test_holm_branch_is_conservative():
    p, tests = _p_values(np.random.default_rng(11), K=12, d=20)
    assert tests == {"holm"}
    assert float(np.mean(p < 0.05)) <= 0.05 + 4.0 * MC_SE


def test_holm_p_value_is_smallest_adjusted_p():
    rng = np.random.default_rng(12)
    X = rng.normal(size=(8, 5)) + np.array([0.0, 0.3, 0.9, 0.0, 0.0])
    X[:, 3] = 0.0  # zero variance, zero bias: skipped
    r = summarize(X, np.zeros(5))
    assert r["test"] == "holm"
    raw = [stats.ttest_1samp(X[:, j], 0.0).pvalue for j in (0, 1, 2, 4)]
    assert r["p_value"] == pytest.approx(min(1.0, 4 * min(raw)), rel=1e-9)
    X[:, 3] = 0.01  # zero variance with a bias: a certain rejection
    assert summarize(X, np.zeros(5))["p_value"] == 0.0


def test_branch_rule():
    rng = np.random.default_rng(13)
    d = 5
    K_min = int(max(d + HOTELLING_MIN_DF, HOTELLING_MIN_RATIO * d))
    assert summarize(rng.normal(size=(K_min, d)), np.zeros(d))["test"] == "hotelling"
    assert summarize(rng.normal(size=(K_min - 1, d)), np.zeros(d))["test"] == "holm"
    # with few dimensions the degrees-of-freedom floor binds instead
    K_df = int(max(1 + HOTELLING_MIN_DF, HOTELLING_MIN_RATIO * 1))
    assert summarize(rng.normal(size=(K_df, 1)), np.zeros(1))["test"] == "hotelling"
    assert summarize(rng.normal(size=(K_df - 1, 1)), np.zeros(1))["test"] == "holm"


def test_never_observed_coordinates_are_left_out_of_the_test():
    # a state no episode visited: its coordinates are exactly zero in every trial, the exact
    # gradient is not; this is no evidence of bias, and the coordinates are reported
    rng = np.random.default_rng(14)
    X = rng.normal(size=(300, 4))
    X[:, 2:] = 0.0
    g = np.array([0.0, 0.0, 0.5, -0.5])
    r = summarize(X, g)
    assert r["unobserved"] == 2
    assert r["unobserved_grad_norm"] == pytest.approx(np.sqrt(0.5))
    assert r["p_value"] > 1e-3
    assert r["bias_norm"] >= np.sqrt(0.5) - 0.1  # still counted in the bias
    # a handful of non-zero trials is still "not observed": no t-test on three values
    X[:3, 2] = 1e-6
    assert summarize(X, g)["unobserved"] == 2
    # an observed constant offset is still a certain rejection
    X[:, 2] = 0.01
    assert summarize(X, g)["p_value"] == 0.0


@pytest.mark.parametrize("K,d", [(80, 4), (10, 20)])
def test_power_against_a_planted_bias(K, d):
    rng = np.random.default_rng(14)
    g = np.ones(d)
    bias = np.zeros(d)
    bias[1] = 8.0 / math.sqrt(K)  # eight standard errors of that coordinate's mean
    r = summarize(g + bias + rng.normal(size=(K, d)), g)
    assert r["p_value"] < 1e-4
    assert r["bias_norm_ci"][0] > 0.0


def _tabular_samples(rng, K, S, A, g):
    """Trials whose coordinates sum to zero in each state, like tabular softmax scores."""
    Z = rng.normal(size=(K, S, A)) * np.linspace(0.5, 1.5, S)[:, None]
    Z -= Z.mean(axis=2, keepdims=True)
    return (g + Z).reshape(K, S * A)


def test_singular_covariance_is_handled_and_calibrated():
    rng = np.random.default_rng(15)
    S, A, K = 4, 3, 80
    g = rng.normal(size=(S, A))
    g -= g.mean(axis=1, keepdims=True)
    X = _tabular_samples(rng, K, S, A, g)
    S_hat = np.cov(X.T)
    assert np.linalg.matrix_rank(S_hat) == S * (A - 1) < S * A  # truly singular
    r = summarize(X, g.ravel())
    assert r["test"] == "hotelling" and r["rank"] == S * (A - 1)

    p = np.array([summarize(_tabular_samples(rng, K, S, A, g), g.ravel())["p_value"]
                  for _ in range(REPS)])
    assert _rate_ok(float(np.mean(p < 0.05)))
    assert abs(p.mean() - 0.5) < 4.0 * math.sqrt(1 / 12 / REPS)  # F(rank, K - rank), not F(d, K - d)

    # a bias inside the column space (sums to zero per state) is found with power ...
    shift = np.zeros((S, A))
    shift[0, 0], shift[0, 1] = 0.5, -0.5
    assert summarize(X + shift.ravel(), g.ravel())["p_value"] < 1e-6
    # ... and one outside it (a constant added in one state) is a certain violation
    off = np.zeros((S, A))
    off[2] = 1e-3
    assert summarize(X + off.ravel(), g.ravel())["p_value"] == 0.0
    # rounding-level deviations from the constraint are not
    assert summarize(X, g.ravel() + 1e-14)["p_value"] > 1e-6


# ---------------------------------------------------------------------------------------------
# confidence intervals


def test_variance_and_mse_intervals_cover():
    rng = np.random.default_rng(20)
    K, d = 100, 5
    sd = np.linspace(0.5, 1.5, d)
    bias = np.full(d, 0.1)
    tr = float(np.sum(sd ** 2))
    mse_true = tr + float(bias @ bias)
    hits_v = hits_m = 0
    v, v_se, mse, mse_se = [], [], [], []
    for _ in range(REPS):
        r = summarize(bias + rng.normal(size=(K, d)) * sd, np.zeros(d))
        hits_v += r["variance_ci"][0] <= tr <= r["variance_ci"][1]
        hits_m += r["mse_ci"][0] <= mse_true <= r["mse_ci"][1]
        v.append(r["variance"])
        v_se.append(r["variance_se"])
        mse.append(r["mse"])
        mse_se.append(r["mse_se"])
    assert _rate_ok(hits_v / REPS, 0.95)
    assert _rate_ok(hits_m / REPS, 0.95)
    # standard errors match the spread across repetitions (sd of a sample sd: ~ 1/sqrt(2 REPS))
    assert np.mean(v_se) / np.std(v, ddof=1) == pytest.approx(1.0, abs=4.0 / math.sqrt(2 * REPS))
    assert np.mean(mse_se) / np.std(mse, ddof=1) == pytest.approx(1.0, abs=4.0 / math.sqrt(2 * REPS))
    # the estimators are unbiased
    assert abs(np.mean(v) - tr) < 4.0 * np.std(v, ddof=1) / math.sqrt(REPS)
    assert abs(np.mean(mse) - mse_true) < 4.0 * np.std(mse, ddof=1) / math.sqrt(REPS)


@pytest.mark.parametrize("bias_size", [0.0, 0.2, 1.0])
def test_bias_norm_interval(bias_size):
    rng = np.random.default_rng(21)
    K, d = 100, 6
    sd = np.r_[4.0, np.ones(d - 1)]  # anisotropic, with the bias along the noisiest direction
    bias = np.zeros(d)
    bias[0] = bias_size
    hits = 0
    norms, ses, excludes_zero = [], [], 0
    for _ in range(REPS):
        r = summarize(bias + rng.normal(size=(K, d)) * sd, np.zeros(d))
        lo, hi = r["bias_norm_ci"]
        assert 0.0 <= lo <= hi
        hits += lo <= bias_size <= hi
        excludes_zero += lo > 0.0
        norms.append(r["bias_norm"])
        ses.append(r["bias_norm_se"])
    assert hits / REPS >= 0.95 - 4.0 * MC_SE
    if bias_size == 0.0:
        assert excludes_zero / REPS <= 0.05 + 4.0 * MC_SE
    if bias_size == 1.0:  # 2.5 standard errors: the delta-method regime
        assert excludes_zero / REPS > 0.5
        assert np.mean(ses) / np.std(norms, ddof=1) == pytest.approx(1.0, abs=0.2)


def test_bias_norm_interval_never_collapses_to_zero():
    # trials whose mean is exactly g: the inverted interval alone would be {0}; the upper end
    # is floored at the resolution, the bias an outcome at the zero-bias median would allow
    rng = np.random.default_rng(23)
    K, d = 100, 6
    Z = rng.normal(size=(K, d))
    r = summarize(Z - Z.mean(axis=0), np.zeros(d))
    lo, hi = r["bias_norm_ci"]
    assert r["bias_norm"] < 1e-15 and lo == 0.0
    noise = math.sqrt(r["variance"] / K)  # typical ||m - E m||
    assert 0.5 * noise < hi < 2.0 * noise


def test_bias_norm_interval_is_exact_in_one_dimension_far_from_zero():
    # d = 1, bias 10 se: the interval is |m - g| -/+ 1.96 se up to the estimated variance
    rng = np.random.default_rng(22)
    x = rng.normal(size=(400, 1)) + 0.5
    r = summarize(x, np.zeros(1))
    se = x.std(ddof=1) / math.sqrt(400)
    lo, hi = r["bias_norm_ci"]
    assert lo == pytest.approx(abs(x.mean()) - 1.96 * se, rel=0.01)
    assert hi == pytest.approx(abs(x.mean()) + 1.96 * se, rel=0.01)
    assert r["bias_norm_se"] == pytest.approx(se, rel=0.01)


# ---------------------------------------------------------------------------------------------
# paired comparisons


def test_paired_identical_inputs():
    rng = np.random.default_rng(30)
    X = rng.normal(size=(40, 5))
    r = paired(X, X, np.zeros(5))
    assert r["mse_diff"] == 0.0 and r["mse_diff_se"] == 0.0 and r["mse_diff_p"] == 1.0
    assert r["variance_ratio"] == 1.0 and r["variance_ratio_ci"] == (1.0, 1.0)
    assert r["p_value"] == 1.0 and r["mean_diff_norm"] == 0.0


def test_paired_detects_a_planted_variance_reduction():
    rng = np.random.default_rng(31)
    K, d = 200, 6
    g = np.ones(d)
    common = rng.normal(size=(K, d))
    extra = 0.5 * rng.normal(size=(K, d))  # a's extra noise, removed by b (a control variate)
    a, b = g + common + extra, g + common
    r = paired(a, b, g)
    assert r["variance_ratio"] == pytest.approx(1.25, rel=0.1)
    assert r["variance_ratio_ci"][0] > 1.0 and r["variance_ratio_p"] < 1e-4
    assert r["mse_diff"] > 0.0 and r["mse_diff_ci"][0] > 0.0 and r["mse_diff_p"] < 1e-4
    np.testing.assert_allclose(r["mse_diff"], summarize(a, g)["mse"] - summarize(b, g)["mse"], rtol=1e-12)
    # the pairing matters: unpaired sample-variance noise is far larger than the paired se
    assert r["mse_diff_se"] < 0.5 * math.hypot(summarize(a, g)["mse_se"], summarize(b, g)["mse_se"])
    assert r["p_value"] > 1e-3  # equal means


def test_paired_intervals_cover():
    rng = np.random.default_rng(32)
    K, d = 100, 4
    hits_ratio = hits_mse = rej = 0
    true_ratio = 1.25
    true_mse_diff = d * 0.25
    for _ in range(REPS):
        common = rng.normal(size=(K, d))
        a = common + 0.5 * rng.normal(size=(K, d))
        r = paired(a, common, np.zeros(d))
        hits_ratio += r["variance_ratio_ci"][0] <= true_ratio <= r["variance_ratio_ci"][1]
        hits_mse += r["mse_diff_ci"][0] <= true_mse_diff <= r["mse_diff_ci"][1]
        rej += r["p_value"] < 0.05
    assert _rate_ok(hits_ratio / REPS, 0.95)
    assert _rate_ok(hits_mse / REPS, 0.95)
    assert _rate_ok(rej / REPS, 0.05)


def test_paired_detects_a_mean_difference():
    rng = np.random.default_rng(33)
    common = rng.normal(size=(60, 3))
    r = paired(common + 0.1 * rng.normal(size=(60, 3)) + [0.1, 0.0, 0.0], common, np.zeros(3))
    assert r["test"] == "hotelling" and r["p_value"] < 1e-6


# ---------------------------------------------------------------------------------------------
# cost


def test_cost():
    c = cost(2.0, 1000, 0.5)
    assert c == {"seconds": 2.0, "episodes": 1000, "episodes_per_second": 500.0, "work_normalised_mse": 1.0}


# ---------------------------------------------------------------------------------------------
# contracts


@pytest.mark.parametrize("samples,exact,match", [
    (np.zeros(5), np.zeros(5), r"shape \(K, d\)"),
    (np.zeros((1, 3)), np.zeros(3), r"K >= 2"),
    (np.zeros((4, 3)), np.zeros(2), r"exact must have shape \(3,\)"),
    (np.zeros((4, 0)), np.zeros(0), r"no coordinates"),
    (np.array([[1.0, np.nan], [0.0, 1.0], [2.0, 2.0]]), np.zeros(2), r"non-finite.*trial 0, coordinate 1"),
    (np.array([[1.0, np.inf], [0.0, 1.0]]), np.zeros(2), r"non-finite"),
    (np.zeros((4, 2)), np.array([0.0, np.nan]), r"exact contains non-finite"),
    (np.array([["a", "b"], ["c", "d"]]), np.zeros(2), r"real numeric"),
    (np.zeros((4, 2), dtype=complex), np.zeros(2), r"real numeric"),
])
def test_bad_input_raises(samples, exact, match):
    with pytest.raises(PGBenchError, match=match):
        summarize(samples, exact)


def test_bad_options_and_paired_shapes_raise():
    X = np.random.default_rng(40).normal(size=(10, 3))
    with pytest.raises(PGBenchError, match="level"):
        summarize(X, np.zeros(3), level=1.5)
    with pytest.raises(PGBenchError, match="rtol"):
        summarize(X, np.zeros(3), rtol=-1.0)
    with pytest.raises(PGBenchError, match="same shape"):
        paired(X, X[:9], np.zeros(3))
    with pytest.raises(PGBenchError, match="samples_b.*non-finite"):
        paired(X, np.where(X > 1.0, np.nan, X), np.zeros(3))
    assert issubclass(PGBenchError, ValueError)


@pytest.mark.parametrize("args,match", [
    ((0.0, 10, 1.0), "seconds"),
    ((float("nan"), 10, 1.0), "seconds"),
    ((1.0, -1, 1.0), "episodes"),
    ((1.0, 2.5, 1.0), "episodes"),
    ((1.0, 10, -1.0), "mse"),
    ((1.0, 10, float("inf")), "mse"),
])
def test_cost_bad_input(args, match):
    with pytest.raises(PGBenchError, match=match):
        cost(*args)


# ----------------------------------------------------------------------------- the verdict's p-value


def test_verdict_p_is_the_larger_p_while_the_bootstrap_resolves_it():
    from pgbench.stats.metrics import verdict_p
    assert verdict_p(0.02, "hotelling", 0.3, 1999) == (0.3, "bootstrap max-t")
    assert verdict_p(0.4, "holm", 0.01, 1999) == (0.4, "Holm t-tests")
    # no bootstrap: the normal-theory p and its test
    assert verdict_p(1e-8, "hotelling", math.nan, 0) == (1e-8, "Hotelling T2")


def test_verdict_p_below_the_bootstrap_floor_is_the_normal_theory_p_and_says_so():
    """With B = 1999 no bootstrap p can fall below 1/2000; a cell both tests reject that hard gets
    the normal-theory p, named with the bootstrap's bound, so a 1e-6 threshold stays reachable."""
    from pgbench.stats.metrics import verdict_p
    p, test = verdict_p(1.3e-31, "hotelling", 1 / 2000, 1999)
    assert p == 1.3e-31 and test == "Hotelling T2; bootstrap p < 0.0005"
    # at the floor but the normal-theory p larger: it is the max anyway
    assert verdict_p(0.01, "hotelling", 1 / 2000, 1999) == (0.01, "Hotelling T2")
    # a constant coordinate that misses the exact value: certain
    assert verdict_p(0.7, "hotelling", 0.0, 1999)[0] == 0.0


def test_summarize_reports_the_verdict_p_of_a_strongly_biased_cell():
    """A bias of 20 standard errors: Hotelling's p is astronomically small, no bootstrap resample
    reaches it, and p_robust is Hotelling's p (not the bootstrap's floor)."""
    rng = np.random.default_rng(3)
    X = rng.normal(size=(400, 3)) + np.array([1.0, 0.0, 0.0])
    m = summarize(X, np.zeros(3), bootstrap=1999)
    assert m["p_bootstrap"] == 1 / 2000
    assert m["p_robust"] == m["p_value"] < 1e-30
    assert m["p_test"] == "Hotelling T2; bootstrap p < 0.0005"
