"""Numba CPU kernels: roll out episodes and accumulate score weights (the contract's
:ref:`contract-estimators` and :ref:`contract-randomness`).

Layout (stumpy-style): ``_rollout`` is one episode's work; ``_batch_stats`` (pass 1) and
``_score_weights`` (pass 2) are the parallel loops over work items; the public entry point is
:func:`pgbench.measure.engine.sample_mdp`.

A work item is one chunk of one trial's episodes. The number of chunks depends on the batch
size alone and episodes draw their own streams, so the result never depends on the thread
count. Nothing per episode is kept: every item folds its episodes into accumulators

    C[e, s, a] = sum_{episodes} sum_{t : (s_t, a_t) = (s, a)} psi^e_t

from which estimator e's gradient is ``(1/N) sum_{s,a} C[e, s, a] grad log pi(a|s)``. The
per-step weight ``psi^e_t`` is the estimator (codes in :mod:`pgbench.estimators.catalogue`).
Estimators whose weights depend on the whole batch (leave-one-out and in-batch baselines, the
fitted critic, weighted importance sampling) read batch statistics from a first pass over the
same streams.
"""
from __future__ import annotations

import math

import numpy as np

from numba import njit, prange

from pgbench.estimators.catalogue import (
    REINFORCE, RTG, RTG_NO_GAMMA, CONST_B, BATCH_MEAN_B, RLOO, W_B, W_B_LOO, SCORE_NORM_B, OPT_CONST_B,
    VALUE_B, TIME_B_LOO, TRUE_ADV, ALL_ACTION, GAE, GEOMETRIC, IS_PD, ENTROPY, FISHER)
from pgbench.estimators.registry import END_TERMINAL, END_HORIZON, END_CAP  # noqa: F401  (how an episode ended)
from pgbench.kernels.rng import next_u64, stream, uniform, normal

# batch statistics (pass 1), per trial
ST_R, ST_W, ST_WR, ST_Z, ST_ZR, ST_N = range(6)
N_STATS = 6
# W(tau)-proxy statistics (pass 2), per trial
PX_W, PX_Z, PX_WW, PX_ZZ, PX_WZ, PX_AW, PX_ALOO, PX_N = range(8)
N_PROXY = 8


@njit(cache=True)
def build_alias(q, prob, alias):
    """Walker's alias tables (Vose's construction) for every row of ``q`` (rows sum to 1).

    Drawing then costs one uniform and two loads whatever the row length: with
    ``x = u n, i = floor(x)``, the outcome is i if ``x - i < prob[i]`` and ``alias[i]`` otherwise
    (the kernels do this test exactly in integers, see ``_column`` and ``_alias_pick``).
    """
    rows, n = q.shape
    small = np.empty(n, np.int64)
    large = np.empty(n, np.int64)
    scaled = np.empty(n)
    for r in range(rows):
        ns = 0
        nl = 0
        for i in range(n):
            scaled[i] = q[r, i] * n
            if scaled[i] < 1.0:
                small[ns] = i
                ns += 1
            else:
                large[nl] = i
                nl += 1
        while ns > 0 and nl > 0:
            ns -= 1
            lo = small[ns]
            nl -= 1
            hi = large[nl]
            prob[r, lo] = scaled[lo]
            alias[r, lo] = hi
            scaled[hi] = (scaled[hi] + scaled[lo]) - 1.0
            if scaled[hi] < 1.0:
                small[ns] = hi
                ns += 1
            else:
                large[nl] = hi
                nl += 1
        # leftovers are 1 up to rounding
        for j in range(nl):
            prob[r, large[j]] = 1.0
            alias[r, large[j]] = large[j]
        for j in range(ns):
            prob[r, small[j]] = 1.0
            alias[r, small[j]] = small[j]


_SHORT_ROW = np.uint64(1 << 11)
_M53 = np.uint64((1 << 53) - 1)
_M26 = np.uint64((1 << 26) - 1)
_M27 = np.uint64((1 << 27) - 1)
_LOW32 = np.uint64(0xFFFFFFFF)
_ACT = np.uint64(0x7FFFFFFF)


