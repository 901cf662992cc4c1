"""Exact second moments of gradient estimators by enumerating trajectories (the contract's :ref:`contract-metrics`), or
by the moment DP of :mod:`pgbench.exact.dp` (:func:`exact_moments` with ``method="auto"`` takes
the DP whenever it covers every estimator asked for; :func:`variance_decomposition` splits the
variance; :func:`optimal_baselines` uses the DP by default).

On a problem small enough that every trajectory can be listed, an estimator's exact mean,
variance and MSE follow from the list: each trajectory ``tau`` has its probability ``p(tau)``
and, given ``tau``, every estimator in the catalogue (except ``natural``) is an affine function
of the rewards. With ``x(tau, r)`` the estimate and ``c_t = x(tau, r + e_t) - x(tau, r)`` the
coefficient vector of reward ``t`` (a unit perturbation),

    E[x]              = sum_tau p(tau) x(tau, rbar)
    E||x - g||^2      = sum_tau p(tau) (||x(tau, rbar) - g||^2 + sum_t Var(noise at (s_t, a_t)) ||c_t||^2)

where ``rbar`` are the mean rewards ``R[s_t, a_t]`` (the noise is zero-mean and independent
across steps). ``x(tau, r)`` is computed by the sampling kernel's own per-episode code
(:func:`pgbench.kernels.mdp._episode_weights`), so the enumeration checks the kernel and the
exact gradient against each other: an unbiased estimator's enumerated mean *is* ``grad J``.

Per-episode estimators are enumerated once (N = 1); a batch of N averages N independent terms, so
``Var(N) = Var(1) / N`` and ``MSE(N) = Var(N) + ||bias||^2``. Estimators whose terms depend on the
whole batch (``rloo``, ``batch_mean_baseline``, ``w_baseline``, ``w_baseline_loo``,
``score_norm_baseline``, ``time_baseline_loo``, the fitted critic, weighted importance sampling)
are enumerated over batches: every multiset of N trajectories with its multinomial probability
(batches are symmetric in their episodes). ``geometric_termination`` draws a random horizon H per
episode, independent of the trajectory: the enumeration mixes over H exactly. ``importance_sampling``
enumerates the behaviour policy's trajectories. ``natural`` (a pseudo-inverse per batch) and user
estimators are left out.

Unbounded problems are enumerated up to the sampling cap ``max_steps`` (the enumerated law is
that of the sampled, capped episodes; the mass the cap cuts off is reported). Enumeration is
refused with a :class:`PGBenchError` when it would list more than ``limit`` trajectories (or
batches); :func:`count_trajectories` says how many there are without listing them.

Optimal constant baselines: for ``(R - b) z`` the trace variance is the parabola
``Var(b) = E[(R - b)^2 ||z||^2] - ||E[R z]||^2`` (noise included), minimised by
``b* = E[R ||z||^2] / E[||z||^2]``; per coordinate, ``b*_j = E[R z_j^2] / E[z_j^2]``.
See :func:`optimal_baselines` and :func:`exact_optimal_constant_baseline`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
from numba import njit

from pgbench.errors import PGBenchError
from pgbench.estimators.catalogue import GEOMETRIC, IS_PD, EstimatorSpec, parse
from pgbench.kernels import mdp as K_

__all__ = ["DEFAULT_LIMIT", "Trajectories", "ExactMoments", "OptimalBaselines", "count_trajectories",
           "count_batches", "enumerate_trajectories", "exact_moments", "exact_variance", "optimal_baselines",
           "exact_optimal_constant_baseline", "supports", "enumeration_size", "dp_supports",
           "variance_decomposition"]

DEFAULT_LIMIT = 200_000
"""Most trajectories (or batches, for in-batch estimators) an enumeration may list."""

UNSUPPORTED = {"natural": "natural (F_hat^+ g_hat needs a pseudo-inverse per batch)"}


# ----------------------------------------------------------------------------------------------- counting


def _cap(problem, max_steps) -> int:
    mdp = problem.mdp
    if max_steps is None:
        return int(mdp.episode_cap)
    if isinstance(max_steps, bool) or int(max_steps) != max_steps or max_steps < 1:
        raise PGBenchError(f"max_steps must be a positive integer; got {max_steps!r}")
    if mdp.horizon is not None:
        return min(int(max_steps), mdp.horizon)
    return int(max_steps)


def count_trajectories(problem, max_steps: Optional[int] = None, stop_above: float = math.inf) -> float:
    """Number of distinct step sequences (start, then action and successor slot per step) with
    positive probability under some softmax policy, up to the horizon or the cap.

    A dynamic programme over (state, steps left); it stops as soon as the count exceeds
    ``stop_above`` (counts only grow with the steps left) or stops growing (every episode has
    ended). Returns a float (``inf`` on overflow).
    """
    mdp = problem.mdp
    cap = _cap(problem, max_steps)
    live = mdp.next_prob > 0  # (S, A, K)
    term_next = mdp.terminal[mdp.next_idx]  # (S, A, K)
    starts = mdp.rho0 > 0
    n = np.ones(mdp.S)  # n_0(s) = 1: no step left
    with np.errstate(over="ignore", invalid="ignore"):
        for _ in range(cap):
            succ = np.where(term_next, 1.0, n[mdp.next_idx])
            new = (succ * live).sum(axis=(1, 2))
            total = float(new[starts].sum())
            if total > stop_above:
                return total
            if np.array_equal(new, n):
                break
            n = new
    return float(n[starts].sum())


def count_batches(n_traj: float, N: int) -> float:
    """Multisets of N trajectories out of n: ``C(n + N - 1, N)``."""
    if not math.isfinite(n_traj):
        return math.inf
    return float(math.comb(int(n_traj) + N - 1, N))


# ----------------------------------------------------------------------------------------------- listing


@dataclass
class Trajectories:
    """Every trajectory of a problem up to the cap: ``states`` (n, Lmax + 1) (``states[i, L_i]`` is
    the state after the last step), ``actions`` (n, Lmax), ``lengths`` (n,), ``p_env`` (n,) the
    probability of the start and the transitions (times the policy's probabilities: :meth:`probs`),
    and ``capped`` (n,) whether the cap cut the episode (an unbounded problem's last step entered a
    non-terminal state)."""

    states: np.ndarray
    actions: np.ndarray
    lengths: np.ndarray
    p_env: np.ndarray
    capped: np.ndarray
    cap: int

    def __len__(self) -> int:
        return int(self.lengths.shape[0])

    def probs(self, pi: np.ndarray) -> np.ndarray:
        """Probability of each trajectory when actions are drawn from ``pi`` (S, A)."""
        Lmax = self.actions.shape[1]
        mask = np.arange(Lmax)[None, :] < self.lengths[:, None]
        pa = np.where(mask, pi[self.states[:, :Lmax], self.actions], 1.0)
        return self.p_env * np.prod(pa, axis=1)


def enumerate_trajectories(problem, limit: int = DEFAULT_LIMIT, max_steps: Optional[int] = None) -> Trajectories:
    """List every trajectory of ``problem`` (refused beyond ``limit``), breadth first and vectorised.

    Two successor slots leading to the same state give two entries (their probabilities add up
    correctly); zero-probability slots are skipped.
    """
    mdp = problem.mdp
    cap = _cap(problem, max_steps)
    n = count_trajectories(problem, max_steps=cap, stop_above=limit)
    if n > limit:
        what = f"horizon {mdp.horizon}" if mdp.horizon is not None else f"cap of {cap} steps"
        raise PGBenchError(f"{problem.name} has more than {limit} trajectories up to its {what} "
                           f"(counted {'more than ' if n == math.inf else ''}{n:.3g}); exact moments by "
                           f"enumeration need a smaller problem, horizon or max_steps (or a larger limit)")
    S, A, K = mdp.next_prob.shape
    starts = np.flatnonzero(mdp.rho0 > 0)
    st = starts[:, None].astype(np.int64)  # (m, t + 1)
    ac = np.zeros((starts.size, 0), np.int64)
    pe = mdp.rho0[starts].astype(np.float64)
    done = []  # (states, actions, p_env, capped)
    a_idx = np.repeat(np.arange(A), K)
    k_idx = np.tile(np.arange(K), A)
    for t in range(cap):
        s = st[:, -1]
        prob = mdp.next_prob[s][:, a_idx, k_idx]  # (m, A K)
        sn = mdp.next_idx[s][:, a_idx, k_idx]
        rows, slots = np.nonzero(prob > 0)
        st = np.concatenate([st[rows], sn[rows, slots][:, None]], axis=1)
        ac = np.concatenate([ac[rows], a_idx[slots][:, None]], axis=1)
        pe = pe[rows] * prob[rows, slots]
        end = mdp.terminal[st[:, -1]]
        if t + 1 == cap:  # the cap (not a finite horizon) cuts the episodes that have not ended
            cut = mdp.horizon is None or cap < mdp.horizon
            done.append((st, ac, pe, ~end if cut else np.zeros(len(pe), bool)))
            break
        if end.any():
            done.append((st[end], ac[end], pe[end], np.zeros(int(end.sum()), bool)))
            st, ac, pe = st[~end], ac[~end], pe[~end]
        if st.shape[0] == 0:
            break
    Lmax = max((d[1].shape[1] for d in done), default=0)
    n = sum(d[0].shape[0] for d in done)
    states = np.zeros((n, Lmax + 1), np.int64)
    actions = np.zeros((n, max(Lmax, 1)), np.int64)
    lengths = np.zeros(n, np.int64)
    p_env = np.zeros(n)
    capped = np.zeros(n, bool)
    i = 0
    for s_, a_, p_, c_ in done:
        m, L = a_.shape
        states[i:i + m, :L + 1] = s_
        actions[i:i + m, :L] = a_
        lengths[i:i + m] = L
        p_env[i:i + m] = p_
        capped[i:i + m] = c_
        i += m
    return Trajectories(states, actions, lengths, p_env, capped, cap)


# ----------------------------------------------------------------------------------------------- kernel


@njit(inline="always", cache=True)
def _load_episode(i, j, T_s, T_a, T_L, rb, buf_s, buf_a, buf_r):
    """Copy enumerated trajectory i, with reward row j, into the kernel's episode buffers; returns L."""
    L = T_L[i]
    for t in range(L):
        buf_s[t] = T_s[i, t]
        buf_a[t] = T_a[i, t]
        buf_r[t] = rb[j, t]
    buf_s[L] = T_s[i, L]
    return L


@njit(cache=True)
def _eval_batch(idx, N, u_geo, T_s, T_a, T_L, rb, gamma, gpow, cap, finite, Tfit, lg, pi, logpi, pi2sum, linear,
                score, terminal, codes, fpar, crit, critics, Vtab, Qtab, rho_ratio, g, need_sg, need_fit, need_rho,
                need_cum, buf_s, buf_a, buf_r, G_t, cumrho, cnt, ns, zvec, st, sg, fs, fc, b_fitV, rh, outC, out_proxy,
                seen, x):
    """The batch estimate ``x[e]`` (n_est, d) of the trajectories ``idx`` with rewards ``rb``: pass 1
    (batch statistics) and pass 2 (score weights) exactly as the sampling kernels run them."""
    S, A = pi.shape
    d = g.shape[2]
    n_est = codes.shape[0]
    for c in range(st.shape[1]):
        st[0, c] = 0.0
    if need_sg:
        for t in range(sg.shape[1]):
            sg[0, t] = 0.0
    if need_fit:
        for t in range(fs.shape[1]):
            for s in range(S):
                fs[0, t, s] = 0.0
                fc[0, t, s] = 0.0
    if need_rho:
        for t in range(rh.shape[1]):
            rh[0, t] = 0.0
    for j in range(N):
        L = _load_episode(idx[j], j, T_s, T_a, T_L, rb, buf_s, buf_a, buf_r)
        Rep, W, Z = K_._episode_scalars(L, buf_s, buf_a, buf_r, gpow, pi, pi2sum, linear, score, True, True, True,
                                        cnt, ns, zvec)
        K_._episode_stats(0, L, buf_s, buf_a, buf_r, G_t, Rep, W, Z, gamma, finite, rho_ratio, cap,
                          st, sg, fs, fc, rh)
    if need_fit:
        for t in range(Tfit):
            for s in range(S):
                b_fitV[0, t, s] = fs[0, t, s] / fc[0, t, s] if fc[0, t, s] > 0 else 0.0
    for j in range(N):
        L = _load_episode(idx[j], j, T_s, T_a, T_L, rb, buf_s, buf_a, buf_r)
        for t in range(L):
            seen[buf_s[t]] = True
        Rep, W, Z = K_._episode_scalars(L, buf_s, buf_a, buf_r, gpow, pi, pi2sum, linear, score, True, True, True,
                                        cnt, ns, zvec)
        K_._episode_weights(0, 0, N, L, u_geo, (buf_s, buf_a, buf_r, cumrho), Rep, W, Z,
                            (gamma, gpow, cap, finite, lg, pi, logpi, terminal),
                            (codes, fpar, crit, critics, Vtab, Qtab, rho_ratio), (st, sg, b_fitV, rh),
                            need_cum, False, outC, out_proxy)
    # x[e] = (1/N) sum_{s, a} C[e, s, a] g(s, a), over the states visited (then clear them)
    for e in range(n_est):
        for k in range(d):
            x[e, k] = 0.0
    for s in range(S):
        if not seen[s]:
            continue
        seen[s] = False
        for a in range(A):
            for e in range(n_est):
                c = outC[0, e, s, a]
                if c != 0.0:
                    c /= N
                    for k in range(d):
                        x[e, k] += c * g[s, a, k]
                    outC[0, e, s, a] = 0.0


@njit(cache=True)
def _enumerate(T_s, T_a, T_L, T_p, N, R, var, gamma, gpow, cap, finite, Tfit, lg, geo, pi, logpi, pi2sum, linear,
               score, terminal, codes, fpar, crit, critics, Vtab, Qtab, rho_ratio, g, target, need_sg, need_fit,
               need_rho, want_cov, out_m1, out_m2, out_M2):
    """Accumulate ``E[x]``, ``E||x - target||^2`` and (``want_cov``) ``E[(x - target)(x - target)^T]``
    over every multiset of N trajectories, reward noise included by unit perturbations.

    ``geo``: the estimators are geometric_termination (N = 1): mix over the random horizon H,
    ``P(H = h) = gamma^h (1 - gamma)`` for ``h < L - 1`` and ``P(H >= L - 1) = gamma^(L - 1)``.
    """
    n = T_s.shape[0]
    S, A = pi.shape
    d = g.shape[2]
    n_est = codes.shape[0]
    Lw = T_a.shape[1]
    buf_s = np.zeros(cap + 1, np.int64)
    buf_a = np.zeros(cap, np.int64)
    buf_r = np.zeros(cap)
    G_t = np.zeros(cap)
    cumrho = np.zeros(cap)
    cnt = np.zeros((S, A)) if not linear else np.zeros((1, 1))
    ns = np.zeros(S) if not linear else np.zeros(1)
    zvec = np.zeros(score.shape[2])
    st = np.zeros((1, K_.N_STATS))
    sg = np.zeros((1, Lw if need_sg else 0))
    fs = np.zeros((1, Tfit if need_fit else 0, S))
    fc = np.zeros((1, Tfit if need_fit else 0, S))
    b_fitV = np.zeros((1, (Tfit + 1) if finite else 1, S if need_fit else 0))
    rh = np.zeros((1, cap if need_rho else 0))
    outC = np.zeros((1, n_est, S, A))
    out_proxy = np.zeros((1, K_.N_PROXY))
    seen = np.zeros(S, np.bool_)
    need_cum = False  # per-decision importance ratios (any importance_sampling)
    for e in range(n_est):
        need_cum = need_cum or codes[e] == IS_PD
    x = np.zeros((n_est, d))
    x2 = np.zeros((n_est, d))
    rb = np.zeros((N, max(Lw, 1)))
    idx = np.zeros(N, np.int64)
    fact = np.ones(N + 1)
    for q in range(1, N + 1):
        fact[q] = fact[q - 1] * q
    while True:
        # multinomial weight of the multiset idx (non-decreasing) times its probability
        w = fact[N]
        run_len = 1
        p = T_p[idx[0]]
        for q in range(1, N):
            p *= T_p[idx[q]]
            if idx[q] == idx[q - 1]:
                run_len += 1
            else:
                w /= fact[run_len]
                run_len = 1
        w = w / fact[run_len] * p
        if w > 0.0:
            for j in range(N):
                i = idx[j]
                for t in range(T_L[i]):
                    rb[j, t] = R[T_s[i, t], T_a[i, t]]
            L0 = T_L[idx[0]]
            n_opt = L0 if geo else 1
            for h in range(n_opt):
                wh = w
                u_geo = 0.5
                if geo:
                    if h < L0 - 1:
                        wh = w * gamma ** h * (1.0 - gamma)
                    else:
                        wh = w * gamma ** (L0 - 1)
                    if 0.0 < gamma < 1.0:
                        u_geo = 1.0 - gamma ** (h + 0.5)
                    if wh == 0.0:
                        continue
                _eval_batch(idx, N, u_geo, T_s, T_a, T_L, rb, gamma, gpow, cap, finite, Tfit, lg, pi, logpi, pi2sum,
                            linear, score, terminal, codes, fpar, crit, critics, Vtab, Qtab, rho_ratio, g, need_sg,
                            need_fit, need_rho, need_cum, buf_s, buf_a, buf_r, G_t, cumrho, cnt, ns, zvec, st, sg, fs, fc,
                            b_fitV, rh, outC, out_proxy, seen, x)
                for e in range(n_est):
                    acc = 0.0
                    for k in range(d):
                        out_m1[e, k] += wh * x[e, k]
                        dk = x[e, k] - target[e, k]
                        acc += dk * dk
                    out_m2[e] += wh * acc
                    if want_cov:
                        for k in range(d):
                            dk = x[e, k] - target[e, k]
                            for k2 in range(d):
                                out_M2[e, k, k2] += wh * dk * (x[e, k2] - target[e, k2])
                # reward noise: sum_t Var(noise_t) ||c_t||^2 with c_t from a unit perturbation of reward t
                for j in range(N):
                    i = idx[j]
                    for t in range(T_L[i]):
                        v = var[T_s[i, t], T_a[i, t]]
                        if v <= 0.0:
                            continue
                        rb[j, t] += 1.0
                        _eval_batch(idx, N, u_geo, T_s, T_a, T_L, rb, gamma, gpow, cap, finite, Tfit, lg, pi, logpi,
                                    pi2sum, linear, score, terminal, codes, fpar, crit, critics, Vtab, Qtab,
                                    rho_ratio, g, need_sg, need_fit, need_rho, need_cum, buf_s, buf_a, buf_r, G_t, cumrho,
                                    cnt, ns, zvec, st, sg, fs, fc, b_fitV, rh, outC, out_proxy, seen, x2)
                        rb[j, t] = R[T_s[i, t], T_a[i, t]]
                        for e in range(n_est):
                            acc = 0.0
                            for k in range(d):
                                c = x2[e, k] - x[e, k]
                                acc += c * c
                            out_m2[e] += wh * v * acc
                            if want_cov:
                                for k in range(d):
                                    c = x2[e, k] - x[e, k]
                                    for k2 in range(d):
                                        out_M2[e, k, k2] += wh * v * c * (x2[e, k2] - x[e, k2])
        # next multiset (non-decreasing index tuple)
        pos = N - 1
        while pos >= 0 and idx[pos] == n - 1:
            pos -= 1
        if pos < 0:
            break
        idx[pos] += 1
        for q in range(pos + 1, N):
            idx[q] = idx[pos]


@njit(cache=True)
def _baseline_sums(T_s, T_a, T_L, T_p, R, var, gpow, g, out):
    """Per trajectory: return R (mean), its noise variance VR, ``z``; accumulates
    ``out[0] = E[R z]`` (d), ``out[1] = E[z^2]``, ``out[2] = E[R z^2]``, ``out[3] = E[(R^2 + VR) z^2]``
    (coordinatewise, d each)."""
    n = T_s.shape[0]
    d = g.shape[2]
    z = np.zeros(d)
    for i in range(n):
        p = T_p[i]
        if p == 0.0:
            continue
        for k in range(d):
            z[k] = 0.0
        Rm = 0.0
        VR = 0.0
        for t in range(T_L[i]):
            s = T_s[i, t]
            a = T_a[i, t]
            Rm += gpow[t] * R[s, a]
            VR += gpow[t] * gpow[t] * var[s, a]
            for k in range(d):
                z[k] += g[s, a, k]
        for k in range(d):
            zz = z[k] * z[k]
            out[0, k] += p * Rm * z[k]
            out[1, k] += p * zz
            out[2, k] += p * Rm * zz
            out[3, k] += p * (Rm * Rm + VR) * zz


# ----------------------------------------------------------------------------------------------- API


@dataclass
class ExactMoments:
    """Exact moments of batch estimates at batch size ``N``, one row per estimator.

    ``mean`` (n_est, d) and ``target`` (n_est, d): what each estimator averages to and what it
    estimates; ``bias = mean - target``; ``variance`` (n_est,): the trace of the covariance of one
    batch estimate; ``mse = variance + ||bias||^2``; ``cov`` (n_est, d, d) when asked for.
    ``variance1`` and ``mse1`` are the single-episode values for per-episode estimators (nan for
    in-batch ones, whose N-batch is enumerated directly). ``truncated_mass``: probability that the
    cap cut an episode (unbounded problems; 0 when every episode ends before it).
    ``n_trajectories`` is -1 when the moment DP computed them (``extras["method"] == "dp"``).
    """

    problem: object
    theta: np.ndarray
    labels: list
    N: int
    mean: np.ndarray
    target: np.ndarray
    variance: np.ndarray
    mse: np.ndarray
    variance1: np.ndarray
    mse1: np.ndarray
    cov: Optional[np.ndarray]
    n_trajectories: int
    truncated_mass: float
    cap: int
    extras: dict = field(default_factory=dict)

    @property
    def bias(self) -> np.ndarray:
        return self.mean - self.target

    @property
    def bias_norm(self) -> np.ndarray:
        return np.linalg.norm(self.bias, axis=1)

    def row(self, label: str) -> int:
        return self.labels.index(label)

    def frame(self):
        """A DataFrame: estimator, N, bias_norm, rel_bias, variance, mse (exact)."""
        import pandas as pd
        gn = np.linalg.norm(self.target, axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            rel = np.where(gn > 0, self.bias_norm / np.where(gn > 0, gn, 1.0), np.nan)
        return pd.DataFrame({"estimator": self.labels, "N": self.N, "exact_bias_norm": self.bias_norm,
                             "exact_rel_bias": rel, "exact_variance": self.variance, "exact_mse": self.mse})


def supports(spec) -> bool:
    """Whether :func:`exact_moments` handles this estimator (every built-in MDP estimator but ``natural``,
    and ``ppo_gae`` by the moment DP)."""
    sp = parse(spec)
    return sp.info.target == "mdp" and (sp.info.code >= 0 and sp.name not in UNSUPPORTED or dp_supports(sp))


def enumeration_size(problem, estimators, batch: int = 1, max_steps=None, stop_above: float = math.inf) -> float:
    """How many trajectories (or, with in-batch estimators at batch N, multisets of N trajectories)
    :func:`exact_moments` would list: compare with a limit before paying for it."""
    n = count_trajectories(problem, max_steps=max_steps, stop_above=stop_above)
    specs = [parse(e) for e in ([estimators] if isinstance(estimators, (str, EstimatorSpec)) else estimators)]
    if any(s.in_batch for s in specs) and batch > 1:
        return count_batches(n, batch)
    return n


def _groups(specs):
    """Estimators grouped like the sampling engine: on-policy, one group per IS behaviour; the
    geometric ones apart (their horizon is mixed over); in-batch ones apart (enumerated at N)."""
    groups: dict = {}
    for j, sp in enumerate(specs):
        beh = ("is", sp.p["mu"], sp.p["eps"]) if sp.name == "importance_sampling" else ("on",)
        kind = "geo" if sp.info.code == GEOMETRIC else ("batch" if sp.in_batch else "episode")
        groups.setdefault((beh, kind), []).append(j)
    return groups


def dp_supports(spec, problem=None, batch: int = 1, theta=None, max_steps: Optional[int] = None) -> bool:
    """Whether the dynamic programme (:mod:`pgbench.exact.dp`) gives this estimator's exact moments
    (on ``problem`` at ``batch`` and ``theta`` when given: ``w_baseline_loo`` at N = 2 is ``rloo``
    when no action is almost certain)."""
    from pgbench.exact.dp import dp_supports as ok
    return ok(parse(spec), *_dp_context(problem, batch, theta, max_steps))


def _dp_context(problem, N: int, theta, max_steps) -> tuple:
    """``(N, pi, terminal, cap)`` for :func:`pgbench.exact.dp.why_not` (empty without a problem)."""
    if problem is None:
        return ()
    from pgbench.problems.registry import make
    prob = make(problem) if isinstance(problem, str) else problem
    return (N, prob.policy.probs(prob.resolve_theta(theta)), prob.mdp.terminal, _cap(prob, max_steps))


def exact_moments(problem, estimators, batch: int = 1, theta=None, limit: int = DEFAULT_LIMIT, cov: bool = False,
                  max_steps: Optional[int] = None, opt_b: Optional[float] = None, method: str = "auto"
                  ) -> ExactMoments:
    """Exact mean, variance and MSE of batch-N estimates of ``estimators`` on ``problem``.

    ``method``: ``"dp"`` (dynamic programming over (t, s), :mod:`pgbench.exact.dp`: no
    enumeration, any problem size; also ``ppo_gae``), ``"enumerate"`` (trajectory enumeration,
    every built-in estimator but ``natural``, small problems only) or ``"auto"`` (the DP when it
    covers every estimator asked for, and with ``cov`` when its widened tables fit, else enumeration).

    Parameters
    ----------
    problem : a problem id or :class:`~pgbench.problems.problem.MDPProblem`
    estimators : an estimator id or a list of them (built-in MDP estimators but ``natural``)
    batch : the batch size N (in-batch estimators are enumerated over multisets of N trajectories)
    theta : parameters (default: the problem's)
    limit : refuse (PGBenchError) when more trajectories, or batches, would be listed
    cov : also return the full covariance (n_est, d, d) (enumeration: d^2 per trajectory; the DP:
        one pass with d + d(d-1)/2 score coordinates, see :func:`pgbench.exact.dp.dp_second_moments`)
    max_steps : enumerate an unbounded problem up to this cap instead of the sampling cap
    opt_b : the constant used by ``optimal_const_baseline`` (default: the exact ``b*``)
    """
    from pgbench.exact import exact
    from pgbench.exact.targets import estimator_target as _target
    from pgbench.kernels.tables import behaviour_policy, kernel_parameters, make_tables, oracle_tables
    from pgbench.problems.registry import make

    prob = make(problem) if isinstance(problem, str) else problem
    if getattr(prob, "kind", None) != "mdp":
        raise PGBenchError("exact moments by enumeration are for MDP problems (objectives have closed forms)")
    if isinstance(batch, bool) or not isinstance(batch, (int, np.integer)) or batch < 1:
        raise PGBenchError(f"batch size N must be an integer >= 1; got {batch!r}")
    N = int(batch)
    if isinstance(estimators, (str, EstimatorSpec)):
        estimators = [estimators]
    specs = [parse(e) for e in estimators]
    if not specs:
        raise PGBenchError("no estimator given")
    for sp in specs:
        if sp.info.target != "mdp":
            raise PGBenchError(f"estimator {sp.name} is for stochastic objectives, not MDPs")
        if sp.info.code < 0 and sp.name not in UNSUPPORTED and not dp_supports(sp):
            raise PGBenchError(f"no exact moments for user estimator {sp.name!r} (enumeration runs the built-in "
                               f"kernels only)")
        if sp.info.code < 0 and method == "enumerate" and dp_supports(sp):
            raise PGBenchError(f"{sp.label}: exact moments by the moment DP only (method='dp' or 'auto'); "
                               "enumeration runs the built-in kernels")
        if sp.name in UNSUPPORTED:
            raise PGBenchError(f"no exact moments for {UNSUPPORTED[sp.name]}")
        if N < 2 and sp.name in ("rloo", "w_baseline_loo", "time_baseline_loo"):
            raise PGBenchError(f"{sp.name} needs batch size N >= 2 (leave-one-out); got N={N}")
    th = prob.resolve_theta(theta)
    if method not in ("auto", "dp", "enumerate"):
        raise PGBenchError(f"method must be 'auto', 'dp' or 'enumerate'; got {method!r}")
    from pgbench.exact import dp
    from pgbench.exact.dp import DP_TABLE_LIMIT, check_table_size, dp_table_size
    d = int(np.prod(prob.policy.theta_shape))
    widen = d + d * (d - 1) // 2 if cov else 1  # the covariance's DP carries the pairs of coordinates
    small = dp_table_size(prob) * widen <= DP_TABLE_LIMIT
    if method == "dp":
        check_table_size(prob)
    ctx = _dp_context(prob, N, th, max_steps)
    if method == "dp" or (method == "auto" and small and all(dp.dp_supports(sp, *ctx) for sp in specs)):
        return _exact_moments_dp(prob, specs, N, th, max_steps, opt_b, cov)
    dp_only = [sp.label for sp in specs if sp.info.code < 0]
    if dp_only:
        raise PGBenchError(f"{', '.join(dp_only)}: exact moments by the moment DP only, which does not cover "
                           f"{', '.join(sp.label for sp in specs if not dp.dp_supports(sp, *ctx)) or 'this request'}: "
                           "ask for them separately")
    trajs = enumerate_trajectories(prob, limit=limit, max_steps=max_steps)
    n = len(trajs)
    groups = _groups(specs)
    if any(kind == "batch" for (_, kind) in groups) and N > 1 and count_batches(n, N) > limit:
        raise PGBenchError(f"{prob.name}: {n} trajectories make {count_batches(n, N):.3g} batches of N={N}, "
                           f"more than the limit {limit}; in-batch estimators need a smaller problem or batch")
    mdp = prob.mdp
    cap = trajs.cap
    finite = mdp.horizon is not None
    gt = exact(prob, th)
    V, Q = oracle_tables(gt)
    tabs = make_tables(prob, th)
    g = np.ascontiguousarray(prob.policy.score_table(th))
    var = np.ascontiguousarray(mdp.reward_variance())
    R = np.ascontiguousarray(mdp.R, dtype=np.float64)
    gpow = mdp.gamma ** np.arange(cap + 1, dtype=np.float64)
    Tfit = mdp.horizon if finite else 1
    lg = K_._log_inv_gamma(mdp.gamma)
    d = g.shape[2]
    n_est = len(specs)
    targets = np.stack([_target(prob, th, gt, sp) for sp in specs])
    if opt_b is None and any(sp.name == "optimal_const_baseline" for sp in specs):
        opt_b = exact_optimal_constant_baseline(prob, th, limit=limit, max_steps=max_steps, method="enumerate")
    m1 = np.zeros((n_est, d))
    m2 = np.zeros(n_est)
    M2 = np.zeros((n_est, d, d)) if cov else np.zeros((n_est, 0, 0))
    is_batch = np.zeros(n_est, bool)
    probs_cache: dict = {}
    for (beh, kind), members in groups.items():
        gspecs = [specs[j] for j in members]
        if beh[0] == "is":
            mu = behaviour_policy(tabs.pi, gspecs[0])
            gtabs = make_tables(prob, th, mu)
        else:
            mu, gtabs = tabs.pi, tabs
        key = beh
        if key not in probs_cache:
            probs_cache[key] = trajs.probs(mu)
        T_p = probs_cache[key]
        codes, fpar, crit, critics_arr = kernel_parameters(gspecs, V, mdp.terminal, finite, opt_b)
        Ng = N if kind == "batch" else 1
        need_sg = any(q.name == "time_baseline_loo" for q in gspecs)
        need_fit = any(q.name in ("gae", "td0") and q.p["critic"] == "fitted" for q in gspecs)
        need_rho = any(q.name == "importance_sampling" and q.p["weighted"] for q in gspecs)
        gm1 = np.zeros((len(gspecs), d))
        gm2 = np.zeros(len(gspecs))
        gM2 = np.zeros((len(gspecs), d, d)) if cov else np.zeros((len(gspecs), 0, 0))
        tgt = np.ascontiguousarray(targets[members])
        _enumerate(trajs.states, trajs.actions, trajs.lengths, T_p, Ng, R, var, float(mdp.gamma), gpow, cap,
                   finite, Tfit, lg, kind == "geo", gtabs.pi, gtabs.logpi, gtabs.pi2sum, gtabs.linear, gtabs.score,
                   np.ascontiguousarray(mdp.terminal), codes, fpar, crit, critics_arr, V, Q, gtabs.rho_ratio, g, tgt,
                   need_sg, need_fit, need_rho, bool(cov), gm1, gm2, gM2)
        m1[members] = gm1
        m2[members] = gm2
        if cov:
            M2[members] = gM2
        is_batch[members] = kind == "batch"
    bias = m1 - targets
    b2 = np.einsum("ej,ej->e", bias, bias)
    var_at = np.maximum(m2 - b2, 0.0)  # trace variance of what was enumerated (N=1 or the batch)
    variance = np.where(is_batch, var_at, var_at / N)
    mse = variance + b2
    var1 = np.where(is_batch, np.nan, var_at)
    mse1 = np.where(is_batch, np.nan, m2)
    cov_out = None
    if cov:
        C = M2 - np.einsum("ej,ek->ejk", bias, bias)
        cov_out = np.where(is_batch[:, None, None], C, C / N)
    p_on = probs_cache.get(("on",), None)
    if p_on is None:
        p_on = trajs.probs(tabs.pi)
    trunc = float(p_on[trajs.capped].sum())
    extras = {}
    if opt_b is not None:
        extras["optimal_const_baseline_b"] = float(opt_b)
    return ExactMoments(prob, th, [sp.label for sp in specs], N, m1, targets, variance, mse, var1, mse1, cov_out, n,
                        trunc, cap, extras)


def _critics(prob, specs, V) -> dict:
    """The critic table of every gae/td0/ppo_gae estimator (by its index): exact V or the engine's perturbed V."""
    from pgbench.kernels.tables import perturbed_critic
    mdp = prob.mdp
    return {j: V if sp.p.get("critic", "exact") == "exact" else
            perturbed_critic(V, mdp.terminal, sp.p["scale"], sp.p["seed"], mdp.horizon is not None)
            for j, sp in enumerate(specs) if sp.name in ("gae", "td0", "ppo_gae")}


def _behaviours(prob, specs, th) -> dict:
    """The behaviour policy mu of every importance_sampling estimator (by its index)."""
    from pgbench.kernels.tables import behaviour_policy
    pi = prob.policy.probs(th)
    return {j: behaviour_policy(pi, sp) for j, sp in enumerate(specs) if sp.name == "importance_sampling"}


def _exact_moments_dp(prob, specs, N: int, th, max_steps, opt_b, cov: bool = False) -> ExactMoments:
    """:func:`exact_moments` by the dynamic programme of :mod:`pgbench.exact.dp`."""
    from pgbench.exact import exact
    from pgbench.exact import dp
    from pgbench.kernels.tables import oracle_tables

    ctx = _dp_context(prob, N, th, max_steps)
    for sp in specs:
        why = dp.why_not(sp, *ctx)
        if why is not None:
            raise PGBenchError(f"no exact moments by dynamic programming for {sp.label}: {why}")
    cap = _cap(prob, max_steps)
    gt = exact(prob, th)
    V, Q = oracle_tables(gt)
    critics = _critics(prob, specs, V)
    behaviours = _behaviours(prob, specs, th)
    mean, m2, is_batch, cut, rm = dp.dp_moments(prob, specs, th, N, cap, V, Q, critics, opt_b, behaviours)
    cov_out = None
    if cov:
        if opt_b is None and rm is not None:
            opt_b = rm.b_star  # fixed from the original scores: the widened pass must not recompute it
        _, E = dp.dp_second_moments(prob, specs, th, N, cap, V, Q, critics, opt_b, behaviours)
        C = E - np.einsum("ej,ek->ejk", mean, mean)
        cov_out = np.where(is_batch[:, None, None], C, C / N)
    targets = np.stack([(exact(prob, th, beta=sp.p["beta"]) if sp.name == "entropy_bonus" else gt).grad.reshape(-1)
                        for sp in specs])
    bias = mean - targets
    b2 = np.einsum("ej,ej->e", bias, bias)
    var_at = np.maximum(m2 - np.einsum("ej,ej->e", mean, mean), 0.0)
    variance = np.where(is_batch, var_at, var_at / N)
    mse = variance + b2
    extras = {"method": "dp"}
    if rm is not None:
        extras["optimal_const_baseline_b"] = float(rm.b_star if opt_b is None else opt_b)
    return ExactMoments(prob, th, [sp.label for sp in specs], N, mean, targets, variance, mse,
                        np.where(is_batch, np.nan, var_at), np.where(is_batch, np.nan, m2 - 2 * (mean * targets).sum(1)
                                                                     + (targets * targets).sum(1)),
                        cov_out, -1, cut, cap, extras)


def variance_decomposition(problem, estimators, batch: int = 1, theta=None, max_steps: Optional[int] = None):
    """Exact split of each estimator's trace variance (:ref:`moments-split`, the law of total variance
    conditioned on the state sequence): a DataFrame with ``variance`` and its parts ``state``
    (start state and transitions: ``Var(E[g | s_0, s_1, ...])``), ``action`` (action sampling)
    and ``noise`` (reward noise), each for a batch of N (one episode's divided by N).

    By the moment DP (:mod:`pgbench.exact.dp`) for the per-step ("trace") estimators:
    reinforce_rtg, rtg_no_gamma_t, value_baseline, true_advantage, all_action, gae/td0 with a
    fixed critic, entropy_bonus, geometric_termination; other estimators get NaN parts."""
    import pandas as pd

    from pgbench.exact import dp, exact
    from pgbench.kernels.tables import oracle_tables
    from pgbench.problems.registry import make

    prob = make(problem) if isinstance(problem, str) else problem
    specs = [parse(e) for e in ([estimators] if isinstance(estimators, (str, EstimatorSpec)) else estimators)]
    em = exact_moments(prob, specs, batch=batch, theta=theta, max_steps=max_steps, method="dp")
    V, Q = oracle_tables(exact(prob, em.theta))
    parts = dp.dp_decomposition(prob, specs, em.theta, em.cap, V, Q, _critics(prob, specs, V)) / em.N
    return pd.DataFrame({"estimator": em.labels, "N": em.N, "variance": em.variance, "state": parts[:, 0],
                         "action": parts[:, 1], "noise": parts[:, 2]})


def exact_variance(problem, estimator, batch: int = 1, theta=None, **kw) -> float:
    """The exact trace variance of one batch-N estimate of ``estimator``."""
    return float(exact_moments(problem, [estimator], batch=batch, theta=theta, **kw).variance[0])


@dataclass
class OptimalBaselines:
    """Exact moments behind the constant baselines of ``(R - b) z`` (trace variance).

    ``Var(b) = EZ b^2 - 2 ERZ b + ER2Z - ||grad||^2`` with ``EZ = E||z||^2``, ``ERZ = E[R ||z||^2]``,
    ``ER2Z = E[R^2 ||z||^2]`` (reward noise included in ``R^2``) and ``grad = E[R z]``. Per
    coordinate the same with ``z_j^2``: ``b_coord = E[R z_j^2] / E[z_j^2]``.

    ``b_time`` (cap, d), from the DP only (None by enumeration): the per-coordinate, time-dependent
    G(PO)MDP baseline ``b_(t, j) = E[gamma^t r_t z_(t, j)^2] / E[z_(t, j)^2]`` of the per-reward form
    ``g_j = sum_t z_(t, j) (gamma^t r_t - b_(t, j))`` (partial scores ``z_t = sum_(k <= t) u_k``;
    Peters and Schaal 2008), nan where ``z_(t, j)`` is surely 0.
    """

    b_star: float
    b_coord: np.ndarray  # shaped like theta (nan where z_j = 0 surely)
    EZ: float
    ERZ: float
    ER2Z: float
    EZj: np.ndarray
    ERZj: np.ndarray
    ER2Zj: np.ndarray
    grad: np.ndarray  # E[R z], flattened
    b_time: Optional[np.ndarray] = None

    def variance(self, b) -> np.ndarray:
        """Exact trace variance of one episode's ``(R - b) z`` (vectorised over b)."""
        b = np.asarray(b, dtype=float)
        return self.EZ * b * b - 2.0 * self.ERZ * b + self.ER2Z - float(self.grad @ self.grad)

    @property
    def var_star(self) -> float:
        return float(self.variance(self.b_star))

    def variance_coord(self, b=None) -> float:
        """Trace variance of the per-coordinate baseline estimator ``(R - b_j) z_j`` (default ``b*_j``)."""
        bj = np.where(np.isfinite(self.b_coord), self.b_coord, 0.0).reshape(-1) if b is None else \
            np.broadcast_to(np.asarray(b, float).reshape(-1) if np.ndim(b) else float(b), self.EZj.shape)
        return float(np.sum(self.EZj * bj * bj - 2.0 * self.ERZj * bj + self.ER2Zj) - self.grad @ self.grad)

    @property
    def var_coord(self) -> float:
        return self.variance_coord()


def optimal_baselines(problem, theta=None, limit: int = DEFAULT_LIMIT, max_steps: Optional[int] = None,
                      method: str = "dp") -> OptimalBaselines:
    """Exact ``b* = E[R ||z||^2] / E[||z||^2]``, per-coordinate ``b*_j`` and the variance parabola.

    ``method="dp"`` (default: one forward pass of :mod:`pgbench.exact.dp`, any problem size) or
    ``"enumerate"`` (trajectory enumeration, refused beyond ``limit``)."""
    from pgbench.problems.registry import make

    prob = make(problem) if isinstance(problem, str) else problem
    if getattr(prob, "kind", None) != "mdp":
        raise PGBenchError("exact optimal baselines are for MDP problems")
    if method not in ("dp", "enumerate"):
        raise PGBenchError(f"method must be 'dp' or 'enumerate'; got {method!r}")
    th = prob.resolve_theta(theta)
    if method == "dp":
        from pgbench.exact import dp
        dp.check_table_size(prob)
        rm = dp.return_moments(dp.chain(prob, th, _cap(prob, max_steps)))
        grad, EZj, ERZj, ER2Zj = rm.v[1], rm.zz[0], rm.zz[1], rm.zz[2]
        live = rm.step_zz > 1e-14 * max(float(rm.step_zz.max()), 1e-300)
        b_time = np.where(live, rm.step_rzz / np.where(live, rm.step_zz, 1.0), np.nan)
    else:
        trajs = enumerate_trajectories(prob, limit=limit, max_steps=max_steps)
        mdp = prob.mdp
        pi = prob.policy.probs(th)
        g = np.ascontiguousarray(prob.policy.score_table(th))
        gpow = mdp.gamma ** np.arange(trajs.cap + 1, dtype=np.float64)
        out = np.zeros((4, g.shape[2]))
        _baseline_sums(trajs.states, trajs.actions, trajs.lengths, trajs.probs(pi),
                       np.ascontiguousarray(mdp.R, float), np.ascontiguousarray(mdp.reward_variance()), gpow, g, out)
        grad, EZj, ERZj, ER2Zj = out
        b_time = None
    EZ, ERZ, ER2Z = float(EZj.sum()), float(ERZj.sum()), float(ER2Zj.sum())
    tol = 1e-14 * max(EZ, 1e-300)
    with np.errstate(invalid="ignore", divide="ignore"):
        bj = np.where(EZj > tol, ERZj / np.where(EZj > tol, EZj, 1.0), np.nan)
    b = ERZ / EZ if EZ > 0 else 0.0
    return OptimalBaselines(float(b), bj.reshape(th.shape), EZ, ERZ, ER2Z, EZj, ERZj, ER2Zj, grad, b_time)


def exact_optimal_constant_baseline(problem, theta=None, limit: int = DEFAULT_LIMIT,
                                    max_steps: Optional[int] = None, method: str = "dp") -> float:
    """The exact trace-optimal constant baseline ``b* = E[R ||z||^2] / E[||z||^2]`` (by the DP, or
    by enumeration: PGBenchError when the problem has too many trajectories)."""
    return optimal_baselines(problem, theta, limit=limit, max_steps=max_steps, method=method).b_star
