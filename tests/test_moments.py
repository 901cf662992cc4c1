"""Exact second moments by trajectory enumeration (pgbench.exact.moments) against the exact
gradient, an independent plain-Python enumeration (tests/naive_mdp.py), closed forms, and the
Monte-Carlo kernels (docs/contract.rst).

Monte-Carlo comparisons use fixed seeds and 5-standard-error thresholds with a Bonferroni
correction, so they are deterministic and would fail for a correct implementation with
negligible probability under another seed.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from pgbench import MDPProblem, PGBenchError, TabularMDP, exact, make
from pgbench.estimators.catalogue import parse
from pgbench.exact import moments as M
from pgbench.measure.engine import sample_mdp
from pgbench.measure.measure import measure

from conftest import linear_version, random_terminal_mdp, random_theta, z_crit
from naive_mdp import enumerate_trajectories as naive_trajectories
from naive_mdp import trace_var  # noqa: E402
from naive_mdp import exact_episode_moments, exact_optimal_baseline

PER_EPISODE_UNBIASED = ["reinforce", "reinforce_rtg", "const_baseline:b=0.7", "optimal_const_baseline",
                        "value_baseline", "true_advantage", "all_action", "gae:lambda=0.7", "td0",
                        "gae:lambda=1.0,critic=perturbed,scale=0.5", "geometric_termination", "importance_sampling",
                        "importance_sampling:mu=mix,eps=0.3", "entropy_bonus:beta=0.1"]
IN_BATCH_UNBIASED = ["rloo", "w_baseline_loo", "time_baseline_loo"]
IN_BATCH_BIASED = ["batch_mean_baseline", "w_baseline", "score_norm_baseline", "gae:lambda=0.5,critic=fitted",
                   "importance_sampling:weighted=1"]


# ----------------------------------------------------------------------------- problems

def _noisy(mdp: TabularMDP, name: str, max_steps=None, **noise) -> TabularMDP:
    return TabularMDP.from_sparse(mdp.next_idx, mdp.next_prob, mdp.R, mdp.rho0, mdp.gamma, horizon=mdp.horizon,
                                  terminal=mdp.terminal, name=name, max_steps=max_steps, **noise)


def dag_problem(linear: bool = False) -> MDPProblem:
    """Unbounded, gamma = 0.9, terminal states 3 and 4 reached in at most three steps: every episode
    ends before the cap, so the enumeration is the whole law and unbiased means equal grad J."""
    rng = np.random.default_rng(11)
    S, A = 5, 2
    P = np.zeros((S, A, S))
    succ = {0: (1, 2), 1: (2, 3), 2: (3, 4), 3: (3,), 4: (4,)}
    for s, nxt in succ.items():
        for a in range(A):
            P[s, a, list(nxt)] = rng.dirichlet(np.ones(len(nxt)))
    terminal = np.array([False, False, False, True, True])
    mdp = TabularMDP.from_dense(P, rng.normal(size=(S, A)), [1.0, 0, 0, 0, 0], 0.9, terminal=terminal,
                                reward_std=0.4, name="dag")
    prob = MDPProblem.tabular(mdp, name="dag")
    if linear:
        return linear_version(prob, 3, d=3)
    return prob.with_theta(random_theta(prob, 5))


def problem(key: str) -> MDPProblem:
    if key == "three_step_bandit":  # uniform noise, finite horizon, random theta
        p = make("three_step_bandit")
        return p.with_theta(random_theta(p, 3))
    if key == "garnet_finite_gaussian":  # tabular, gamma < 1, horizon 3, Gaussian noise
        p = make("garnet:S=4,A=2,b=2,seed=4,gamma=0.9,horizon=3,noise=0.5")
        return p.with_theta(random_theta(p, 2))
    if key == "terminal_finite_linear":  # linear softmax, terminal states and a horizon, Gaussian noise
        m = random_terminal_mdp(16, S=5, A=2, gamma=0.9, horizon=3)
        return linear_version(MDPProblem.tabular(_noisy(m, "small16g", reward_std=0.7)), 16, d=3)
    if key == "dag_unbounded":
        return dag_problem()
    if key == "dag_unbounded_linear":
        return dag_problem(linear=True)
    raise KeyError(key)


ALL_PROBLEMS = ["three_step_bandit", "garnet_finite_gaussian", "terminal_finite_linear", "dag_unbounded",
                "dag_unbounded_linear"]
TINY = ["three_step_bandit", "garnet_finite_gaussian", "dag_unbounded"]  # few enough trajectories for N = 2


# ----------------------------------------------------------------------------- enumeration

@pytest.mark.parametrize("key", ALL_PROBLEMS)
def test_trajectories_are_a_probability_law_and_match_the_count(key):
    prob = problem(key)
    tr = M.enumerate_trajectories(prob)
    assert len(tr) == M.count_trajectories(prob)
    pi = prob.policy.probs(prob.theta)
    assert tr.probs(pi).sum() == pytest.approx(1.0, abs=1e-12)
    if prob.mdp.horizon is not None:  # the same law as the plain-Python walk
        naive = sorted(round(p, 15) for p, *_ in naive_trajectories(prob))
        assert np.allclose(sorted(tr.probs(pi)), naive, atol=1e-15)
    else:
        assert not tr.capped.any()


def test_counts_of_known_problems():
    assert M.count_trajectories(make("three_step_bandit")) == 27
    assert M.count_trajectories(make("boltzmann_bandit")) == 2
    # garnet: 4 start states, A b = 4 slots per step, 3 steps
    assert M.count_trajectories(make("garnet:S=4,A=2,b=2,seed=4,horizon=3")) == 4 * 4 ** 3
    # the count stops early once past the threshold (cheap on big problems)
    assert M.count_trajectories(make("garnet:S=2000,A=4,b=3,seed=0,gamma=0.99"), stop_above=1e4) > 1e4


# ----------------------------------------------------------------------------- means

@pytest.mark.parametrize("key", ALL_PROBLEMS)
def test_unbiased_estimators_average_to_the_exact_gradient(key):
    """The enumerated mean of every unbiased estimator is its target (grad J, or grad J_beta for
    entropy_bonus) to rounding: the kernel's per-episode code and the policy-gradient theorem agree."""
    prob = problem(key)
    em = M.exact_moments(prob, PER_EPISODE_UNBIASED)
    gt = exact(prob)
    assert em.truncated_mass == 0.0
    for j, name in enumerate(PER_EPISODE_UNBIASED):
        target = exact(prob, beta=0.1).grad if name.startswith("entropy") else gt.grad
        np.testing.assert_allclose(em.mean[j], target.reshape(-1), rtol=1e-10, atol=1e-12, err_msg=name)
        np.testing.assert_allclose(em.target[j], target.reshape(-1), rtol=1e-12, atol=1e-14, err_msg=name)


