"""Learning runs in numba: R independent runs of T policy-gradient updates (tabular softmax).

Every update samples a fresh batch of N episodes at the current theta from the streams of
:mod:`pgbench.kernels.rng` keyed by ``(seed, cell + step, run, episode)``: a run's numbers
depend only on its own index, so results are bit-identical whatever the thread count, and
the first R runs of a job of 2R runs are the job of R runs. Every estimator of a job uses
the same numbers (common random numbers). The exact quantities (J, V, Q, the discounted
visitation and the exact gradient) are recomputed at every step from the model, so the
oracle baselines, the exact Fisher of ``npg`` and the exact J of every run are exact.

The helpers are inlined into the parallel loop (``inline="always"``): called, they took and released a
reference on every shared read-only array at every update, and the two threads fought over those
counters (the bandit runs went twice as fast inlined).

Estimator codes are the catalogue's (:mod:`pgbench.estimators.catalogue`), plus
:data:`EXACT` for the deterministic exact-gradient path.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from pgbench.kernels.rng import normal, stream, uniform

# catalogue codes this kernel runs (kept literal: kernels never import upper layers)
REINFORCE, RTG, CONST_B, BATCH_MEAN_B, RLOO, OPT_CONST_B, VALUE_B, TRUE_ADV = 0, 1, 3, 4, 5, 9, 10, 12
EXACT = -1
SGD, NPG, ADAM = 0, 1, 2
ERR_NPG_SINGULAR = 1


@njit(cache=True)
def _solve(M, b, out):
    """Solve M x = b in place (Gaussian elimination, partial pivoting); M and b are overwritten.
    Returns False when M is singular."""
    n = b.shape[0]
    for c in range(n):
        p = c
        big = abs(M[c, c])
        for i in range(c + 1, n):
            if abs(M[i, c]) > big:
                big = abs(M[i, c])
                p = i
        if big == 0.0:
            return False
        if p != c:
            for j in range(n):
                tmp = M[c, j]
                M[c, j] = M[p, j]
                M[p, j] = tmp
            tmp = b[c]
            b[c] = b[p]
            b[p] = tmp
        for i in range(c + 1, n):
            f = M[i, c] / M[c, c]
            if f != 0.0:
                for j in range(c, n):
                    M[i, j] -= f * M[c, j]
                b[i] -= f * b[c]
    for i in range(n - 1, -1, -1):
        acc = b[i]
        for j in range(i + 1, n):
            acc -= M[i, j] * out[j]
        out[i] = acc / M[i, i]
    return True


@njit(inline="always", cache=True)
def _softmax(theta, pi, pc):
    S, A = theta.shape
    for s in range(S):
        m = theta[s, 0]
        for a in range(1, A):
            if theta[s, a] > m:
                m = theta[s, a]
        z = 0.0
        for a in range(A):
            pi[s, a] = math.exp(theta[s, a] - m)
            z += pi[s, a]
        c = 0.0
        for a in range(A):
            pi[s, a] /= z
            c += pi[s, a]
            pc[s, a] = c


@njit(inline="always", cache=True)
def _evaluate(pi, nidx, nprob, R, rho0, terminal, gamma, finite, nT, Vt, Qt, M, rhs, sol):
    """V_t, Q_t of pi (finite: backward recursion over nT steps; unbounded: a linear solve, row 0).
    Returns J = rho0 . V_0 (NaN when the unbounded system is singular)."""
    S, A, K = nprob.shape
    if finite:
        for s in range(S):
            Vt[nT, s] = 0.0
        for t in range(nT - 1, -1, -1):
            for s in range(S):
                if terminal[s]:
                    Vt[t, s] = 0.0
                    for a in range(A):
                        Qt[t, s, a] = 0.0
                    continue
                v = 0.0
                for a in range(A):
                    q = R[s, a]
                    if gamma != 0.0:
                        acc = 0.0
                        for k in range(K):
                            acc += nprob[s, a, k] * Vt[t + 1, nidx[s, a, k]]
                        q += gamma * acc
                    Qt[t, s, a] = q
                    v += pi[s, a] * q
                Vt[t, s] = v
    else:
        for i in range(S):
            for j in range(S):
                M[i, j] = 0.0
            M[i, i] = 1.0
            rhs[i] = 0.0
        for s in range(S):
            if terminal[s]:
                continue
            r = 0.0
            for a in range(A):
                r += pi[s, a] * R[s, a]
                for k in range(K):
                    M[s, nidx[s, a, k]] -= gamma * pi[s, a] * nprob[s, a, k]
            rhs[s] = r
        if not _solve(M, rhs, sol):
            return np.nan
        for s in range(S):
            Vt[0, s] = 0.0 if terminal[s] else sol[s]
            Vt[1, s] = Vt[0, s]
        for s in range(S):
            for a in range(A):
                if terminal[s]:
                    Qt[0, s, a] = 0.0
                    continue
                acc = 0.0
                for k in range(K):
                    acc += nprob[s, a, k] * Vt[0, nidx[s, a, k]]
                Qt[0, s, a] = R[s, a] + gamma * acc
    J = 0.0
    for s in range(S):
        J += rho0[s] * Vt[0, s]
    return J


@njit(inline="always", cache=True)
def _gradient(pi, nidx, nprob, rho0, terminal, gamma, finite, nT, Vt, Qt, grad, W, dt, dn, M, rhs, sol):
    """Exact grad J (S, A) and the Fisher's state weights W(s) = sum_t gamma^t d_t(s)."""
    S, A, K = nprob.shape
    for s in range(S):
        W[s] = 0.0
        for a in range(A):
            grad[s, a] = 0.0
    if finite:
        for s in range(S):
            dt[s] = rho0[s]
        g = 1.0
        for t in range(nT):
            for s in range(S):
                dn[s] = 0.0
            for s in range(S):
                w = dt[s]
                if terminal[s] or w == 0.0:
                    continue
                W[s] += g * w
                for a in range(A):
                    grad[s, a] += g * w * pi[s, a] * (Qt[t, s, a] - Vt[t, s])
                    pw = w * pi[s, a]
                    for k in range(K):
                        dn[nidx[s, a, k]] += pw * nprob[s, a, k]
            for s in range(S):
                dt[s] = dn[s]
            g *= gamma
    else:
        # (I - gamma P_pi^T) d = rho0, with no flow out of terminal states
        for i in range(S):
            for j in range(S):
                M[i, j] = 0.0
            M[i, i] = 1.0
            rhs[i] = rho0[i]
        for s in range(S):
            if terminal[s]:
                continue
            for a in range(A):
                for k in range(K):
                    M[nidx[s, a, k], s] -= gamma * pi[s, a] * nprob[s, a, k]
        if not _solve(M, rhs, sol):
            return False
        for s in range(S):
            if terminal[s]:
                continue
            W[s] = sol[s]
            for a in range(A):
                grad[s, a] = sol[s] * pi[s, a] * (Qt[0, s, a] - Vt[0, s])
    return True


