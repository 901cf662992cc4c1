"""Learning runs (pgbench.dynamics.train) against independent NumPy implementations."""
import subprocess
import sys

import numba
import numpy as np
import pytest

import pgbench
from pgbench.dynamics import iqm, recorded_steps, train, wilson
from pgbench.errors import PGBenchError

THREE = "bandit:r=1;0.7;0,theta=0;3;5"


def _softmax(th):
    e = np.exp(th - th.max())
    return e / e.sum()


def test_exact_npg_path_three_armed_against_numpy():
    """The deterministic NPG path: theta += lr * pinv(F) grad J with F = diag(pi) - pi pi^T, in plain NumPy."""
    r = np.array([1.0, 0.7, 0.0])
    th = np.array([0.0, 3.0, 5.0])
    lr, T = 0.025, 1000
    J_ref = []
    for _ in range(T + 1):
        pi = _softmax(th)
        J_ref.append(pi @ r)
        grad = pi * (r - pi @ r)
        F = np.diag(pi) - np.outer(pi, pi)
        th = th + lr * np.linalg.pinv(F, rcond=1e-13) @ grad
    res = train(THREE, ["exact"], optimizer="npg", lr=lr, steps=T, runs=2, nsr_points=3)
    assert np.array_equal(res.t, np.arange(T + 1))
    np.testing.assert_allclose(res.J[0, 0], J_ref, rtol=0, atol=1e-9)
    assert np.array_equal(res.J[0, 0], res.J[0, 1])  # deterministic
    assert np.all(res.curves["exact_nsr"].dropna() == 0.0)
    np.testing.assert_allclose(res.cosine[0][:-1], 1.0, atol=1e-12)


@pytest.mark.parametrize("prob", ["garnet:S=5,A=3,b=2,seed=4,gamma=0.8", "garnet:S=4,A=2,b=2,seed=2,horizon=6",
                                  "gridworld:n=3,slip=0.2,gamma=0.9"])
def test_exact_sgd_and_npg_on_an_mdp_against_pgbench_exact(prob):
    """Discounted, finite-horizon and terminal-state MDPs: the kernel's exact path against pgbench.exact's
    J, gradient and natural gradient."""
    for opt, lr in (("sgd", 0.5), ("npg", 0.2)):
        res = train(prob, ["exact"], optimizer=opt, lr=lr, steps=15, runs=1, keep_paths=0)
        p = pgbench.make(prob)
        th = p.theta.copy()
        for k in range(16):
            gt = pgbench.exact(p, th)
            assert abs(res.J[0, 0, k] - gt.J) < 1e-10
            assert abs(res.grad_norm[0, k] - np.linalg.norm(gt.grad)) < 1e-10
            th = th + lr * (gt.grad if opt == "sgd" else gt.natural_gradient().reshape(th.shape))


def _numpy_committal(R, T, lr, b, p0, seed):
    """Two arms (rewards 1, 0), one sample per update, NPG: theta_a += lr (r_a - b) / pi_a (Chung et al.'s
    form; it differs from the min-norm direction by a constant, which leaves the policy unchanged)."""
    rng = np.random.default_rng(seed)
    th = np.tile([np.log(p0 / (1 - p0)), 0.0], (R, 1))
    r = np.array([1.0, 0.0])
    for _ in range(T):
        pi = np.exp(th - th.max(axis=1, keepdims=True))
        pi /= pi.sum(axis=1, keepdims=True)
        a = (rng.random(R) >= pi[:, 0]).astype(int)
        th[np.arange(R), a] += lr * (r[a] - b) / pi[np.arange(R), a]
    pi0 = 1.0 / (1.0 + np.exp(th[:, 1] - th[:, 0]))
    return pi0


