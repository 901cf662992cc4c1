"""Exact ground truth (docs/contract.rst) against finite differences, naive references and closed forms."""
from __future__ import annotations

import numpy as np
import pytest

import pgbench
from pgbench import MDPProblem, PGBenchError, TabularMDP, make
from pgbench.exact import exact, objective
from pgbench.problems.objectives import CategoricalObjective, GaussianToy

from conftest import garnet, linear_version, random_terminal_mdp, random_theta
from naive import (naive_fisher, naive_forward_J, naive_gradient, naive_scores, naive_softmax_policy,
                   naive_solution, naive_state_weight, naive_still_running, one_hot_features)


# ---------------------------------------------------------------------------- problem zoo
def _case(name: str, seed: int) -> MDPProblem:
    """Small problems covering both policy types, both horizon kinds and terminal states;
    every one evaluated at a random theta."""
    if name == "garnet_tab_unbounded":
        p = garnet(seed, gamma=0.9)
    elif name == "garnet_tab_finite":
        p = garnet(seed, gamma=0.95, horizon=5)
    elif name == "garnet_tab_finite_gamma1":
        p = garnet(seed, gamma=1.0, horizon=4)
    elif name == "garnet_lin_unbounded":
        return linear_version(garnet(seed, gamma=0.8), seed)
    elif name == "garnet_lin_finite":
        return linear_version(garnet(seed, gamma=0.9, horizon=6), seed)
    elif name == "gridworld":
        p = make("gridworld:n=3,slip=0.2,gamma=0.95")
    elif name == "frozen_lake":
        p = make("frozen_lake")
    elif name == "terminal_gamma1_tab":
        p = MDPProblem.tabular(random_terminal_mdp(seed))
    elif name == "terminal_gamma1_lin":
        return linear_version(MDPProblem.tabular(random_terminal_mdp(seed)), seed)
    elif name == "terminal_finite":
        p = MDPProblem.tabular(random_terminal_mdp(seed, gamma=0.9, horizon=6))
    else:  # pragma: no cover
        raise KeyError(name)
    return p.with_theta(random_theta(p, seed))


CASES = [("garnet_tab_unbounded", 0), ("garnet_tab_unbounded", 1), ("garnet_tab_unbounded", 2),
         ("garnet_tab_finite", 0), ("garnet_tab_finite", 1), ("garnet_tab_finite_gamma1", 3),
         ("garnet_lin_unbounded", 0), ("garnet_lin_unbounded", 1), ("garnet_lin_finite", 2),
         ("gridworld", 0), ("frozen_lake", 1),
         ("terminal_gamma1_tab", 0), ("terminal_gamma1_tab", 1), ("terminal_gamma1_lin", 2),
         ("terminal_finite", 3)]
CASE_IDS = [f"{n}-{s}" for n, s in CASES]


def _features(problem: MDPProblem) -> np.ndarray:
    pol = problem.policy
    return pol.features if pol.kind == "linear" else one_hot_features(pol.S, pol.A)


def _naive(problem: MDPProblem):
    """Naive (pi, solution, scores) of the problem at its theta, independent of pgbench.exact."""
    mdp = problem.mdp
    phi = _features(problem)
    theta = np.asarray(problem.theta, float).reshape(-1)
    pi = naive_softmax_policy(phi, theta)
    sol = naive_solution(mdp.P, mdp.R, mdp.rho0, mdp.gamma, mdp.horizon, mdp.terminal, pi)
    return pi, sol, naive_scores(phi, pi)


def fd_gradient(problem: MDPProblem, beta: float = 0.0, h: float = 1e-5, method: str = "dense") -> np.ndarray:
    """Central differences of the exact J, one coordinate of theta at a time."""
    th0 = np.array(problem.theta, float)
    g = np.zeros(th0.size)
    for i in range(th0.size):
        e = np.zeros(th0.size)
        e[i] = h
        up = objective(problem, (th0.reshape(-1) + e).reshape(th0.shape), beta=beta, method=method)
        dn = objective(problem, (th0.reshape(-1) - e).reshape(th0.shape), beta=beta, method=method)
        g[i] = (up - dn) / (2 * h)
    return g.reshape(th0.shape)


