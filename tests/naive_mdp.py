"""Slow, obvious references for the MDP sampling kernels (pgbench.kernels.mdp), the contract's
Estimators and Randomness (docs/contract.rst).

Episodes are replayed in plain Python from the uniforms of their own streams
(``pgbench.kernels.rng.uniforms(seed, cell, trial, episode, n)``), reading the alias tables of
:func:`pgbench.measure.engine.make_tables`; each estimator is then evaluated on the stored
episodes straight from its textbook formula: reward-to-go by explicit sums, scores from
``policy.score_table``, leave-one-out baselines by explicit means over the other episodes,
GAE advantages by explicit sums of ``(gamma lambda)^l delta_{t+l}``, the batch Fisher by explicit
outer products and ``np.linalg.pinv``. Nothing is shared with the kernels except the uniforms,
the alias tables and the oracle V/Q of :func:`pgbench.exact.exact`. Use on small problems only.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from pgbench.estimators.catalogue import parse
from pgbench.exact import exact
from pgbench.kernels.rng import seed_u64, uniforms
from pgbench.measure.engine import make_tables


@dataclass
class Episode:
    states: np.ndarray  # (L + 1,): s_0 .. s_L (s_L terminal, or where the cap cut in)
    actions: np.ndarray  # (L,)
    rewards: np.ndarray  # (L,)
    length: int
    u_geo: float  # the first uniform of the stream (geometric termination)


def replay(seed, cell, trial: int, episode: int, n: int) -> np.ndarray:
    """The first n uniforms of stream (seed, cell, trial, episode)."""
    return uniforms(seed_u64(seed), np.uint64(int(cell) % (1 << 64)), np.uint64(trial), np.uint64(episode), n)


def alias_pick_exact(prob_row: np.ndarray, alias_row: np.ndarray, u: float) -> int:
    """Walker's alias draw in exact rational arithmetic (how the rollout draws the start state and
    each step's slot): column i = floor(u n), kept iff u n - i < prob[i] as real numbers, else alias[i]."""
    x = Fraction(u) * len(prob_row)
    i = math.floor(x)
    return int(i) if x - i < Fraction(float(prob_row[i])) else int(alias_row[i])


def alias_slot_probabilities(prob: np.ndarray, alias: np.ndarray) -> np.ndarray:
    """Probability of every outcome implied by alias tables, by enumeration of the n columns:
    column i (chosen with probability 1/n) yields i with probability prob[i] and alias[i] otherwise."""
    rows, n = prob.shape
    out = np.zeros((rows, n))
    for r in range(rows):
        for i in range(n):
            keep = min(max(prob[r, i], 0.0), 1.0)
            out[r, i] += keep / n
            out[r, alias[r, i]] += (1.0 - keep) / n
    return out


def gaussian(u1: float, u2: float) -> float:
    """Box-Muller (first of the pair), as the kernels' ``normal`` draws it."""
    return math.sqrt(-2.0 * math.log(1.0 - u1)) * math.cos(2.0 * math.pi * u2)


def rollout_reference(tables, seed, cell, trial: int, episode: int) -> Episode:
    """One episode from its stream: u_geo, start state, then per step one uniform for the joint
    (action, next state) slot ``a * K + k`` and the reward-noise draws."""
    S, n_slots = tables.step_p.shape
    A = tables.pi.shape[1]
    Kn = n_slots // A
    per_step = 1 + {0: 0, 1: 2, 2: 1}[tables.noise_kind]
    u = replay(seed, cell, trial, episode, 2 + per_step * tables.cap)
    u_geo = float(u[0])
    s = alias_pick_exact(tables.rho_p[0], tables.rho_a[0], u[1])
    pos = 2
    states, actions, rewards = [], [], []
    for _ in range(tables.cap):
        slot = alias_pick_exact(tables.step_p[s], tables.step_a[s], u[pos])
        pos += 1
        a, k = divmod(slot, Kn)
        s_next = int(tables.slot_next[s, a * Kn + k])
        r = float(tables.R[s, a])
        if tables.noise_kind == 1:
            r += tables.noise_scale[s, a] * gaussian(u[pos], u[pos + 1])
            pos += 2
        elif tables.noise_kind == 2:
            r += tables.noise_scale[s, a] * (u[pos] - 0.5)
            pos += 1
        states.append(s)
        actions.append(a)
        rewards.append(r)
        s = s_next
        if tables.terminal[s]:
            break
    states.append(s)
    return Episode(np.array(states, np.int64), np.array(actions, np.int64), np.array(rewards, float),
                   len(actions), u_geo)


