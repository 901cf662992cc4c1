"""A two-layer MLP policy in NumPy, with exact J and gradient from pgbench.

    pgbench exact garnet:S=8,A=3 --policy examples/mlp_policy.py:mlp
    pgbench measure garnet:S=8,A=3 -N 16 -K 200 -e reinforce_rtg -e mlp_rtg_grad --policy examples/mlp_policy.py:mlp

``logits = tanh(X W1 + b1) W2 + b2`` over state features X (one-hot by default); theta is the
flat vector (W1, b1, W2, b2). ``vjp`` is the backward pass written by hand. ``mlp_rtg_grad`` is a
batch estimator that returns the gradient itself: reward-to-go weights pushed through the
network's vjp (what autograd of the surrogate loss would give).
"""
import numpy as np

from pgbench.estimators import register_batch_estimator
from pgbench.policies import LogitsPolicy


def mlp_policy(S, A, hidden=8, features=None, seed=0, scale=0.5):
    X = np.eye(S) if features is None else np.asarray(features, dtype=float)
    F = X.shape[1]
    shapes = [(F, hidden), (hidden,), (hidden, A), (A,)]
    sizes = [int(np.prod(s)) for s in shapes]

    def unpack(theta):
        parts = np.split(np.asarray(theta, dtype=float).reshape(-1), np.cumsum(sizes)[:-1])
        return [p.reshape(s) for p, s in zip(parts, shapes)]

    def logits(theta):
        W1, b1, W2, b2 = unpack(theta)
        return np.tanh(X @ W1 + b1) @ W2 + b2

    def vjp(theta, c):
        W1, b1, W2, b2 = unpack(theta)
        h = np.tanh(X @ W1 + b1)
        dz = (c @ W2.T) * (1.0 - h * h)
        return np.concatenate([(X.T @ dz).ravel(), dz.sum(axis=0), (h.T @ c).ravel(), c.sum(axis=0)])

    theta0 = np.random.default_rng(seed).normal(scale=scale, size=sum(sizes))
    return LogitsPolicy(logits, vjp, theta0, name=f"mlp{hidden}")


def mlp(problem):
    """What ``--policy examples/mlp_policy.py:mlp`` calls: an MLP sized for the problem."""
    return mlp_policy(problem.mdp.S, problem.mdp.A)


@register_batch_estimator("mlp_rtg_grad", unbiased=True, returns="grad", replace=True,
                          doc="reward-to-go through the policy's vjp (returns the gradient)")
def mlp_rtg_grad(batch):
    psi = batch.discount() * batch.reward_to_go()
    S, A = batch.pi.shape
    ok = batch.mask
    s, a = batch.states[:, :-1][ok], batch.actions[ok]
    # logit-space score weights: sum_t psi_t (e_{a_t} - pi(.|s_t)) in row s_t
    C = np.zeros((S, A))
    np.add.at(C, (s, a), psi[ok])
    np.add.at(C, s, -psi[ok][:, None] * batch.pi[s])
    return batch.policy.vjp(batch.theta, C) / batch.N