# Central differences with h = 1e-5 have truncation error h^2/6 |J'''| ~ 1e-11 for these
# smooth, O(1)-scaled objectives and round-off ~ eps |J| / h ~ 1e-10 (J is solved to ~1e-15
# relative). A relative tolerance of 1e-6 of ||grad|| is far above both, yet any genuine error
# (a missing gamma^t, a wrong sign, a term off by one step) shows up at O(||grad||).
FD_RTOL = 1e-6
FD_ATOL = 1e-9  # round-off floor for problems whose gradient is itself small


# ---------------------------------------------------------------------------- finite differences
@pytest.mark.parametrize("beta", [0.0, 0.3], ids=["J", "J_beta"])
@pytest.mark.parametrize("name,seed", CASES, ids=CASE_IDS)
def test_gradient_matches_finite_differences(name, seed, beta):
    problem = _case(name, seed)
    gt = exact(problem, beta=beta, method="dense")
    assert gt.grad.shape == problem.theta.shape
    fd = fd_gradient(problem, beta=beta)
    tol = FD_RTOL * np.linalg.norm(fd) + FD_ATOL
    assert np.linalg.norm(gt.grad - fd) <= tol, (gt.grad, fd)
    # the problem must not be trivially flat, or the check would prove nothing
    assert np.linalg.norm(fd) > 1e-3


def test_entropy_term_is_the_discounted_entropy_of_visited_states():
    """``J_beta - J = beta sum_s w(s) H(pi(.|s))`` with the naive visitation weights."""
    for name, seed in [("garnet_tab_unbounded", 0), ("garnet_lin_finite", 2), ("terminal_gamma1_tab", 1)]:
        problem = _case(name, seed)
        pi, sol, _ = _naive(problem)
        w = naive_state_weight(sol, problem.mdp.gamma)
        H = -(pi * np.log(pi)).sum(axis=1)
        beta = 0.7
        diff = exact(problem, beta=beta).J - exact(problem).J
        # both J's are solved to ~1e-15 relative; 1e-10 leaves room for the O(1)-conditioned solves
        assert diff == pytest.approx(beta * float(w @ H), rel=1e-10, abs=1e-12)


def test_entropy_objective_survives_extreme_logits():
    """A logit gap of 800 underflows pi to 0 (log pi = -inf); the entropy term of such an action is
    still 0 (p log p -> 0), so J_beta must be finite and equal J + beta sum_s w(s) H(s)."""
    problem = garnet(0, S=4, A=3)
    theta = np.zeros((4, 3))
    theta[1, 0] = 800.0
    beta = 0.5
    gt = exact(problem, theta, beta=beta)
    assert np.isfinite(gt.J) and np.all(np.isfinite(gt.grad))
    base = exact(problem, theta)
    pi = base.pi
    with np.errstate(divide="ignore", invalid="ignore"):
        H = -np.where(pi > 0, pi * np.log(pi), 0.0).sum(axis=1)
    assert gt.J == pytest.approx(base.J + beta * float(base.state_weight @ H), rel=1e-12)
    # the saturated row has a zero gradient; the others are checked by finite differences
    fd = fd_gradient(problem.with_theta(theta), beta=beta)
    assert np.linalg.norm(gt.grad - fd) <= FD_RTOL * np.linalg.norm(fd) + FD_ATOL


def test_finite_differences_check_can_fail():
    """Guard on the guard: a gradient with a missing discount factor is caught by the FD check."""
    problem = _case("garnet_tab_finite", 0)
    fd = fd_gradient(problem)
    gt_wrong = exact(problem.with_theta(problem.theta), method="dense")
    wrong = gt_wrong.grad * 1.01
    assert np.linalg.norm(wrong - fd) > FD_RTOL * np.linalg.norm(fd) + FD_ATOL