@njit(inline="always", cache=True)
def _b_star(pi, R, rho0):
    """b* = E[R ||z||^2] / E[||z||^2] of a one-step problem (z = e_a - pi(.|s))."""
    S, A = pi.shape
    num = 0.0
    den = 0.0
    for s in range(S):
        if rho0[s] == 0.0:
            continue
        p2 = 0.0
        for a in range(A):
            p2 += pi[s, a] * pi[s, a]
        for a in range(A):
            zn = 1.0 - 2.0 * pi[s, a] + p2
            num += rho0[s] * pi[s, a] * R[s, a] * zn
            den += rho0[s] * pi[s, a] * zn
    return num / den if den > 0.0 else 0.0


@njit(inline="always", cache=True)
def _pick(cum, n, u):
    for i in range(n - 1):
        if u < cum[i]:
            return i
    return n - 1


@njit(inline="always", cache=True)
def _sample_batch(seed, cell, run, N, pc, rho_cum, nidx, ncum, R, noise_kind, noise_scale, terminal, gamma, H,
                  buf_s, buf_a, buf_r, lens, Rep):
    S, A, K = ncum.shape
    for i in range(N):
        s0, s1 = stream(seed, cell, run, np.uint64(i))
        u, s0, s1 = uniform(s0, s1)
        s = _pick(rho_cum, S, u)
        L = 0
        ret = 0.0
        g = 1.0
        for t in range(H):
            if terminal[s]:
                break
            u, s0, s1 = uniform(s0, s1)
            a = _pick(pc[s], A, u)
            r = R[s, a]
            if noise_kind == 1:
                z, s0, s1 = normal(s0, s1)
                r += noise_scale[s, a] * z
            elif noise_kind == 2:
                u, s0, s1 = uniform(s0, s1)
                r += noise_scale[s, a] * (u - 0.5)
            buf_s[i, t] = s
            buf_a[i, t] = a
            buf_r[i, t] = r
            ret += g * r
            g *= gamma
            L += 1
            if K > 1:
                u, s0, s1 = uniform(s0, s1)
                s = nidx[s, a, _pick(ncum[s, a], K, u)]
            else:
                s = nidx[s, a, 0]
        lens[i] = L
        Rep[i] = ret


