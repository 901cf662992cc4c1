"""The full covariance by the moment DP (pgbench.exact.dp.dp_second_moments) against trajectory
enumeration, and ppo_gae in the DP against a plain listing of trajectories, its closed-form mean
and Monte-Carlo measurements (docs/moments.rst).

Exact comparisons: 1e-10 relative to the covariance's Frobenius norm (or to the squared gradient
when the covariance is exactly zero); Monte-Carlo ones: Bonferroni critical values of at least 5
standard errors with fixed seeds.
"""
from __future__ import annotations

import numpy as np
import pytest

from pgbench import PGBenchError, exact, make
from pgbench.exact import practice
from pgbench.estimators.catalogue import parse
from pgbench.exact import dp
from pgbench.exact import moments as M
from pgbench.measure.measure import measure

import naive_dp
from conftest import z_crit
from test_dp import DP_IN_BATCH, DP_PER_EPISODE, _get
from test_moments import ALL_PROBLEMS

PPO = ["ppo_gae:lambda=0.95", "ppo_gae:lambda=0.0", "ppo_gae:lambda=1.0"]


def _cov_close(dp_cov, en_cov, floor, rtol=1e-10):
    """``max |dp - en| <= rtol max(||en||_F, floor)`` per estimator."""
    for j in range(en_cov.shape[0]):
        scale = max(float(np.linalg.norm(en_cov[j])), floor[j])
        err = float(np.abs(dp_cov[j] - en_cov[j]).max())
        assert err <= rtol * scale, (j, err, scale)


def _floor(em):
    return np.einsum("ej,ej->e", em.target, em.target)


# ----------------------------------------------------------------------------- covariance against enumeration

@pytest.mark.parametrize("key", ALL_PROBLEMS + ["capped"])
@pytest.mark.parametrize("N", [1, 3])
def test_dp_covariance_agrees_with_enumeration_for_every_per_episode_estimator(key, N):
    prob = _get(key)
    en = M.exact_moments(prob, DP_PER_EPISODE, batch=N, method="enumerate", cov=True)
    em = M.exact_moments(prob, DP_PER_EPISODE, batch=N, method="dp", cov=True)
    assert em.cov.shape == en.cov.shape == (len(DP_PER_EPISODE), em.mean.shape[1], em.mean.shape[1])
    _cov_close(em.cov, en.cov, _floor(en))
    # the covariance's trace is the DP's variance, computed by the narrow pass
    np.testing.assert_allclose(np.trace(em.cov, axis1=1, axis2=2), em.variance, rtol=1e-10,
                               atol=1e-10 * _floor(en).max())
    np.testing.assert_array_equal(em.cov, np.swapaxes(em.cov, 1, 2))


@pytest.mark.parametrize("key, N", [("three_step_bandit", 2), ("garnet_finite_gaussian", 2), ("dag_unbounded", 2),
                                    ("three_step_bandit", 3), ("dag_unbounded_linear", 3),
                                    ("three_step_bandit", 5), ("dag_unbounded_linear", 5), ("capped", 2)])
def test_dp_covariance_of_in_batch_estimators_agrees_with_enumeration_over_batches(key, N):
    prob = _get(key)
    en = M.exact_moments(prob, DP_IN_BATCH, batch=N, method="enumerate", cov=True, limit=10 ** 6)
    em = M.exact_moments(prob, DP_IN_BATCH, batch=N, method="dp", cov=True)
    _cov_close(em.cov, en.cov, _floor(en))
    np.testing.assert_allclose(np.trace(em.cov, axis1=1, axis2=2), em.variance, rtol=1e-10)


def test_dp_covariance_for_a_logits_policy_and_auto_picks_the_dp():
    import pgbench
    from pgbench.policies import LogitsPolicy
    X = np.random.default_rng(0).normal(size=(4, 3))
    pol = LogitsPolicy(lambda t: X @ t.reshape(3, 2), lambda t, c: (X.T @ c).ravel(), theta=np.full(6, 0.1))
    prob = pgbench.make("garnet:S=4,A=2,b=2,seed=3,horizon=3,noise=0.3").with_policy(pol)
    ests = ["reinforce", "optimal_const_baseline", "reinforce_rtg", "value_baseline", "gae:lambda=0.7", "rloo"]
    a = M.exact_moments(prob, ests, batch=2, cov=True)
    b = M.exact_moments(prob, ests, batch=2, method="enumerate", cov=True)
    assert a.extras["method"] == "dp" and a.cov.shape == (len(ests), 6, 6)
    _cov_close(a.cov, b.cov, _floor(b))