@njit(inline="always", cache=True)
def _column(x, n):
    """Column ``i = floor(u n)`` and fraction ``f = (u n - i) 2^53`` of the uniform ``u = (x >> 11) 2^-53``.

    Exact integer arithmetic for any ``n < 2^32``. Below ``2^11`` the product ``m n`` of
    ``m = x >> 11`` fits in 64 bits, so ``i = m n >> 53`` and ``f = m n mod 2^53`` (the test on
    ``n`` is loop-invariant, so the compiler hoists it out of the rollout loop). Otherwise, with
    ``m = m_h 2^26 + m_l``, ``m n = q 2^26 + (m_l n mod 2^26)`` where ``q = m_h n + floor(m_l n /
    2^26)`` (no product overflows 64 bits), so ``i = q >> 27`` and ``f = (q mod 2^27) 2^26 +
    (m n mod 2^26)``.
    """
    m = x >> np.uint64(11)
    if n < _SHORT_ROW:
        p = m * n
        return p >> np.uint64(53), p & _M53
    q = (m >> np.uint64(26)) * n + (((m & _M26) * n) >> np.uint64(26))
    return q >> np.uint64(27), ((q & _M27) << np.uint64(26)) | ((m * n) & _M26)


@njit(inline="always", cache=True)
def _alias_pick(thr, alias, n, x):
    """Outcome of the alias table ``(thr, alias)`` of n columns for the random word x: column
    ``i = floor(u n)``, kept when its fraction is below ``thr[i]``, else ``alias[i]``."""
    i, frac = _column(x, n)
    if frac >= thr[i]:
        return np.uint64(alias[i])
    return i


@njit(inline="always", cache=True)
def _rollout(s0, s1, rho_thr, rho_alias, n_slots, step_thr, step_off, step_word, step_r, noise_kind, noise_scale, cap,
             buf_s, buf_a, buf_r):
    """Sample one episode into the buffers; returns (length L, u_geo, s0, s1).

    The start state is drawn the same way from the alias table of rho0. Every step draws one
    64-bit word and picks the joint (a, s') from the alias table of
    ``mu(a|s) P(s'|s, a)`` over the ``n_slots`` slots ``a * K + k`` of the current state: column
    ``j = s n_slots + i`` is kept when the fraction is below ``step_thr[j] = ceil(prob 2^53)``
    (exactly ``u n - i < prob``), else its alias is taken. ``step_off[j]`` packs the successor's
    row offset ``s' n_slots`` for the column (low 32 bits) and for its alias (high 32 bits); the
    pair tables ``step_word`` (s' | a << 32 | terminal(s') << 63) and ``step_r`` (R[s, a]) hold the
    column at ``2 j`` and its alias at ``2 j + 1``. So between one state and the next there are
    two loads side by side, a compare and two shifts: no branch on the coin flip (it would
    mispredict half the time), no multiply, no second dependent load. Reward noise takes its
    own draws.

    ``buf_s[L]`` holds the state after the last step (terminal, or where the cap cut in).
    ``u_geo`` is drawn first in every episode, used or not, so the other draws do not depend
    on which estimators run.
    """
    u_geo, s0, s1 = uniform(s0, s1)
    x, s0, s1 = next_u64(s0, s1)
    s = _alias_pick(rho_thr, rho_alias, np.uint64(rho_thr.shape[0]), x)
    n = np.uint64(n_slots)
    base = s * n
    L = cap
    for t in range(cap):
        x, s0, s1 = next_u64(s0, s1)
        i, frac = _column(x, n)
        j = base + i
        alias = np.uint64(frac >= step_thr[j])
        base = (step_off[j] >> (alias << np.uint64(5))) & _LOW32
        pick = np.uint64(2) * j + alias
        w = step_word[pick]
        r = step_r[pick]
        a = (w >> np.uint64(32)) & _ACT
        if noise_kind == 1:
            z, s0, s1 = normal(s0, s1)
            r += noise_scale[s, a] * z
        elif noise_kind == 2:
            u, s0, s1 = uniform(s0, s1)
            r += noise_scale[s, a] * (u - 0.5)
        buf_s[t] = s
        buf_a[t] = a
        buf_r[t] = r
        s = w & _LOW32
        if w >> np.uint64(63):
            L = t + 1
            break
    buf_s[L] = s
    return L, u_geo, s0, s1


