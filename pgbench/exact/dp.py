"""Exact first and second moments of gradient estimators by dynamic programming over (t, s).

No trajectory is listed: a forward pass over the chain carries, for every state s at step t,
probability-weighted moments of the quantities the estimate is built from, restricted to the
episodes that are still running and sit in s at step t. Its cost is ``O(T S A K d)`` per
estimator (K successor slots per action, d parameters), where enumeration grows like ``(A K)^T``.

Every estimate is ``g = sum_t psi_t u_t`` with ``u_t = grad log pi(a_t|s_t)``. Two families:

*Trace family* (reinforce_rtg, rtg_no_gamma_t, value_baseline, true_advantage, all_action,
gae/td0 with a fixed critic, ppo_gae, entropy_bonus, geometric_termination). Exchanging the sums,

    g = sum_k (q_k Y_k + W_k),      Y_k = alpha Y_(k-1) + beta_k u_k

where ``q_k`` is a scalar of step k (the reward, a TD error, a reward with an entropy term),
``Y_k`` an eligibility trace (decay ``alpha``, weight ``beta_k``) and ``W_k`` a vector that
depends on ``(t, s_k, a_k)`` only (oracle baselines and advantages). With the partial estimate
``h_k = sum_(j <= k) (q_j Y_j + W_j)``, ``||g||^2 = sum_k (2 <h_(k-1), D_k> + ||D_k||^2)``
(``D_k`` the step's increment), so the pass carries per state ``E[1]``, ``E[Y]``, ``E[h]``,
``E[h * Y]`` and ``E[Y * Y]`` (coordinatewise products: the diagonal of the second moment comes
for free) and adds each step's expected increment. The step's law is ``pi(a|s) P(s'|s, a)``;
the next-state part of ``q`` (``gamma V(s')`` of a TD error) is averaged over ``s'`` exactly, and
the reward noise enters through ``E[q^2] = E[q]^2 + Var(noise)``.

=====================  ====================  ===========  =====================================
estimator              q_k                   alpha        beta_k, W_k
=====================  ====================  ===========  =====================================
reinforce_rtg          r_k                   gamma        gamma^k, 0
rtg_no_gamma_t         r_k                   gamma        1, 0
value_baseline         r_k                   gamma        gamma^k, -gamma^k V_k(s_k) u_k
entropy_bonus(beta)    r_k - beta log pi_k   gamma        gamma^k, 0
gae(lambda, V~)        r_k + gamma V~(s')    gamma lam    gamma^k, 0
                       - V~(s_k)
ppo_gae(lambda)        as gae, exact V       gamma lam    1, 0 (no gamma^t, as PPO code has it)
true_advantage         (none)                -            gamma^k A_k(s_k, a_k) u_k
all_action             (none)                -            gamma^k sum_b pi(b|s) Q_k(s, b) u(s, b)
geometric_termination  r_k                   1            1, 0; each step's increments weighted
                                                          by Pr(H >= k) = gamma^k
=====================  ====================  ===========  =====================================

*Return family* (reinforce, const_baseline, optimal_const_baseline, and the in-batch rloo and
batch_mean_baseline): ``g = (R - b) z`` with the discounted return R and the trajectory score z.
The pass carries ``E[R^m]``, ``E[R^m z]`` and ``E[R^m z * z]`` for m = 0, 1, 2 and collects them
when an episode ends (a terminal state, the horizon or the sampling cap). They give every
constant baseline's moments, the exact ``b* = E[R ||z||^2] / E[||z||^2]`` and per-coordinate
``b*_j``, and the in-batch estimators at any N as U-statistics over independent episodes.

*Ordinary importance sampling* (episodes from a behaviour policy mu) is the trace form with the
running ratio ``w_k``: ``Y_k = gamma^k w_k z_k = rho_k (gamma Y_(k-1) + gamma^k w_(k-1) u_k)``, so its
pass also carries ``E[w]``, ``E[w^2]``, ``E[w Y]`` and ``E[w h]``.

*Leave-one-out time baseline* (time_baseline_loo at batch N): episode i's term is
``X_i - (1/(N-1)) sum_(j != i) sum_t G_t^j gamma^t u_t^i`` (X the reward-to-go estimate,
``G_t = 0`` after an episode ends). Scores have mean zero given the past, so the products of
two episodes' sums reduce to per-step moments and to sums over pairs of steps
``E[<u_b, psi_a(s_a)>]`` (b < a), each done by one backward pass in NumPy
(:func:`time_baseline_loo_coords`).

*Variance split* (:ref:`moments-split`): given the state sequence, actions are independent with posterior
``pi(a|s) P(s'|s, a) / P_pi(s'|s)``, so ``E[g | states]`` is again a sum over steps whose second
moment a pass over (t, s, s') gives; ``Var(E[g | states])`` is the start-state and transition
part, the reward-noise part comes out of the main pass, and action sampling is the rest.

*Full covariance* (:func:`dp_second_moments`): every estimator above is linear in the score
table u once its constants are fixed (the optimal constant baseline's b* is computed once from
the original scores), so the passes run on the widened scores ``u M``, ``M = [I | e_i + e_j for
i < j]``, return ``E[g_i^2]`` and ``E[(g_i + g_j)^2]`` coordinatewise, and
``E[g_i g_j] = (E[(g_i + g_j)^2] - E[g_i^2] - E[g_j^2]) / 2``.

*w_baseline_loo at N = 2* is rloo at N = 2 (``b_i = W_j R_j / W_j = R_j``) when no episode can
have ``W = 0`` (:func:`w_loo_is_rloo`).

Unbounded problems run to the sampling cap (the law of the sampled, capped episodes) and report
the probability mass the cap cuts off.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from types import SimpleNamespace

import numpy as np

from numba import njit

from pgbench.errors import PGBenchError

__all__ = ["DP_UNSUPPORTED", "dp_supports", "why_not", "ReturnMoments", "chain", "return_moments", "trace_moments",
           "dp_moments", "dp_work", "dp_decomposition", "state_mean_moments", "is_moments",
           "dp_table_size", "DP_TABLE_LIMIT", "check_table_size", "dp_second_moments", "pair_columns",
           "time_baseline_loo_coords", "w_loo_is_rloo"]

TRACE = ("reinforce_rtg", "rtg_no_gamma_t", "value_baseline", "entropy_bonus", "gae", "td0", "true_advantage",
         "all_action", "geometric_termination", "ppo_gae")
RETURN = ("reinforce", "const_baseline", "optimal_const_baseline")
RETURN_BATCH = ("rloo", "batch_mean_baseline")
TIME_BATCH = ("time_baseline_loo",)
_RTG = SimpleNamespace(name="reinforce_rtg", p={})  # the reward-to-go inside time_baseline_loo

DP_UNSUPPORTED = {
    "w_baseline": "the weighted in-batch baseline is a ratio of batch sums (no finite set of per-episode moments)",
    "w_baseline_loo": "the leave-one-out weighted baseline is a ratio of batch sums (at N = 2 it is rloo)",
    "score_norm_baseline": "the baseline is a ratio of batch sums",
    "natural": "a pseudo-inverse of the batch Fisher per batch",
    "normalized_advantage": "psi is normalised by the batch's own mean and standard deviation (batch normalisation)",
    "gpomdp_baseline": "the per-coordinate leave-one-out baseline is a ratio of the other episodes' sums",
}
PYTHON_BATCH = ("ppo_gae",)
"""Python batch estimators (pgbench.estimators.practice) whose estimate is per-episode and in the trace family."""


W_LOO_MARGIN = 4e-6
"""``w_baseline_loo`` at N = 2 goes to the DP as ``rloo`` when every step's ``W`` term is at least
``W_LOO_MARGIN`` times the cap (see :func:`w_loo_is_rloo`)."""


def w_loo_is_rloo(pi: np.ndarray, terminal: np.ndarray, cap: int) -> bool:
    """Whether ``w_baseline_loo`` at N = 2 is ``rloo`` at N = 2 under ``pi`` (S, A).

    With two episodes, episode i's baseline is ``W_j R_j / W_j = R_j`` when ``W_j > 0``, and
    ``W(tau) = sum_t ||e_(a_t) - pi(.|s_t)||^2`` is 0 only for an episode whose every action has
    probability 1 (then the sampler's baseline is 0, not R_j). Checked with a margin: every step's
    term ``1 - 2 pi(a|s) + sum_b pi(b|s)^2`` (a taken with pi(a|s) > 0, s not terminal) at least
    ``W_LOO_MARGIN cap``, so that ``W_j / W_i >= 2e-6`` and the sampler's float ratio
    ``(W_i R_i + W_j R_j - W_i R_i) / (W_i + W_j - W_i)`` is ``R_j`` to about 1e-10."""
    w = 1.0 - 2.0 * pi + (pi * pi).sum(axis=1, keepdims=True)
    live = (pi > 0) & ~np.asarray(terminal, bool)[:, None]
    return bool(np.all(w[live] >= W_LOO_MARGIN * cap))


def why_not(spec, N: int | None = None, pi=None, terminal=None, cap: int | None = None) -> str | None:
    """Why the DP cannot do this estimator (None when it can). ``w_baseline_loo`` is covered at
    N = 2 when ``pi``, ``terminal`` and ``cap`` are given and :func:`w_loo_is_rloo` holds."""
    if spec.name == "w_baseline_loo" and N == 2 and pi is not None and w_loo_is_rloo(pi, terminal, cap):
        return None
    if spec.name in DP_UNSUPPORTED:
        if spec.name == "w_baseline_loo" and N == 2 and pi is not None:
            return ("at N = 2 it is rloo only when W(tau) > 0 for every episode; here an action is (almost) "
                    "certain somewhere, so W can vanish")
        return DP_UNSUPPORTED[spec.name]
    if spec.info.target != "mdp" or (spec.info.code < 0 and spec.name not in PYTHON_BATCH):
        return "not a built-in MDP estimator"
    if spec.name in ("gae", "td0") and spec.p["critic"] == "fitted":
        return "the fitted critic is estimated from the same batch"
    if spec.name == "importance_sampling" and spec.p["weighted"]:
        return "weighted importance sampling normalises by batch sums"
    return None


def dp_supports(spec, N: int | None = None, pi=None, terminal=None, cap: int | None = None) -> bool:
    """Whether :func:`dp_moments` handles this (parsed) estimator (at batch N under ``pi``: see :func:`why_not`)."""
    return why_not(spec, N, pi, terminal, cap) is None


# ----------------------------------------------------------------------------------------------- setup


def dp_work(problem, max_steps=None) -> float:
    """Inner-loop iterations of one estimator's pass, ``cap S A d (K + 1)`` (about 5 ns each on one
    core): compare with a budget before running the DP on a large problem."""
    mdp = problem.mdp
    cap = mdp.episode_cap if max_steps is None or mdp.horizon is None else min(int(max_steps), mdp.horizon)
    if max_steps is not None and mdp.horizon is None:
        cap = int(max_steps)
    d = int(np.prod(problem.policy.theta_shape))
    return float(cap) * mdp.S * mdp.A * d * (mdp.K + 1)


DP_TABLE_LIMIT = 2 * 10 ** 7
"""Most entries ``S A d`` of the score table (and of each message) the DP builds (160 MB)."""


def dp_table_size(problem) -> int:
    """Entries ``S A d`` of the score table the DP reads (a tabular policy has ``d = S A``)."""
    mdp = problem.mdp
    return int(mdp.S * mdp.A * int(np.prod(problem.policy.theta_shape)))


def check_table_size(problem) -> None:
    """PGBenchError when the DP's tables would exceed :data:`DP_TABLE_LIMIT` entries."""
    n = dp_table_size(problem)
    if n > DP_TABLE_LIMIT:
        raise PGBenchError(f"{problem.name}: the moment DP would build score tables of {n} entries (S A d), more "
                           f"than {DP_TABLE_LIMIT}; a linear policy with fewer features, or fewer states")