def test_p_stuck_two_armed_committal_against_numpy():
    R, T, lr, b, p0 = 2000, 200, 0.1, -1.0, 0.27
    th0 = f"{float(np.log(p0 / (1 - p0)))!r};0"
    res = train(f"bandit:r=1;0,theta={th0}", [f"const_baseline:b={b}"], optimizer="npg", lr=lr, steps=T, runs=R,
                stuck_below=0.5, nsr_points=0)
    p1 = float(res.summary["p_stuck"][0])
    p2 = float(np.mean(_numpy_committal(R, T, lr, b, p0, seed=11) <= 0.5))
    se = np.sqrt(p1 * (1 - p1) / R + p2 * (1 - p2) / R)
    assert 0.05 < p2 < 0.95  # a committal baseline: a real share of the runs fails
    assert abs(p1 - p2) <= 4 * se, (p1, p2, se)
    row = res.summary.iloc[0]
    assert row["p_stuck_lo"] <= p1 <= row["p_stuck_hi"]


def test_wilson_known_values():
    lo, hi = wilson(5, 10)
    assert abs(lo - 0.2366) < 1e-4 and abs(hi - 0.7634) < 1e-4
    lo, hi = wilson(0, 10)
    assert lo == 0.0 and abs(hi - 0.2775) < 1e-4
    assert wilson(10, 10)[1] == 1.0 and wilson(0, 7)[0] == 0.0


def test_iqm_and_recorded_steps():
    assert iqm(np.arange(8.0)) == np.mean([2, 3, 4, 5])
    assert np.array_equal(recorded_steps(5), np.arange(6))
    rs = recorded_steps(5000)
    assert rs[0] == 0 and rs[-1] == 5000 and 990 <= rs.size <= 1001 and np.all(np.diff(rs) > 0)


@pytest.mark.parametrize("prob,ests,opt,N", [
    ("bandit:r=1;0.7;0,theta=0;3;5,noise=0.5", ["value_baseline:shift=-0.5", "optimal_const_baseline"], "npg", 1),
    ("garnet:S=4,A=2,b=2,seed=1,horizon=5", ["rloo", "reinforce_rtg"], "adam", 3),
])
def test_bit_identical_over_threads_and_runs(prob, ests, opt, N):
    kw = dict(optimizer=opt, lr=0.05, steps=30, batch=N, seed=7, nsr_points=0, keep_paths=2)
    old, most = numba.get_num_threads(), numba.config.NUMBA_NUM_THREADS
    if most < 2:
        pytest.skip("needs numba with at least two threads")
    try:
        numba.set_num_threads(1)
        a = train(prob, ests, runs=6, **kw)
        numba.set_num_threads(most)
        b = train(prob, ests, runs=6, **kw)
        c = train(prob, ests, runs=12, **kw)
    finally:
        numba.set_num_threads(old)
    assert np.array_equal(a.J, b.J) and np.array_equal(a.regret, b.regret)
    assert np.array_equal(a.J, c.J[:, :6]) and np.array_equal(a.regret, c.regret[:, :6])
    assert np.array_equal(a.paths, c.paths)
    assert not np.array_equal(c.J[:, :6], c.J[:, 6:])  # runs differ from each other


def test_regret_is_the_sum_of_the_gaps():
    res = train(THREE, ["value_baseline"], optimizer="npg", lr=0.025, steps=50, runs=5, nsr_points=0)
    np.testing.assert_allclose(res.regret[0], (res.J_star - res.J[0][:, :-1]).sum(axis=1), rtol=1e-12)
    assert res.J_star == 1.0


@pytest.mark.parametrize("kw,msg", [
    (dict(lr=float("nan")), "step size"), (dict(lr=-0.1), "step size"), (dict(lr=float("inf")), "step size"),
    (dict(runs=0), "runs"), (dict(optimizer="rmsprop"), "unknown optimizer"),
    (dict(estimators=["w_baseline"]), "not available"),
])
def test_bad_inputs(kw, msg):
    args = dict(optimizer="sgd", lr=0.1, steps=3, runs=2)
    args.update(kw)
    ests = args.pop("estimators", ["reinforce"])
    with pytest.raises(PGBenchError, match=msg):
        train(THREE, ests, **args)