# ---------------------------------------------------------------------------- naive reference
@pytest.mark.parametrize("name,seed", CASES, ids=CASE_IDS)
def test_matches_naive_reference(name, seed):
    problem = _case(name, seed)
    mdp = problem.mdp
    pi, sol, scores = _naive(problem)
    gt = exact(problem)
    live = ~mdp.terminal
    # explicit inverse / explicit loops vs LU solves / vectorised recursions: both ~1e-15
    # relative on these well-conditioned problems; 1e-10 allows for cond(I - gamma P_pi) <= 1e4
    rtol, atol = 1e-10, 1e-12
    np.testing.assert_allclose(gt.pi, pi, rtol=1e-12, atol=1e-15)
    assert gt.J == pytest.approx(sol["J"], rel=rtol, abs=atol)
    np.testing.assert_allclose(gt.V[..., live], sol["V"][..., live], rtol=rtol, atol=atol)
    np.testing.assert_allclose(gt.Q[..., live, :], sol["Q"][..., live, :], rtol=rtol, atol=atol)
    np.testing.assert_allclose(gt.d, sol["d"], rtol=rtol, atol=atol)
    np.testing.assert_allclose(gt.state_weight, naive_state_weight(sol, mdp.gamma), rtol=rtol, atol=atol)
    grad = naive_gradient(sol, pi, scores, mdp.gamma)
    np.testing.assert_allclose(gt.grad.reshape(-1), grad, rtol=rtol, atol=atol * max(1.0, np.abs(grad).max()))
    # a third route to J: summing gamma^t E[r_t] forward in time. Unbounded problems are summed
    # until the geometric/termination tail is below 1e-13 (checked via the still-running mass).
    n = mdp.horizon or 4000
    if mdp.horizon is None:
        tail = naive_still_running(mdp.P, mdp.rho0, mdp.terminal, pi, n).sum() * mdp.gamma ** n
        assert tail < 1e-13
    J_fwd = naive_forward_J(mdp.P, mdp.R, mdp.rho0, mdp.gamma, mdp.horizon, mdp.terminal, pi, n_steps=n)
    assert gt.J == pytest.approx(J_fwd, rel=1e-9, abs=1e-12)


def test_terminal_rows_and_rewards_are_ignored():
    """Changing what a terminal state would do (its transitions and rewards) changes nothing."""
    mdp = random_terminal_mdp(5)
    P2, R2 = mdp.P.copy(), mdp.R.copy()
    rng = np.random.default_rng(0)
    P2[mdp.terminal] = rng.dirichlet(np.ones(mdp.S), size=(int(mdp.terminal.sum()), mdp.A))
    R2[mdp.terminal] = 1e3
    mdp2 = TabularMDP.from_dense(P2, R2, mdp.rho0, mdp.gamma, terminal=mdp.terminal)
    th = np.random.default_rng(1).normal(size=(mdp.S, mdp.A))
    for beta in (0.0, 0.4):
        a, b = exact(MDPProblem.tabular(mdp, th), beta=beta), exact(MDPProblem.tabular(mdp2, th), beta=beta)
        assert a.J == pytest.approx(b.J, rel=1e-12)
        np.testing.assert_allclose(a.grad, b.grad, rtol=1e-10, atol=1e-13)


# ---------------------------------------------------------------------------- Fisher, natural gradient
FISHER_CASES = [c for c in CASES if c[0] in ("garnet_tab_unbounded", "garnet_tab_finite", "garnet_lin_unbounded",
                                               "garnet_lin_finite", "frozen_lake", "terminal_gamma1_tab")]