@njit(inline="always", cache=True)
def _estimate(code, b, N, buf_s, buf_a, buf_r, lens, Rep, gamma, gpow, finite, Vt, Qt, pi, C, Cs, g):
    """g = (1/N) sum_i sum_t psi_t (e_{a_t} - pi(.|s_t)) for the estimator ``code``."""
    S, A = pi.shape
    for s in range(S):
        Cs[s] = 0.0
        for a in range(A):
            C[s, a] = 0.0
    SR = 0.0
    for i in range(N):
        SR += Rep[i]
    for i in range(N):
        L = lens[i]
        if code == RTG or code == VALUE_B or code == TRUE_ADV:
            G = 0.0
            for t in range(L - 1, -1, -1):
                G = buf_r[i, t] + gamma * G
                s = buf_s[i, t]
                a = buf_a[i, t]
                tv = t if finite else 0
                gp = gpow[t]
                if code == RTG:
                    psi = gp * G
                elif code == VALUE_B:
                    psi = gp * (G - Vt[tv, s] - b)
                else:
                    psi = gp * (Qt[tv, s, a] - Vt[tv, s])
                C[s, a] += psi
                Cs[s] += psi
        else:
            if code == REINFORCE:
                psi = Rep[i]
            elif code == BATCH_MEAN_B:
                psi = Rep[i] - SR / N
            elif code == RLOO:
                psi = Rep[i] - (SR - Rep[i]) / (N - 1)
            else:  # CONST_B, OPT_CONST_B
                psi = Rep[i] - b
            for t in range(L):
                s = buf_s[i, t]
                C[s, buf_a[i, t]] += psi
                Cs[s] += psi
    for s in range(S):
        for a in range(A):
            g[s, a] = (C[s, a] - pi[s, a] * Cs[s]) / N


@njit(inline="always", cache=True)
def _natural(g, pi, W, x):
    """Min-norm solution of F x = g for the tabular softmax Fisher F = blockdiag_s W(s)(diag pi_s - pi_s pi_s^T).
    Returns False when g moves a direction the Fisher does not reach (W(s) = 0 or pi(a|s) = 0)."""
    S, A = pi.shape
    for s in range(S):
        scale = 0.0
        for a in range(A):
            scale = max(scale, abs(g[s, a]))
        if W[s] <= 0.0:
            if scale > 0.0:
                return False
            for a in range(A):
                x[s, a] = 0.0
            continue
        m = 0.0
        n = 0
        for a in range(A):
            if pi[s, a] > 0.0:
                m += g[s, a] / pi[s, a]
                n += 1
            elif g[s, a] != 0.0:
                return False
        m /= n
        for a in range(A):
            x[s, a] = (g[s, a] / pi[s, a] - m) / W[s] if pi[s, a] > 0.0 else 0.0
    return True