def test_npg_refuses_a_singular_fisher_along_a_needed_direction():
    from pgbench.kernels.train import _natural
    pi = np.array([[0.5, 0.5, 0.0]])
    x = np.zeros((1, 3))
    assert _natural(np.array([[0.1, -0.1, 0.0]]), pi, np.array([1.0]), x)
    assert not _natural(np.array([[0.1, -0.2, 0.1]]), pi, np.array([1.0]), x)  # moves the probability-0 action
    assert not _natural(np.array([[0.1, -0.1, 0.0]]), pi, np.array([0.0]), x)  # a state the Fisher never weighs


def test_cli_train(tmp_path):
    cmd = [sys.executable, "-m", "pgbench", "train", THREE, "-e", "exact", "-e", "value_baseline",
           "--optimizer", "npg", "--lr", "0.025", "--steps", "20", "--runs", "3", "--stuck-below", "0.75",
           "--out", str(tmp_path)]
    out = subprocess.run(cmd, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "p_stuck" in out.stdout
    assert {p.name for p in tmp_path.iterdir()} >= {"train.json", "summary.csv", "curves.csv", "regret.csv"}
    bad = subprocess.run(cmd[:5] + ["--lr", "nan"], capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.startswith("pgbench: error:") and len(bad.stderr.splitlines()) == 1


def test_one_step_nsr_matches_exact_moments():
    from pgbench.dynamics.train import one_step_nsr
    from pgbench.estimators.catalogue import parse
    from pgbench.exact.moments import exact_moments
    prob = pgbench.make("bandit:r=1;0.7;0,theta=0.3;-1;2,noise=0.4")
    pis = np.array([_softmax(np.array(t))[None] for t in ([0.3, -1, 2], [1.0, 0.2, -0.5])])
    for est in ["reinforce", "const_baseline:b=0.4", "optimal_const_baseline:shift=-0.5", "value_baseline:shift=0.5",
                "true_advantage"]:
        got = one_step_nsr(prob.mdp, parse(est), 3, pis)
        for i, p in enumerate(pis):
            em = exact_moments(prob, [est], batch=3, theta=np.log(p))
            want = em.variance[0] / np.sum(em.target[0] ** 2)
            assert abs(got[i] - want) < 1e-9 * max(1.0, want), est


def test_bootstrap_intervals_against_normal_theory():
    from pgbench.dynamics.train import _bootstrap
    x = np.random.default_rng(3).normal(size=2000)
    b = _bootstrap(x, 0)
    half = 1.96 * x.std(ddof=1) / np.sqrt(x.size)
    assert abs((b["mean_hi"] - b["mean_lo"]) / (2 * half) - 1) < 0.15
    assert abs((b["mean_hi"] + b["mean_lo"]) / 2 - x.mean()) < 0.2 * half
    for k in ("median", "iqm"):
        assert b[k + "_lo"] <= b[k] <= b[k + "_hi"]
    assert b["median"] == np.median(x) and abs(b["iqm"] - np.mean(np.sort(x)[500:1500])) < 1e-12
    # the median of a normal sample has about 1.25 times the standard error of its mean
    assert 1.05 < (b["median_hi"] - b["median_lo"]) / (b["mean_hi"] - b["mean_lo"]) < 1.5


def _ref_values(mdp, pi):
    """V_t, Q_t by plain NumPy (finite horizon: backward recursion; unbounded: a dense solve)."""
    P = mdp.P
    live = ~mdp.terminal
    if mdp.horizon is not None:
        V = np.zeros((mdp.horizon + 1, mdp.S))
        Q = np.zeros((mdp.horizon, mdp.S, mdp.A))
        for t in range(mdp.horizon - 1, -1, -1):
            Q[t] = mdp.R + mdp.gamma * P @ V[t + 1]
            V[t] = np.where(live, (pi * Q[t]).sum(axis=1), 0.0)
        return V, Q
    Ppi = np.einsum("sa,sat->st", pi, P) * live[:, None]
    V = np.linalg.solve(np.eye(mdp.S) - mdp.gamma * Ppi, np.where(live, (pi * mdp.R).sum(axis=1), 0.0))
    return V[None], (mdp.R + mdp.gamma * P @ V)[None]


def _ref_estimate(prob, est, theta, N, seed, cell, run):
    """Replay the streams of (seed, cell, run, episode) in NumPy and form the estimate."""
    from pgbench.kernels.rng import uniforms
    mdp = prob.mdp
    pi = np.exp(theta - theta.max(axis=1, keepdims=True))
    pi /= pi.sum(axis=1, keepdims=True)
    V, Q = _ref_values(mdp, pi)
    H = mdp.episode_cap
    pick = lambda cum, u: min(int(np.searchsorted(cum, u, side="right")), len(cum) - 1)  # noqa: E731
    eps = []
    for i in range(N):
        u = iter(uniforms(np.uint64(seed), np.uint64(cell), np.uint64(run), np.uint64(i), 2 * H + 2))
        s = pick(np.cumsum(mdp.rho0), next(u))
        traj = []
        for t in range(H):
            if mdp.terminal[s]:
                break
            a = pick(np.cumsum(pi[s]), next(u))
            traj.append((s, a, mdp.R[s, a]))
            s = mdp.next_idx[s, a, pick(np.cumsum(mdp.next_prob[s, a]), next(u))] if mdp.K > 1 else mdp.next_idx[s, a, 0]
        eps.append(traj)
    rets = np.array([sum(mdp.gamma ** t * r for t, (_, _, r) in enumerate(tr)) for tr in eps])
    g = np.zeros_like(theta)
    for i, tr in enumerate(eps):
        G = np.zeros(len(tr) + 1)
        for t in range(len(tr) - 1, -1, -1):
            G[t] = tr[t][2] + mdp.gamma * G[t + 1]
        for t, (s, a, r) in enumerate(tr):
            tv = t if mdp.horizon is not None else 0
            psi = {"reinforce": rets[i], "reinforce_rtg": mdp.gamma ** t * G[t],
                   "value_baseline": mdp.gamma ** t * (G[t] - V[tv, s]),
                   "true_advantage": mdp.gamma ** t * (Q[tv, s, a] - V[tv, s]),
                   "rloo": rets[i] - (rets.sum() - rets[i]) / (N - 1),
                   "batch_mean_baseline": rets[i] - rets.mean(),
                   "const_baseline:b=0.5": rets[i] - 0.5}[est]
            g[s] += psi * (np.eye(mdp.A)[a] - pi[s])
    return g / N


@pytest.mark.parametrize("prob", ["garnet:S=4,A=3,b=2,seed=5,horizon=4", "garnet:S=3,A=2,b=2,seed=1,gamma=0.7",
                                  "gridworld:n=2,slip=0.3,gamma=0.9"])
def test_update_estimates_against_numpy_replay_and_exact(prob):
    """The estimate of one update: the kernel against a NumPy replay of the same streams (to 1e-12),
    and the mean over many independent updates against the exact gradient (within 5 SE)."""
    from pgbench.dynamics.train import one_estimate
    p = pgbench.make(prob)
    theta = np.random.default_rng(1).normal(size=p.policy.theta_shape)
    grad = pgbench.exact(p, theta).grad
    for est in ["reinforce", "reinforce_rtg", "value_baseline", "true_advantage", "rloo", "batch_mean_baseline",
                "const_baseline:b=0.5"]:
        for run in range(3):
            k = one_estimate(p, est, theta, 3, seed=4, cell=9, run=run)
            np.testing.assert_allclose(k, _ref_estimate(p, est, theta, 3, 4, 9, run), rtol=0, atol=1e-12)
        if est == "batch_mean_baseline":
            continue  # biased at N = 3 by design
        gs = np.array([one_estimate(p, est, theta, 4, seed=5, cell=c) for c in range(1500)])
        se = gs.std(axis=0, ddof=1) / np.sqrt(len(gs))
        assert np.all(np.abs(gs.mean(axis=0) - grad) <= 5 * se + 1e-12), est