@njit(inline="always", cache=True)
def _episode_scalars(L, buf_s, buf_a, buf_r, gpow, pi, pi2sum, linear, score, need_r, need_w, need_z, cnt, ns,
                     zvec):
    """When asked: the discounted return R, the proxy W(tau) and the exact ||z||^2 of one episode."""
    Rep = 0.0
    if need_r:
        for t in range(L):
            Rep += gpow[t] * buf_r[t]
    W = 0.0
    if need_w:
        for t in range(L):
            s = buf_s[t]
            W += 1.0 - 2.0 * pi[s, buf_a[t]] + pi2sum[s]
    Z = 0.0
    if need_z:
        A = pi.shape[1]
        if linear:
            d = zvec.shape[0]
            for k in range(d):
                zvec[k] = 0.0
            for t in range(L):
                for k in range(d):
                    zvec[k] += score[buf_s[t], buf_a[t], k]
            for k in range(d):
                Z += zvec[k] * zvec[k]
        else:
            # tabular: z restricted to row s is n_s - N_s pi_s (action counts n_s, visits N_s)
            for t in range(L):
                cnt[buf_s[t], buf_a[t]] += 1.0
                ns[buf_s[t]] += 1.0
            for t in range(L):
                s = buf_s[t]
                if ns[s] > 0.0:
                    acc = 0.0
                    for b in range(A):
                        v = cnt[s, b] - ns[s] * pi[s, b]
                        acc += v * v
                        cnt[s, b] = 0.0
                    Z += acc
                    ns[s] = 0.0
    return Rep, W, Z


# Accumulation goes through these so that the CUDA module can swap in atomic adds while
# compiling the very same per-episode code for the device (see pgbench.kernels.cuda).
@njit(inline="always", cache=True)
def _acc2(arr, i, j, v):
    arr[i, j] += v


@njit(inline="always", cache=True)
def _acc3(arr, i, j, k, v):
    arr[i, j, k] += v


@njit(inline="always", cache=True)
def _acc4(arr, i, j, k, m, v):
    arr[i, j, k, m] += v


@njit(cache=True)
def _episode_stats(row, L, buf_s, buf_a, buf_r, G_t, Rep, W, Z, gamma, finite, rho_ratio, cap,
                   out_stats, out_SG, out_fit_sum, out_fit_cnt, out_rho):
    """Pass-1 sums of one episode into row ``row`` of the outputs."""
    _acc2(out_stats, row, ST_R, Rep)
    _acc2(out_stats, row, ST_W, W)
    _acc2(out_stats, row, ST_WR, W * Rep)
    _acc2(out_stats, row, ST_Z, Z)
    _acc2(out_stats, row, ST_ZR, Z * Rep)
    _acc2(out_stats, row, ST_N, 1.0)
    want_sg = out_SG.shape[1] > 0
    want_fit = out_fit_sum.shape[1] > 0
    if want_sg or want_fit:
        G = 0.0
        for t in range(L - 1, -1, -1):
            G = buf_r[t] + gamma * G
            G_t[t] = G
        if want_sg:
            for t in range(L):
                _acc2(out_SG, row, t, G_t[t])
        if want_fit:
            for t in range(L):
                ti = t if finite else 0
                _acc3(out_fit_sum, row, ti, buf_s[t], G_t[t])
                _acc3(out_fit_cnt, row, ti, buf_s[t], 1.0)
    if out_rho.shape[1] > 0:
        w = 1.0
        for t in range(cap):
            if t < L:
                w *= rho_ratio[buf_s[t], buf_a[t]]
            _acc2(out_rho, row, t, w)


@njit(inline="always", cache=True)
def _geometric_horizon(u_geo, gamma, lg, cap):
    """H with Pr(H >= t) = gamma^t (killing with probability 1 - gamma per step), capped."""
    if lg != 0.0:
        hf = math.floor(math.log(1.0 - u_geo) * lg)
        if hf < cap:
            return int(hf)
        return cap
    if gamma == 0.0:
        return 0
    return cap


# Pass 2's estimator branches, each behind a module-level switch. Numba reads globals as
# compile-time constants and prunes a branch whose switch is False, so :func:`score_weights_for`
# compiles, per set of branches a cell uses, a kernel with only those (compiling every branch
# took most of a cold `measure`). Here, for the CPU kernel of every estimator, the GPU port and
# the exact enumeration, all are on.
_BRANCH_OF = {RTG: "RTG", RTG_NO_GAMMA: "RTG_NO_GAMMA", VALUE_B: "VALUE_B", TIME_B_LOO: "TIME_B_LOO",
              TRUE_ADV: "TRUE_ADV", ALL_ACTION: "ALL_ACTION", GAE: "GAE", GEOMETRIC: "GEOMETRIC", IS_PD: "IS_PD",
              ENTROPY: "ENTROPY", FISHER: "FISHER"}  # any other code: an episode-level baseline
_BRANCHES = tuple(_BRANCH_OF.values()) + ("EPISODE",)
_B_RTG = _B_RTG_NO_GAMMA = _B_VALUE_B = _B_TIME_B_LOO = _B_TRUE_ADV = _B_ALL_ACTION = True
_B_GAE = _B_GEOMETRIC = _B_IS_PD = _B_ENTROPY = _B_FISHER = _B_EPISODE = True