@pytest.mark.parametrize("key, N", [(k, 2) for k in TINY] + [("three_step_bandit", 3), ("dag_unbounded", 3)])
def test_in_batch_estimators_enumerated_over_batches(key, N):
    """Leave-one-out baselines are unbiased; the batch mean baseline shrinks the gradient by exactly
    1 - 1/N (at N = 2: grad / 2); the other in-batch baselines are biased."""
    prob = problem(key)
    names = IN_BATCH_UNBIASED + IN_BATCH_BIASED
    em = M.exact_moments(prob, names, batch=N)
    g = exact(prob).grad.reshape(-1)
    for name in IN_BATCH_UNBIASED:
        np.testing.assert_allclose(em.mean[em.row(name)], g, rtol=1e-10, atol=1e-12, err_msg=name)
    np.testing.assert_allclose(em.mean[em.row("batch_mean_baseline")], (1 - 1 / N) * g, rtol=1e-10, atol=1e-12)
    assert em.bias_norm[em.row("batch_mean_baseline")] == pytest.approx(np.linalg.norm(g) / N, rel=1e-10)
    for name in ("w_baseline", "score_norm_baseline"):
        assert em.bias_norm[em.row(name)] > 1e-3 * np.linalg.norm(g), name
    # the variances of a batch: rloo = (N / (N - 1))^2 batch_mean (same estimates up to that factor)
    assert em.variance[em.row("rloo")] == pytest.approx((N / (N - 1)) ** 2 * em.variance[em.row("batch_mean_baseline")],
                                                         rel=1e-10)


def test_batch_mean_baseline_at_N2_is_exactly_half_the_gradient_on_the_three_step_bandit():
    prob = make("three_step_bandit")
    em = M.exact_moments(prob, ["batch_mean_baseline"], batch=2)
    expect = np.full((3, 3), -1 / 9)
    np.fill_diagonal(expect, 2 / 9)
    np.testing.assert_allclose(em.mean[0], expect.reshape(-1) / 2, atol=1e-15)