@njit(parallel=True, cache=True)
def train_runs(seed, cell, run0, n_runs, T, N, codes, fpar, opt, lr, b1, b2, eps, theta0, rho0, rho_cum, nidx, nprob,
               ncum, R, noise_kind, noise_scale, terminal, gamma, finite, H, nT, rec, keep, J_star,
               out_J, out_gn, out_cos, out_regret, out_pi, out_err):
    """Run ``n_runs`` x ``len(codes)`` learning runs; see the module docstring.

    out_J, out_gn, out_cos: (E, n_runs, n_rec) exact J, exact ||grad J|| and cos(estimate, grad J)
    at the recorded steps ``rec``; out_regret (E, n_runs): sum_{t<T} (J* - J_t); out_pi
    (E, keep, n_rec, S, A): the policy of the first ``keep`` runs; out_err (E, n_runs, 2): error code, step."""
    E = codes.shape[0]
    S, A, K = nprob.shape
    n_rec = rec.shape[0]
    nv = nT + 1
    for job in prange(E * n_runs):
        e = job // n_runs
        r = job % n_runs
        run = np.uint64(run0 + r)
        code = codes[e]
        theta = theta0.copy()
        pi = np.empty((S, A))
        pc = np.empty((S, A))
        Vt = np.zeros((nv, S))
        Qt = np.zeros((nT, S, A))
        grad = np.zeros((S, A))
        W = np.zeros(S)
        dt = np.zeros(S)
        dn = np.zeros(S)
        Mm = np.zeros((S, S)) if not finite else np.zeros((1, 1))
        rhs = np.zeros(S)
        sol = np.zeros(S)
        C = np.zeros((S, A))
        Cs = np.zeros(S)
        g = np.zeros((S, A))
        x = np.zeros((S, A))
        m1 = np.zeros((S, A))
        m2 = np.zeros((S, A))
        nb = N if code != EXACT else 1
        buf_s = np.zeros((nb, H), dtype=np.int64)
        buf_a = np.zeros((nb, H), dtype=np.int64)
        buf_r = np.zeros((nb, H))
        lens = np.zeros(nb, dtype=np.int64)
        Rep = np.zeros(nb)
        gpow = np.empty(H + 1)
        gpow[0] = 1.0
        for t in range(H):
            gpow[t + 1] = gpow[t] * gamma
        regret = 0.0
        ri = 0
        pw1 = 1.0
        pw2 = 1.0
        for k in range(T + 1):
            _softmax(theta, pi, pc)
            J = _evaluate(pi, nidx, nprob, R, rho0, terminal, gamma, finite, nT, Vt, Qt, Mm, rhs, sol)
            recording = ri < n_rec and rec[ri] == k
            if k < T:
                regret += J_star - J
            need_grad = recording or code == EXACT or opt == NPG
            if need_grad:
                _gradient(pi, nidx, nprob, rho0, terminal, gamma, finite, nT, Vt, Qt, grad, W, dt, dn, Mm, rhs, sol)
            if k < T:
                if code == EXACT:
                    for s in range(S):
                        for a in range(A):
                            g[s, a] = grad[s, a]
                else:
                    b = fpar[e]
                    if code == OPT_CONST_B:
                        b += _b_star(pi, R, rho0)
                    _sample_batch(seed, cell + np.uint64(k), run, N, pc, rho_cum, nidx, ncum, R, noise_kind,
                                  noise_scale, terminal, gamma, H, buf_s, buf_a, buf_r, lens, Rep)
                    _estimate(code, b, N, buf_s, buf_a, buf_r, lens, Rep, gamma, gpow, finite, Vt, Qt, pi, C, Cs, g)
            if recording:
                out_J[e, r, ri] = J
                gn = 0.0
                for s in range(S):
                    for a in range(A):
                        gn += grad[s, a] * grad[s, a]
                out_gn[e, r, ri] = math.sqrt(gn)
                if k < T:
                    dot = 0.0
                    hn = 0.0
                    for s in range(S):
                        for a in range(A):
                            dot += g[s, a] * grad[s, a]
                            hn += g[s, a] * g[s, a]
                    out_cos[e, r, ri] = dot / math.sqrt(gn * hn) if gn > 0.0 and hn > 0.0 else np.nan
                else:
                    out_cos[e, r, ri] = np.nan
                if r < keep:
                    for s in range(S):
                        for a in range(A):
                            out_pi[e, r, ri, s, a] = pi[s, a]
                ri += 1
            if k == T:
                break
            if opt == NPG:
                if not _natural(g, pi, W, x):
                    out_err[e, r, 0] = ERR_NPG_SINGULAR
                    out_err[e, r, 1] = k
                    break
                for s in range(S):
                    for a in range(A):
                        theta[s, a] += lr * x[s, a]
            elif opt == ADAM:
                pw1 *= b1
                pw2 *= b2
                for s in range(S):
                    for a in range(A):
                        m1[s, a] = b1 * m1[s, a] + (1.0 - b1) * g[s, a]
                        m2[s, a] = b2 * m2[s, a] + (1.0 - b2) * g[s, a] * g[s, a]
                        theta[s, a] += lr * (m1[s, a] / (1.0 - pw1)) / (math.sqrt(m2[s, a] / (1.0 - pw2)) + eps)
            else:
                for s in range(S):
                    for a in range(A):
                        theta[s, a] += lr * g[s, a]
        out_regret[e, r] = regret