DP_WORK_LIMIT = 2e8
"""Largest :func:`dp_work` for which the sampling engine and measure() run the DP on their own
(about a second per estimator)."""


@dataclass
class _Chain:
    """What every pass reads: the step law, scores and rewards of one (problem, theta, cap)."""

    S: int
    A: int
    d: int
    cap: int
    finite: bool
    gamma: float
    pi: np.ndarray  # (S, A)
    u: np.ndarray  # (S, A, d) scores
    R: np.ndarray  # (S, A) mean rewards
    var: np.ndarray  # (S, A) reward noise variance
    nidx: np.ndarray  # (S, A, K) successor slots
    nprob: np.ndarray  # (S, A, K)
    rho0: np.ndarray
    terminal: np.ndarray
    horizon: float  # the problem's horizon (inf when unbounded)
    tabular: bool  # u(s, a) lives in coordinates s A .. s A + A - 1 only (tabular softmax)


def chain(problem, th, cap: int) -> _Chain:
    """The step law, scores and rewards of ``problem`` at ``th``, run to ``cap`` steps."""
    mdp = problem.mdp
    pi = np.asarray(problem.policy.probs(th), float)
    u = np.ascontiguousarray(problem.policy.score_table(th), dtype=float)
    S, A, d = u.shape
    c = np.ascontiguousarray
    return _Chain(S, A, d, cap, mdp.horizon is not None, float(mdp.gamma), c(pi), u, c(mdp.R, dtype=float),
                  c(mdp.reward_variance(), dtype=float), c(mdp.next_idx, dtype=np.int64),
                  c(mdp.next_prob, dtype=float), c(mdp.rho0, dtype=float),
                  c(mdp.terminal, dtype=np.bool_), np.inf if mdp.horizon is None else float(mdp.horizon),
                  _row_blocks(u))