@pytest.mark.parametrize("name,seed", FISHER_CASES, ids=[f"{n}-{s}" for n, s in FISHER_CASES])
def test_score_table_is_grad_log_pi(name, seed):
    """``policy.score_table`` against central differences of log pi (and the naive formula)."""
    problem = _case(name, seed)
    pol, th = problem.policy, np.array(problem.theta, float)
    G = pol.score_table(th)
    pi, _, scores = _naive(problem)
    np.testing.assert_allclose(G, scores, rtol=1e-12, atol=1e-14)
    h = 1e-6
    flat = th.reshape(-1)
    for i in range(flat.size):
        e = np.zeros(flat.size)
        e[i] = h
        lp = np.log(pol.probs((flat + e).reshape(th.shape)))
        lm = np.log(pol.probs((flat - e).reshape(th.shape)))
        # truncation h^2 |d^3 log pi| ~ 1e-12, round-off eps/h ~ 1e-10
        np.testing.assert_allclose(G[:, :, i], (lp - lm) / (2 * h), atol=1e-8)


@pytest.mark.parametrize("name,seed", FISHER_CASES, ids=[f"{n}-{s}" for n, s in FISHER_CASES])
def test_fisher_and_natural_gradient(name, seed):
    problem = _case(name, seed)
    gt = exact(problem)
    pol, th = problem.policy, problem.theta
    pi, sol, _ = _naive(problem)
    w = naive_state_weight(sol, problem.mdp.gamma)
    F_ref = naive_fisher(w, pi, pol.score_table(th))
    F = gt.fisher_matrix()
    assert F.shape == (th.size, th.size)
    # same sums in a different order: 1e-12 relative to the largest entry
    np.testing.assert_allclose(F, F_ref, rtol=0, atol=1e-12 * np.abs(F_ref).max())
    nat_ref = np.linalg.pinv(F_ref) @ gt.grad.reshape(-1)
    nat = gt.natural_gradient()
    assert nat.shape == th.shape
    # pinv amplifies errors by cond(F) on its range (~1e4 here): 1e-8 relative is ample
    np.testing.assert_allclose(nat.reshape(-1), nat_ref, rtol=0, atol=1e-8 * np.linalg.norm(nat_ref))
    # min-norm: the natural gradient lies in the row space of F and solves F x = grad
    np.testing.assert_allclose(F_ref @ nat.reshape(-1), gt.grad.reshape(-1), atol=1e-9 * gt.grad_norm)
    if pol.kind == "tabular":
        per_state = nat.reshape(pol.S, pol.A).sum(axis=1)
        np.testing.assert_allclose(per_state, 0.0, atol=1e-9 * np.linalg.norm(nat_ref))


@pytest.mark.parametrize("name,seed", [("garnet_tab_unbounded", 0), ("garnet_tab_unbounded", 2),
                                       ("gridworld", 0), ("terminal_gamma1_tab", 1)])
def test_tabular_unbounded_closed_forms(name, seed):
    """Tabular softmax, unbounded: ``grad[s,a] = d(s) pi(a|s) A(s,a)`` and, since F_s =
    d(s)(diag pi - pi pi^T), the natural gradient is ``A(s,a) - mean_a A(s,a)`` where d(s) > 0."""
    problem = _case(name, seed)
    pi, sol, _ = _naive(problem)
    A = sol["Q"] - sol["V"][:, None]
    gt = exact(problem)
    expect = sol["d"][:, None] * pi * A
    np.testing.assert_allclose(gt.grad, expect, rtol=1e-10, atol=1e-12 * np.abs(expect).max())
    visited = sol["d"] > 1e-8
    assert visited.sum() >= 2
    nat = gt.natural_gradient()
    centred = A - A.mean(axis=1, keepdims=True)
    # the per-state solve divides by d(s) ~ 1e-2..1: 1e-8 absolute is ample for O(1) advantages
    np.testing.assert_allclose(nat[visited], centred[visited], rtol=0, atol=1e-8)
    np.testing.assert_allclose(nat[~visited], 0.0, atol=1e-8)


