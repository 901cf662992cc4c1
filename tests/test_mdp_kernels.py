"""MDP sampling kernels (pgbench.kernels.mdp via pgbench.measure.engine.sample_mdp) against the
plain-Python references of tests/naive_mdp.py and the exact ground truth (docs/contract.rst).

Every statistical check uses fixed seeds, so it is deterministic; thresholds are at least 5
standard errors with a Bonferroni correction over the coordinates checked, so that with another
seed a correct kernel would fail with negligible probability.
"""
from __future__ import annotations

from fractions import Fraction

import numba
import numpy as np
import pytest
from numba import njit
from scipy import stats

from pgbench import MDPProblem, PGBenchError, TabularMDP, exact, make
from pgbench.estimators.catalogue import MDP_ESTIMATORS, parse
from pgbench.kernels import mdp as K_
from pgbench.kernels.rng import cell_key, seed_u64, stream
from pgbench.measure import engine
from pgbench.measure.engine import PILOT_EPISODES, behaviour_policy, make_tables, n_chunks_for, sample_mdp

from conftest import garnet, linear_version, random_terminal_mdp, random_theta, z_crit
from naive_mdp import trace_var  # noqa: E402
from naive_mdp import (alias_slot_probabilities, estimate_reference, exact_episode_moments, exact_optimal_baseline,
                       proxy_reference, rollout_reference)

ALL = ["reinforce", "reinforce_rtg", "rtg_no_gamma_t", "const_baseline:b=0.7", "batch_mean_baseline", "rloo",
       "w_baseline", "w_baseline_loo", "score_norm_baseline", "optimal_const_baseline", "value_baseline",
       "time_baseline_loo", "true_advantage", "all_action", "gae:lambda=0.7", "gae:lambda=0.0",
       "gae:lambda=1.0,critic=perturbed,scale=0.3,seed=5", "gae:lambda=0.5,critic=fitted", "td0",
       "td0:critic=perturbed", "td0:critic=fitted", "geometric_termination", "importance_sampling",
       "importance_sampling:mu=mix,eps=0.3", "importance_sampling:weighted=1",
       "importance_sampling:mu=mix,eps=0.3,weighted=1", "entropy_bonus:beta=0.1", "natural", "natural:base=rloo"]


def test_all_covers_the_catalogue():
    # a new estimator needs a reference here (the Python-path practice ones: tests/test_practice.py)
    kernel_estimators = {n for n, e in MDP_ESTIMATORS.items() if e.code >= 0 or n == "natural"}
    assert {parse(n).name for n in ALL} == kernel_estimators


# ----------------------------------------------------------------------------- problems

def _with_noise(mdp: TabularMDP, name: str, **noise) -> TabularMDP:
    return TabularMDP.from_sparse(mdp.next_idx, mdp.next_prob, mdp.R, mdp.rho0, mdp.gamma, horizon=mdp.horizon,
                                  terminal=mdp.terminal, name=name, **noise)


def problem(key: str) -> MDPProblem:
    if key == "garnet_unbounded":  # tabular, gamma < 1, no terminal state: every episode runs to the cap
        p = garnet(3, S=5, A=3, b=2, gamma=0.7)
        return p.with_theta(random_theta(p, 1))
    if key == "garnet_finite_gaussian":  # tabular, finite horizon, gaussian reward noise
        p = make("garnet:S=5,A=3,b=3,seed=4,gamma=0.9,horizon=6,noise=0.5")
        return p.with_theta(random_theta(p, 2))
    if key == "terminal_uniform_linear":  # linear softmax, unbounded, terminal states, uniform noise
        m = random_terminal_mdp(5, S=6, A=3, gamma=0.95)
        return linear_version(MDPProblem.tabular(_with_noise(m, "term5u", reward_width=1.0)), 5, d=4)
    if key == "terminal_finite_linear":  # linear softmax, gamma = 1, terminal states and a horizon, gaussian noise
        m = random_terminal_mdp(6, S=6, A=2, gamma=1.0, horizon=4)
        return linear_version(MDPProblem.tabular(_with_noise(m, "term6g", reward_std=0.7)), 6, d=3)
    if key == "three_step_bandit":  # the contract's closed form; uniform noise; theta = 0
        return make("three_step_bandit")
    if key == "small_finite_discounted":  # few enough trajectories to enumerate; gamma < 1, terminal states
        m = random_terminal_mdp(16, S=5, A=2, gamma=0.9, horizon=3)
        return linear_version(MDPProblem.tabular(_with_noise(m, "small16g", reward_std=0.7)), 16, d=3)
    raise KeyError(key)