@njit(inline="always", cache=True)
def _episode_weights(row, k, N, L, u_geo, ep, Rep, W, Z, env, est, batch, need_rho, want_proxy, outC, out_proxy):
    """Pass 2 for one episode: ``outC[row, e, s_t, a_t] += psi^e_t`` for every estimator e.

    The arguments come in tuples: the episode ``ep = (buf_s, buf_a, buf_r, cumrho)``, the problem
    ``env = (gamma, gpow, cap, finite, lg, pi, logpi, terminal)``, the estimators ``est = (codes,
    fpar, crit, critics, Vtab, Qtab, rho_ratio)`` and the pass-1 batch statistics ``batch =
    (b_stats, b_SG, b_fitV, b_rho)`` of trial ``k``. Fewer than 30 arguments let numba inline it
    into the parallel loop (CPython passes longer calls as ``*args``, which numba cannot inline);
    a call per episode with 20-odd arrays cost about 2.5 ns per step on a 50-step episode.

    The loop is estimator-major: one tight backward pass over the episode per estimator (a
    single loop dispatching on every estimator at every step ran at half the speed). Additions
    into each ``outC[row, e]`` happen in backward time order either way.
    """
    buf_s, buf_a, buf_r, cumrho = ep
    gamma, gpow, cap, finite, lg, pi, logpi, terminal = env
    codes, fpar, crit, critics, Vtab, Qtab, rho_ratio = est
    b_stats, b_SG, b_fitV, b_rho = batch
    A = pi.shape[1]
    n_est = codes.shape[0]
    SR = b_stats[k, ST_R]
    SW = b_stats[k, ST_W]
    SWR = b_stats[k, ST_WR]
    SZ = b_stats[k, ST_Z]
    SZR = b_stats[k, ST_ZR]
    if need_rho:
        w = 1.0
        for t in range(L):
            w *= rho_ratio[buf_s[t], buf_a[t]]
            cumrho[t] = w
    if want_proxy:
        b_w = SWR / SW if SW > 0 else 0.0
        b_loo = (SR - Rep) / (N - 1) if N > 1 else 0.0
        _acc2(out_proxy, row, PX_W, W)
        _acc2(out_proxy, row, PX_Z, Z)
        _acc2(out_proxy, row, PX_WW, W * W)
        _acc2(out_proxy, row, PX_ZZ, Z * Z)
        _acc2(out_proxy, row, PX_WZ, W * Z)
        _acc2(out_proxy, row, PX_AW, (Rep - b_w) ** 2 * W)
        _acc2(out_proxy, row, PX_ALOO, (Rep - b_loo) ** 2 * W)
        _acc2(out_proxy, row, PX_N, 1.0)
    for e in range(n_est):
        code = codes[e]
        if _B_RTG and code == RTG:
            G = 0.0
            for t in range(L - 1, -1, -1):
                G = buf_r[t] + gamma * G
                _acc4(outC, row, e, buf_s[t], buf_a[t], gpow[t] * G)
        elif _B_RTG_NO_GAMMA and code == RTG_NO_GAMMA:
            G = 0.0
            for t in range(L - 1, -1, -1):
                G = buf_r[t] + gamma * G
                _acc4(outC, row, e, buf_s[t], buf_a[t], G)
        elif _B_VALUE_B and code == VALUE_B:
            G = 0.0
            shift = fpar[e, 0]  # value_baseline:shift=d (V + d, still unbiased)
            for t in range(L - 1, -1, -1):
                G = buf_r[t] + gamma * G
                tv = t if finite else 0
                _acc4(outC, row, e, buf_s[t], buf_a[t], gpow[t] * (G - Vtab[tv, buf_s[t]] - shift))
        elif _B_TIME_B_LOO and code == TIME_B_LOO:
            G = 0.0
            for t in range(L - 1, -1, -1):
                G = buf_r[t] + gamma * G
                _acc4(outC, row, e, buf_s[t], buf_a[t], gpow[t] * (G - (b_SG[k, t] - G) / (N - 1)))
        elif _B_TRUE_ADV and code == TRUE_ADV:
            for t in range(L - 1, -1, -1):
                tv = t if finite else 0
                s = buf_s[t]
                a = buf_a[t]
                _acc4(outC, row, e, s, a, gpow[t] * (Qtab[tv, s, a] - Vtab[tv, s]))
        elif _B_ALL_ACTION and code == ALL_ACTION:
            for t in range(L - 1, -1, -1):
                tv = t if finite else 0
                s = buf_s[t]
                for b in range(A):
                    _acc4(outC, row, e, s, b, gpow[t] * pi[s, b] * Qtab[tv, s, b])
        elif _B_GAE and code == GAE:
            ci = crit[e]
            lam = fpar[e, 0]
            adv = 0.0
            for t in range(L - 1, -1, -1):
                s = buf_s[t]
                sn = buf_s[t + 1]
                tv = t if finite else 0
                tvn = t + 1 if finite else 0
                if ci >= 0:
                    v_t = critics[ci, tv, s]
                    v_n = critics[ci, tvn, sn]
                else:
                    v_t = b_fitV[k, tv, s]
                    v_n = b_fitV[k, tvn, sn]
                if t == L - 1 and terminal[sn]:
                    v_n = 0.0
                delta = buf_r[t] + gamma * v_n - v_t
                adv = delta + gamma * lam * adv
                _acc4(outC, row, e, s, buf_a[t], gpow[t] * adv)
        elif _B_GEOMETRIC and code == GEOMETRIC:
            # the episode of the process killed with probability 1 - gamma per step is the prefix t <= H
            H = _geometric_horizon(u_geo, gamma, lg, cap)
            acc = 0.0
            for t in range(L - 1, -1, -1):
                if t <= H:
                    acc += buf_r[t]
                    _acc4(outC, row, e, buf_s[t], buf_a[t], acc)
        elif _B_IS_PD and code == IS_PD:
            weighted = fpar[e, 0] != 0.0
            acc = 0.0
            for t in range(L - 1, -1, -1):
                wk = cumrho[t]
                if weighted:
                    wk = wk / b_rho[k, t] * N
                acc += gpow[t] * wk * buf_r[t]
                _acc4(outC, row, e, buf_s[t], buf_a[t], acc)
        elif _B_ENTROPY and code == ENTROPY:
            beta = fpar[e, 0]
            acc = 0.0
            for t in range(L - 1, -1, -1):
                s = buf_s[t]
                a = buf_a[t]
                acc = (buf_r[t] - beta * logpi[s, a]) + gamma * acc
                _acc4(outC, row, e, s, a, gpow[t] * acc)
        elif _B_FISHER and code == FISHER:
            for t in range(L - 1, -1, -1):
                _acc4(outC, row, e, buf_s[t], buf_a[t], gpow[t])
        elif _B_EPISODE:
            # episode-level baselines: one weight for every step of the episode
            if code == REINFORCE:
                psi = Rep
            elif code == CONST_B or code == OPT_CONST_B:
                psi = Rep - fpar[e, 0]
            elif code == BATCH_MEAN_B:
                psi = Rep - SR / N
            elif code == RLOO:
                psi = Rep - (SR - Rep) / (N - 1)
            elif code == W_B:
                psi = Rep - (SWR / SW if SW > 0 else 0.0)
            elif code == W_B_LOO:
                den = SW - W
                psi = Rep - ((SWR - W * Rep) / den if den > 0 else 0.0)
            elif code == SCORE_NORM_B:
                psi = Rep - (SZR / SZ if SZ > 0 else 0.0)
            else:
                continue
            for t in range(L - 1, -1, -1):
                _acc4(outC, row, e, buf_s[t], buf_a[t], psi)


