"""Estimators as practice writes them (:ref:`practice-estimators`), run on the Python batch path.

- ``ppo_gae(lambda)``: ``psi_t = A^GAE_t`` with the exact critic and no ``gamma^t`` (PPO
  implementations weight every step alike). Its mean is exactly
  ``sum_{t < cap} sum_s d_t(s) sum_a pi(a|s) A_t(s, a) grad log pi(a|s)`` with the *undiscounted*
  running visitation ``d_t`` (:func:`pgbench.exact.practice.exact_mean`), so its bias is a number, not a debate.
- ``normalized_advantage(base)``: the base estimator's ``psi`` normalised over the batch's steps
  (mean 0, std 1, as PPO implementations normalise advantages): a batch-level step.
- ``gpomdp_baseline``: ``g_k = sum_t gamma^t (r_t - b_t^k) c_{t,k}`` with the cumulative score
  ``c_{t,k} = sum_{l <= t} d_k log pi(a_l|s_l)`` and the per-coordinate, time-dependent baseline
  ``b_t^k = E[r_t c_{t,k}^2] / E[c_{t,k}^2]`` estimated leave-one-out from the batch (unbiased).
  After an episode ends its cumulative score stays frozen (no further scores) and its rewards are
  0, which keeps ``E[b c_t] = 0`` when the episode's length depends on its actions.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from pgbench.errors import PGBenchError
from pgbench.estimators.returns import discounted_cumsum

NORMALIZE_EPS = 1e-8  # added to the std, as Stable-Baselines3 and CleanRL do
PSI_BASES = ("ppo_gae", "gae", "reinforce_rtg", "rtg_no_gamma_t", "value_baseline", "true_advantage")


def gae_advantage(batch, lam: float) -> np.ndarray:
    """``A^GAE_t = sum_l (gamma lambda)^l delta_(t+l)``, ``delta_t = r_t + gamma V(s_(t+1)) - V(s_t)``
    with the exact critic (V of a terminal state is 0; the horizon's row is 0), 0 off the episode."""
    v, _ = batch.values()
    delta = np.where(batch.mask, batch.rewards + batch.gamma * v[:, 1:] - v[:, :-1], 0.0)
    return discounted_cumsum(delta, batch.gamma * lam)


def base_psi(batch, spec) -> np.ndarray:
    """Per-step weights (N, T) of a psi-rule estimator, 0 off the episode."""
    name, p = spec.name, spec.p
    disc = batch.discount()[None, :]
    if name == "ppo_gae":
        return gae_advantage(batch, p["lambda"])
    if name == "gae":
        return disc * gae_advantage(batch, p["lambda"])
    G = batch.reward_to_go()
    if name == "reinforce_rtg":
        return disc * G
    if name == "rtg_no_gamma_t":
        return G
    v, q = batch.values()
    if name == "value_baseline":
        return np.where(batch.mask, disc * (G - v[:, :-1] - p.get("shift", 0.0)), 0.0)
    if name == "true_advantage":
        return np.where(batch.mask, disc * (q - v[:, :-1]), 0.0)
    raise PGBenchError(f"normalized_advantage takes a base among {', '.join(PSI_BASES)}; got {name}")


def normalized(batch, base) -> np.ndarray:
    psi = base_psi(batch, base)
    steps = psi[batch.mask]
    return np.where(batch.mask, (psi - steps.mean()) / (steps.std() + NORMALIZE_EPS), 0.0)


def gpomdp_baseline(batch) -> np.ndarray:
    N = batch.N
    if N < 2:
        raise PGBenchError("gpomdp_baseline needs batch size N >= 2 (leave-one-out)")
    g = np.ascontiguousarray(batch.policy.score_table(batch.theta), dtype=np.float64)  # (S, A, d)
    out = np.zeros(g.shape[2])
    _gpomdp_baseline(batch.states, batch.actions, batch.rewards, batch.discount(), g, out)
    return out


@njit(cache=True)
def _gpomdp_baseline(states, actions, rewards, disc, g, out):
    """One pass over t, the cumulative scores ``c`` (N, d) carried along (frozen after an episode's
    end, where its reward is 0). The leave-one-out sums are (sum before i) + (sum after i), not
    the total minus episode i: no cancellation when episode i holds most of the total."""
    N, T = actions.shape
    d = g.shape[2]
    c = np.zeros((N, d))
    pre_n = np.zeros(N + 1)
    pre_d = np.zeros(N + 1)
    suf_n = np.zeros(N + 1)
    suf_d = np.zeros(N + 1)
    for t in range(T):
        for i in range(N):
            a = actions[i, t]
            if a >= 0:
                s = states[i, t]
                for k in range(d):
                    c[i, k] += g[s, a, k]
        for k in range(d):
            for i in range(N):
                c2 = c[i, k] * c[i, k]
                pre_d[i + 1] = pre_d[i] + c2
                pre_n[i + 1] = pre_n[i] + rewards[i, t] * c2
            for i in range(N - 1, -1, -1):
                c2 = c[i, k] * c[i, k]
                suf_d[i] = suf_d[i + 1] + c2
                suf_n[i] = suf_n[i + 1] + rewards[i, t] * c2
            acc = 0.0
            for i in range(N):
                den = pre_d[i] + suf_d[i + 1]
                b = (pre_n[i] + suf_n[i + 1]) / den if den > 0 else 0.0  # a weighted mean of the others' r_t
                acc += (rewards[i, t] - b) * c[i, k]
            out[k] += disc[t] * acc
    for k in range(d):
        out[k] /= N


def function(spec):
    """``(f, returns)`` for a practice estimator's spec."""
    if spec.name == "ppo_gae":
        lam = spec.p["lambda"]
        return (lambda batch: gae_advantage(batch, lam)), "psi"
    if spec.name == "normalized_advantage":
        base = spec.base
        return (lambda batch: normalized(batch, base)), "psi"
    if spec.name == "gpomdp_baseline":
        return gpomdp_baseline, "grad"
    raise PGBenchError(f"{spec.name} is not a practice estimator")