# ----------------------------------------------------------------------------- textbook pieces

def behaviour(pi: np.ndarray, p: dict) -> np.ndarray:
    A = pi.shape[1]
    if p["mu"] == "uniform":
        return np.full_like(pi, 1.0 / A)
    return (1.0 - p["eps"]) * pi + p["eps"] / A


def reward_to_go(r: np.ndarray, gamma: float) -> np.ndarray:
    """G_t = sum_{k >= t} gamma^(k - t) r_k, one explicit sum per t."""
    L = len(r)
    return np.array([sum(gamma ** (k - t) * r[k] for k in range(t, L)) for t in range(L)])


def critic_table(V: np.ndarray, finite: bool, T: int | None, S: int) -> np.ndarray:
    """Critic values by step: rows 0..T (row T = 0 after the horizon) or one row (unbounded)."""
    if finite:
        out = np.zeros((T + 1, S))
        out[:T] = V
        return out
    return np.asarray(V, float).reshape(1, S).copy()


def perturbed(Vc: np.ndarray, terminal: np.ndarray, scale: float, seed: int, finite: bool) -> np.ndarray:
    """The exact critic plus a fixed N(0, scale^2) error per (step, state) drawn from ``seed``;
    terminal states and the after-horizon row stay 0."""
    out = Vc + scale * np.random.default_rng(seed).normal(size=Vc.shape)
    out[:, terminal] = 0.0
    if finite:
        out[-1] = 0.0
    return out


def fitted(eps: list, finite: bool, T: int | None, S: int, gamma: float) -> np.ndarray:
    """Tabular Monte-Carlo critic from the batch: mean of G_t over visits to s (at step t when the
    horizon is finite), 0 where never visited."""
    rows = T if finite else 1
    tot = np.zeros((rows, S))
    cnt = np.zeros((rows, S))
    for ep in eps:
        G = reward_to_go(ep.rewards, gamma)
        for t in range(ep.length):
            row = t if finite else 0
            tot[row, ep.states[t]] += G[t]
            cnt[row, ep.states[t]] += 1
    fit = np.zeros((rows + 1, S) if finite else (1, S))
    for row in range(rows):
        for s in range(S):
            if cnt[row, s] > 0:
                fit[row, s] = tot[row, s] / cnt[row, s]
    return fit


def gae_weights(ep: Episode, gamma: float, lam: float, Vc: np.ndarray, finite: bool, terminal: np.ndarray) -> np.ndarray:
    """psi_t = gamma^t sum_l (gamma lambda)^l delta_(t+l), delta_t = r_t + gamma V(s_(t+1)) - V(s_t);
    V after a terminal state is 0, after the cap the critic's value (bootstrap)."""
    L = ep.length
    delta = np.zeros(L)
    for t in range(L):
        row, row_n = (t, t + 1) if finite else (0, 0)
        v_next = 0.0 if (t == L - 1 and terminal[ep.states[L]]) else Vc[row_n, ep.states[t + 1]]
        delta[t] = ep.rewards[t] + gamma * v_next - Vc[row, ep.states[t]]
    return np.array([gamma ** t * sum((gamma * lam) ** l * delta[t + l] for l in range(L - t)) for t in range(L)])


def geometric_horizon(u_geo: float, gamma: float, cap: int) -> int:
    """Last step H of the process killed with probability 1 - gamma per step: P(H >= h) = gamma^h."""
    if gamma == 0.0:
        return 0
    if gamma == 1.0:
        return cap
    return int(min(cap, math.floor(math.log(1.0 - u_geo) / math.log(gamma))))


def cum_ratios(ep: Episode, ratio: np.ndarray, cap: int) -> np.ndarray:
    """rho_(0:t) = prod_(j <= t) pi/mu for t < cap; ratios after the episode ended are 1."""
    out = np.ones(cap)
    w = 1.0
    for t in range(cap):
        if t < ep.length:
            w *= ratio[ep.states[t], ep.actions[t]]
        out[t] = w
    return out


# ----------------------------------------------------------------------------- estimators

def _score_sum(ep: Episode, g: np.ndarray, psi) -> np.ndarray:
    return sum((psi[t] * g[ep.states[t], ep.actions[t]] for t in range(ep.length)), np.zeros(g.shape[2]))