def _row_blocks(u: np.ndarray) -> bool:
    """Whether every score ``u(s, a)`` is zero outside coordinates ``s A .. s A + A - 1``."""
    S, A, d = u.shape
    if d != S * A:
        return False
    inside = np.zeros((S, d), bool)
    inside[np.repeat(np.arange(S), A), np.arange(d)] = True
    return not np.any(u[~np.broadcast_to(inside[:, None, :], u.shape)])


# ----------------------------------------------------------------------------------------------- return family


@dataclass
class ReturnMoments:
    """Per-episode joint moments of the discounted return R and the score z (reward noise included).

    ``m[k] = E[R^k]``, ``v[k] = E[R^k z]`` (d,), ``zz[k] = E[R^k z * z]`` (d,, coordinatewise),
    for k = 0, 1, 2; per step t, ``step_zz[t] = E[z_t * z_t]`` and ``step_rzz[t] = E[gamma^t r_t z_t * z_t]``
    (partial scores ``z_t = sum_(k <= t) u_k``)."""

    m: np.ndarray
    v: np.ndarray
    zz: np.ndarray
    step_zz: np.ndarray
    step_rzz: np.ndarray

    @property
    def Z(self) -> np.ndarray:
        """``E[R^k ||z||^2]``, k = 0, 1, 2."""
        return self.zz.sum(axis=1)

    @property
    def b_star(self) -> float:
        Z = self.Z
        return float(Z[1] / Z[0]) if Z[0] > 0 else 0.0

    def const_baseline_coords(self, b: float):
        """Mean (d,) and coordinatewise ``E[g * g]`` (d,) of one episode's ``(R - b) z``."""
        zz0, zz1, zz2 = self.zz
        return self.v[1] - b * self.v[0], zz2 - 2 * b * zz1 + b * b * zz0

    def in_batch_coords(self, name: str, N: int):
        """Mean (d,) and coordinatewise ``E[g * g]`` (d,) of the batch-N estimate of rloo or
        batch_mean_baseline.

        Both are ``a sum_i R_i z_i - c sum_(i != j) R_j z_i``; the expectations of the products of
        these double sums split over which episodes coincide (independent episodes factorise)."""
        if name == "rloo":
            a, c = 1.0 / N, 1.0 / (N * (N - 1))
        else:
            a, c = 1.0 / N - 1.0 / N ** 2, 1.0 / N ** 2
        m1, m2 = self.m[1], self.m[2]
        v0, v1, v2 = self.v
        zz0, zz1, zz2 = self.zz
        n2 = N * (N - 1)
        n3 = n2 * (N - 2)
        n4 = n3 * (N - 3)
        EX = N * v1
        EY = n2 * m1 * v0
        XX = N * zz2 + n2 * v1 * v1
        XY = n2 * (zz1 * m1 + v2 * v0) + n3 * m1 * v1 * v0
        YY = n2 * (m2 * zz0 + v1 * v1) + n3 * (m1 * m1 * zz0 + m2 * v0 * v0 + 2 * m1 * v1 * v0) \
            + n4 * m1 * m1 * v0 * v0
        return a * EX - c * EY, a * a * XX - 2 * a * c * XY + c * c * YY


@njit(cache=True)
def _return_pass(rho0, pi, u, nidx, nprob, terminal, R, var, gpow, cap, tot_s, tot_v, tot_q, step_zz, step_rzz):
    """Forward pass of the return family: ``tot_s[k] = E[R^k]``, ``tot_v[k] = E[R^k z]``,
    ``tot_q[k] = E[R^k z * z]`` over ended episodes (k = 0, 1, 2); per step t also
    ``step_zz[t] = E[z_t * z_t]`` and ``step_rzz[t] = E[gamma^t r_t z_t * z_t]`` with the partial
    score ``z_t = sum_(k <= t) u_k`` (zero once the episode has ended)."""
    S, A, d = u.shape
    K = nidx.shape[2]
    P = rho0.copy()
    R1 = np.zeros(S)
    R2 = np.zeros(S)
    V = np.zeros((6, S, d))  # E[z], E[R z], E[R^2 z], E[z z], E[R z z], E[R^2 z z]
    nP = np.zeros(S)
    nR1 = np.zeros(S)
    nR2 = np.zeros(S)
    nV = np.zeros((6, S, d))
    x = np.zeros(6)
    for t in range(cap):
        last = t + 1 == cap
        c = gpow[t]
        nP[:] = 0.0
        nR1[:] = 0.0
        nR2[:] = 0.0
        nV[:] = 0.0
        for s in range(S):
            p = P[s]
            if p == 0.0:
                continue
            a1 = R1[s]
            a2 = R2[s]
            for a in range(A):
                pa = pi[s, a]
                if pa == 0.0:
                    continue
                r = c * R[s, a]
                r2 = c * c * (R[s, a] * R[s, a] + var[s, a])
                p_end = 0.0
                for k in range(K):
                    if terminal[nidx[s, a, k]]:
                        p_end += nprob[s, a, k]
                w_end = pa * (1.0 if last else p_end)
                e1 = a1 + r * p
                e2 = a2 + 2.0 * r * a1 + r2 * p
                tot_s[0] += w_end * p
                tot_s[1] += w_end * e1
                tot_s[2] += w_end * e2
                if not last:
                    for k in range(K):
                        sn = nidx[s, a, k]
                        wk = pa * nprob[s, a, k]
                        if wk != 0.0 and not terminal[sn]:
                            nP[sn] += wk * p
                            nR1[sn] += wk * e1
                            nR2[sn] += wk * e2
                for j in range(d):
                    uj = u[s, a, j]
                    z0 = V[0, s, j]
                    z1 = V[1, s, j]
                    z2 = V[2, s, j]
                    x[0] = z0 + uj * p
                    rz = z1 + a1 * uj
                    x[1] = rz + r * x[0]
                    x[2] = z2 + a2 * uj + 2.0 * r * rz + r2 * x[0]
                    x[3] = V[3, s, j] + 2.0 * z0 * uj + uj * uj * p
                    step_zz[t, j] += pa * x[3]
                    step_rzz[t, j] += pa * r * x[3]
                    rq = V[4, s, j] + 2.0 * z1 * uj + uj * uj * a1
                    x[4] = rq + r * x[3]
                    x[5] = V[5, s, j] + 2.0 * z2 * uj + uj * uj * a2 + 2.0 * r * rq + r2 * x[3]
                    if w_end != 0.0:
                        for m in range(3):
                            tot_v[m, j] += w_end * x[m]
                            tot_q[m, j] += w_end * x[3 + m]
                    if not last:
                        for k in range(K):
                            sn = nidx[s, a, k]
                            wk = pa * nprob[s, a, k]
                            if wk != 0.0 and not terminal[sn]:
                                for m in range(6):
                                    nV[m, sn, j] += wk * x[m]
        if last:
            break
        P, nP = nP, P
        R1, nR1 = nR1, R1
        R2, nR2 = nR2, R2
        V, nV = nV, V


