"""Practice estimators (ppo_gae, normalized_advantage, gpomdp_baseline): kernel against a naive
reference on the same episodes, the exact mean of ppo_gae, unbiasedness of gpomdp_baseline."""
from __future__ import annotations

import numpy as np
import pytest

import naive_practice as nv
from pgbench import PGBenchError, make
from pgbench.estimators import parse
from pgbench.exact import exact
from pgbench.measure.engine import sample_mdp
from conftest import capture_batches, random_terminal_mdp, z_crit  # noqa: E402
from pgbench import MDPProblem

PROBLEMS = ["garnet:S=4,A=2,b=2,seed=2,gamma=0.8", "garnet:S=4,A=3,b=2,seed=5,gamma=0.9,horizon=5",
            "frozen_lake:gamma=0.9"]


NAMES = ["ppo_gae:lambda=0.7", "normalized_advantage:base=ppo_gae:lambda=0.7", "normalized_advantage:base=reinforce_rtg",
         "gpomdp_baseline"]


def test_every_python_path_catalogue_entry_has_a_reference_here():
    from pgbench.estimators.batch import BATCH_CODE
    from pgbench.estimators.catalogue import MDP_ESTIMATORS
    assert {parse(n).name for n in NAMES} == {n for n, e in MDP_ESTIMATORS.items() if e.code == BATCH_CODE}


@pytest.mark.parametrize("problem", PROBLEMS)
def test_practice_estimators_match_naive_references(problem):
    prob = make(problem)
    names = NAMES
    res, batches = capture_batches(prob, names, N=3, K=4, seed=1)
    for k, b in enumerate(batches):
        gae = nv.gae_no_gamma(b, 0.7)
        rtg = [[b.gamma ** t * sum(b.gamma ** (j - t) * r[j] for j in range(t, len(r))) for t in range(len(r))]
               for _, _, r in nv.episodes(b)]
        refs = [nv.grad_from_psi(b, gae), nv.grad_from_psi(b, nv.normalized(gae)),
                nv.grad_from_psi(b, nv.normalized(rtg)), nv.gpomdp_baseline(b)]
        for j, ref in enumerate(refs):
            np.testing.assert_allclose(res.estimates[k, j], ref, rtol=1e-9, atol=1e-11, err_msg=names[j])


def test_ppo_gae_is_gae_without_gamma_t_when_gamma_is_one():
    prob = MDPProblem.tabular(random_terminal_mdp(3, gamma=1.0), theta=np.random.default_rng(3).normal(size=(7, 3)))
    res = sample_mdp(prob, ["gae:lambda=0.6", "ppo_gae:lambda=0.6"], N=5, K=20, seed=0)
    np.testing.assert_allclose(res.estimates[:, 1], res.estimates[:, 0], rtol=0,
                               atol=1e-12 * np.abs(res.estimates[:, 0]).max())


@pytest.mark.parametrize("problem", PROBLEMS + ["chain:n=4,gamma=0.9"])
def test_ppo_gae_exact_mean(problem):
    """Closed form (pgbench) against a dense forward recursion (reference) and the sample mean."""
    prob = make(problem)
    th = np.random.default_rng(7).normal(size=prob.policy.theta_shape)
    gt = exact(prob, th)
    res = sample_mdp(prob, ["ppo_gae:lambda=0.9"], N=4, K=3000, seed=3, theta=th)
    mean = res.extras["exact_mean"]["ppo_gae:lambda=0.9"]
    C = nv.ppo_gae_mean_weights(prob, gt.pi, gt.A, prob.mdp.episode_cap)
    np.testing.assert_allclose(mean, prob.policy.contract(th, C).reshape(-1), rtol=1e-10, atol=1e-12)
    est = res.estimates[:, 0]
    se = est.std(axis=0, ddof=1) / np.sqrt(est.shape[0])
    assert np.all(np.abs(est.mean(axis=0) - mean) <= z_crit(mean.size) * se + 1e-12)
    assert np.linalg.norm(mean - gt.grad.reshape(-1)) > 0.05 * np.linalg.norm(gt.grad)  # biased


@pytest.mark.parametrize("problem", ["garnet:S=4,A=2,b=2,seed=2,gamma=0.8", "frozen_lake:gamma=0.9"])
def test_gpomdp_baseline_is_unbiased(problem):
    prob = make(problem)
    th = np.random.default_rng(8).normal(size=prob.policy.theta_shape)
    res = sample_mdp(prob, ["gpomdp_baseline", "reinforce_rtg"], N=6, K=3000, seed=4, theta=th)
    g = res.targets[0]
    est = res.estimates[:, 0]
    se = est.std(axis=0, ddof=1) / np.sqrt(est.shape[0])
    assert np.all(np.abs(est.mean(axis=0) - g) <= z_crit(g.size) * se + 1e-12)


