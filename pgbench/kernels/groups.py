"""Numba kernels of grouped sampling and of the group estimators (LLM reinforcement learning).

Grouped sampling: a batch of N = P G episodes is P groups of G; every episode of a group starts
in the same state, the one the group's first episode draws from rho0 on its own stream. Episode
i still draws its own stream ``(seed, cell, trial, i)`` and consumes its start-state draw, so with
G = 1 the episodes are those of ungrouped sampling, and the first episode of every group is the
ungrouped episode i whatever G is. The start is imposed through a one-column alias table whose
only column is aliased to that state (the rollout itself is :func:`pgbench.kernels.mdp._rollout`).

Group estimators: per-step weights psi (N, T) of one batch from its episodes, by the advantage,
aggregation and KL codes below; the estimate is ``(1/N) sum_i sum_t psi[i, t] grad log pi_t``.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from pgbench.estimators.groups import (ADV_NONE, ADV_LOO, ADV_MEAN_STD, ADV_MEAN_BATCHSTD, AGG_SEQ_SUM,
                                       AGG_SEQ_MEAN, AGG_TOKEN_MEAN, KL_NONE, KL_K1, KL_K2, KL_K3)
from pgbench.kernels.mdp import _alias_pick, _rollout
from pgbench.kernels.rng import next_u64, stream, uniform


@njit(cache=True)
def group_start(seed, cell, trial, leader, rho_thr, rho_alias):
    """The start state episode ``leader`` draws from rho0 on its stream (its second draw)."""
    s0, s1 = stream(seed, cell, np.uint64(trial), np.uint64(leader))
    u_geo, s0, s1 = uniform(s0, s1)
    x, s0, s1 = next_u64(s0, s1)
    return np.int64(_alias_pick(rho_thr, rho_alias, np.uint64(rho_thr.shape[0]), x))


@njit(parallel=True, cache=True)
def episodes_grouped(seed, cell, trial0, n_trials, N, G, rho_thr, rho_alias, n_slots, step_thr, step_off, step_word,
                     step_r, noise_kind, noise_scale, terminal, cap, states, actions, rewards, lengths, ended):
    """As :func:`pgbench.kernels.mdp._episodes`, with the episodes in groups of G sharing a start state."""
    for k in prange(n_trials):
        buf_s = np.empty(cap + 1, np.int64)
        buf_a = np.empty(cap, np.int64)
        buf_r = np.empty(cap)
        one_thr = np.zeros(1, np.uint64)  # column 0 always gives way to its alias: the group's start
        one_alias = np.zeros(1, np.int64)
        for i in range(N):
            trial = trial0 + k
            one_alias[0] = group_start(seed, cell, trial, i - i % G, rho_thr, rho_alias)
            s0, s1 = stream(seed, cell, np.uint64(trial), np.uint64(i))
            L, u_geo, s0, s1 = _rollout(s0, s1, one_thr, one_alias, n_slots, step_thr, step_off, step_word, step_r,
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


@njit(inline="always", cache=True)
def _std(x, lo, hi, ddof):
    n = hi - lo
    m = 0.0
    for i in range(lo, hi):
        m += x[i]
    m /= n
    ss = 0.0
    for i in range(lo, hi):
        ss += (x[i] - m) * (x[i] - m)
    return math.sqrt(ss / (n - ddof)), m


@njit(inline="always", cache=True)
def kl_grad_coef(kl, lr):
    """d k(l) / d log pi at the sampled token: k1 = l -> 1; k2 = l^2/2 -> l; k3 = e^-l - 1 + l -> 1 - e^-l."""
    if kl == KL_K1:
        return 1.0
    if kl == KL_K2:
        return lr
    if kl == KL_K3:
        return 1.0 - math.exp(-lr)
    return 0.0


@njit(parallel=True, cache=True)
def group_psi(states, actions, rewards, lengths, G, adv, agg, ddof, eps, kl, kl_in_reward, beta, logratio, Lmax,
              psi):
    """Per-step weights psi (n_trials, N, T) of a group estimator for a block of trials.

    R_i = sum_t r_t (gamma = 1), minus ``beta sum_t l_t`` when the KL is in the reward; the
    advantage A_i within episode i's group (``adv``); the aggregation factor h_i (``agg``):
    1, 1/n_i, N / sum_j n_j or 1/Lmax; psi[i, t] = h_i (A_i - beta k'(l_t)) with the KL in the
    loss, else h_i A_i. ``logratio[s, a] = log pi(a|s) - log pi_ref(a|s)``."""
    n_trials, N = lengths.shape
    T = psi.shape[2]
    for k in prange(n_trials):
        R = np.zeros(N)
        A = np.zeros(N)
        ntok = 0.0
        for i in range(N):
            r = 0.0
            ls = 0.0
            for t in range(lengths[k, i]):
                r += rewards[k, i, t]
                ls += logratio[states[k, i, t], actions[k, i, t]]
            R[i] = r - beta * ls if kl_in_reward else r
            ntok += lengths[k, i]
        for g0 in range(0, N, G):
            g1 = g0 + G
            tot = 0.0
            for i in range(g0, g1):
                tot += R[i]
            mean = tot / G
            sd = 0.0
            if adv == ADV_MEAN_STD:
                sd, mean = _std(R, g0, g1, ddof)
            for i in range(g0, g1):
                if adv == ADV_NONE:
                    A[i] = R[i]
                elif adv == ADV_LOO:
                    A[i] = R[i] - (tot - R[i]) / (G - 1)
                elif adv == ADV_MEAN_STD:
                    A[i] = (R[i] - mean) / (sd + eps)
                else:
                    A[i] = R[i] - mean
        if adv == ADV_MEAN_BATCHSTD:
            sd, m = _std(A, 0, N, ddof)
            for i in range(N):
                A[i] = A[i] / (sd + eps)
        for i in range(N):
            n = lengths[k, i]
            if agg == AGG_SEQ_SUM:
                h = 1.0
            elif agg == AGG_SEQ_MEAN:
                h = 1.0 / n if n > 0 else 0.0
            elif agg == AGG_TOKEN_MEAN:
                h = N / ntok if ntok > 0 else 0.0
            else:
                h = 1.0 / Lmax
            for t in range(n):
                w = A[i]
                if kl != KL_NONE and not kl_in_reward:
                    w -= beta * kl_grad_coef(kl, logratio[states[k, i, t], actions[k, i, t]])
                psi[k, i, t] = h * w
            for t in range(n, T):
                psi[k, i, t] = 0.0
    return psi


@njit(parallel=True, cache=True)
def psi_gradients(states, actions, lengths, psi, score, out):
    """Estimates ``out[k] = (1/N) sum_i sum_t psi[k, i, t] score[s_t, a_t]`` of a block of trials,
    episode by episode and step by step (``score`` the (S, A, d) table of grad log pi)."""
    n_trials, N = lengths.shape
    d = score.shape[2]
    for k in prange(n_trials):
        for j in range(d):
            out[k, j] = 0.0
        for i in range(N):
            for t in range(lengths[k, i]):
                w = psi[k, i, t]
                s = states[k, i, t]
                a = actions[k, i, t]
                for j in range(d):
                    out[k, j] += w * score[s, a, j]
        for j in range(d):
            out[k, j] /= N
    return out