@njit(inline="always", cache=True)
def _all_action_w(c, us, b, out):
    """``out = b sum_a c[a] u(s, a)``: the all-action term of state s (one vector for every action)."""
    for j in range(out.shape[0]):
        acc = 0.0
        for a in range(c.shape[0]):
            acc += c[a] * us[a, j]
        out[j] = b * acc


@njit(cache=True)
def _trace_pass(rho0, pi, u, nidx, nprob, terminal, var, cap, alpha, beta, omega, has_q, q0, q1, w_mode, cW,
                M1, M2, Mn, tab):
    """Forward pass of one trace-family estimator: ``M1 = E[g]``, ``M2 = E[g * g]`` (coordinatewise)
    and ``Mn``, the part of ``M2`` due to the reward noise (``sum_k Var(r_k) Y_k * Y_k``).

    Step t: ``Y' = alpha Y + beta[t] u``, ``q = q0[t, s, a] + q1[t, s'] + noise``, increment
    ``D = q Y' + W`` with ``W = beta[t] cW[t, s, a] u(s, a)`` (w_mode 1) or ``beta[t] sum_b cW[t, s, b]
    u(s, b)`` (w_mode 2), expected increments weighted by ``omega[t]``. Tables with one row are read at every t.

    ``tab``: tabular layout, ``u(s, a)`` is zero outside coordinates ``s A .. s A + A - 1``. Off
    those, ``Y'``, ``Y' * Y'`` and ``h * Y'`` do not depend on the action, so they are computed
    once per state and sent to each distinct successor with the action-summed weights."""
    S, A, d = u.shape
    K = nidx.shape[2]
    P = rho0.copy()
    G = np.zeros((4, S, d))  # E[Y], E[h], E[Y * Y], E[h * Y]
    nP = np.zeros(S)
    nG = np.zeros((4, S, d))
    wall = np.zeros(d)
    slot_of = np.full(S, -1, np.int64)
    m_sn = np.zeros(A * K, np.int64)
    m_c0 = np.zeros(A * K)
    m_cq = np.zeros(A * K)
    for t in range(cap):
        last = t + 1 == cap
        b = beta[t]
        om = omega[t]
        tq = t if q0.shape[0] > 1 else 0
        tw = t if cW.shape[0] > 1 else 0
        nP[:] = 0.0
        nG[:] = 0.0
        for s in range(S):
            p = P[s]
            if p == 0.0:
                continue
            if w_mode == 2:
                _all_action_w(cW[tw, s], u[s], b, wall)
            jlo = s * A if tab else 0
            jhi = jlo + A if tab else d
            nm = 0
            sq = 0.0
            se = 0.0
            sv = 0.0
            for a in range(A):
                pa = pi[s, a]
                if pa == 0.0:
                    continue
                qa = 0.0
                qbar = 0.0
                eq2 = 0.0
                if has_q:
                    m1 = 0.0
                    m2 = 0.0
                    for k in range(K):
                        x = q1[tq, nidx[s, a, k]]
                        m1 += nprob[s, a, k] * x
                        m2 += nprob[s, a, k] * x * x
                    qa = q0[tq, s, a]
                    qbar = qa + m1
                    eq2 = qa * qa + 2.0 * qa * m1 + m2 + var[s, a]
                    sq += pa * qbar
                    se += pa * eq2
                    sv += pa * var[s, a]
                if not last:
                    for k in range(K):
                        sn = nidx[s, a, k]
                        wk = pa * nprob[s, a, k]
                        if wk != 0.0 and not terminal[sn]:
                            nP[sn] += wk * p
                            if tab:
                                i = slot_of[sn]
                                if i < 0:
                                    i = nm
                                    slot_of[sn] = i
                                    m_sn[i] = sn
                                    m_c0[i] = 0.0
                                    m_cq[i] = 0.0
                                    nm += 1
                                m_c0[i] += wk
                                m_cq[i] += wk * (qa + q1[tq, sn]) if has_q else 0.0
                cw = b * cW[tw, s, a] if w_mode == 1 else 0.0
                for j in range(jlo, jhi):
                    uj = u[s, a, j]
                    eh = G[1, s, j]
                    if w_mode == 1:
                        wj = cw * uj
                    elif w_mode == 2:
                        wj = wall[j]
                    else:
                        wj = 0.0
                    i1 = wj * p
                    i2 = 2.0 * wj * eh + wj * wj * p
                    y = 0.0
                    yy = 0.0
                    hy = 0.0
                    if has_q:
                        ey = G[0, s, j]
                        y = alpha * ey + b * uj * p
                        yy = alpha * alpha * G[2, s, j] + 2.0 * alpha * b * ey * uj + b * b * uj * uj * p
                        hy = alpha * G[3, s, j] + b * eh * uj
                        i1 += qbar * y
                        i2 += 2.0 * qbar * hy + eq2 * yy + 2.0 * qbar * wj * y
                        Mn[j] += om * pa * var[s, a] * yy
                    M1[j] += om * pa * i1
                    M2[j] += om * pa * i2
                    if not last:
                        h0 = eh + wj * p
                        hy0 = hy + wj * y
                        for k in range(K):
                            sn = nidx[s, a, k]
                            wk = pa * nprob[s, a, k]
                            if wk == 0.0 or terminal[sn]:
                                continue
                            if has_q:
                                qn = qa + q1[tq, sn]
                                nG[0, sn, j] += wk * y
                                nG[1, sn, j] += wk * (h0 + qn * y)
                                nG[2, sn, j] += wk * yy
                                nG[3, sn, j] += wk * (hy0 + qn * yy)
                            else:
                                nG[1, sn, j] += wk * h0
            if not tab:
                continue
            for jj in range(d - A):  # the coordinates of the other states' rows
                j = jj if jj < jlo else jj + A
                eh = G[1, s, j]
                if has_q:
                    y = alpha * G[0, s, j]
                    yy = alpha * alpha * G[2, s, j]
                    hy = alpha * G[3, s, j]
                    M1[j] += om * sq * y
                    M2[j] += om * (2.0 * sq * hy + se * yy)
                    Mn[j] += om * sv * yy
                    for i in range(nm):
                        sn = m_sn[i]
                        c0 = m_c0[i]
                        cq = m_cq[i]
                        nG[0, sn, j] += c0 * y
                        nG[1, sn, j] += c0 * eh + cq * y
                        nG[2, sn, j] += c0 * yy
                        nG[3, sn, j] += c0 * hy + cq * yy
                else:
                    for i in range(nm):
                        nG[1, m_sn[i], j] += m_c0[i] * eh
            for i in range(nm):
                slot_of[m_sn[i]] = -1
        if last:
            break
        P, nP = nP, P
        G, nG = nG, G