@pytest.mark.parametrize("name,seed", [("garnet_tab_unbounded", 1), ("garnet_lin_finite", 2), ("frozen_lake", 1)])
def test_policy_contract_equals_score_table_sum(name, seed):
    """``contract(theta, C) = sum_{s,a} C[s,a] g(s,a)`` for arbitrary weights C (estimators pass
    weights whose rows do not sum to zero, unlike the exact gradient's)."""
    problem = _case(name, seed)
    pol, th = problem.policy, problem.theta
    _, _, scores = _naive(problem)
    C = np.random.default_rng(seed).normal(size=(pol.S, pol.A))
    expect = np.einsum("sa,sad->d", C, scores)
    np.testing.assert_allclose(pol.contract(th, C).reshape(-1), expect, rtol=1e-12, atol=1e-12)


@pytest.mark.filterwarnings("error")  # log(gamma) = log(0) used to warn when choosing the sampling cap
def test_gamma_zero_is_the_expected_immediate_reward():
    """gamma = 0: ``J = sum_s rho0(s) sum_a pi R`` and ``dJ/dtheta[s,a] = rho0(s) pi (R - r_pi)``."""
    p = make("garnet:S=5,A=3,b=2,seed=2,gamma=0")
    th = random_theta(p, 2)
    e = np.exp(th - th.max(axis=1, keepdims=True))
    pi = e / e.sum(axis=1, keepdims=True)
    r_pi = (pi * p.mdp.R).sum(axis=1)
    gt = exact(p, th)
    assert gt.J == pytest.approx(float(p.mdp.rho0 @ r_pi), rel=1e-14)
    np.testing.assert_allclose(gt.grad, p.mdp.rho0[:, None] * pi * (p.mdp.R - r_pi[:, None]), rtol=1e-12, atol=1e-16)
    assert gt.truncated_J == 0.0


# ------------------------------------------------------------------------- the contract's closed forms
def test_boltzmann_bandit_closed_form():
    p = make("boltzmann_bandit")
    gt = exact(p)
    assert gt.grad.shape == (1,)
    assert round(float(gt.grad[0]), 2) == -20.79
    assert float(fd_gradient(p)[0]) == pytest.approx(float(gt.grad[0]), rel=1e-8)


def test_three_step_bandit_closed_form():
    p = make("three_step_bandit")
    gt = exact(p)
    expect = np.full((3, 3), -1.0 / 9.0)
    np.fill_diagonal(expect, 2.0 / 9.0)  # state t is step t, best action at step t is t
    np.testing.assert_allclose(gt.grad, expect, rtol=0, atol=1e-15)
    assert gt.J == pytest.approx(1.0, abs=1e-15)  # three steps, each pays 1 w.p. 1/3
    assert p.mdp.reward_noise == "uniform"
    np.testing.assert_allclose(p.mdp.reward_scale, 0.6)  # U(-0.3, 0.3)


def test_gaussian_toy_closed_form():
    toy = make("gaussian_toy")
    assert isinstance(toy, GaussianToy)
    assert toy.grad()[0] == 4.0
    for t in (-1.3, 0.0, 0.4, 2.0):
        h = 1e-5
        fd = (toy.J([t + h]) - toy.J([t - h])) / (2 * h)
        assert toy.grad([t])[0] == pytest.approx(fd, rel=1e-8, abs=1e-9)
        assert toy.grad([t])[0] == pytest.approx(1 + 3 * t * t, rel=1e-15)
    # J = E[x^2 theta] with x ~ N(theta, 1) by Gauss-Hermite quadrature (exact for polynomials)
    x, w = np.polynomial.hermite_e.hermegauss(10)
    for t in (-0.7, 1.0, 1.9):
        Jq = float((w * (x + t) ** 2 * t).sum() / w.sum())
        assert toy.J([t]) == pytest.approx(Jq, rel=1e-12)