@njit(cache=True)
def _needs(codes, want_proxy):
    """Which episode scalars pass 2 must compute: the return R, the proxy W, cumulative ratios."""
    need_r = want_proxy
    need_w = want_proxy
    need_rho = False
    for e in range(codes.shape[0]):
        c = codes[e]
        need_r = need_r or c == REINFORCE or c == CONST_B or c == OPT_CONST_B or c == BATCH_MEAN_B or c == RLOO \
            or c == W_B or c == W_B_LOO or c == SCORE_NORM_B
        need_w = need_w or c == W_B or c == W_B_LOO
        need_rho = need_rho or c == IS_PD
    return need_r, need_w, need_rho


def _log_inv_gamma(gamma: float) -> float:
    return 1.0 / math.log(gamma) if 0.0 < gamma < 1.0 else 0.0


@njit(parallel=True, cache=True)
def _batch_stats(seed, cell, trial0, n_trials, N, n_chunks,
                 rho_thr, rho_alias, n_slots, step_thr, step_off, step_word, step_r, noise_kind, noise_scale,
                 pi, pi2sum, terminal, gamma, gpow, cap, finite, linear, score, need_z, rho_ratio,
                 out_stats, out_SG, out_fit_sum, out_fit_cnt, out_rho):
    """Pass 1: per work item, sums over its episodes of R, W, W R, ||z||^2, ||z||^2 R, the
    reward-to-go per step (for leave-one-out time baselines), per-(t, s) returns (fitted critic)
    and per-step cumulative importance ratios (weighted IS)."""
    S, A = pi.shape
    n_items = n_trials * n_chunks
    per = (N + n_chunks - 1) // n_chunks
    for item in prange(n_items):
        trial = trial0 + item // n_chunks
        c = item % n_chunks
        buf_s = np.empty(cap + 1, np.int64)
        buf_a = np.empty(cap, np.int64)
        buf_r = np.empty(cap)
        G_t = np.empty(cap)
        cnt = np.zeros((S, A)) if (need_z and not linear) else np.zeros((1, 1))
        ns = np.zeros(S) if (need_z and not linear) else np.zeros(1)
        zvec = np.zeros(score.shape[2])
        for i in range(c * per, min(N, (c + 1) * per)):
            s0, s1 = stream(seed, cell, np.uint64(trial), np.uint64(i))
            L, u_geo, s0, s1 = _rollout(s0, s1, rho_thr, rho_alias, n_slots, step_thr, step_off, step_word, step_r,
                                         noise_kind, noise_scale, cap, buf_s, buf_a, buf_r)
            Rep, W, Z = _episode_scalars(L, buf_s, buf_a, buf_r, gpow, pi, pi2sum, linear, score, True, True, need_z,
                                         cnt, ns, zvec)
            _episode_stats(item, L, buf_s, buf_a, buf_r, G_t, Rep, W, Z, gamma, finite, rho_ratio, cap,
                           out_stats, out_SG, out_fit_sum, out_fit_cnt, out_rho)
    return out_stats


