"""Exact moments by dynamic programming over (t, s) (pgbench.exact.dp) against trajectory
enumeration (pgbench.exact.moments), the plain-NumPy reference (tests/naive_dp.py), the exact
gradient, and Monte-Carlo measurements (docs/moments.rst).

Monte-Carlo comparisons use fixed seeds and Bonferroni critical values of at least 5 standard
errors; everything else is exact and compared to 1e-10 relative.
"""
from __future__ import annotations

import numpy as np
import pytest

from pgbench import MDPProblem, PGBenchError, exact, make
from pgbench.estimators.catalogue import parse
from pgbench.exact import moments as M
from pgbench.measure.engine import oracle_tables, perturbed_critic
from pgbench.measure.measure import measure

import naive_dp
from naive_mdp import behaviour
from conftest import linear_version, random_terminal_mdp, random_theta, z_crit
from test_moments import ALL_PROBLEMS, TINY, _noisy, problem

DP_PER_EPISODE = ["reinforce", "reinforce_rtg", "rtg_no_gamma_t", "const_baseline:b=0.7", "optimal_const_baseline",
                  "value_baseline", "true_advantage", "all_action", "gae:lambda=0.7", "td0",
                  "gae:lambda=1.0,critic=perturbed,scale=0.5", "td0:critic=perturbed,scale=0.3,seed=2",
                  "geometric_termination", "entropy_bonus:beta=0.1", "importance_sampling",
                  "importance_sampling:mu=mix,eps=0.3"]
DP_IN_BATCH = ["rloo", "batch_mean_baseline", "time_baseline_loo"]
UNBIASED = [n for n in DP_PER_EPISODE if n != "rtg_no_gamma_t" and "perturbed" not in n]


def capped_problem() -> MDPProblem:
    """Unbounded with a cap of 3 steps that cuts about half of the episodes."""
    m = random_terminal_mdp(17, S=4, A=2, n_terminal=1, gamma=0.8)
    capped = MDPProblem.tabular(_noisy(m, "t17", max_steps=3, reward_std=0.5))
    return capped.with_theta(random_theta(capped, 4))


def _get(key):
    return capped_problem() if key == "capped" else problem(key)


