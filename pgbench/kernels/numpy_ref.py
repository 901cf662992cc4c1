"""A careful vectorised-NumPy implementation of ``reinforce_rtg``: the baseline pgbench's
kernels are measured against (``pgbench bench``). Episodes run in lockstep as a batch,
sampling by inverse CDF with NumPy's generator, scores accumulated with ``np.add.at``.
"""
from __future__ import annotations

import numpy as np

from pgbench.problems.problem import MDPProblem


def reinforce_rtg_numpy(problem: MDPProblem, theta, N: int, seed: int = 0) -> np.ndarray:
    """One batch-average ``reinforce_rtg`` estimate from N episodes (tabular or linear softmax)."""
    mdp = problem.mdp
    pol = problem.policy
    th = problem.resolve_theta(theta)
    pi = pol.probs(th)
    rng = np.random.default_rng(seed)
    S, A, K = mdp.next_prob.shape
    T = mdp.episode_cap
    joint = (pi[:, :, None] * mdp.next_prob).reshape(S, A * K)
    cdf = np.cumsum(joint, axis=1)
    cdf[:, -1] = 1.0
    slot_next = mdp.next_idx.reshape(S, A * K)
    s = np.searchsorted(np.cumsum(mdp.rho0), rng.random(N), side="right").clip(max=S - 1)
    states = np.empty((T, N), np.int64)
    actions = np.empty((T, N), np.int64)
    rewards = np.zeros((T, N))
    alive = np.ones((T, N), bool)
    live = np.ones(N, bool)
    for t in range(T):
        u = rng.random(N)
        slot = (u[:, None] >= cdf[s]).sum(axis=1).clip(max=A * K - 1)
        a = slot // K
        states[t], actions[t] = s, a
        rewards[t] = np.where(live, mdp.R[s, a], 0.0)
        alive[t] = live
        s = slot_next[s, slot]
        live = live & ~mdp.terminal[s]
        if not live.any():
            states, actions, rewards, alive = states[:t + 1], actions[:t + 1], rewards[:t + 1], alive[:t + 1]
            break
    G = np.zeros_like(rewards)
    acc = np.zeros(N)
    for t in range(rewards.shape[0] - 1, -1, -1):
        acc = rewards[t] + mdp.gamma * acc
        G[t] = acc
    w = (mdp.gamma ** np.arange(rewards.shape[0]))[:, None] * G * alive
    C = np.zeros((S, A))
    np.add.at(C, (states.ravel(), actions.ravel()), w.ravel())
    return pol.contract(th, C / N)