def test_biased_estimators_show_their_bias():
    prob = problem("dag_unbounded")
    em = M.exact_moments(prob, ["rtg_no_gamma_t", "gae:lambda=0.5,critic=perturbed,scale=1.0,seed=1"])
    assert (em.bias_norm > 1e-2).all()
    # without discounting dropping gamma^t changes nothing
    em1 = M.exact_moments(make("three_step_bandit"), ["rtg_no_gamma_t", "reinforce_rtg"])
    np.testing.assert_allclose(em1.mean[0], em1.mean[1], atol=1e-15)
    assert em1.variance[0] == pytest.approx(em1.variance[1], rel=1e-12)


# ----------------------------------------------------------------------------- second moments

@pytest.mark.parametrize("key", ["three_step_bandit", "garnet_finite_gaussian", "terminal_finite_linear"])
def test_second_moments_agree_with_an_independent_enumeration(key):
    """tests/naive_mdp.py computes the reward-linear estimators' covariance as G^T M r with its own
    enumeration and its own noise term; the kernel-based enumeration gives the same numbers."""
    prob = problem(key)
    names = ["reinforce", "reinforce_rtg", "rtg_no_gamma_t", "value_baseline", "true_advantage",
             "const_baseline:b=1.0"]
    em = M.exact_moments(prob, names, cov=True)
    for j, n in enumerate(names):
        mean, cov = exact_episode_moments(prob, n)
        np.testing.assert_allclose(em.mean[j], mean, rtol=1e-10, atol=1e-13, err_msg=n)
        np.testing.assert_allclose(em.cov[j], cov, rtol=1e-9, atol=1e-12, err_msg=n)
        assert em.variance[j] == pytest.approx(np.trace(cov), rel=1e-10)
        assert em.variance1[j] == em.variance[j] and em.mse1[j] == pytest.approx(em.mse[j], rel=1e-12)


def test_batch_of_N_divides_the_variance_and_adds_the_squared_bias():
    prob = problem("dag_unbounded")
    names = ["reinforce_rtg", "rtg_no_gamma_t"]
    e1 = M.exact_moments(prob, names, batch=1, cov=True)
    e8 = M.exact_moments(prob, names, batch=8, cov=True)
    np.testing.assert_allclose(e8.variance, e1.variance / 8, rtol=1e-12)
    np.testing.assert_allclose(e8.mse, e1.variance / 8 + e1.bias_norm ** 2, rtol=1e-12)
    np.testing.assert_allclose(np.trace(e8.cov, axis1=1, axis2=2), e8.variance, rtol=1e-10)
    # batch enumeration of a per-episode estimator agrees with Var(1)/N
    e2 = M.exact_moments(prob, ["reinforce_rtg", "rloo"], batch=2)
    assert e2.variance[0] == pytest.approx(e1.variance[0] / 2, rel=1e-12)


def test_reward_noise_adds_its_exact_variance_term():
    """Three-step bandit at theta = 0: uniform noise of width 0.6 has variance 0.03 per step and
    ||e_a - 1/3||^2 = 2/3. Reward-to-go: reward k weighs the first k + 1 scores, adding
    0.03 (2/3) (1 + 2 + 3) = 0.12; the full return weighs all three scores for every reward,
    adding 3 x 0.03 x 2 = 0.18. The means do not move."""
    names = ["reinforce_rtg", "reinforce", "value_baseline", "true_advantage"]
    noisy = M.exact_moments(make("three_step_bandit:noise=0.3"), names)
    quiet = M.exact_moments(make("three_step_bandit:noise=0.0"), names)
    np.testing.assert_allclose(noisy.mean, quiet.mean, atol=1e-15)
    diff = noisy.variance - quiet.variance
    assert diff[0] == pytest.approx(0.12, rel=1e-12)
    assert diff[1] == pytest.approx(0.18, rel=1e-12)
    assert diff[2] == pytest.approx(0.12, rel=1e-12)  # a baseline does not touch the noise term
    assert diff[3] == pytest.approx(0.0, abs=1e-15)  # the oracle advantage never reads a reward