def return_moments(ch: _Chain) -> "ReturnMoments":
    """Per-episode joint moments of R and z (one pass of :func:`_return_pass`)."""
    tot_s = np.zeros(3)
    tot_v = np.zeros((3, ch.d))
    tot_q = np.zeros((3, ch.d))
    step_zz = np.zeros((ch.cap, ch.d))
    step_rzz = np.zeros((ch.cap, ch.d))
    gpow = ch.gamma ** np.arange(ch.cap, dtype=np.float64)
    _return_pass(ch.rho0, ch.pi, ch.u, ch.nidx, ch.nprob, ch.terminal, ch.R, ch.var, gpow, ch.cap, tot_s, tot_v,
                 tot_q, step_zz, step_rzz)
    return ReturnMoments(tot_s, tot_v, tot_q, step_zz, step_rzz)


def _trace_tables(ch: _Chain, spec, V, Q, critic):
    """The arguments of :func:`_trace_pass` for one estimator (see the table in the module docstring):
    ``(alpha, beta, omega, has_q, q0, q1, w_mode, cW)``."""
    g = ch.gamma
    S, A, cap = ch.S, ch.A, ch.cap
    T = V.shape[0] - 1 if ch.finite else 1  # rows of the per-step tables
    disc = g ** np.arange(cap, dtype=np.float64)
    ones = np.ones(cap)
    zq1 = np.zeros((1, S))
    nw = np.zeros((1, S, A))
    name = spec.name
    if name == "reinforce_rtg":
        return g, disc, ones, True, ch.R[None], zq1, 0, nw
    if name == "rtg_no_gamma_t":
        return g, ones, ones, True, ch.R[None], zq1, 0, nw
    if name == "value_baseline":
        Vt = V[:T] + spec.p.get("shift", 0.0)  # value_baseline:shift=d
        return g, disc, ones, True, ch.R[None], zq1, 1, -np.broadcast_to(Vt[:, :, None], (T, S, A))
    if name == "entropy_bonus":
        with np.errstate(divide="ignore"):  # an action of probability 0 is never taken: no -inf * 0
            soft = np.where(ch.pi > 0, ch.R - spec.p["beta"] * np.log(np.where(ch.pi > 0, ch.pi, 1.0)), 0.0)
        return g, disc, ones, True, soft[None], zq1, 0, nw
    if name in ("gae", "td0", "ppo_gae"):  # ppo_gae: the exact critic, no gamma^t (beta_k = 1)
        lam = spec.p.get("lambda", 0.0)
        q0 = ch.R[None] - critic[:T, :, None]
        nxt = critic[1:T + 1] if ch.finite else critic[:1]
        q1 = g * np.where(ch.terminal[None, :], 0.0, nxt)
        return g * lam, ones if name == "ppo_gae" else disc, ones, True, q0, q1, 0, nw
    if name == "true_advantage":
        return 0.0, disc, ones, False, nw, zq1, 1, Q[:T] - V[:T, :, None]
    if name == "all_action":
        return 0.0, disc, ones, False, nw, zq1, 2, ch.pi[None] * Q[:T]
    if name == "geometric_termination":
        return 1.0, ones, disc, True, ch.R[None], zq1, 0, nw
    raise PGBenchError(f"no dynamic programme for {name}")


def _arg(x) -> np.ndarray:
    """A writable C-contiguous float64 copy: numba compiles a separate pass for a read-only array
    (a slice of the problem's frozen tables) and a writable one, so every table is passed writable."""
    return np.array(x, dtype=np.float64, order="C")


def trace_moments(ch: _Chain, spec, V, Q, critic=None):
    """Mean (d,) and coordinatewise ``E[g * g]`` (d,) of one episode's estimate (trace family)."""
    alpha, beta, omega, has_q, q0, q1, w_mode, cW = _trace_tables(ch, spec, V, Q, critic)
    M1 = np.zeros(ch.d)
    M2 = np.zeros(ch.d)
    Mn = np.zeros(ch.d)
    _trace_pass(ch.rho0, ch.pi, ch.u, ch.nidx, ch.nprob, ch.terminal, ch.var, ch.cap, float(alpha), beta, omega,
                bool(has_q), _arg(q0), _arg(q1),
                int(w_mode), _arg(cW), M1, M2, Mn, ch.tabular)
    return M1, M2, Mn


@njit(cache=True)
def _is_pass(rho0, mu, ratio, u, nidx, nprob, terminal, R, var, gpow, gamma, cap, M1, M2):
    """Forward pass of ordinary per-decision importance sampling: episodes drawn from ``mu``,
    ``g = sum_k r_k Y_k`` with ``Y_k = gamma^k w_k z_k`` and the running ratio ``w_k = prod_(j <= k)
    ratio(s_j, a_j)``. As ``Y_k = rho_k (gamma Y_(k-1) + gamma^k w_(k-1) u_k)``, the messages also
    carry ``E[w]``, ``E[w^2]``, ``E[w Y]`` and ``E[w h]``."""
    S, A, d = u.shape
    K = nidx.shape[2]
    P = rho0.copy()
    Ew = rho0.copy()
    Ew2 = rho0.copy()
    G = np.zeros((6, S, d))  # E[Y], E[h], E[Y * Y], E[h * Y], E[w Y], E[w h]
    nP = np.zeros(S)
    nEw = np.zeros(S)
    nEw2 = np.zeros(S)
    nG = np.zeros((6, S, d))
    for t in range(cap):
        last = t + 1 == cap
        c = gpow[t]
        nP[:] = 0.0
        nEw[:] = 0.0
        nEw2[:] = 0.0
        nG[:] = 0.0
        for s in range(S):
            p = P[s]
            if p == 0.0:
                continue
            ew = Ew[s]
            ew2 = Ew2[s]
            for a in range(A):
                pa = mu[s, a]
                if pa == 0.0:
                    continue
                rh = ratio[s, a]
                rb = R[s, a]
                er2 = rb * rb + var[s, a]
                if not last:
                    for k in range(K):
                        sn = nidx[s, a, k]
                        wk = pa * nprob[s, a, k]
                        if wk != 0.0 and not terminal[sn]:
                            nP[sn] += wk * p
                            nEw[sn] += wk * rh * ew
                            nEw2[sn] += wk * rh * rh * ew2
                for j in range(d):
                    uj = u[s, a, j]
                    cu = c * uj
                    y = rh * (gamma * G[0, s, j] + cu * ew)
                    yy = rh * rh * (gamma * gamma * G[2, s, j] + 2.0 * gamma * cu * G[4, s, j] + cu * cu * ew2)
                    hy = rh * (gamma * G[3, s, j] + cu * G[5, s, j])
                    wy = rh * rh * (gamma * G[4, s, j] + cu * ew2)
                    M1[j] += pa * rb * y
                    M2[j] += pa * (2.0 * rb * hy + er2 * yy)
                    if not last:
                        h0 = G[1, s, j] + rb * y
                        hy0 = hy + rb * yy
                        wh0 = rh * G[5, s, j] + rb * wy
                        for k in range(K):
                            sn = nidx[s, a, k]
                            wk = pa * nprob[s, a, k]
                            if wk == 0.0 or terminal[sn]:
                                continue
                            nG[0, sn, j] += wk * y
                            nG[1, sn, j] += wk * h0
                            nG[2, sn, j] += wk * yy
                            nG[3, sn, j] += wk * hy0
                            nG[4, sn, j] += wk * wy
                            nG[5, sn, j] += wk * wh0
        if last:
            break
        P, nP = nP, P
        Ew, nEw = nEw, Ew
        Ew2, nEw2 = nEw2, Ew2
        G, nG = nG, G