def test_dp_covariance_of_the_optimal_baseline_uses_the_given_constant():
    """b* is fixed once from the original scores: the widened pass must not recompute it from u M."""
    prob = _get("terminal_finite_linear")
    for b in (None, 0.3):
        a = M.exact_moments(prob, ["optimal_const_baseline"], method="dp", cov=True, opt_b=b)
        e = M.exact_moments(prob, ["optimal_const_baseline"], method="enumerate", cov=True, opt_b=b)
        _cov_close(a.cov, e.cov, _floor(e))
        assert a.extras["optimal_const_baseline_b"] == pytest.approx(e.extras["optimal_const_baseline_b"], rel=1e-10)


def test_pair_columns_give_the_products_of_coordinates():
    Mx = dp.pair_columns(4)
    g = np.random.default_rng(1).normal(size=4)
    h = (g @ Mx) ** 2
    assert Mx.shape == (4, 10)
    i, j = np.triu_indices(4, 1)
    np.testing.assert_allclose((h[4:] - h[i] - h[j]) / 2, g[i] * g[j], rtol=1e-12)


def test_covariance_too_wide_for_the_dp_tables_is_refused():
    big = "garnet:S=100,A=4,b=3,seed=0,gamma=0.9"  # tabular d = 400: 80200 coordinates, 3.2e7 entries
    with pytest.raises(PGBenchError, match=r"d \+ d\(d-1\)/2 = 80200 coordinates for d = 400.*more than 20000000"):
        M.exact_moments(big, ["reinforce_rtg"], method="dp", cov=True)
    assert np.isfinite(M.exact_moments(big, ["reinforce_rtg"], method="dp").variance).all()  # the variance still runs


# ----------------------------------------------------------------------------- ppo_gae

@pytest.mark.parametrize("key", ALL_PROBLEMS + ["capped"])
def test_ppo_gae_by_the_dp_matches_a_listing_of_trajectories_and_its_closed_form_mean(key):
    prob = _get(key)
    gt = exact(prob)
    em = M.exact_moments(prob, PPO, batch=2, method="dp", cov=True)
    for j, lab in enumerate(PPO):
        mean, second = naive_dp.ppo_gae_by_listing(prob, parse(lab).p["lambda"])
        cov = (second - np.outer(mean, mean)) / 2
        assert np.abs(em.mean[j] - mean).max() <= 1e-10 * np.abs(mean).max(), lab
        np.testing.assert_allclose(em.mean[j], practice.exact_mean(prob, prob.resolve_theta(None), gt, parse(lab)),
                                   rtol=1e-10, atol=1e-12 * np.abs(mean).max())
        assert np.abs(em.cov[j] - cov).max() <= 1e-10 * np.linalg.norm(cov), lab
        assert em.variance[j] == pytest.approx(np.trace(cov), rel=1e-10)
    # lambda = 1 telescopes to the reward-to-go without gamma^t, minus V(s_t) (mean zero given s_t)
    if prob.mdp.horizon is not None:
        ref = M.exact_moments(prob, ["rtg_no_gamma_t"], method="dp")
        np.testing.assert_allclose(em.mean[2], ref.mean[0], rtol=1e-10, atol=1e-12)


def test_ppo_gae_is_refused_by_enumeration_with_a_reason_and_mixed_requests_are_routed():
    prob = _get("three_step_bandit")
    with pytest.raises(PGBenchError, match="moment DP only"):
        M.exact_moments(prob, ["ppo_gae"], method="enumerate")
    with pytest.raises(PGBenchError, match="ppo_gae.*does not cover w_baseline"):
        M.exact_moments(prob, ["ppo_gae", "w_baseline"], batch=2)
    assert M.supports("ppo_gae") and M.dp_supports("ppo_gae")
    for name, words in [("normalized_advantage", "batch normalisation"), ("gpomdp_baseline", "leave-one-out")]:
        assert not M.dp_supports(name) and words in dp.why_not(parse(name))