@njit(parallel=True, cache=True)
def _score_weights(seed, cell, trial0, n_trials, N, n_chunks,
                   rho_thr, rho_alias, n_slots, step_thr, step_off, step_word, step_r, noise_kind, noise_scale,
                   pi, logpi, pi2sum, terminal, gamma, gpow, cap, finite, linear, score,
                   codes, fpar, crit, critics, Vtab, Qtab, rho_ratio,
                   b_stats, b_SG, b_fitV, b_rho, need_z, want_proxy, lg,
                   outC, out_proxy):
    """Pass 2: per work item and estimator e, ``C[e, s, a] += psi^e_t`` over its episodes.

    ``fpar[e]`` holds the estimator's scalar parameters (b, lambda, beta, weighted flag);
    ``crit[e]`` indexes ``critics`` (the critic's V per step, for gae/td0; -1 for the fitted
    critic, read from ``b_fitV``). ``b_*`` are the per-trial batch statistics of pass 1;
    ``lg = 1 / log(gamma)`` (0 when gamma is 0 or 1) draws geometric horizons.
    """
    S, A = pi.shape
    n_est = codes.shape[0]
    n_items = n_trials * n_chunks
    per = (N + n_chunks - 1) // n_chunks
    need_r, need_w, need_rho = _needs(codes, want_proxy)
    for item in prange(n_items):
        k = item // n_chunks
        trial = trial0 + k
        c = item % n_chunks
        buf_s = np.empty(cap + 1, np.int64)
        buf_a = np.empty(cap, np.int64)
        buf_r = np.empty(cap)
        cumrho = np.empty(cap)
        cnt = np.zeros((S, A)) if (need_z and not linear) else np.zeros((1, 1))
        ns = np.zeros(S) if (need_z and not linear) else np.zeros(1)
        zvec = np.zeros(score.shape[2])
        for i in range(c * per, min(N, (c + 1) * per)):
            s0, s1 = stream(seed, cell, np.uint64(trial), np.uint64(i))
            L, u_geo, s0, s1 = _rollout(s0, s1, rho_thr, rho_alias, n_slots, step_thr, step_off, step_word, step_r,
                                         noise_kind, noise_scale, cap, buf_s, buf_a, buf_r)
            Rep, W, Z = _episode_scalars(L, buf_s, buf_a, buf_r, gpow, pi, pi2sum, linear, score, need_r, need_w,
                                         need_z, cnt, ns, zvec)
            _episode_weights(item, k, N, L, u_geo, (buf_s, buf_a, buf_r, cumrho), Rep, W, Z,
                             (gamma, gpow, cap, finite, lg, pi, logpi, terminal),
                             (codes, fpar, crit, critics, Vtab, Qtab, rho_ratio), (b_stats, b_SG, b_fitV, b_rho),
                             need_rho, want_proxy, outC, out_proxy)
    return outC