def estimate_reference(problem, theta, spec_names, N: int, K: int, seed, cell, opt_b: float | None = None,
                       trials=None) -> np.ndarray:
    """(len(trials), len(spec_names), d): every estimator's batch estimate for trials 0..K-1 (or
    the given ``trials``), from episodes replayed with :func:`rollout_reference`.

    ``opt_b`` is the constant used by ``optimal_const_baseline`` (the engine reports it).
    """
    mdp = problem.mdp
    pol = problem.policy
    th = problem.resolve_theta(theta)
    pi = pol.probs(th)
    logpi = pol.log_probs(th)
    g = pol.score_table(th)
    d = g.shape[2]
    S, A = pi.shape
    gamma = float(mdp.gamma)
    finite = mdp.horizon is not None
    T = mdp.horizon
    cap = mdp.episode_cap
    gt = exact(problem, th)
    Vc = critic_table(gt.V, finite, T, S)
    Qt = gt.Q if finite else gt.Q[None]
    Vt = gt.V if finite else gt.V[None]
    specs = [parse(n) for n in spec_names]
    on = make_tables(problem, th)
    trials = range(K) if trials is None else trials
    out = np.zeros((len(trials), len(specs), d))
    for row_k, k in enumerate(trials):
        eps = [rollout_reference(on, seed, cell, k, i) for i in range(N)]
        is_eps: dict = {}

        def est(sp, eps=eps, is_eps=is_eps, k=k) -> np.ndarray:
            n, p = sp.name, sp.p
            Rs = np.array([sum(gamma ** t * ep.rewards[t] for t in range(ep.length)) for ep in eps])
            zs = [_score_sum(ep, g, np.ones(ep.length)) for ep in eps]
            row = (lambda t: t) if finite else (lambda t: 0)

            def trajectory(b):  # (R_i - b_i) z_i
                return sum(((Rs[i] - b[i]) * zs[i] for i in range(N)), np.zeros(d)) / N

            def per_step(fn):  # (1/N) sum_i sum_t psi_t^i g(s_t, a_t)
                return sum((_score_sum(ep, g, fn(i, ep)) for i, ep in enumerate(eps)), np.zeros(d)) / N

            if n == "reinforce":
                return trajectory(np.zeros(N))
            if n == "reinforce_rtg":
                return per_step(lambda i, ep: [gamma ** t * G for t, G in enumerate(reward_to_go(ep.rewards, gamma))])
            if n == "rtg_no_gamma_t":
                return per_step(lambda i, ep: reward_to_go(ep.rewards, gamma))
            if n == "const_baseline":
                return trajectory(np.full(N, p["b"]))
            if n == "optimal_const_baseline":
                return trajectory(np.full(N, opt_b))
            if n == "batch_mean_baseline":
                return trajectory(np.full(N, Rs.mean()))
            if n == "rloo":
                return trajectory([np.mean([Rs[j] for j in range(N) if j != i]) for i in range(N)])
            if n in ("w_baseline", "w_baseline_loo", "score_norm_baseline"):
                if n == "score_norm_baseline":
                    W = np.array([z @ z for z in zs])
                else:
                    W = np.array([sum(1.0 - 2.0 * pi[ep.states[t], ep.actions[t]] + np.sum(pi[ep.states[t]] ** 2)
                                      for t in range(ep.length)) for ep in eps])
                if n == "w_baseline_loo":
                    b = []
                    for i in range(N):
                        others = [j for j in range(N) if j != i]
                        den = sum(W[j] for j in others)
                        b.append(sum(W[j] * Rs[j] for j in others) / den if den > 0 else 0.0)
                    return trajectory(b)
                return trajectory(np.full(N, (W @ Rs) / W.sum() if W.sum() > 0 else 0.0))
            if n == "value_baseline":
                return per_step(lambda i, ep: [gamma ** t * (G - Vt[row(t), ep.states[t]])
                                               for t, G in enumerate(reward_to_go(ep.rewards, gamma))])
            if n == "time_baseline_loo":
                Gs = np.zeros((N, cap))  # G_t of episode j, 0 once it has ended
                for j, ep in enumerate(eps):
                    Gs[j, :ep.length] = reward_to_go(ep.rewards, gamma)
                return per_step(lambda i, ep: [gamma ** t * (Gs[i, t] - np.mean([Gs[j, t] for j in range(N) if j != i]))
                                               for t in range(ep.length)])
            if n == "true_advantage":
                return per_step(lambda i, ep: [gamma ** t * (Qt[row(t), ep.states[t], ep.actions[t]] - Vt[row(t), ep.states[t]])
                                               for t in range(ep.length)])
            if n == "all_action":
                tot = np.zeros(d)
                for ep in eps:
                    for t in range(ep.length):
                        s = ep.states[t]
                        for b in range(A):  # grad pi(b|s) = pi(b|s) grad log pi(b|s)
                            tot += gamma ** t * pi[s, b] * g[s, b] * Qt[row(t), s, b]
                return tot / N
            if n in ("gae", "td0"):
                lam = p.get("lambda", 0.0)
                if p["critic"] == "exact":
                    crit = Vc
                elif p["critic"] == "perturbed":
                    crit = perturbed(Vc, mdp.terminal, p["scale"], p["seed"], finite)
                else:
                    crit = fitted(eps, finite, T, S, gamma)
                return per_step(lambda i, ep: gae_weights(ep, gamma, lam, crit, finite, mdp.terminal))
            if n == "geometric_termination":
                def psi(i, ep):
                    H = geometric_horizon(ep.u_geo, gamma, cap)
                    last = min(H, ep.length - 1)
                    return [sum(ep.rewards[t:last + 1]) if t <= last else 0.0 for t in range(ep.length)]
                return per_step(psi)
            if n == "importance_sampling":
                key = (p["mu"], p["eps"])
                mu = behaviour(pi, p)
                if key not in is_eps:
                    tb = make_tables(problem, th, mu)
                    is_eps[key] = [rollout_reference(tb, seed, cell, k, i) for i in range(N)]
                beps = is_eps[key]
                rho = np.array([cum_ratios(ep, pi / mu, cap) for ep in beps])
                norm = rho.mean(axis=0) if p["weighted"] else np.ones(cap)
                tot = np.zeros(d)
                for i, ep in enumerate(beps):
                    for t in range(ep.length):
                        w = sum(gamma ** j * rho[i, j] / norm[j] * ep.rewards[j] for j in range(t, ep.length))
                        tot += w * g[ep.states[t], ep.actions[t]]
                return tot / N
            if n == "entropy_bonus":
                beta = p["beta"]
                return per_step(lambda i, ep: [gamma ** t * G for t, G in enumerate(reward_to_go(
                    ep.rewards - beta * logpi[ep.states[:-1], ep.actions], gamma))])
            if n == "natural":
                gh = est(sp.base)
                F = np.zeros((d, d))
                for ep in eps:
                    for t in range(ep.length):
                        v = g[ep.states[t], ep.actions[t]]
                        F += gamma ** t * np.outer(v, v)
                return np.linalg.pinv(F / N, rcond=1e-10, hermitian=True) @ gh
            raise ValueError(f"no reference for {n}")

        for j, sp in enumerate(specs):
            out[row_k, j] = est(sp)
    return out