def is_moments(ch: _Chain, mu: np.ndarray):
    """Mean (d,) and coordinatewise ``E[g * g]`` of one episode of ordinary importance sampling
    from the behaviour policy ``mu`` (S, A)."""
    mu = np.ascontiguousarray(mu, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(mu > 0, ch.pi / np.where(mu > 0, mu, 1.0), 0.0)
    M1 = np.zeros(ch.d)
    M2 = np.zeros(ch.d)
    _is_pass(ch.rho0, mu, ratio, ch.u, ch.nidx, ch.nprob, ch.terminal, ch.R, ch.var,
             ch.gamma ** np.arange(ch.cap, dtype=np.float64), ch.gamma, ch.cap, M1, M2)
    return M1, M2


@njit(cache=True)
def _state_mean_pass(rho0, u, succ, psucc, post, terminal, cap, alpha, beta, omega, has_q, q0, q1, w_mode, cW,
                     M1, M2):
    """Forward pass of the conditional mean ``m = E[g | s_0, s_1, ...]`` of a trace-family estimator:
    ``M1 = E[m]``, ``M2 = E[m * m]``.

    Given the state sequence the actions are independent, step k's with the posterior
    ``post[s, i, a] = pi(a|s) P(s'|s, a) / P_pi(s'|s)`` over the i-th distinct successor
    ``s' = succ[s, i]`` (reached with probability ``psucc[s, i]``), so m is again a sum over steps:
    ``m = sum_k omega_k (E[q_k | s] alpha Y~_(k-1) + beta_k E[q_k u_k | s] + E[W_k | s])`` with the
    deterministic trace ``Y~_k = alpha Y~_(k-1) + beta_k E[u_k | s]``; the pass carries the same
    messages as :func:`_trace_pass` with the successor as the step's only randomness."""
    S, A, d = u.shape
    Km = succ.shape[1]
    P = rho0.copy()
    G = np.zeros((4, S, d))  # E[Y~], E[h], E[Y~ * Y~], E[h * Y~]
    nP = np.zeros(S)
    nG = np.zeros((4, S, d))
    wall = np.zeros(d)
    for t in range(cap):
        last = t + 1 == cap
        b = beta[t]
        om = omega[t]
        tq = t if q0.shape[0] > 1 else 0
        tw = t if cW.shape[0] > 1 else 0
        nP[:] = 0.0
        nG[:] = 0.0
        for s in range(S):
            p = P[s]
            if p == 0.0:
                continue
            if w_mode == 2:
                _all_action_w(cW[tw, s], u[s], b, wall)
            for i in range(Km):
                w = psucc[s, i]
                if w == 0.0:
                    continue
                sn = succ[s, i]
                go = not last and not terminal[sn]
                qt = 0.0
                q1n = 0.0
                if has_q:
                    for a in range(A):
                        qt += post[s, i, a] * q0[tq, s, a]
                    q1n = q1[tq, sn]
                    qt += q1n
                for j in range(d):
                    uj = 0.0
                    vj = 0.0
                    wj = 0.0
                    for a in range(A):
                        pu = post[s, i, a] * u[s, a, j]
                        uj += pu
                        vj += pu * q0[tq, s, a] if has_q else 0.0
                        wj += pu * cW[tw, s, a] if w_mode == 1 else 0.0
                    if w_mode == 1:
                        wj *= b
                    elif w_mode == 2:
                        wj = wall[j]
                    B = wj + (b * (vj + q1n * uj) if has_q else 0.0)
                    ey = G[0, s, j]
                    eh = G[1, s, j]
                    eyy = G[2, s, j]
                    ehy = G[3, s, j]
                    qa = qt * alpha
                    dm = qa * ey + B * p
                    M1[j] += w * om * dm
                    M2[j] += w * (2.0 * om * (qa * ehy + B * eh) + om * om * (qa * qa * eyy + 2.0 * qa * B * ey
                                                                              + B * B * p))
                    if go:
                        bu = b * uj
                        nG[0, sn, j] += w * (alpha * ey + bu * p)
                        nG[1, sn, j] += w * (eh + om * dm)
                        nG[2, sn, j] += w * (alpha * alpha * eyy + 2.0 * alpha * bu * ey + bu * bu * p)
                        nG[3, sn, j] += w * (alpha * ehy + bu * eh + om * (qa * (alpha * eyy + bu * ey)
                                                                           + B * (alpha * ey + bu * p)))
                if go:
                    nP[sn] += w * p
        if last:
            break
        P, nP = nP, P
        G, nG = nG, G


def _successors(ch: _Chain):
    """Distinct successors per state: ``succ`` (S, Km), ``psucc = P_pi(s'|s)`` and the action
    posterior ``post`` (S, Km, A) given the successor."""
    S, A = ch.S, ch.A
    Km = A * ch.nidx.shape[2]
    succ = np.zeros((S, Km), np.int64)
    psucc = np.zeros((S, Km))
    post = np.zeros((S, Km, A))
    for s in range(S):
        mass = ch.pi[s, :, None] * ch.nprob[s]  # (A, K)
        for i, sn in enumerate(np.unique(ch.nidx[s][mass > 0])):
            pa = np.where(ch.nidx[s] == sn, mass, 0.0).sum(axis=1)
            succ[s, i] = sn
            psucc[s, i] = pa.sum()
            post[s, i] = pa / psucc[s, i]
    return succ, psucc, post


def state_mean_moments(ch: _Chain, spec, V, Q, critic=None, successors=None):
    """``E[m]`` and ``E[m * m]`` (d,) of the conditional mean ``m = E[g | state sequence]`` (trace family)."""
    alpha, beta, omega, has_q, q0, q1, w_mode, cW = _trace_tables(ch, spec, V, Q, critic)
    succ, psucc, post = _successors(ch) if successors is None else successors
    M1 = np.zeros(ch.d)
    M2 = np.zeros(ch.d)
    _state_mean_pass(ch.rho0, ch.u, succ, psucc, post, ch.terminal, ch.cap, float(alpha), beta, omega, bool(has_q),
                     _arg(q0), _arg(q1),
                     int(w_mode), _arg(cW), M1, M2)
    return M1, M2


# ----------------------------------------------------------------------------------------------- API


def dp_moments(problem, specs, th, N: int, cap: int, V, Q, critics: dict, opt_b=None, behaviours=None,
               coords: bool = False):
    """Exact ``(mean (n, d), E||g_batch||^2 (n,), in_batch (n,), cut mass, ReturnMoments or None)``.

    ``E||g_batch||^2`` is that of one episode for per-episode estimators and of the batch-N
    estimate for in-batch ones; ``coords``: coordinatewise ``E[g_batch * g_batch]`` (n, d) instead.
    ``critics``: the critic table per estimator index (gae/td0); ``behaviours``: the behaviour
    policy per estimator index (importance_sampling)."""
    ch = chain(problem, th, cap)
    mean, m2, batch, rm = _chain_moments(ch, specs, N, V, Q, critics, opt_b, behaviours)
    return mean, (m2 if coords else m2.sum(axis=1)), batch, _cut_mass(ch), rm


def _chain_moments(ch: _Chain, specs, N: int, V, Q, critics: dict, opt_b, behaviours):
    """``(mean (n, d), coordinatewise E[g_batch * g_batch] (n, d), in_batch (n,), ReturnMoments or None)``
    of every estimator on one chain (its score table may be a transformed one, see :func:`dp_second_moments`)."""
    n, d = len(specs), ch.d
    mean = np.zeros((n, d))
    m2 = np.zeros((n, d))
    batch = np.zeros(n, bool)
    rm = None
    if any(sp.name in RETURN + RETURN_BATCH + ("w_baseline_loo",) for sp in specs):
        rm = return_moments(ch)
    rtg_zz = None
    for j, sp in enumerate(specs):
        if sp.name in TRACE:
            mean[j], m2[j], _ = trace_moments(ch, sp, V, Q, critics.get(j))
        elif sp.name == "importance_sampling":
            mean[j], m2[j] = is_moments(ch, behaviours[j])
        elif sp.name in RETURN:
            b = {"reinforce": 0.0, "const_baseline": sp.p.get("b", 0.0),
                 "optimal_const_baseline": (rm.b_star if opt_b is None else opt_b) + sp.p.get("shift", 0.0)}[sp.name]
            mean[j], m2[j] = rm.const_baseline_coords(float(b))
        elif sp.name in RETURN_BATCH:
            batch[j] = True
            if N > 1:  # rloo needs N >= 2 (refused earlier); batch_mean at N = 1 is exactly zero
                mean[j], m2[j] = rm.in_batch_coords(sp.name, N)
        elif sp.name == "w_baseline_loo" and N == 2 and w_loo_is_rloo(ch.pi, ch.terminal, ch.cap):
            batch[j] = True  # b_i = W_j R_j / W_j = R_j: rloo at N = 2
            mean[j], m2[j] = rm.in_batch_coords("rloo", 2)
        elif sp.name in TIME_BATCH:
            batch[j] = True
            if rtg_zz is None:
                _, rtg_zz, _ = trace_moments(ch, _RTG, V, Q)
            mean[j], m2[j] = time_baseline_loo_coords(ch, N, rtg_zz)
        else:
            raise PGBenchError(f"no dynamic programme for {sp.label}: {why_not(sp)}")
    return mean, m2, batch, rm


def pair_columns(d: int) -> np.ndarray:
    """``M = [I | e_i + e_j for i < j]`` (d, d + d(d-1)/2): the scores ``u M`` turn an estimate g
    that is linear in u into ``g M``, whose coordinatewise second moments are ``E[g_i^2]`` and
    ``E[(g_i + g_j)^2]``."""
    i, j = np.triu_indices(d, 1)
    M = np.zeros((d, d + i.size))
    M[np.arange(d), np.arange(d)] = 1.0
    cols = d + np.arange(i.size)
    M[i, cols] = 1.0
    M[j, cols] = 1.0
    return M


def dp_second_moments(problem, specs, th, N: int, cap: int, V, Q, critics: dict, opt_b, behaviours=None):
    """Exact full second moments ``E[g_batch g_batch^T]`` (n, d, d) (one episode's for per-episode
    estimators, the batch-N estimate's for in-batch ones) and the mean (n, d).

    Every estimator the DP covers is linear in the score table u once its constants are fixed
    (``opt_b``, the optimal constant baseline, must be the original chain's), so the pass over
    the chain with scores ``u M`` (:func:`pair_columns`) gives ``E[g_i^2]`` and ``E[(g_i + g_j)^2]``
    and ``E[g_i g_j] = (E[(g_i + g_j)^2] - E[g_i^2] - E[g_j^2]) / 2``: d + d(d-1)/2 coordinates
    instead of d, about (d + 1) / 2 times the cost of the variance alone."""
    ch = chain(problem, th, cap)
    d = ch.d
    dd = d + d * (d - 1) // 2
    if dd * ch.S * ch.A > DP_TABLE_LIMIT:
        raise PGBenchError(f"{problem.name}: the covariance by the moment DP carries d + d(d-1)/2 = {dd} coordinates "
                           f"for d = {d} (score tables of {dd * ch.S * ch.A} entries, more than {DP_TABLE_LIMIT}); "
                           "ask for the variance only (cov=False), or use fewer parameters")
    if opt_b is None and any(sp.name == "optimal_const_baseline" for sp in specs):
        opt_b = return_moments(ch).b_star
    M = pair_columns(d)
    wide = replace(ch, u=np.ascontiguousarray(ch.u @ M), d=dd, tabular=False)
    mean, m2, _, _ = _chain_moments(wide, specs, N, V, Q, critics, opt_b, behaviours)
    diag = m2[:, :d]
    E = np.zeros((len(specs), d, d))
    i, j = np.triu_indices(d, 1)
    E[:, i, j] = (m2[:, d:] - diag[:, i] - diag[:, j]) / 2
    E[:, j, i] = E[:, i, j]
    E[:, np.arange(d), np.arange(d)] = diag
    return mean[:, :d], E


# ----------------------------------------------------------------------------------------- time_baseline_loo

def _next_expect(ch: _Chain, C: np.ndarray) -> np.ndarray:
    """``E[C(s') 1{s' not terminal} | s, a]`` for a per-state table C (S, ...): shape (S, A, ...)."""
    Cm = np.where(ch.terminal.reshape((-1,) + (1,) * (C.ndim - 1)), 0.0, C)
    return np.einsum("sak,sak...->sa...", ch.nprob, Cm[ch.nidx])


def _score_pairs(ch: _Chain, occ: np.ndarray, f: np.ndarray, g: np.ndarray, psi) -> np.ndarray:
    """``sum_(b < a) f(b) g(a) E[u_b * psi_a(s_a) 1{alive at a}]`` (d,, coordinatewise) by one backward pass:
    ``C_a(s) = g(a) psi_a(s) + E[C_(a+1)(s') | s]`` is what the steps after b contribute.
    ``psi(a)``: the (S, d) table of step a (made on demand: no (cap, S, d) array)."""
    C = np.zeros((ch.S, ch.d))
    total = np.zeros(ch.d)
    for b in range(ch.cap - 1, -1, -1):
        nxt = _next_expect(ch, C)  # (S, A, d): E[C_(b+1)(s_(b+1)) | s_b, a_b]
        total += f[b] * np.einsum("s,sa,sad,sad->d", occ[b], ch.pi, ch.u, nxt)
        C = g[b] * psi(b) + np.einsum("sa,sad->sd", ch.pi, nxt)
    return total


def time_baseline_loo_coords(ch: _Chain, N: int, XX: np.ndarray):
    """Mean (d,) and coordinatewise ``E[g_batch * g_batch]`` (d,) of ``time_baseline_loo`` at batch N >= 2.

    Episode i's term is ``X_i - (1/(N-1)) sum_(j != i) sum_t G_t^j gamma^t u_t^i`` with X the
    reward-to-go estimate and ``G_t = 0`` once an episode has ended (as the sampling kernel sums
    it). Scores have mean zero given the past, so ``E<u_t, u_t'> = 0`` for t != t', and the
    expectations reduce to per-step moments: ``m_t = E[G_t]``, ``E[G_t^2]``,
    ``P_t = gamma^(2t) E||u_t||^2``, ``e_t = E[G_t u_t]``, and two sums over pairs of steps
    ``E[<u_b, psi_a(s_a)>]`` (b < a) done by backward passes (:func:`_score_pairs`):

    ``E||g_1||^2 = E||X||^2 - 2 E<X, W> + sum_t P_t (E[G_t^2] + (N-2) m_t^2) / (N-1)``,
    ``W = sum_t gamma^t m_t u_t``; ``E<g_1, g_2> = ||E X||^2 + sum_(a,b) <r_ab, r_ba> / (N-1)^2``,
    ``r_ab = E[G_a gamma^b u_b]``; the batch mean has ``E||g||^2 = (E||g_1||^2 + (N-1) E<g_1, g_2>) / N``.
    ``XX = E[X * X]`` (d,) comes from the reward-to-go's trace pass; the mean is X's (the baseline
    term has mean zero). Every product above is taken coordinatewise (the norms are their sums)."""
    if N < 2:
        raise PGBenchError("time_baseline_loo needs a batch of N >= 2 episodes")
    S, A, cap = ch.S, ch.A, ch.cap
    gp = ch.gamma ** np.arange(cap, dtype=np.float64)
    alive = ~ch.terminal
    occ = np.zeros((cap, S))  # Pr(s_t = s, episode still running)
    occ[0] = ch.rho0
    for t in range(1, cap):
        w = occ[t - 1][:, None, None] * ch.pi[:, :, None] * ch.nprob
        np.add.at(occ[t], ch.nidx.ravel(), w.ravel())
        occ[t] *= alive
    Q = np.zeros((cap, S, A))  # E[G_t | s_t, a_t] of the capped episode (discounted return from t)
    Q2 = np.zeros((cap, S, A))  # E[G_t^2 | s_t, a_t], reward noise included
    V, V2 = np.zeros(S), np.zeros(S)
    for t in range(cap - 1, -1, -1):
        nV, nV2 = _next_expect(ch, V), _next_expect(ch, V2)
        Q[t] = ch.R + ch.gamma * nV
        Q2[t] = ch.var + ch.R ** 2 + 2 * ch.gamma * ch.R * nV + ch.gamma ** 2 * nV2
        V, V2 = (ch.pi * Q[t]).sum(1), (ch.pi * Q2[t]).sum(1)
    Vt = (ch.pi[None] * Q).sum(2)  # (cap, S)
    m = np.einsum("ts,ts->t", occ, Vt)
    M2 = np.einsum("ts,sa,tsa->t", occ, ch.pi, Q2)
    uu = ch.u * ch.u  # (S, A, d)
    P = gp[:, None] ** 2 * np.einsum("ts,sa,sad->td", occ, ch.pi, uu)
    def phi(t):  # E[G_t u_t | s_t]: (S, d)
        return np.einsum("sa,sa,sad->sd", ch.pi, Q[t], ch.u)
    e = np.einsum("sa,tsa,sad->td", ch.pi, occ[:, :, None] * Q, ch.u)  # E[G_t u_t]
    H = np.einsum("ts,sa,tsa,sad->td", occ, ch.pi, Q, uu)  # E[G_t u_t * u_t]
    mu = np.einsum("t,td->d", gp, e)

    # E<X, W>: pairs (k, t) of E[G_k <u_k, u_t>] weighted gamma^(k+t) m_t; k < t reduces to
    # gamma^(t-k) E[G_t <u_k, u_t>]
    XW = ((gp ** 2 * m) @ H + _score_pairs(ch, occ, gp * m, gp, phi)
          + _score_pairs(ch, occ, np.ones(cap), gp ** 2 * m, phi))
    g11 = np.asarray(XX, float) - 2 * XW + (M2 + (N - 2) * m ** 2) @ P / (N - 1)
    # sum_(a,b) <r_ab, r_ba>: a = b gives gamma^(2a) ||e_a||^2; a > b twice gamma^(2a) E[<u_b, V_a(s_a) e_a>]
    Sr = (gp ** 2 @ (e * e)
          + 2 * _score_pairs(ch, occ, np.ones(cap), gp ** 2, lambda a: np.outer(Vt[a], e[a])))
    g12 = mu * mu + Sr / (N - 1) ** 2
    return mu, (g11 + (N - 1) * g12) / N


def dp_decomposition(problem, specs, th, cap: int, V, Q, critics: dict) -> np.ndarray:
    """Per-episode variance parts ``(n, 3)``: start state and transitions ``Var(E[g | states])``,
    action sampling ``E[Var(g | states, rewards' noise averaged)]`` and reward noise, for the trace
    family (NaN rows for the others). They add up to the trace variance of one episode."""
    ch = chain(problem, th, cap)
    succ = _successors(ch)
    out = np.full((len(specs), 3), np.nan)
    for j, sp in enumerate(specs):
        if sp.name not in TRACE:
            continue
        M1, M2, Mn = trace_moments(ch, sp, V, Q, critics.get(j))
        m1, m2 = state_mean_moments(ch, sp, V, Q, critics.get(j), succ)
        mm = float(M1 @ M1)
        state = float(m2.sum()) - mm
        noise = float(Mn.sum())
        out[j] = state, float(M2.sum()) - mm - state - noise, noise
    return out


def _cut_mass(ch: _Chain) -> float:
    """Pr(an episode is still running when the cap stops it); 0 when the cap is the horizon."""
    if ch.cap >= ch.horizon:
        return 0.0
    P = ch.rho0.copy()
    live = ~ch.terminal
    for _ in range(ch.cap):
        nxt = np.zeros(ch.S)
        np.add.at(nxt, ch.nidx, (P[:, None] * ch.pi)[:, :, None] * ch.nprob)
        P = nxt * live
    return float(P.sum())