_USER_KERNELS: dict = {}


def user_kernel(fn, with_end: bool = False, boundscheck: bool = False):
    """The pass-2 kernel for a user's per-episode weight function ``fn`` (compiled once per fn).

    ``with_end``: fn takes a tenth argument, how the episode ended (``END_TERMINAL``,
    ``END_HORIZON`` or ``END_CAP``); 9-argument functions are called without it.
    ``boundscheck``: fn (recompiled from its Python source) and the kernel check every index, so
    a write out of range raises ``IndexError`` instead of corrupting memory or crashing.
    """
    key = (fn, with_end, boundscheck)
    if key in _USER_KERNELS:
        return _USER_KERNELS[key]
    if boundscheck:
        fn = njit(boundscheck=True)(fn.py_func)
    if with_end:
        call = fn
    else:
        @njit(inline="always")
        def call(buf_s, buf_a, buf_r, L, gamma, pi, Vtab, Qtab, psi, end):
            fn(buf_s, buf_a, buf_r, L, gamma, pi, Vtab, Qtab, psi)

    @njit(parallel=True, boundscheck=boundscheck)
    def kernel(seed, cell, trial0, n_trials, N, n_chunks, rho_thr, rho_alias, n_slots, step_thr, step_off, step_word,
               step_r, noise_kind, noise_scale, gamma, cap, pi, Vtab, Qtab, terminal, cut, outC):
        n_items = n_trials * n_chunks
        per = (N + n_chunks - 1) // n_chunks
        for item in prange(n_items):
            trial = trial0 + item // n_chunks
            c = item % n_chunks
            buf_s = np.empty(cap + 1, np.int64)
            buf_a = np.empty(cap, np.int64)
            buf_r = np.empty(cap)
            # the user's function gets copies of the episode (what it writes there cannot move the
            # weights below) and a psi zeroed per episode (an entry it leaves unwritten is 0, as in
            # the exact enumeration, not the previous episode's value)
            u_s = np.empty(cap + 1, np.int64)
            u_a = np.empty(cap, np.int64)
            u_r = np.empty(cap)
            psi = np.zeros(cap)
            for i in range(c * per, min(N, (c + 1) * per)):
                s0, s1 = stream(seed, cell, np.uint64(trial), np.uint64(i))
                L, u_geo, s0, s1 = _rollout(s0, s1, rho_thr, rho_alias, n_slots, step_thr, step_off, step_word,
                                             step_r, noise_kind, noise_scale, cap, buf_s, buf_a, buf_r)
                end = END_TERMINAL if (L > 0 and terminal[buf_s[L]]) else cut
                for t in range(L):
                    u_s[t] = buf_s[t]
                    u_a[t] = buf_a[t]
                    u_r[t] = buf_r[t]
                    psi[t] = 0.0
                u_s[L] = buf_s[L]
                call(u_s, u_a, u_r, L, gamma, pi, Vtab, Qtab, psi, end)
                for t in range(L):
                    outC[item, 0, buf_s[t], buf_a[t]] += psi[t]
        return outC

    _USER_KERNELS[key] = kernel
    return kernel



@njit(parallel=True, cache=True)
def _episodes(seed, cell, trial0, n_trials, N, rho_thr, rho_alias, n_slots, step_thr, step_off, step_word, step_r,
              noise_kind, noise_scale, terminal, cap, states, actions, rewards, lengths, ended):
    """The episodes of trials ``trial0 ..`` as padded arrays, for estimators written in Python.

    Episode i of trial k draws the same stream ``(seed, cell, k, i)`` through the same
    :func:`_rollout` as the built-in passes, so user estimators see the built-ins' episodes
    (common random numbers). ``states`` (n_trials, N, cap + 1) is padded with -1 after the state
    reached last, ``actions`` with -1 and ``rewards`` with 0 after the last step; ``ended[k, i]``
    is 1 when the episode entered a terminal state, else 0 (cut by the horizon or the cap).
    Each trial writes its own rows, so the arrays do not depend on the thread count.
    """
    for k in prange(n_trials):
        # roll out into contiguous buffers (the built-ins' layout), then copy into the padded rows
        buf_s = np.empty(cap + 1, np.int64)
        buf_a = np.empty(cap, np.int64)
        buf_r = np.empty(cap)
        for i in range(N):
            s0, s1 = stream(seed, cell, np.uint64(trial0 + k), np.uint64(i))
            L, u_geo, s0, s1 = _rollout(s0, s1, rho_thr, rho_alias, n_slots, step_thr, step_off, step_word, step_r,
                                         noise_kind, noise_scale, cap, buf_s, buf_a, buf_r)
            for t in range(L):
                states[k, i, t] = buf_s[t]
                actions[k, i, t] = buf_a[t]
                rewards[k, i, t] = buf_r[t]
            states[k, i, L] = buf_s[L]
            for t in range(L + 1, cap + 1):
                states[k, i, t] = -1
            for t in range(L, cap):
                actions[k, i, t] = -1
                rewards[k, i, t] = 0.0
            lengths[k, i] = L
            ended[k, i] = 1 if (L > 0 and terminal[buf_s[L]]) else 0
    return lengths