# ----------------------------------------------------------------------------- exact moments by enumeration

def enumerate_trajectories(problem, theta=None):
    """Every trajectory of a finite-horizon problem with its probability: yields
    (p, states (L + 1), actions (L), mean rewards (L), reward-noise variances (L)). Small problems only."""
    mdp = problem.mdp
    pi = problem.policy.probs(problem.resolve_theta(theta))
    P = mdp.P
    var = mdp.reward_variance()
    T = mdp.horizon
    assert T is not None, "enumeration needs a finite horizon"

    def walk(p, states, actions):
        s = states[-1]
        if len(actions) == T or mdp.terminal[s]:
            a = np.array(actions, np.int64)
            st = np.array(states, np.int64)
            yield p, st, a, mdp.R[st[:-1], a].astype(float), var[st[:-1], a].astype(float)
            return
        for a in range(mdp.A):
            for s2 in range(mdp.S):
                q = pi[s, a] * P[s, a, s2]
                if q > 0:
                    yield from walk(p * q, states + [s2], actions + [a])

    for s0 in range(mdp.S):
        if mdp.rho0[s0] > 0:
            yield from walk(mdp.rho0[s0], [s0], [])


def exact_episode_moments(problem, name: str, theta=None):
    """Exact mean and covariance (d, d) of one episode's term of a reward-linear estimator
    (``reinforce``, ``reinforce_rtg``, ``rtg_no_gamma_t``, ``value_baseline``, ``true_advantage``,
    ``const_baseline:b=..``), reward noise included: the term is ``x = G^T (M r + c)`` with G the
    episode's scores, so ``E[x x^T | tau] = E[x|tau] E[x|tau]^T + G^T M diag(var r) M^T G``."""
    sp = parse(name)
    th = problem.resolve_theta(theta)
    g = problem.policy.score_table(th)
    gamma = problem.mdp.gamma
    gt = exact(problem, th)
    d = g.shape[2]
    m1 = np.zeros(d)
    m2 = np.zeros((d, d))
    for p, st, a, rbar, rvar in enumerate_trajectories(problem, th):
        L = len(a)
        Gm = np.array([g[st[t], a[t]] for t in range(L)]).reshape(L, d)
        disc = gamma ** np.arange(L)
        c = np.zeros(L)
        if sp.name in ("reinforce", "const_baseline"):
            M = np.tile(disc, (L, 1))
            if sp.name == "const_baseline":
                c[:] = -sp.p["b"]
        elif sp.name in ("reinforce_rtg", "value_baseline"):
            M = np.array([[gamma ** k if k >= t else 0.0 for k in range(L)] for t in range(L)])
            if sp.name == "value_baseline":
                c = np.array([-gamma ** t * gt.V[t, st[t]] for t in range(L)])
        elif sp.name == "rtg_no_gamma_t":
            M = np.array([[gamma ** (k - t) if k >= t else 0.0 for k in range(L)] for t in range(L)])
        elif sp.name == "true_advantage":
            M = np.zeros((L, L))
            c = np.array([gamma ** t * (gt.Q[t, st[t], a[t]] - gt.V[t, st[t]]) for t in range(L)])
        else:
            raise ValueError(f"no exact moments for {name}")
        mean = Gm.T @ (M @ rbar + c)
        B = Gm.T @ M
        m1 += p * mean
        m2 += p * (np.outer(mean, mean) + B @ np.diag(rvar) @ B.T)
    return m1, m2 - np.outer(m1, m1)