PROBLEMS = ["garnet_unbounded", "garnet_finite_gaussian", "terminal_uniform_linear", "terminal_finite_linear",
            "three_step_bandit"]


def padded_problem() -> MDPProblem:
    """Sparse rows with zero-probability successor slots and a start distribution with zeros."""
    p = garnet(7, S=5, A=2, b=3, gamma=0.8)
    prob = np.array(p.mdp.next_prob)
    prob[::2, :, 2] = 0.0
    prob /= prob.sum(axis=2, keepdims=True)
    rho0 = np.array([0.0, 0.5, 0.0, 0.25, 0.25])
    m = TabularMDP.from_sparse(p.mdp.next_idx, prob, p.mdp.R, rho0, 0.8, name="padded")
    return MDPProblem.tabular(m, theta=random_theta(p, 7, scale=2.0))


# ----------------------------------------------------------------------------- helpers

def close(kernel: np.ndarray, ref: np.ndarray, names, rel=1e-9, floor=1e-13):
    """(trials, n_est, d) arrays equal to ``rel`` relative to each estimator's scale (and to
    ``floor`` absolutely: e.g. score_norm_baseline at N = 1 is 0 up to rounding)."""
    assert kernel.shape == ref.shape
    for j, n in enumerate(names):
        scale = float(np.abs(ref[:, j]).max())
        np.testing.assert_allclose(kernel[:, j], ref[:, j], rtol=rel, atol=max(rel * scale, floor), err_msg=n)