@njit(cache=True)
def _psi_weights(states, actions, lengths, psi, C):
    """Score weights ``C[k, s, a] = sum_i sum_(t < L_i) psi[k, i, t] [s_t = s, a_t = a]`` of a block
    of trials (a Python batch estimator's per-step weights), adding episode by episode and step by
    step (the order of ``np.bincount`` over the flattened steps, so the same bits). Padded steps
    are skipped whatever psi holds there. Returns ``bad`` (n_trials,) bool: a non-finite psi on a
    step the trial's episodes took. One thread: about 3 us a trial at N = 64, T = 50 (a parallel
    loop over trials was 200x slower)."""
    n_trials, N = lengths.shape
    bad = np.zeros(n_trials, np.bool_)
    for k in range(n_trials):
        for s in range(C.shape[1]):
            for a in range(C.shape[2]):
                C[k, s, a] = 0.0
        nonfinite = False
        for i in range(N):
            for t in range(lengths[k, i]):
                w = psi[k, i, t]
                nonfinite |= not np.isfinite(w)
                C[k, states[k, i, t], actions[k, i, t]] += w
        bad[k] = nonfinite
    return bad


_PASS2_VARIANTS: dict = {}
# One `measure` compiles one variant (10.7 s instead of 18.6 s for every branch); a suite run
# meets many branch sets, and compiling each set apart cost more than the one kernel with every
# branch (quick start: over 4m30 of CPU against 4m13), so suite runs switch this off.
PER_BRANCH = True


def on_disk(dispatcher) -> bool:
    """Whether numba's on-disk cache holds a current compilation of this kernel (its index
    exists and matches the source; numba's own check). False when unsure."""
    try:
        return bool(dispatcher._cache._cache_file._load_index())
    except Exception:  # a numba without these internals
        return False


def score_weights_for(codes):
    """Pass 2 for these estimator codes, compiling as little as possible:

    - a variant already compiled (in this process or in numba's cache) is used;
    - else the full kernel, when it is compiled or cached (no compilation at all: once a suite
      run or an earlier ``measure`` has the all-branch kernel, a new set of estimators costs no
      pass-2 compile);
    - else the variant for these codes is compiled (about half the full kernel's time for a
      single estimator).

    A variant is the same function (same bytecode, hence the same arithmetic and bit-identical
    weights) over a copy of this module's namespace whose switches are off for the other
    branches. Each variant has its own name, so numba caches it on disk beside the full kernel."""
    used = frozenset(_BRANCH_OF.get(int(c), "EPISODE") for c in codes)
    if used == frozenset(_BRANCHES) or not PER_BRANCH:
        return _score_weights
    fn = _PASS2_VARIANTS.get(used)
    if fn is None:
        fn = _PASS2_VARIANTS[used] = _variant(used)
    if fn.overloads or on_disk(fn):
        return fn
    if _score_weights.overloads or on_disk(_score_weights):
        return _score_weights
    return fn


def _variant(used):
    import types
    tag = "_".join(b.lower() for b in _BRANCHES if b in used)
    ns = dict(globals())
    ns.update({"_B_" + b: b in used for b in _BRANCHES})

    def variant(dispatcher, name, **options):
        py = dispatcher.py_func
        f = types.FunctionType(py.__code__, ns, name, py.__defaults__, py.__closure__)
        f.__qualname__ = name
        f.__doc__ = py.__doc__
        ns[py.__name__] = njit(cache=True, **options)(f)
        return ns[py.__name__]

    variant(_episode_weights, "_episode_weights__" + tag, inline="always")
    return variant(_score_weights, "_score_weights__" + tag, parallel=True)