def exact_optimal_baseline(problem, theta=None):
    """``b* = E[R ||z||^2] / E[||z||^2]`` by enumeration, and the standard deviation of one
    episode's ``||z||^2 (R - b*)`` (noise included) for judging a Monte-Carlo estimate of b*."""
    th = problem.resolve_theta(theta)
    g = problem.policy.score_table(th)
    gamma = problem.mdp.gamma
    rows = []
    for p, st, a, rbar, rvar in enumerate_trajectories(problem, th):
        z = sum((g[st[t], a[t]] for t in range(len(a))), np.zeros(g.shape[2]))
        disc = gamma ** np.arange(len(a))
        rows.append((p, float(z @ z), float(disc @ rbar), float(disc ** 2 @ rvar)))
    p, Z, R, VR = (np.array(c) for c in zip(*rows))
    b = (p * Z * R).sum() / (p * Z).sum()
    sd = np.sqrt((p * Z ** 2 * ((R - b) ** 2 + VR)).sum()) / (p * Z).sum()
    return float(b), float(sd)


def proxy_reference(problem, N: int, K: int, seed, cell, theta=None) -> np.ndarray:
    """Per-trial sums of the W(tau)-proxy diagnostics over the batch: (K, 8) with columns
    sum W, sum ||z||^2, sum W^2, sum ||z||^4, sum W ||z||^2, sum (R - b_W)^2 W,
    sum (R - b_loo)^2 W and N (b_W = sum W R / sum W, b_loo the leave-one-out mean return)."""
    th = problem.resolve_theta(theta)
    pi = problem.policy.probs(th)
    g = problem.policy.score_table(th)
    gamma = problem.mdp.gamma
    tables = make_tables(problem, th)
    out = np.zeros((K, 8))
    for k in range(K):
        eps = [rollout_reference(tables, seed, cell, k, i) for i in range(N)]
        R = np.array([sum(gamma ** t * ep.rewards[t] for t in range(ep.length)) for ep in eps])
        W = np.array([sum(1.0 - 2.0 * pi[ep.states[t], ep.actions[t]] + np.sum(pi[ep.states[t]] ** 2)
                          for t in range(ep.length)) for ep in eps])
        Z = np.array([float(z @ z) for z in (_score_sum(ep, g, np.ones(ep.length)) for ep in eps)])
        b_w = (W @ R) / W.sum() if W.sum() > 0 else 0.0
        b_loo = np.array([np.mean([R[j] for j in range(N) if j != i]) if N > 1 else 0.0 for i in range(N)])
        out[k] = [W.sum(), Z.sum(), (W * W).sum(), (Z * Z).sum(), (W * Z).sum(), ((R - b_w) ** 2 * W).sum(),
                  ((R - b_loo) ** 2 * W).sum(), N]
    return out


def trace_var(est: np.ndarray):
    """Trace of the sample covariance of (K, d) trials and its delete-one jackknife standard error."""
    K = est.shape[0]
    q = ((est - est.mean(axis=0)) ** 2).sum(axis=1)
    v = q.sum() / (K - 1)
    se = np.sqrt(K / ((K - 1) * (K - 2) ** 2) * ((q - q.mean()) ** 2).sum())
    return float(v), float(se)