def z_scores(est: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Per-coordinate (mean - target) / se for (K, d) trials. Coordinates with no spread are 0
    when the mean equals the target (to 1e-9 of the scale) and inf otherwise."""
    K = est.shape[0]
    m = est.mean(axis=0)
    se = est.std(axis=0, ddof=1) / np.sqrt(K)
    scale = max(float(np.abs(target).max()), float(np.abs(est).max()), 1e-300)
    tol = 1e-9 * scale
    z = np.zeros_like(m)
    live = se > tol
    z[live] = (m[live] - target[live]) / se[live]
    z[~live] = np.where(np.abs(m[~live] - target[~live]) <= tol, 0.0, np.inf)
    return z


@njit
def kernel_rollout(seed, cell, trial, episode, rho_p, rho_a, n_slots, step_thr, step_off, step_word, step_r,
                   noise_kind, noise_scale, cap):
    buf_s = np.empty(cap + 1, np.int64)
    buf_a = np.empty(cap, np.int64)
    buf_r = np.empty(cap)
    s0, s1 = stream(seed, cell, trial, episode)
    L, u_geo, s0, s1 = K_._rollout(s0, s1, rho_p, rho_a, n_slots, step_thr, step_off, step_word, step_r,
                                   noise_kind, noise_scale, cap, buf_s, buf_a, buf_r)
    return L, u_geo, buf_s[:L + 1].copy(), buf_a[:L].copy(), buf_r[:L].copy()


def run_kernel_rollout(t, seed, cell, trial, episode):
    return kernel_rollout(seed_u64(seed), np.uint64(int(cell) % (1 << 64)), np.uint64(trial), np.uint64(episode),
                          *t.sampler(), t.cap)


# ----------------------------------------------------------------------------- sampling tables and episodes

@pytest.mark.parametrize("key", PROBLEMS + ["padded"])
def test_alias_tables_reproduce_the_joint_exactly(key):
    prob = padded_problem() if key == "padded" else problem(key)
    mdp = prob.mdp
    pi = prob.policy.probs(prob.theta)
    S, A, Kn = mdp.next_prob.shape
    mus = [pi, behaviour_policy(pi, parse("importance_sampling")),
           behaviour_policy(pi, parse("importance_sampling:mu=mix,eps=0.3"))]
    for mu in mus:
        t = make_tables(prob, prob.theta, mu)
        joint = np.zeros((S, A * Kn))
        for s in range(S):
            for a in range(A):
                for k in range(Kn):
                    joint[s, a * Kn + k] = mu[s, a] * mdp.next_prob[s, a, k]
        np.testing.assert_allclose(alias_slot_probabilities(t.step_p, t.step_a), joint, rtol=0, atol=1e-12)
        np.testing.assert_allclose(alias_slot_probabilities(t.rho_p, t.rho_a)[0], mdp.rho0, rtol=0, atol=1e-12)
        # slot bookkeeping: slot a*K + k is action a to next_idx[s, a, k]; the alias columns agree
        np.testing.assert_array_equal(t.slot_next, mdp.next_idx.reshape(S, A * Kn))
        np.testing.assert_array_equal(t.slot_act, np.arange(A * Kn) // Kn)
        np.testing.assert_array_equal(t.alias_next, np.take_along_axis(t.slot_next, t.step_a, axis=1))
        np.testing.assert_array_equal(t.alias_act, t.slot_act[t.step_a])
        assert np.all((t.step_p >= 0) & (t.step_p <= 1 + 1e-12))
        # the rollout's pair tables decode to the same slots: column j at 2 j, its alias at 2 j + 1
        n = A * Kn
        for nxt, act, half in ((t.slot_next, np.broadcast_to(t.slot_act, (S, n)), 0), (t.alias_next, t.alias_act, 1)):
            w = t.step_word[half::2].reshape(S, n)
            np.testing.assert_array_equal(w & np.uint64(0xFFFFFFFF), nxt)
            np.testing.assert_array_equal((w >> np.uint64(32)) & np.uint64(0x7FFFFFFF), act)
            np.testing.assert_array_equal((w >> np.uint64(63)).astype(bool), mdp.terminal[nxt])
            np.testing.assert_array_equal((t.step_off >> np.uint64(32 * half)).reshape(S, n) & np.uint64(0xFFFFFFFF),
                                          nxt * n)
            np.testing.assert_array_equal(t.step_r[half::2].reshape(S, n), mdp.R[np.arange(S)[:, None], act])
        # the integer thresholds keep exactly the fractions f / 2^53 < prob
        for thr, p in ((t.step_thr, t.step_p.reshape(-1)), (t.rho_thr, t.rho_p[0])):
            for j in np.nonzero(p < 1.0)[0]:
                assert Fraction(int(thr[j]) - 1, 2 ** 53) < Fraction(float(p[j])) <= Fraction(int(thr[j]), 2 ** 53)
            assert np.all(thr[p >= 1.0] == 2 ** 53)
        np.testing.assert_array_equal(t.rho_alias, t.rho_a[0])
    if key == "padded":
        assert np.any(joint == 0.0)  # zero-probability slots really are present


@njit
def _columns(xs, n):
    i = np.empty(xs.shape[0], np.uint64)
    f = np.empty(xs.shape[0], np.uint64)
    for k in range(xs.shape[0]):
        i[k], f[k] = K_._column(xs[k], np.uint64(n))
    return i, f


@pytest.mark.parametrize("n", [1, 2, 3, 12, 2047, 2048, 2049, 10 ** 6, 2 ** 32 - 1])
def test_column_and_fraction_are_exact_for_any_row_length(n):
    """i = floor(u n) and f = (u n - i) 2^53 for u = (x >> 11) 2^-53, against Python's exact integers,
    including row lengths where (x >> 11) n overflows 64 bits."""
    rng = np.random.default_rng(n)
    xs = np.concatenate([rng.integers(0, 2 ** 64, size=2000, dtype=np.uint64),
                         np.array([0, 2 ** 11 - 1, 2 ** 64 - 1, 2 ** 63, 2 ** 64 - 2 ** 11], dtype=np.uint64)])
    i, f = _columns(xs, n)
    for x, ik, fk in zip(xs.tolist(), i.tolist(), f.tolist()):
        mn = (x >> 11) * n
        assert (ik, fk) == (mn >> 53, mn & (2 ** 53 - 1))
        assert ik < n


@pytest.mark.parametrize("key", PROBLEMS + ["padded"])
def test_kernel_rollout_replays_the_reference_episodes(key):
    prob = padded_problem() if key == "padded" else problem(key)
    pi = prob.policy.probs(prob.theta)
    seen_end = seen_cap = stopped = 0
    visited = np.zeros(prob.mdp.S, bool)
    for mu in (None, behaviour_policy(pi, parse("importance_sampling:mu=mix,eps=0.3"))):
        t = make_tables(prob, prob.theta, mu)
        for trial in range(2):
            for i in range(25):
                L, u_geo, s, a, r = run_kernel_rollout(t, 99, 12345, trial, i)
                ep = rollout_reference(t, 99, 12345, trial, i)
                assert L == ep.length and u_geo == ep.u_geo
                np.testing.assert_array_equal(s, ep.states)
                np.testing.assert_array_equal(a, ep.actions)
                np.testing.assert_allclose(r, ep.rewards, rtol=1e-13, atol=1e-13)
                seen_end += bool(prob.mdp.terminal[ep.states[-1]])
                seen_cap += ep.length == t.cap
                stopped += bool(prob.mdp.terminal[ep.states[-1]]) or ep.length == t.cap
                visited[ep.states[:-1]] = True
    assert stopped == 100  # every episode stops at a terminal state or at the cap
    if prob.mdp.terminal.any():
        assert seen_end > 0
    assert not np.any(visited & prob.mdp.terminal)


def test_reference_episode_statistics_match_the_model():
    """The reference sampler itself is faithful: empirical first-step frequencies against
    rho0(s) mu(a|s) P(s'|s, a) (chi-square, fixed seed)."""
    prob = padded_problem()
    mdp = prob.mdp
    t = make_tables(prob, prob.theta)
    S, A = mdp.S, mdp.A
    counts = np.zeros((S, A, S))
    for i in range(3000):
        ep = rollout_reference(t, 5, 77, 0, i)
        counts[ep.states[0], ep.actions[0], ep.states[1]] += 1
    expect = mdp.rho0[:, None, None] * t.pi[:, :, None] * mdp.P * 3000
    keep = expect > 0
    assert counts[~keep].sum() == 0
    chi2 = ((counts[keep] - expect[keep]) ** 2 / expect[keep]).sum()
    assert stats.chi2.sf(chi2, keep.sum() - 1) > 1e-6


# ----------------------------------------------------------------------------- kernel == reference == exact

@pytest.mark.parametrize("key", PROBLEMS)
def test_every_estimator_kernel_reference_and_exact(key):
    """For every estimator of the catalogue: the kernel's batch estimates equal the reference's
    (first trials, explicit cell), and the mean of K kernel estimates of each unbiased estimator
    is within a Bonferroni-corrected 5 se of the exact target (grad J, grad J_beta)."""
    prob = problem(key)
    N, K, seed, cell = 4, 3000, 2024, 777
    res = sample_mdp(prob, ALL, N, K, seed=seed, cell=cell)
    assert res.estimates.shape == (K, len(ALL), prob.policy.dim)
    assert np.all(np.isfinite(res.estimates))
    b_opt = res.extras["optimal_const_baseline_b"]
    ref = estimate_reference(prob, None, ALL, N, K, seed, cell, opt_b=b_opt, trials=[0, 1])
    close(res.estimates[:2], ref, ALL)
    # targets: grad J, grad J_beta for entropy_bonus, F^+ grad J for natural
    gt = exact(prob)
    for j, n in enumerate(ALL):
        sp = parse(n)
        if sp.name == "entropy_bonus":
            want = exact(prob, beta=sp.p["beta"]).grad
            assert key == "three_step_bandit" or not np.allclose(want, gt.grad)  # (theta = 0 maximises H)
        elif sp.name == "natural":
            want = gt.natural_gradient()
        else:
            want = gt.grad
        np.testing.assert_allclose(res.targets[j], want.reshape(-1), rtol=1e-12, atol=1e-14)
    unbiased = [j for j, n in enumerate(ALL) if parse(n).unbiased]
    assert {ALL[j] for j in unbiased} == {
        "reinforce", "reinforce_rtg", "const_baseline:b=0.7", "rloo", "w_baseline_loo", "optimal_const_baseline",
        "value_baseline", "time_baseline_loo", "true_advantage", "all_action", "gae:lambda=0.7", "gae:lambda=0.0",
        "td0", "geometric_termination", "importance_sampling", "importance_sampling:mu=mix,eps=0.3",
        "entropy_bonus:beta=0.1"}
    crit = z_crit(len(unbiased) * prob.policy.dim)
    for j in unbiased:
        z = z_scores(res.estimates[:, j], res.targets[j])
        assert np.abs(z).max() <= crit, (ALL[j], z)


def test_kernel_reference_across_chunks_default_cell():
    """Several chunks (uneven), the default cell, in-batch statistics summed over chunks."""
    prob = problem("terminal_finite_linear")
    N = 520
    assert n_chunks_for(N) == 3
    names = ["reinforce_rtg", "batch_mean_baseline", "rloo", "w_baseline", "w_baseline_loo", "score_norm_baseline",
             "time_baseline_loo", "gae:lambda=0.5,critic=fitted", "importance_sampling:weighted=1", "natural",
             "geometric_termination"]
    res = sample_mdp(prob, names, N, 1, seed=3)
    ref = estimate_reference(prob, None, names, N, 1, 3, cell_key(prob.name, prob.theta, N))
    close(res.estimates, ref, names)


def edge_problem(key: str) -> MDPProblem:
    if key == "gamma0":  # only step 0 counts; geometric termination stops at once
        p = garnet(2, S=4, A=2, b=2, gamma=0.0)
        return p.with_theta(random_theta(p, 3))
    if key == "cap3":  # gamma = 1 with terminal states and max_steps = 3: the cap cuts most episodes (bootstrap)
        m = random_terminal_mdp(8, S=5, A=3, gamma=1.0)
        m = TabularMDP.from_sparse(m.next_idx, m.next_prob, m.R, m.rho0, 1.0, terminal=m.terminal, max_steps=3,
                                   name="cap3")
        return MDPProblem.tabular(m, theta=random_theta(MDPProblem.tabular(m), 4))
    if key == "gamma1_unbounded":  # gamma = 1, unbounded, episodes end only at terminal states
        m = random_terminal_mdp(9, S=5, A=3, gamma=1.0)
        return MDPProblem.tabular(m, theta=random_theta(MDPProblem.tabular(m), 5))
    raise KeyError(key)


@pytest.mark.parametrize("N", [1, 2])
@pytest.mark.parametrize("key", ["gamma0", "cap3", "gamma1_unbounded"])
def test_kernel_reference_edge_cases(key, N):
    prob = edge_problem(key)
    loo = ("rloo", "w_baseline_loo", "time_baseline_loo")
    names = [n for n in ALL if N > 1 or (parse(n).name not in loo and n != "natural:base=rloo")]
    res = sample_mdp(prob, names, N, 3, seed=1, cell=5)
    ref = estimate_reference(prob, None, names, N, 3, 1, 5, opt_b=res.extras["optimal_const_baseline_b"])
    close(res.estimates, ref, names)
    if key == "cap3":
        assert prob.mdp.episode_cap == 3
        assert exact(prob).truncated_mass > 0.1  # the cap really cuts in


@pytest.mark.parametrize("key", ["terminal_uniform_linear", "garnet_finite_gaussian"])
def test_proxy_diagnostics_match_the_reference(key):
    """The W(tau)-proxy sums of pass 2 (sample_mdp(proxy=True)) against explicit per-episode sums."""
    prob = problem(key)
    res = sample_mdp(prob, ["rloo", "w_baseline"], 5, 3, seed=3, cell=9, proxy=True)
    np.testing.assert_allclose(res.extras["proxy"], proxy_reference(prob, 5, 3, 3, 9), rtol=1e-10, atol=1e-12)


def test_trial_blocks_do_not_change_the_numbers(monkeypatch):
    """Trials are run in blocks bounded by the accumulator memory budget; one trial per block
    gives bit-identical estimates."""
    prob = problem("terminal_uniform_linear")
    whole = sample_mdp(prob, ALL, 5, 7, seed=3).estimates
    monkeypatch.setattr(engine, "ITEM_MEMORY_BUDGET", 1)
    np.testing.assert_array_equal(sample_mdp(prob, ALL, 5, 7, seed=3).estimates, whole)


# ----------------------------------------------------------------------------- exact second moments

@pytest.mark.parametrize("key", ["three_step_bandit", "small_finite_discounted"])
def test_measured_variance_matches_exact_second_moments(key):
    """Trajectory enumeration (noise included) gives each reward-linear estimator's exact mean and
    covariance: the mean is grad J, and the measured trace variance of N-batch averages is
    tr(Cov)/N within 5 jackknife standard errors."""
    prob = problem(key)
    names = ["reinforce", "reinforce_rtg", "rtg_no_gamma_t", "value_baseline", "true_advantage",
             "const_baseline:b=1.0"]
    N, K = 8, 3000
    res = sample_mdp(prob, names, N, K, seed=12)
    gt = exact(prob)
    for j, n in enumerate(names):
        mean, cov = exact_episode_moments(prob, n)
        if n != "rtg_no_gamma_t" or prob.mdp.gamma == 1.0:
            np.testing.assert_allclose(mean, gt.grad.reshape(-1), rtol=1e-10, atol=1e-12)
        else:  # Thomas (2014): dropping gamma^t biases the estimator, exactly visible here
            assert np.abs(mean - gt.grad.reshape(-1)).max() > 1e-2
        v, se = trace_var(res.estimates[:, j])
        assert abs(v - np.trace(cov) / N) <= 5 * se, (n, v, np.trace(cov) / N, se)
        assert np.abs(z_scores(res.estimates[:, j], mean)).max() <= z_crit(len(names) * prob.policy.dim), n


@pytest.mark.parametrize("key", ["three_step_bandit", "small_finite_discounted"])
def test_optimal_constant_baseline_is_close_to_the_exact_b_star(key):
    prob = problem(key)
    res = sample_mdp(prob, ["optimal_const_baseline"], 4, 2, seed=13)
    b_pilot = res.extras["optimal_const_baseline_b"]
    b_star, sd = exact_optimal_baseline(prob)
    assert abs(b_pilot - b_star) <= 5 * sd / np.sqrt(PILOT_EPISODES), (b_pilot, b_star)
    if key == "three_step_bandit":
        assert b_star == pytest.approx(1.0, abs=1e-12)


def test_memory_does_not_grow_with_the_number_of_episodes():
    """Everything the engine allocates for a cell (accumulators, batch statistics) is sized by the
    problem, the estimators and the chunk count, never by N: a hundred times the episodes, the
    same peak. (Kernel-side buffers are one episode long per work item.)"""
    import tracemalloc
    prob = make("three_step_bandit")
    ests = [n for n in ALL if n != "optimal_const_baseline"]  # its exact b* enumerates, once, outside this
    sample_mdp(prob, ests, N=64, K=2)  # compile first
    peaks = []
    for N in (10 ** 4, 10 ** 6):
        tracemalloc.start()
        sample_mdp(prob, ests, N=N, K=2, seed=1)
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
    assert peaks[1] <= peaks[0] * 1.05 + 16 * 1024, peaks


# ----------------------------------------------------------------------------- randomness

def test_bit_identical_whatever_the_thread_count_and_seed_sensitive():
    prob = problem("garnet_finite_gaussian")
    N, K = 1000, 3
    assert n_chunks_for(N) > 1
    old = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = sample_mdp(prob, ALL, N, K, seed=8).estimates
        numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
        two = sample_mdp(prob, ALL, N, K, seed=8).estimates
    finally:
        numba.set_num_threads(old)
    np.testing.assert_array_equal(one, two)
    again = sample_mdp(prob, ALL, N, K, seed=8).estimates
    np.testing.assert_array_equal(one, again)
    other = sample_mdp(prob, ALL, N, K, seed=9).estimates
    for j, n in enumerate(ALL):
        assert not np.array_equal(one[:, j], other[:, j]), n
        assert not np.array_equal(one[0, j], one[1, j]), n  # trials are independent draws
    # a trial's numbers do not depend on how many trials run
    np.testing.assert_array_equal(sample_mdp(prob, ALL, N, 1, seed=8).estimates[0], one[0])


# ----------------------------------------------------------------------------- known biases

@pytest.mark.parametrize("N", [2, 4])
def test_batch_mean_baseline_shrinks_the_gradient_by_1_minus_1_over_N(N):
    """E[(R_i - mean_j R_j) z_i] = (1 - 1/N) E[R z] (the other episodes' returns are independent of
    z_i, whose mean is 0): at N = 2 exactly half the gradient."""
    prob = problem("garnet_finite_gaussian")
    res = sample_mdp(prob, ["batch_mean_baseline", "rloo"], N, 20000, seed=1)
    g = res.targets[0]
    d = g.size
    z_shrunk = z_scores(res.estimates[:, 0], (1 - 1 / N) * g)
    assert np.abs(z_shrunk).max() <= z_crit(d)
    assert np.abs(z_scores(res.estimates[:, 0], g)).max() > 8  # the bias is plainly visible
    assert np.abs(z_scores(res.estimates[:, 1], g)).max() <= z_crit(d)  # rloo is not biased
    # on the same episodes the two are exactly proportional: R_i - mean = (1 - 1/N)(R_i - LOO mean)
    np.testing.assert_allclose(res.estimates[:, 0], (1 - 1 / N) * res.estimates[:, 1], rtol=1e-10, atol=1e-13)


def test_rtg_without_gamma_t_is_biased_on_a_discounted_problem():
    prob = problem("garnet_unbounded")
    res = sample_mdp(prob, ["rtg_no_gamma_t", "reinforce_rtg"], 8, 3000, seed=2)
    assert np.abs(z_scores(res.estimates[:, 0], res.targets[0])).max() > 10
    assert np.abs(z_scores(res.estimates[:, 1], res.targets[1])).max() <= z_crit(prob.policy.dim)


def test_gae_with_a_perturbed_critic_is_biased_and_exact_critic_is_not():
    prob = problem("garnet_unbounded")
    names = ["gae:lambda=0.5,critic=perturbed,scale=1.0,seed=1", "gae:lambda=0.5", "gae:lambda=1.0,critic=perturbed,scale=1.0,seed=1"]
    res = sample_mdp(prob, names, 8, 3000, seed=3)
    d = prob.policy.dim
    assert np.abs(z_scores(res.estimates[:, 0], res.targets[0])).max() > 10
    assert np.abs(z_scores(res.estimates[:, 1], res.targets[1])).max() <= z_crit(d)
    # lambda = 1 telescopes to G_t - V(s_t) (state-dependent baseline): unbiased whatever the critic
    # (episodes here always reach the cap, where the perturbed critic bootstraps: negligible at gamma^65)
    assert np.abs(z_scores(res.estimates[:, 2], res.targets[2])).max() <= z_crit(d)


def test_weighted_importance_sampling_is_biased_and_ordinary_is_not():
    prob = problem("terminal_uniform_linear")
    names = ["importance_sampling:weighted=1", "importance_sampling"]
    res = sample_mdp(prob, names, 2, 20000, seed=4)
    d = prob.policy.dim
    assert np.abs(z_scores(res.estimates[:, 0], res.targets[0])).max() > 10
    assert np.abs(z_scores(res.estimates[:, 1], res.targets[1])).max() <= z_crit(d)


def test_natural_is_biased_for_the_natural_gradient():
    prob = problem("terminal_uniform_linear")
    res = sample_mdp(prob, ["natural", "reinforce_rtg"], 8, 4000, seed=5)
    gt = exact(prob)
    np.testing.assert_allclose(res.targets[0], gt.natural_gradient().reshape(-1), rtol=1e-12)
    assert np.abs(z_scores(res.estimates[:, 0], res.targets[0])).max() > 10
    assert np.abs(z_scores(res.estimates[:, 1], res.targets[1])).max() <= z_crit(prob.policy.dim)


def test_natural_target_follows_its_base_estimator():
    """natural:base=entropy_bonus:beta=.. estimates F^+ grad J_beta (F does not depend on beta), so
    that is its target; the estimates themselves agree with the reference."""
    prob = problem("garnet_finite_gaussian")
    names = ["natural:base=entropy_bonus:beta=0.5", "natural"]
    res = sample_mdp(prob, names, 6, 2, seed=1, cell=3)
    close(res.estimates, estimate_reference(prob, None, names, 6, 2, 1, 3), names)
    gt = exact(prob)
    want = prob.policy.fisher_solve(prob.theta, gt.fisher(), exact(prob, beta=0.5).grad).reshape(-1)
    assert np.abs(want - gt.natural_gradient().reshape(-1)).max() > 0.1  # the two targets differ here
    np.testing.assert_allclose(res.targets[1], gt.natural_gradient().reshape(-1), rtol=1e-12)
    np.testing.assert_allclose(res.targets[0], want, rtol=1e-10, atol=1e-12)


# ----------------------------------------------------------------------------- variance

@pytest.mark.parametrize("name", ["reinforce_rtg", "value_baseline", "const_baseline:b=0.5"])
def test_variance_of_batch_averages_falls_as_one_over_N(name):
    prob = problem("terminal_uniform_linear")
    K = 2000
    v1, se1 = trace_var(sample_mdp(prob, name, 4, K, seed=6).estimates[:, 0])
    v4, se4 = trace_var(sample_mdp(prob, name, 16, K, seed=6).estimates[:, 0])
    # log-ratio by the delta method; the two cells are independent (N is part of the cell)
    se_log = np.hypot(se1 / v1, se4 / v4)
    assert abs(np.log(v1 / v4) - np.log(4.0)) <= 5 * se_log, (v1 / v4, se_log)
    assert 5 * se_log < 0.5  # and the check has teeth


def test_three_step_bandit_variance_ladder():
    """Full return > reward-to-go > reward-to-go with the value baseline, each step significant."""
    prob = make("three_step_bandit")
    names = ["reinforce", "reinforce_rtg", "value_baseline"]
    N = 16
    res = sample_mdp(prob, names, N, 4000, seed=7)
    v = [trace_var(res.estimates[:, j]) for j in range(3)]
    for (va, sa), (vb, sb) in zip(v, v[1:]):
        assert va - vb > 5 * np.hypot(sa, sb), v
    # and the exact per-episode variances by enumeration: 3.291 > 1.824 > 0.787
    exact_v = [np.trace(exact_episode_moments(prob, n)[1]) for n in names]
    assert exact_v[0] > exact_v[1] > exact_v[2]
    for (vm, se), ve in zip(v, exact_v):
        assert abs(vm - ve / N) <= 5 * se
    for j in range(3):  # all three are unbiased for the contract's closed form
        expect = np.full((3, 3), -1 / 9)
        np.fill_diagonal(expect, 2 / 9)
        np.testing.assert_allclose(res.targets[j], expect.reshape(-1), atol=1e-15)
        assert np.abs(z_scores(res.estimates[:, j], res.targets[j])).max() <= z_crit(27)


# ----------------------------------------------------------------------------- bad input

@pytest.mark.parametrize("spec, N, words", [
    ("no_such_estimator", 4, ["no_such_estimator"]),
    ("reinforce:b=1", 4, ["'b'", "reinforce"]),
    ("gae:lambda=1.5", 4, ["gae", "lambda", "1.5"]),
    ("gae:lambda=-0.1", 4, ["gae", "lambda"]),
    ("td0:critic=oracle", 4, ["oracle", "td0"]),
    ("gae:critic=oracle", 4, ["oracle", "gae"]),
    ("rloo", 1, ["rloo", "N"]),
    ("time_baseline_loo", 1, ["time_baseline_loo", "N"]),
    ("const_baseline", 4, ["const_baseline", "b"]),
    ("const_baseline:b=abc", 4, ["const_baseline", "abc"]),
    ("importance_sampling:mu=greedy", 4, ["importance_sampling", "greedy"]),
    ("natural:base=natural", 4, ["natural"]),
    ("score_function", 4, ["score_function"]),
])
def test_bad_estimators_are_refused_clearly(spec, N, words):
    prob = problem("three_step_bandit")
    with pytest.raises(PGBenchError) as info:
        sample_mdp(prob, spec, N, 2, seed=0)
    msg = str(info.value)
    for w in words:
        assert w in msg, msg


@pytest.mark.parametrize("N, K", [(0, 2), (4, 0), (2.5, 2), (True, 2)])
def test_bad_sizes_are_refused(N, K):
    with pytest.raises(PGBenchError, match="integer"):
        sample_mdp(problem("three_step_bandit"), "reinforce", N, K)