def test_monte_carlo_agrees_with_the_dp_for_ppo_gae_and_measure_reports_it():
    """measure() fills ppo_gae's exact variance and MSE from the DP (the problem is far too big to
    enumerate) and the measured ones lie within z standard errors of them."""
    names = ["gae:lambda=0.95", "ppo_gae:lambda=0.95", "ppo_gae:lambda=0.5", "normalized_advantage"]
    prob = make("garnet:S=12,A=3,b=3,seed=2,gamma=0.95,horizon=20,noise=0.5")
    theta = np.random.default_rng(7).normal(scale=0.5, size=prob.policy.theta_shape)
    df = measure(prob, names, batch=4, trials=2000, seed=3, theta=theta)
    z = z_crit(2 * 3)
    for _, r in df.iloc[:3].iterrows():
        assert np.isfinite(r["exact_variance"]) and np.isfinite(r["exact_mse"]), r["estimator"]
        assert abs(r["variance"] - r["exact_variance"]) <= z * r["variance_se"], \
            (r["estimator"], r["variance"], r["exact_variance"], r["variance_se"])
        assert abs(r["mse"] - r["exact_mse"]) <= z * r["mse_se"], r["estimator"]
    assert np.isnan(df["exact_variance"].iloc[3])  # batch normalisation: Monte-Carlo only
    em = M.exact_moments(prob, names[1:3], batch=4, theta=theta)
    np.testing.assert_allclose(df["exact_variance"].iloc[1:3], em.variance, rtol=1e-12)


def test_report_marks_only_the_batch_normalised_and_ratio_baseline_practice_estimators_mc_only():
    from pgbench.reports.report import _why_no_exact
    assert "batch normalisation" in _why_no_exact("normalized_advantage")
    assert "leave-one-out" in _why_no_exact("gpomdp_baseline")
    assert dp.why_not(parse("ppo_gae:lambda=0.95")) is None  # exact: never listed as MC only


# ----------------------------------------------------------------------------- w_baseline_loo at N = 2

@pytest.mark.parametrize("key", ["three_step_bandit", "garnet_finite_gaussian", "dag_unbounded", "dag_unbounded_linear"])
def test_w_baseline_loo_at_two_episodes_is_rloo_and_agrees_with_enumeration(key):
    """b_i = W_j R_j / W_j = R_j: the DP gives rloo's moments, enumeration runs the sampler's ratio."""
    prob = _get(key)
    assert M.dp_supports("w_baseline_loo", prob, 2) and not M.dp_supports("w_baseline_loo", prob, 3)
    en = M.exact_moments(prob, ["w_baseline_loo", "rloo"], batch=2, method="enumerate", cov=True)
    em = M.exact_moments(prob, ["w_baseline_loo"], batch=2, cov=True)
    assert em.extras["method"] == "dp"
    _cov_close(em.cov, en.cov[:1], _floor(en))
    assert np.abs(em.mean[0] - en.mean[0]).max() <= 1e-10 * np.abs(en.mean[0]).max()
    assert em.variance[0] == pytest.approx(en.variance[0], rel=1e-10)
    assert en.variance[0] == pytest.approx(en.variance[1], rel=1e-10)  # the sampler's w_baseline_loo is rloo


def test_w_baseline_loo_with_an_almost_certain_action_is_left_to_enumeration():
    """W(tau) = sum_t ||e_a - pi||^2 vanishes for an episode whose actions all have probability 1
    (then the baseline is 0, not R_j): a policy that close to deterministic is refused by the DP."""
    prob = _get("three_step_bandit")
    sharp = prob.with_theta(np.where(np.arange(prob.theta.size) % 3 == 0, 40.0, 0.0).reshape(prob.theta.shape))
    assert not M.dp_supports("w_baseline_loo", sharp, 2)
    with pytest.raises(PGBenchError, match="W can vanish"):
        M.exact_moments(sharp, ["w_baseline_loo"], batch=2, method="dp")
    assert "method" not in M.exact_moments(sharp, ["w_baseline_loo"], batch=2).extras  # auto: enumeration
