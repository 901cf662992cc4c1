"""Sequence problems: token sequences as episodes of a tabular tree MDP.

``tokens:V=3,L=3,prompts=2,reward=verifier,seed=0`` is a tiny language-model task. Each prompt is
a start state (``rho0`` uniform over them); a state is ``(prompt, prefix)``; the V actions are
tokens, token 0 being EOS; an episode ends at EOS or after L tokens, entering the one absorbing
terminal state (the last state). ``gamma = 1`` and the only reward is an outcome reward on the
step that completes the sequence, so the return of an episode is the reward of its sequence:

- ``verifier``: each complete sequence is correct (1) or not (0); prompt p's sequences are correct
  with a probability of its own (its difficulty), drawn once from the seed;
- ``graded``: a score in [0, 1] per sequence;
- ``length``: correct with probability ``n / L`` for a sequence of n tokens, so longer sequences
  are more often right (what makes a per-sequence token mean's length bias visible).

The policy is a tabular softmax over (prefix, token), or with ``policy=bigram`` a linear softmax
whose logits depend on the last token only (BOS for the empty prefix): ``V * V`` parameters shared
by every prefix, as in a tiny language model. ``theta`` is drawn from the seed (standard normal
times ``scale``); the reference policy ``theta_ref`` (for KL penalties) is the uniform policy (zeros).
"""
from __future__ import annotations

import numpy as np

from pgbench.errors import PGBenchError
from pgbench.problems.mdp import TabularMDP
from pgbench.problems.problem import MDPProblem

REWARDS = ("verifier", "graded", "length")
POLICIES = ("tabular", "bigram")
MAX_STATES = 2_000_000


def tree_shape(V: int, L: int) -> tuple[int, np.ndarray]:
    """``(n, offsets)``: the number of prefixes of one prompt (non-EOS tokens, lengths 0..L-1) and
    the index of the first prefix of each length."""
    sizes = (V - 1) ** np.arange(L, dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    return int(offsets[-1]), offsets


def tokens(V: int = 3, L: int = 3, prompts: int = 1, reward: str = "verifier", seed: int = 0,
           policy: str = "tabular", scale: float = 1.0, gamma: float = 1.0) -> MDPProblem:
    """Token sequences of at most L tokens over a vocabulary of V (token 0 = EOS), as a tree MDP.

    The states are (prompt, prefix) plus one terminal state; gamma = 1; the outcome reward
    (``verifier``, ``graded`` or ``length``) is paid on the last token. ``policy=bigram`` shares
    logits across prefixes by their last token.
    """
    if gamma != 1.0:
        raise PGBenchError(f"a sequence problem has gamma = 1 (one outcome reward per sequence); got gamma={gamma}")
    if V < 2:
        raise PGBenchError(f"tokens needs V >= 2 (EOS and at least one other token); got V={V}")
    if L < 1:
        raise PGBenchError(f"tokens needs L >= 1; got L={L}")
    if prompts < 1:
        raise PGBenchError(f"tokens needs prompts >= 1; got prompts={prompts}")
    if reward not in REWARDS:
        raise PGBenchError(f"unknown reward {reward!r} for tokens; known: {', '.join(REWARDS)}")
    if policy not in POLICIES:
        raise PGBenchError(f"unknown policy {policy!r} for tokens; known: {', '.join(POLICIES)}")
    n, offsets = tree_shape(V, L)
    if prompts * n + 1 > MAX_STATES:
        raise PGBenchError(f"tokens:V={V},L={L},prompts={prompts} has {prompts * n + 1} states; at most "
                           f"{MAX_STATES} are allowed (lower V or L)")
    rng = np.random.default_rng(seed)
    S = prompts * n + 1
    end = S - 1
    depth = np.repeat(np.arange(L), np.diff(offsets))  # prefix length of each node of one prompt
    local = np.arange(n) - offsets[depth]  # index among the prefixes of the same length
    nxt = np.full((n, V), -1, np.int64)
    inner = depth < L - 1
    for a in range(1, V):
        nxt[inner, a] = offsets[depth[inner] + 1] + local[inner] * (V - 1) + (a - 1)
    done = nxt < 0  # this token completes the sequence
    length = np.broadcast_to(depth[:, None] + 1, (n, V))  # tokens in the completed sequence
    next_idx = np.full((S, V, 1), end, np.int64)
    R = np.zeros((S, V))
    for p in range(prompts):
        base = p * n
        next_idx[base:base + n, :, 0] = np.where(done, end, nxt + base)
        if reward == "verifier":
            q = rng.uniform(0.2, 0.8)
            out = (rng.random((n, V)) < q).astype(float)
        elif reward == "graded":
            out = rng.random((n, V))
        else:
            out = (rng.random((n, V)) < length / L).astype(float)
        R[base:base + n] = np.where(done, out, 0.0)
    rho0 = np.zeros(S)
    rho0[np.arange(prompts) * n] = 1.0 / prompts
    terminal = np.zeros(S, bool)
    terminal[end] = True
    name = f"tokens:V={V},L={L},prompts={prompts},reward={reward},seed={seed}" + (
        ",policy=bigram" if policy == "bigram" else "")
    mdp = TabularMDP.from_sparse(next_idx, np.ones((S, V, 1)), R, rho0, 1.0, horizon=L, terminal=terminal, name=name)
    meta = dict(sequence=True, V=V, L=L, prompts=prompts, reward=reward)
    if policy == "tabular":
        theta = np.zeros((S, V))
        theta[:end] = scale * rng.standard_normal((S - 1, V))
        return MDPProblem.tabular(mdp, theta=theta, name=name, theta_ref=np.zeros((S, V)), **meta)
    last = np.zeros(n, np.int64)  # last token of each prefix (0 = BOS for the empty prefix)
    for k in range(1, L):
        idx = np.arange(offsets[k], offsets[k + 1])
        last[idx] = (idx - offsets[k]) % (V - 1) + 1
    feats = np.zeros((S, V, V * V))
    rows = np.arange(S - 1)
    lt = np.tile(last, prompts)
    for a in range(V):
        feats[rows, a, lt * V + a] = 1.0
    theta = scale * rng.standard_normal(V * V)
    return MDPProblem.linear(mdp, feats, theta=theta, name=name, theta_ref=np.zeros(V * V), **meta)


def is_sequence(problem) -> bool:
    """Built by :func:`tokens` (or declared a sequence problem)."""
    return bool(getattr(problem, "meta", {}).get("sequence", False))