@pytest.mark.parametrize("K,seed", [(2, -1), (4, -1), (5, 3)])
def test_categorical_objective_gradient(K, seed):
    obj = make(f"categorical:K={K},seed={seed}")
    assert isinstance(obj, CategoricalObjective)
    for tseed in (0, 1):
        th = np.random.default_rng(tseed).normal(size=K)
        p = np.exp(th) / np.exp(th).sum()
        f = ((np.eye(K) - obj.target[None, :]) ** 2).sum(axis=1)
        assert obj.J(th) == pytest.approx(float(p @ f), rel=1e-13)
        h = 1e-5
        fd = np.array([(obj.J(th + h * e) - obj.J(th - h * e)) / (2 * h) for e in np.eye(K)])
        # truncation ~h^2, round-off ~eps/h: 1e-8 absolute on an O(0.1) gradient
        np.testing.assert_allclose(obj.grad(th), fd, rtol=0, atol=1e-8)
        assert np.linalg.norm(fd) > 1e-3


# ---------------------------------------------------------------------------- horizons
def test_finite_horizon_converges_to_unbounded():
    """``|J_inf - J_T|`` and every ``|dJ_inf - dJ_T|`` are bounded by the tail
    ``max|R| sum_{t>=T} (t+1) gamma^t`` (each coordinate of a tabular score is at most 1 in size,
    and the t-th reward's score sum has t+1 terms); the bound is O(T gamma^T)."""
    gamma = 0.8
    base = garnet(4, S=8, A=3, gamma=gamma)
    th = random_theta(base, 4)
    inf = exact(base, th)
    rmax = np.abs(base.mdp.R).max()
    prev = np.inf
    for T in (5, 10, 20, 40, 80, 160):
        fin = exact(garnet(4, S=8, A=3, gamma=gamma, horizon=T), th)
        j_tail = rmax * gamma ** T / (1 - gamma)
        g_tail = rmax * gamma ** T * ((T + 1) / (1 - gamma) + gamma / (1 - gamma) ** 2)
        gap = inf.J - fin.J
        assert 0 <= gap <= j_tail + 1e-13  # rewards are >= 0 for garnets: J_T increases with T
        assert np.abs(inf.grad - fin.grad).max() <= g_tail + 1e-13
        assert gap < prev or gap < 1e-14
        prev = gap
    assert abs(inf.J - fin.J) < 1e-13 and np.abs(inf.grad - fin.grad).max() < 1e-12


# ---------------------------------------------------------------------------- dense vs sparse
SPARSE_CASES = ["garnet_tab_unbounded", "garnet_tab_finite", "garnet_lin_unbounded", "gridworld", "frozen_lake",
                "terminal_gamma1_tab", "terminal_finite"]