def test_parameters_are_checked():
    with pytest.raises(PGBenchError, match="normalized_advantage takes a base"):
        parse("normalized_advantage:base=rloo")
    with pytest.raises(PGBenchError, match="lambda must be in"):
        parse("ppo_gae:lambda=2")
    with pytest.raises(PGBenchError, match="natural takes a built-in"):
        parse("natural:base=ppo_gae")
    assert not parse("ppo_gae").unbiased and parse("gpomdp_baseline").unbiased
    with pytest.raises(PGBenchError, match="N >= 2"):
        sample_mdp(make("three_step_bandit"), ["gpomdp_baseline"], N=1, K=2)


# ----------------------------------------------------------------------------- exact moments of user code

TINY = "garnet:S=3,A=2,b=2,seed=0,gamma=0.9,horizon=2"  # 48 trajectories, 2304 ordered pairs


def test_enumerated_moments_of_a_numpy_estimator_equal_the_builtin_ones():
    from pgbench.estimators import register_batch_estimator, unregister_batch_estimator
    from pgbench.exact.moments import exact_moments
    from pgbench.measure.batch_runner import exact_user_moments
    register_batch_estimator("t_np_rtg2", unbiased=True, replace=True)(lambda b: b.discount() * b.reward_to_go())
    try:
        prob = make(TINY)
        mean, var, mse = exact_user_moments(prob, parse("t_np_rtg2"), batch=2)
        ref = exact_moments(prob, ["reinforce_rtg"], batch=2)
        np.testing.assert_allclose(mean, exact(prob).grad.reshape(-1), rtol=1e-12, atol=1e-14)
        assert var == pytest.approx(ref.variance[0], rel=1e-11) and mse == pytest.approx(ref.mse[0], rel=1e-11)
    finally:
        unregister_batch_estimator("t_np_rtg2")


def test_enumerated_moments_of_a_per_episode_function():
    import numba
    from pgbench.estimators import register_estimator, unregister_estimator
    from pgbench.exact.moments import exact_moments
    from pgbench.measure.batch_runner import exact_user_moments

    @numba.njit
    def rtg_end(states, actions, rewards, L, gamma, pi, V, Q, psi, end):
        G = 0.0
        for t in range(L - 1, -1, -1):
            G = rewards[t] + gamma * G
            psi[t] = gamma ** t * G

    register_estimator("t_rtg_end", unbiased=True, replace=True)(rtg_end)
    try:
        prob = make(TINY)
        mean, var, mse = exact_user_moments(prob, parse("t_rtg_end"), batch=3)
        ref = exact_moments(prob, ["reinforce_rtg"], batch=3)
        assert var == pytest.approx(ref.variance[0], rel=1e-11)
        np.testing.assert_allclose(mean, exact(prob).grad.reshape(-1), rtol=1e-12, atol=1e-14)
    finally:
        unregister_estimator("t_rtg_end")


def test_practice_estimators_exact_by_enumeration():
    """ppo_gae: enumeration = closed form; normalized_advantage: the sampled mean agrees with the
    enumerated one (its exact bias), which is far from zero."""
    from pgbench.exact.practice import exact_mean
    from pgbench.measure.batch_runner import exact_user_moments
    prob = make(TINY)
    gt = exact(prob)
    m_enum, _, _ = exact_user_moments(prob, parse("ppo_gae:lambda=0.8"), batch=2)
    np.testing.assert_allclose(m_enum, exact_mean(prob, prob.theta, gt, parse("ppo_gae:lambda=0.8")), rtol=1e-11,
                               atol=1e-14)
    spec = parse("normalized_advantage")
    m_norm, var, mse = exact_user_moments(prob, spec, batch=2)
    res = sample_mdp(prob, [spec], N=2, K=4000, seed=9)
    est = res.estimates[:, 0]
    se = est.std(axis=0, ddof=1) / np.sqrt(est.shape[0])
    assert np.all(np.abs(est.mean(axis=0) - m_norm) <= z_crit(m_norm.size) * se + 1e-12)
    assert est.var(axis=0, ddof=1).sum() == pytest.approx(var, rel=0.15)
    assert np.linalg.norm(m_norm - gt.grad.reshape(-1)) > 0.1 * np.linalg.norm(gt.grad)


def test_measure_shows_exact_columns_for_user_code():
    from pgbench.measure import measure
    df = measure(TINY, ["ppo_gae", "normalized_advantage"], batch=2, trials=50).set_index("estimator")
    assert np.isfinite(df["exact_variance"]).all() and np.isfinite(df["exact_bias_norm"]).all()
    noisy = measure("garnet:S=3,A=2,b=2,seed=0,gamma=0.9,horizon=2,noise=0.1", ["normalized_advantage"], batch=2,
                    trials=20)
    assert np.isnan(noisy["exact_variance"][0])  # not affine in the rewards: not enumerated