def test_unbounded_enumeration_up_to_a_small_cap_is_the_capped_law():
    """With a cap that cuts episodes, the enumeration is the law of the sampled (capped) episodes:
    its cut-off mass is the exact one, and reward-to-go averages to the gradient of the same MDP
    with horizon = cap."""
    m = random_terminal_mdp(17, S=4, A=2, n_terminal=1, gamma=0.8)
    capped = MDPProblem.tabular(_noisy(m, "t17", max_steps=3, reward_std=0.5))
    capped = capped.with_theta(random_theta(capped, 4))
    em = M.exact_moments(capped, ["reinforce_rtg", "value_baseline"])
    gt = exact(capped)
    assert 0.01 < em.truncated_mass == pytest.approx(gt.truncated_mass, rel=1e-10)
    horizon = MDPProblem.tabular(TabularMDP.from_sparse(m.next_idx, m.next_prob, m.R, m.rho0, 0.8, horizon=3,
                                                        terminal=m.terminal), theta=capped.theta)
    g3 = exact(horizon).grad.reshape(-1)
    np.testing.assert_allclose(em.mean, np.stack([g3, g3]), rtol=1e-10, atol=1e-12)
    assert np.abs(g3 - gt.grad.reshape(-1)).max() > 1e-3  # the cap matters here
    # max_steps overrides the problem's cap
    assert M.exact_moments(capped, ["reinforce_rtg"], max_steps=2).cap == 2


@pytest.mark.parametrize("key, N, names", [
    ("three_step_bandit", 1, ["reinforce", "value_baseline", "gae:lambda=0.7", "geometric_termination",
                              "importance_sampling:mu=mix,eps=0.3", "entropy_bonus:beta=0.1"]),
    ("dag_unbounded", 1, ["reinforce_rtg", "true_advantage", "all_action", "geometric_termination",
                          "importance_sampling", "td0:critic=perturbed,scale=0.5"]),
    ("dag_unbounded", 2, ["rloo", "batch_mean_baseline", "w_baseline", "w_baseline_loo", "score_norm_baseline",
                          "time_baseline_loo", "gae:lambda=0.5,critic=fitted", "importance_sampling:weighted=1"]),
    ("three_step_bandit", 3, ["rloo", "w_baseline", "time_baseline_loo", "td0:critic=fitted"]),
])
def test_exact_moments_match_monte_carlo(key, N, names):
    """Measured mean within 5 Bonferroni standard errors of the enumerated mean, and measured trace
    variance within 5 jackknife standard errors of the exact Var(N)."""
    prob = problem(key)
    em = M.exact_moments(prob, names, batch=N)
    K = 6000
    res = sample_mdp(prob, names, N, K, seed=21)
    d = res.estimates.shape[2]
    zc = z_crit(d * len(names))
    for j, n in enumerate(names):
        X = res.estimates[:, j]
        se = X.std(axis=0, ddof=1) / math.sqrt(K)
        live = se > 1e-12
        assert np.all(np.abs(X.mean(axis=0) - em.mean[j])[~live] < 1e-9), n
        assert np.abs((X.mean(axis=0) - em.mean[j])[live] / se[live]).max() <= zc, n
        v, sv = trace_var(X)
        assert abs(v - em.variance[j]) <= 5 * sv, (n, v, em.variance[j], sv)


# ----------------------------------------------------------------------------- optimal baselines

@pytest.mark.parametrize("key", ["three_step_bandit", "terminal_finite_linear", "dag_unbounded"])
def test_optimal_constant_baseline_and_its_variance_parabola(key):
    prob = problem(key)
    ob = M.optimal_baselines(prob)
    em = M.exact_moments(prob, ["reinforce", "const_baseline:b=0.7", "optimal_const_baseline"])
    if prob.mdp.horizon is not None:
        assert ob.b_star == pytest.approx(exact_optimal_baseline(prob)[0], rel=1e-12)
    assert M.exact_optimal_constant_baseline(prob) == ob.b_star
    assert em.extras["optimal_const_baseline_b"] == pytest.approx(ob.b_star, rel=1e-12)
    # Var(b) is the exact variance of (R - b) z: at b = 0 (reinforce), 0.7 and b*
    scale = em.variance.max()
    assert ob.variance(0.0) == pytest.approx(em.variance[0], rel=1e-9, abs=1e-12 * scale)
    assert ob.variance(0.7) == pytest.approx(em.variance[1], rel=1e-9, abs=1e-12 * scale)
    assert ob.var_star == pytest.approx(em.variance[2], rel=1e-9, abs=1e-12 * scale)
    np.testing.assert_allclose(ob.grad, exact(prob).grad.reshape(-1), rtol=1e-10, atol=1e-12)
    # b* minimises the parabola, which is symmetric about it
    for eps in (1e-3, 0.1, 1.0):
        lo, hi = ob.variance(ob.b_star - eps), ob.variance(ob.b_star + eps)
        assert ob.var_star <= lo and ob.var_star <= hi
        assert lo == pytest.approx(hi, rel=1e-9)
        assert lo - ob.var_star == pytest.approx(ob.EZ * eps * eps, rel=1e-6)
    # per-coordinate baselines do at least as well as the best single constant
    assert ob.var_coord <= ob.var_star + 1e-12 * scale
    assert ob.variance_coord(ob.b_star) == pytest.approx(ob.var_star, rel=1e-9)
    assert ob.b_coord.shape == prob.theta.shape