@njit(cache=True)
def batch_estimate(seed, cell, run, N, code, b, theta, rho0, rho_cum, nidx, nprob, ncum, R, noise_kind, noise_scale,
                   terminal, gamma, finite, H, nT):
    """One update's estimate at ``theta`` from the streams ``(seed, cell, run, episode)``, as
    :func:`train_runs` computes it (its step k uses ``cell + k``): tests replay it in NumPy."""
    S, A, K = nprob.shape
    pi = np.empty((S, A))
    pc = np.empty((S, A))
    Vt = np.zeros((nT + 1, S))
    Qt = np.zeros((nT, S, A))
    Mm = np.zeros((S, S)) if not finite else np.zeros((1, 1))
    rhs = np.zeros(S)
    sol = np.zeros(S)
    _softmax(theta, pi, pc)
    _evaluate(pi, nidx, nprob, R, rho0, terminal, gamma, finite, nT, Vt, Qt, Mm, rhs, sol)
    gpow = np.empty(H + 1)
    gpow[0] = 1.0
    for t in range(H):
        gpow[t + 1] = gpow[t] * gamma
    if code == OPT_CONST_B:
        b += _b_star(pi, R, rho0)
    buf_s = np.zeros((N, H), dtype=np.int64)
    buf_a = np.zeros((N, H), dtype=np.int64)
    buf_r = np.zeros((N, H))
    lens = np.zeros(N, dtype=np.int64)
    Rep = np.zeros(N)
    _sample_batch(seed, cell, run, N, pc, rho_cum, nidx, ncum, R, noise_kind, noise_scale, terminal, gamma, H,
                  buf_s, buf_a, buf_r, lens, Rep)
    C = np.zeros((S, A))
    Cs = np.zeros(S)
    g = np.zeros((S, A))
    _estimate(code, b, N, buf_s, buf_a, buf_r, lens, Rep, gamma, gpow, finite, Vt, Qt, pi, C, Cs, g)
    return g