def _close(x, y, rtol=1e-10, floor=1e-300):
    """Relative agreement; ``floor``: the scale below which a value counts as zero (an exactly zero
    variance is compared with the squared gradient as its scale)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    scale = max(np.abs(y).max(), floor)
    return np.abs(x - y).max() <= rtol * scale


# ----------------------------------------------------------------------------- against enumeration

@pytest.mark.parametrize("key", ALL_PROBLEMS + ["capped"])
def test_dp_agrees_with_enumeration_for_every_per_episode_estimator(key):
    prob = _get(key)
    en = M.exact_moments(prob, DP_PER_EPISODE, method="enumerate")
    em = M.exact_moments(prob, DP_PER_EPISODE, method="dp")
    assert em.extras["method"] == "dp"
    for j, name in enumerate(DP_PER_EPISODE):
        g2 = float(en.target[j] @ en.target[j])
        assert _close(em.mean[j], en.mean[j]), name
        assert _close(em.variance[j], en.variance[j], floor=g2), (name, em.variance[j], en.variance[j])
        assert _close(em.mse[j], en.mse[j], floor=g2), name
        assert _close(em.mse1[j], en.mse1[j], floor=g2), name
    assert em.truncated_mass == pytest.approx(en.truncated_mass, rel=1e-12, abs=1e-15)
    if key == "capped":
        assert em.truncated_mass == pytest.approx(exact(prob).truncated_mass, rel=1e-10) and em.truncated_mass > 0.1


@pytest.mark.parametrize("key, N", [(k, 2) for k in TINY] + [("three_step_bandit", 3), ("dag_unbounded", 3),
                                                             ("three_step_bandit", 4)])
def test_dp_in_batch_estimators_agree_with_enumeration_over_batches(key, N):
    """rloo and batch_mean_baseline at batch N from per-episode joint moments (U-statistics);
    time_baseline_loo from per-step moments and sums over pairs of steps."""
    prob = problem(key)
    en = M.exact_moments(prob, DP_IN_BATCH, batch=N, method="enumerate", limit=10 ** 6)
    em = M.exact_moments(prob, DP_IN_BATCH, batch=N, method="dp")
    for j, name in enumerate(DP_IN_BATCH):
        assert _close(em.mean[j], en.mean[j]), name
        assert _close(em.variance[j], en.variance[j]), (name, em.variance[j], en.variance[j])
        assert _close(em.mse[j], en.mse[j]), name
    gt = exact(prob).grad.reshape(-1)
    assert _close(em.mean[0], gt)  # rloo: unbiased
    assert _close(em.mean[1], (1 - 1 / N) * gt)  # batch mean: shrunk by exactly 1 - 1/N
    assert _close(em.mean[2], gt)  # time_baseline_loo: unbiased


@pytest.mark.parametrize("key", ["capped", "terminal_finite_linear", "dag_unbounded_linear"])
def test_time_baseline_loo_agrees_with_enumeration_with_a_cap_terminal_states_and_linear_softmax(key):
    """The leave-one-out time baseline sums G_t = 0 after an episode ends, as the sampling kernel
    does; a cap that cuts episodes, terminal states and linear scores change no formula."""
    prob = _get(key)
    en = M.exact_moments(prob, ["time_baseline_loo"], batch=2, method="enumerate", limit=10 ** 6)
    em = M.exact_moments(prob, ["time_baseline_loo"], batch=2, method="dp")
    assert _close(em.mean[0], en.mean[0])
    assert _close(em.variance[0], en.variance[0]), (em.variance[0], en.variance[0])
    assert _close(em.mse[0], en.mse[0])


def test_auto_prefers_the_dp_and_falls_back_to_enumeration():
    prob = problem("three_step_bandit")
    assert M.exact_moments(prob, ["reinforce", "rloo"], batch=2).extras["method"] == "dp"
    assert "method" not in M.exact_moments(prob, ["reinforce", "w_baseline"], batch=2).extras
    assert M.exact_moments(prob, ["reinforce"], cov=True).extras["method"] == "dp"  # the covariance too
    assert "method" not in M.exact_moments(prob, ["reinforce", "w_baseline"], batch=2, cov=True).extras


@pytest.mark.parametrize("key", ["three_step_bandit", "terminal_finite_linear", "dag_unbounded", "capped"])
def test_optimal_baselines_by_dp_equal_the_enumerated_ones(key):
    prob = _get(key)
    a = M.optimal_baselines(prob, method="dp")
    b = M.optimal_baselines(prob, method="enumerate")
    assert a.b_star == pytest.approx(b.b_star, rel=1e-10)
    for f in ("EZj", "ERZj", "ER2Zj", "grad"):
        assert _close(getattr(a, f), getattr(b, f)), f
    assert a.var_coord == pytest.approx(b.var_coord, rel=1e-10)


# ----------------------------------------------------------------------------- beyond enumeration

def _medium(kind: str) -> MDPProblem:
    if kind == "garnet_tabular":  # 10^40-odd trajectories: only the DP and the reference can do it
        p = make("garnet:S=12,A=3,b=3,seed=5,gamma=0.95,horizon=25,noise=0.4")
        return p.with_theta(random_theta(p, 6))
    if kind == "garnet_linear":
        return linear_version(make("garnet:S=12,A=3,b=3,seed=5,gamma=0.95,horizon=25,noise=0.4"), 7, d=5)
    if kind == "terminal_unbounded":  # terminal states, gamma = 1, run to its sampling cap
        m = random_terminal_mdp(23, S=9, A=3, n_terminal=2, gamma=1.0)
        p = MDPProblem.tabular(_noisy(m, "t23", max_steps=200, reward_width=1.0))
        return p.with_theta(random_theta(p, 8))
    raise KeyError(kind)


@pytest.mark.parametrize("kind", ["garnet_tabular", "garnet_linear", "terminal_unbounded"])
def test_numba_passes_match_the_numpy_reference_and_the_exact_gradient(kind):
    prob = _medium(kind)
    assert M.count_trajectories(prob, stop_above=1e7) > 1e7
    em = M.exact_moments(prob, DP_PER_EPISODE, method="dp")
    gt = exact(prob)
    V, Q = oracle_tables(gt)
    ch = naive_dp.chain(prob)
    finite = prob.mdp.horizon is not None
    for j, name in enumerate(DP_PER_EPISODE):
        sp = parse(name)
        if sp.name == "importance_sampling":  # the reference steps with the behaviour policy
            ch_is = naive_dp.chain(prob, mu=behaviour(prob.policy.probs(prob.theta), sp.p))
            mean, m2 = naive_dp.episode_moments(ch_is, sp, V, Q)
            assert _close(em.mean[j], mean) and _close(em.mse1[j] + 2 * em.mean[j] @ em.target[j]
                                                       - em.target[j] @ em.target[j], m2), name
            assert _close(em.mean[j], gt.grad.reshape(-1), rtol=1e-9 if finite else 1e-8), name
            continue
        critic = None
        if sp.name in ("gae", "td0"):
            critic = V if sp.p["critic"] == "exact" else perturbed_critic(V, prob.mdp.terminal, sp.p["scale"],
                                                                          sp.p["seed"], finite)
        mean, m2 = naive_dp.episode_moments(ch, sp, V, Q, critic)
        assert _close(em.mean[j], mean), name
        assert _close(em.mse1[j] + 2 * em.mean[j] @ em.target[j] - em.target[j] @ em.target[j], m2), name
        if name in UNBIASED:
            target = exact(prob, beta=0.1).grad if name.startswith("entropy") else gt.grad
            tol = 1e-9 if prob.mdp.horizon is not None else 1e-8  # unbounded: the cap cuts < 1e-9 of the mass
            assert _close(em.mean[j], target.reshape(-1), rtol=tol), name
    assert em.truncated_mass == pytest.approx(gt.truncated_mass or 0.0, rel=1e-8, abs=1e-300)


def test_monte_carlo_agrees_with_the_dp_on_a_garnet_of_50_states_and_50_steps():
    """Every DP estimator: the measured variance and MSE within z standard errors of the DP's
    exact ones (z >= 5, Bonferroni over the estimators and the two columns).

    Left out: importance sampling from the uniform behaviour policy. Over 50 steps its weights
    are so heavy-tailed that 3000 trials do not estimate its variance (measured: 24 standard
    errors below the exact value, which enumeration and the NumPy reference confirm above)."""
    names = [n for n in DP_PER_EPISODE if n != "importance_sampling"] + DP_IN_BATCH
    prob = make("garnet:S=50,A=4,b=3,seed=0,gamma=0.98,horizon=50,noise=0.5")
    theta = np.random.default_rng(5).normal(scale=0.5, size=prob.policy.theta_shape)
    df = measure(prob, names, batch=4, trials=3000, seed=31, theta=theta)
    z = z_crit(2 * len(names))
    assert df["exact_variance"].notna().all()
    for _, r in df.iterrows():
        assert abs(r["variance"] - r["exact_variance"]) <= z * r["variance_se"], \
            (r["estimator"], r["variance"], r["exact_variance"], r["variance_se"])
        assert abs(r["mse"] - r["exact_mse"]) <= z * r["mse_se"], r["estimator"]


def test_measure_gets_exact_columns_from_the_dp_on_problems_too_big_to_enumerate():
    prob = "garnet:S=30,A=4,b=3,seed=1,gamma=0.9"  # unbounded, no terminal states: run to the cap
    names = ["reinforce_rtg", "rloo", "gae:lambda=0.9", "w_baseline", "natural"]
    df = measure(prob, names, batch=4, trials=20, seed=0)
    assert np.isfinite(df["exact_variance"][:3]).all() and np.isfinite(df["exact_mse"][:3]).all()
    assert df[["exact_variance", "exact_mse"]].iloc[3:].isna().all().all()  # not done by the DP (see README)
    em = M.exact_moments(make(prob), names[:3], batch=4)
    np.testing.assert_allclose(df["exact_variance"][:3], em.variance, rtol=1e-12)


# ----------------------------------------------------------------------------- refusals

@pytest.mark.parametrize("est, words", [("w_baseline", "ratio of batch sums"),
                                        ("importance_sampling:weighted=1", "batch sums"),
                                        ("gae:critic=fitted", "fitted critic"),
                                        ("w_baseline_loo", "ratio of batch sums")])
def test_estimators_outside_the_dp_are_refused_clearly(est, words):
    with pytest.raises(PGBenchError, match=words):  # (w_baseline_loo at N = 2 is rloo: tests/test_dp_covariance.py)
        M.exact_moments("three_step_bandit", [est], batch=3, method="dp")
    assert not M.dp_supports(est)


def test_bad_method_requests_are_refused():
    with pytest.raises(PGBenchError, match="method must be"):
        M.exact_moments("three_step_bandit", ["reinforce"], method="quadrature")
    with pytest.raises(PGBenchError, match="method must be"):
        M.optimal_baselines("three_step_bandit", method="auto")


# ----------------------------------------------------------------------------- variance decomposition

def _by_state_sequence(prob, name):
    """(total, state, action, noise) of one episode by plain enumeration, grouping trajectories by
    their state sequence (law of total variance); the estimate is linear in the rewards, so the
    noise part is ``sum_k Var(r_k) ||x(r + e_k) - x(r)||^2``."""
    from naive_mdp import enumerate_trajectories
    gt = exact(prob)
    g = prob.policy.score_table(prob.theta)
    pi = prob.policy.probs(prob.theta)
    gamma, term = prob.mdp.gamma, prob.mdp.terminal
    Vn = np.vstack([gt.V, np.zeros((1, prob.mdp.S))])

    def x(st, a, r):
        L = len(a)
        G = np.zeros(L + 1)
        for t in range(L - 1, -1, -1):
            G[t] = r[t] + gamma * G[t + 1]
        if name == "all_action":
            return sum(gamma ** t * np.einsum("b,b,bd->d", pi[st[t]], gt.Q[t, st[t]], g[st[t]]) for t in range(L))
        if name in ("gae:lambda=0.7", "ppo_gae:lambda=0.7"):
            delta = [r[t] + gamma * (0.0 if term[st[t + 1]] else Vn[t + 1, st[t + 1]]) - Vn[t, st[t]]
                     for t in range(L)]
            psi = [sum((gamma * 0.7) ** (k - t) * delta[k] for k in range(t, L)) for t in range(L)]
            if name.startswith("ppo_gae"):  # no gamma^t
                return sum(psi[t] * g[st[t], a[t]] for t in range(L))
        else:
            psi = {"reinforce_rtg": G[:L], "value_baseline": G[:L] - Vn[np.arange(L), st[:L]],
                   "true_advantage": gt.Q[np.arange(L), st[:L], a] - gt.V[np.arange(L), st[:L]]}[name]
        return sum(gamma ** t * psi[t] * g[st[t], a[t]] for t in range(L))

    rows, groups = [], {}
    for p, st, a, rbar, rvar in enumerate_trajectories(prob):
        xm = x(st, a, rbar)
        noise = sum(rvar[k] * np.sum((x(st, a, rbar + np.eye(len(a))[k]) - xm) ** 2) for k in range(len(a)))
        rows.append((p, xm, noise))
        gp, gx = groups.get(tuple(st), (0.0, 0.0))
        groups[tuple(st)] = (gp + p, gx + p * xm)
    m = sum(p * xm for p, xm, _ in rows)
    noise = sum(p * n for p, _, n in rows)
    total = sum(p * xm @ xm for p, xm, _ in rows) + noise - m @ m
    state = sum(gx @ gx / gp for gp, gx in groups.values()) - m @ m
    return total, state, total - state - noise, noise


@pytest.mark.parametrize("key", ["garnet_finite_gaussian", "terminal_finite_linear", "three_step_bandit"])
def test_variance_decomposition_matches_grouping_the_enumeration_by_state_sequence(key):
    prob = problem(key)
    names = ["reinforce_rtg", "value_baseline", "true_advantage", "all_action", "gae:lambda=0.7", "ppo_gae:lambda=0.7"]
    df = M.variance_decomposition(prob, names + ["reinforce"], batch=1)
    g2 = float(np.sum(exact(prob).grad ** 2))
    for j, name in enumerate(names):
        total, state, action, noise = _by_state_sequence(prob, name)
        r = df.iloc[j]
        scale = max(total, g2)  # all_action on the bandit has no variance at all
        assert abs(r["variance"] - total) <= 1e-10 * scale, name
        assert abs(r["state"] - state) <= 1e-10 * scale, (name, r["state"], state)
        assert abs(r["action"] - action) <= 1e-10 * scale, (name, r["action"], action)
        assert abs(r["noise"] - noise) <= 1e-10 * scale, name
        assert r["state"] >= -1e-12 and r["noise"] >= 0.0
    assert df.iloc[-1][["state", "action", "noise"]].isna().all()  # the return family is not split
    half = M.variance_decomposition(prob, names[:1], batch=2)
    assert half["state"][0] == pytest.approx(df["state"][0] / 2, rel=1e-12)


@pytest.mark.parametrize("kind", ["garnet_tabular", "terminal_unbounded"])
def test_conditional_mean_pass_has_the_estimators_mean_and_nonnegative_parts(kind):
    """E[E[g | states]] = E[g] for every trace-family estimator (geometric termination and the
    entropy bonus included), and no part of the split is negative."""
    from pgbench.exact import dp
    prob = _medium(kind)
    names = [n for n in DP_PER_EPISODE if parse(n).name in dp.TRACE] + ["ppo_gae:lambda=0.8"]
    df = M.variance_decomposition(prob, names)
    em = M.exact_moments(prob, names, method="dp")
    gt = exact(prob)
    V, Q = oracle_tables(gt)
    ch = dp.chain(prob, prob.theta, em.cap)
    for j, name in enumerate(names):
        sp = parse(name)
        critic = None
        if sp.name in ("gae", "td0", "ppo_gae"):
            critic = V if sp.p.get("critic", "exact") == "exact" else perturbed_critic(
                V, prob.mdp.terminal, sp.p["scale"], sp.p["seed"], prob.mdp.horizon is not None)
        m1, _ = dp.state_mean_moments(ch, sp, V, Q, critic)
        assert _close(m1, em.mean[j]), name
        r = df.iloc[j]
        tol = 1e-10 * r["variance"]
        assert r["state"] >= -tol and r["action"] >= -tol, name
        oracle = sp.name in ("true_advantage", "all_action")  # never read a reward
        assert (r["noise"] == 0.0) if oracle else (r["noise"] > 0.0), name
        assert r["state"] + r["action"] + r["noise"] == pytest.approx(r["variance"], rel=1e-12)


@pytest.mark.parametrize("key", ["garnet_finite_gaussian", "terminal_finite_linear"])
def test_time_dependent_coordinate_baseline_matches_enumeration(key):
    """``b_(t, j) = E[gamma^t r_t z_(t, j)^2] / E[z_(t, j)^2]`` by the DP against plain enumeration."""
    from naive_mdp import enumerate_trajectories
    prob = problem(key)
    ob = M.optimal_baselines(prob)
    g = prob.policy.score_table(prob.theta)
    T, d = prob.mdp.horizon, g.shape[2]
    num, den = np.zeros((T, d)), np.zeros((T, d))
    for p, st, a, rbar, _ in enumerate_trajectories(prob):
        z = np.zeros(d)
        for t in range(len(a)):
            z = z + g[st[t], a[t]]
            num[t] += p * prob.mdp.gamma ** t * rbar[t] * z * z
            den[t] += p * z * z
    assert ob.b_time.shape == (T, d)
    live = den > 1e-14
    assert _close(ob.b_time[live], num[live] / den[live])
    assert np.isnan(ob.b_time[~live]).all()
    assert M.optimal_baselines(prob, method="enumerate").b_time is None


def test_problems_too_big_for_the_dp_tables_are_refused_or_left_to_enumeration():
    big = "garnet:S=2000,A=4,b=3,seed=0,gamma=0.9"  # tabular: S A d = 6.4e7 entries
    with pytest.raises(PGBenchError, match="score tables of 64000000 entries"):
        M.exact_moments(big, ["reinforce_rtg"], method="dp")
    with pytest.raises(PGBenchError, match="trajectories"):  # auto falls back to enumeration, which refuses
        M.exact_moments(big, ["reinforce_rtg"])


def test_dp_agrees_with_enumeration_for_a_logits_policy():
    """A differentiable policy (logits = X theta, d = 6 != S A) goes through the DP by its score
    table: the moments live in theta's space and agree with enumerating every trajectory."""
    import pgbench
    from pgbench.exact.moments import exact_moments
    from pgbench.policies import LogitsPolicy
    X = np.random.default_rng(0).normal(size=(4, 3))
    pol = LogitsPolicy(lambda t: X @ t.reshape(3, 2), lambda t, c: (X.T @ c).ravel(), theta=np.full(6, 0.1))
    prob = pgbench.make("garnet:S=4,A=2,b=2,seed=3,horizon=3,noise=0.3").with_policy(pol)
    ests = ["reinforce", "reinforce_rtg", "value_baseline", "gae:lambda=0.7"]
    a = exact_moments(prob, ests, batch=1, method="dp")
    b = exact_moments(prob, ests, batch=1, method="enumerate")
    assert a.mean.shape == (4, 6)
    np.testing.assert_allclose(a.mean, b.mean, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(a.variance, b.variance, rtol=1e-10)