def test_three_step_bandit_b_star_is_one():
    assert M.exact_optimal_constant_baseline(make("three_step_bandit")) == pytest.approx(1.0, abs=1e-12)


# ----------------------------------------------------------------------------- measure() columns

def test_measure_shows_exact_variance_and_mse_when_cheap():
    names = ["reinforce", "rloo", "batch_mean_baseline", "optimal_const_baseline", "natural"]
    df = measure("three_step_bandit", names, batch=2, trials=3000, seed=4)
    em = M.exact_moments(make("three_step_bandit"), names[:3], batch=2)
    np.testing.assert_allclose(df["exact_variance"][:3], em.variance, rtol=1e-12)
    np.testing.assert_allclose(df["exact_mse"][:3], em.mse, rtol=1e-12)
    assert np.isnan(df["exact_variance"][4]) and np.isnan(df["exact_mse"][4])  # natural: not enumerated
    # optimal_const_baseline uses the cell's pilot b: its exact variance is Var(b_pilot) / N, a hair above Var(b*)
    ob = M.optimal_baselines(make("three_step_bandit"))
    b_pilot = df.attrs["optimal_const_baseline_b"]
    assert df["exact_variance"][3] == pytest.approx(ob.variance(b_pilot) / 2, rel=1e-10)
    for _, r in df.iloc[:4].iterrows():  # measured within 5 standard errors of the exact values
        assert abs(r["variance"] - r["exact_variance"]) <= 5 * r["variance_se"], r["estimator"]
        assert abs(r["mse"] - r["exact_mse"]) <= 5 * r["mse_se"], r["estimator"]


def test_measure_leaves_exact_columns_nan_on_big_problems_and_on_request():
    df = measure("garnet:S=200,A=4,b=3,seed=0,gamma=0.9", ["reinforce_rtg"], batch=2, trials=5, seed=0)
    assert np.isnan(df["exact_variance"][0]) and np.isnan(df["exact_mse"][0])
    df = measure("three_step_bandit", ["reinforce_rtg"], batch=2, trials=5, seed=0, exact=False)
    assert np.isnan(df["exact_variance"][0])
    dag = dag_problem()  # unbounded: exact columns too, unless turned off
    assert np.isfinite(measure(dag, ["reinforce_rtg"], batch=2, trials=5)["exact_variance"][0])
    assert np.isnan(measure(dag, ["reinforce_rtg"], batch=2, trials=5, exact=False)["exact_variance"][0])


# ----------------------------------------------------------------------------- refusals

def test_too_many_trajectories_are_refused_clearly():
    with pytest.raises(PGBenchError, match="more than 1000 trajectories"):
        M.exact_moments("garnet:S=4,A=2,b=2,seed=4,horizon=5", "reinforce", limit=1000, method="enumerate")
    with pytest.raises(PGBenchError, match="trajectories"):
        M.exact_moments("frozen_lake", "reinforce", method="enumerate")
    with pytest.raises(PGBenchError, match="batches of N=4"):
        M.exact_moments("garnet:S=4,A=2,b=2,seed=4,horizon=3", "rloo", batch=4, method="enumerate")
    # the default (method="auto") takes the moment DP for these, whatever the count
    assert M.exact_moments("frozen_lake", "reinforce").extras["method"] == "dp"


@pytest.mark.parametrize("est, N, words", [
    ("natural", 1, ["natural", "pseudo-inverse"]),
    ("rloo", 1, ["rloo", "N >= 2"]),
    ("score_function", 1, ["score_function"]),
    ("no_such", 1, ["no_such"]),
])
def test_unsupported_estimators_are_refused(est, N, words):
    with pytest.raises(PGBenchError) as info:
        M.exact_moments("three_step_bandit", est, batch=N)
    for w in words:
        assert w in str(info.value)


def test_objectives_and_bad_sizes_are_refused():
    with pytest.raises(PGBenchError, match="MDP"):
        M.exact_moments("gaussian_toy", "score_function")
    with pytest.raises(PGBenchError, match="batch size"):
        M.exact_moments("three_step_bandit", "reinforce", batch=0)
    with pytest.raises(PGBenchError, match="max_steps"):
        M.exact_moments("three_step_bandit", "reinforce", max_steps=0)
    assert not M.supports("natural") and M.supports("rloo") and M.supports(parse("gae:lambda=0.3"))