@pytest.mark.parametrize("beta", [0.0, 0.2])
@pytest.mark.parametrize("name", SPARSE_CASES)
def test_dense_and_sparse_agree(name, beta):
    problem = _case(name, 1)
    a = exact(problem, beta=beta, method="dense")
    b = exact(problem, beta=beta, method="sparse")
    assert (a.method, b.method) == ("dense", "sparse")
    # GMRES is run to rtol 1e-13 (spsolve fallback): 1e-10 relative is a safe margin
    assert a.J == pytest.approx(b.J, rel=1e-10, abs=1e-13)
    np.testing.assert_allclose(a.grad, b.grad, rtol=1e-9, atol=1e-11 * max(1.0, a.grad_norm))
    np.testing.assert_allclose(a.d, b.d, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(a.V, b.V, rtol=1e-9, atol=1e-12)
    if a.truncated_mass is not None:
        assert a.truncated_mass == pytest.approx(b.truncated_mass, rel=1e-9, abs=1e-15)
        assert a.truncated_J == pytest.approx(b.truncated_J, rel=1e-8, abs=1e-15)


def test_auto_method_switches_to_sparse_for_large_problems():
    assert exact(garnet(0, S=30)).method == "dense"
    assert exact(make("garnet:S=3000,A=2,b=3")).method == "sparse"


def test_sparse_path_on_a_larger_garnet_matches_naive_forward_sum():
    """A moderately large garnet through the sparse solver against the forward sum of gamma^t E r_t."""
    p = make("garnet:S=400,A=3,b=4,seed=9,gamma=0.7")
    th = random_theta(p, 9)
    gt = exact(p, th, method="sparse")
    e = np.exp(th - th.max(axis=1, keepdims=True))
    pi = e / e.sum(axis=1, keepdims=True)
    n = 120  # 0.7^120 ~ 3e-19
    J_fwd = naive_forward_J(p.mdp.P, p.mdp.R, p.mdp.rho0, p.mdp.gamma, None, None, pi, n_steps=n)
    assert gt.J == pytest.approx(J_fwd, rel=1e-10)


# ---------------------------------------------------------------------------- truncation
@pytest.mark.parametrize("name,seed,max_steps", [("garnet_tab_unbounded", 0, 30), ("gridworld", 0, 12),
                                                 ("frozen_lake", 1, 25), ("terminal_gamma1_tab", 0, 7),
                                                 ("terminal_gamma1_lin", 2, 9)])
def test_truncated_mass_and_J(name, seed, max_steps):
    problem = _case(name, seed)
    mdp = problem.mdp
    pi, sol, _ = _naive(problem)
    gt = exact(problem, max_steps=max_steps)
    alive = naive_still_running(mdp.P, mdp.rho0, mdp.terminal, pi, max_steps)
    # max_steps matrix-vector products of a stochastic matrix: round-off ~ max_steps * eps
    assert gt.truncated_mass == pytest.approx(alive.sum(), rel=1e-12, abs=1e-15)
    assert gt.truncated_J == pytest.approx(mdp.gamma ** max_steps * float(alive @ sol["V"]), rel=1e-10, abs=1e-15)
    # J minus the truncated part is the finite-horizon J with horizon = max_steps
    capped = TabularMDP.from_sparse(mdp.next_idx, mdp.next_prob, mdp.R, mdp.rho0, mdp.gamma, horizon=max_steps,
                                    terminal=mdp.terminal)
    J_T = exact(MDPProblem(capped, problem.policy, problem.theta)).J
    assert gt.J - gt.truncated_J == pytest.approx(J_T, rel=1e-11, abs=1e-14)
    if mdp.terminal.any():
        assert 0 < gt.truncated_mass < 1


def test_truncation_uses_the_problem_cap_by_default():
    p = _case("frozen_lake", 0)
    gt = exact(p)
    assert gt.truncated_mass == pytest.approx(exact(p, max_steps=p.mdp.max_steps).truncated_mass, rel=1e-12)
    # gamma = 0.99: the default cap leaves < 1e-10 of the return beyond it
    assert gt.truncated_J < 1e-10 * max(gt.J, 1e-300) + 1e-12
    assert exact(garnet(0)).truncated_mass == pytest.approx(1.0, abs=1e-12)  # nothing ever terminates
    assert exact(_case("garnet_tab_finite", 0)).truncated_mass is None


# ---------------------------------------------------------------------------- input checks of exact()
def test_exact_refuses_bad_arguments():
    p = garnet(0)
    with pytest.raises(PGBenchError, match="beta"):
        exact(p, beta=-1.0)
    with pytest.raises(PGBenchError, match="beta"):
        exact(p, beta=float("nan"))
    with pytest.raises(PGBenchError, match="method"):
        exact(p, method="cholesky")
    with pytest.raises(PGBenchError, match="theta"):
        exact(p, np.zeros((2, 2)))
    with pytest.raises(PGBenchError, match="theta"):
        exact(p, np.full(p.policy.theta_shape, np.nan))
    with pytest.raises(PGBenchError, match="MDP"):
        exact(make("gaussian_toy"))
    for bad in (-1, 2.5):
        with pytest.raises(PGBenchError, match="max_steps"):
            exact(p, max_steps=bad)


def test_public_api():
    assert pgbench.exact is exact
    assert issubclass(PGBenchError, ValueError)
