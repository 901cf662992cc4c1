"""Sampling tables: everything the rollout and estimator kernels read for one (problem, theta,
behaviour policy), built from the problem's arrays (alias tables of the joint (action, next
state) draw, their exact integer thresholds, oracle values, critics, estimator parameters).

They live next to the kernels that read them; :mod:`pgbench.measure.engine` re-exports them.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pgbench.errors import PGBenchError
from pgbench.estimators.catalogue import EstimatorSpec
from pgbench.kernels import mdp as K_
from pgbench.problems.problem import MDPProblem


def alias_tables(q: np.ndarray):
    """Alias tables (prob, alias) for each row of q."""
    q = np.array(q, dtype=np.float64, order="C")  # writable: a read-only row table would compile a second kernel
    prob = np.empty_like(q)
    alias = np.empty(q.shape, dtype=np.int64)
    K_.build_alias(q, prob, alias)
    return prob, alias


@dataclass
class Tables:
    """Everything the kernels read, for one (problem, theta, behaviour policy)."""

    pi: np.ndarray
    logpi: np.ndarray
    pi2sum: np.ndarray
    rho_p: np.ndarray  # alias table of rho0, (1, S)
    rho_a: np.ndarray
    rho_thr: np.ndarray  # what the rollout reads: ceil(rho_p 2^53), (S,) uint64, with rho_alias
    step_p: np.ndarray  # alias tables of mu(a|s) P(s'|s, a) over slots a * K + k, (S, A K)
    step_a: np.ndarray
    slot_next: np.ndarray  # next state of each slot, (S, A K)
    slot_act: np.ndarray  # action of each slot, (A K,)
    alias_next: np.ndarray  # next state and action of each slot's alias, (S, A K)
    alias_act: np.ndarray
    step_thr: np.ndarray  # what the rollout reads (see pgbench.kernels.mdp._rollout): flat (S A K,)
    step_off: np.ndarray  # (S A K,): successor row offsets of the column (low half) and its alias
    step_word: np.ndarray  # pair tables, (2 S A K,): column at 2 j, alias at 2 j + 1
    step_r: np.ndarray
    R: np.ndarray
    noise_kind: int
    noise_scale: np.ndarray
    terminal: np.ndarray
    gamma: float
    gpow: np.ndarray
    cap: int
    finite: bool
    linear: bool
    score: np.ndarray
    rho_ratio: np.ndarray

    @property
    def rho_alias(self) -> np.ndarray:
        return self.rho_a[0]

    @property
    def n_slots(self) -> int:
        return int(self.step_p.shape[1])

    def sampler(self) -> tuple:
        """The rollout's arguments, in the kernels' order: start and step tables, reward noise."""
        return (self.rho_thr, self.rho_alias, self.n_slots, self.step_thr, self.step_off, self.step_word, self.step_r,
                self.noise_kind, self.noise_scale)


def behaviour_policy(pi: np.ndarray, spec: EstimatorSpec) -> np.ndarray:
    """mu for importance sampling: uniform, or the eps-mixture of pi and uniform."""
    A = pi.shape[1]
    p = spec.p
    if p["mu"] == "uniform":
        return np.full_like(pi, 1.0 / A)
    return (1.0 - p["eps"]) * pi + p["eps"] / A


def make_tables(problem: MDPProblem, theta: np.ndarray, mu: np.ndarray | None = None) -> Tables:
    mdp = problem.mdp
    pol = problem.policy
    pi = pol.probs(theta)
    mu = pi if mu is None else mu
    cap = mdp.episode_cap
    linear = pol.kind != "tabular"  # linear and logits policies: the exact ||z||^2 reads the score table
    score = np.ascontiguousarray(pol.score_table(theta)) if linear else np.zeros((1, 1, 1))
    noise_kind = {"none": 0, "gaussian": 1, "uniform": 2}[mdp.reward_noise]
    with np.errstate(divide="ignore"):
        logpi = np.log(pi)
    S, A, Kn = mdp.next_prob.shape
    rho_p, rho_a = alias_tables(mdp.rho0[None, :])
    step_p, step_a = alias_tables((mu[:, :, None] * mdp.next_prob).reshape(S, A * Kn))
    slot_next = np.ascontiguousarray(mdp.next_idx.reshape(S, A * Kn))
    slot_act = np.repeat(np.arange(A, dtype=np.int64), Kn)
    alias_next = np.ascontiguousarray(np.take_along_axis(slot_next, step_a, axis=1))
    alias_act = np.ascontiguousarray(slot_act[step_a])
    thr, off, word, rew = pair_tables(step_p, slot_next, slot_act, alias_next, alias_act, mdp.R, mdp.terminal)
    return Tables(
        pi=pi, logpi=logpi, pi2sum=(pi * pi).sum(axis=1), rho_p=rho_p, rho_a=rho_a, rho_thr=_thresholds(rho_p[0]),
        step_p=step_p, step_a=step_a,
        slot_next=slot_next, slot_act=slot_act, alias_next=alias_next, alias_act=alias_act, step_thr=thr,
        step_off=off, step_word=word, step_r=rew, R=np.ascontiguousarray(mdp.R),
        noise_kind=noise_kind, noise_scale=np.ascontiguousarray(mdp.reward_scale),
        terminal=np.ascontiguousarray(mdp.terminal), gamma=float(mdp.gamma),
        gpow=mdp.gamma ** np.arange(cap + 1, dtype=np.float64), cap=int(cap), finite=mdp.horizon is not None,
        linear=linear, score=score, rho_ratio=pi / mu)


def _thresholds(prob: np.ndarray) -> np.ndarray:
    """``ceil(prob 2^53)``: the integer fraction test ``f < thr`` is exactly ``f 2^-53 < prob``."""
    return np.ascontiguousarray(np.minimum(np.ceil(prob * 2.0 ** 53), 2.0 ** 53).astype(np.uint64))


def pair_tables(step_p, slot_next, slot_act, alias_next, alias_act, R, terminal):
    """The rollout's step tables (layout in :func:`pgbench.kernels.mdp._rollout`).

    ``thr[j] = ceil(step_p 2^53)``, so the integer test ``f < thr`` on the 53-bit fraction is the
    exact real test ``u n - i < step_p``. ``off[j]`` packs the successor row offsets ``s' n`` of
    column j (low 32 bits) and of its alias (high 32 bits). Pair entry ``2 j`` is column j itself,
    ``2 j + 1`` its alias: packed word ``s' | a << 32 | terminal(s') << 63``, and R[s, a].
    """
    S, n = step_p.shape
    if S * n >= 2 ** 32 or R.shape[1] >= 2 ** 31:
        raise PGBenchError(f"problem too large for the sampling tables (S={S}, A={R.shape[1]}, slots={n})")
    thr = _thresholds(step_p.reshape(-1))
    rows = np.arange(S)[:, None]
    acts = np.broadcast_to(slot_act, (S, n))

    def pair(col, ali):
        return np.ascontiguousarray(np.stack([col, ali], axis=-1).reshape(-1))

    def word(nxt, act):
        nxt = nxt.astype(np.uint64)
        return nxt | (act.astype(np.uint64) << np.uint64(32)) | (terminal[nxt].astype(np.uint64) << np.uint64(63))

    off = ((slot_next.astype(np.uint64) * np.uint64(n))
           | ((alias_next.astype(np.uint64) * np.uint64(n)) << np.uint64(32))).reshape(-1)
    return (np.ascontiguousarray(thr), np.ascontiguousarray(off), pair(word(slot_next, acts), word(alias_next, alias_act)),
            pair(R[rows, acts], R[rows, alias_act]).astype(np.float64))


def oracle_tables(gt):
    """V per step with a zero row after the horizon (finite) or one row (unbounded); Q likewise."""
    if gt.V.ndim == 2:
        V = np.vstack([gt.V, np.zeros((1, gt.V.shape[1]))])
        Q = gt.Q
    else:
        V = gt.V[None, :]
        Q = gt.Q[None, :, :]
    return np.ascontiguousarray(V), np.ascontiguousarray(Q)


def perturbed_critic(V: np.ndarray, terminal: np.ndarray, scale: float, seed: int, finite: bool) -> np.ndarray:
    """Exact V plus a fixed N(0, scale^2) error per (t, s) from ``seed`` (zero where V is fixed at 0)."""
    err = np.random.default_rng(int(seed)).normal(size=V.shape) * scale
    out = V + err
    out[:, terminal] = 0.0
    if finite:
        out[-1] = 0.0
    return out


def kernel_parameters(specs, V: np.ndarray, terminal: np.ndarray, finite: bool, opt_b=None):
    """What pass 2 reads per estimator: codes, scalar parameters ``fpar`` (b, lambda, weighted
    flag, beta), the critic index ``crit`` (-1: fitted from the batch) and the stacked critics
    (exact V first, then one perturbed V per estimator that asks for one)."""
    codes = np.array([q.info.code for q in specs], dtype=np.int64)
    fpar = np.zeros((len(specs), 2))
    crit = np.full(len(specs), -1, dtype=np.int64)
    critics = [V]
    for e, q in enumerate(specs):
        p = q.p
        if q.name == "const_baseline":
            fpar[e, 0] = p["b"]
        elif q.name == "optimal_const_baseline":
            fpar[e, 0] = opt_b + p.get("shift", 0.0)
        elif q.name == "value_baseline":
            fpar[e, 0] = p.get("shift", 0.0)
        elif q.name in ("gae", "td0"):
            fpar[e, 0] = p.get("lambda", 0.0)
            if p["critic"] == "exact":
                crit[e] = 0
            elif p["critic"] == "perturbed":
                critics.append(perturbed_critic(V, terminal, p["scale"], p["seed"], finite))
                crit[e] = len(critics) - 1
        elif q.name == "importance_sampling":
            fpar[e, 0] = 1.0 if p["weighted"] else 0.0
        elif q.name == "entropy_bonus":
            fpar[e, 0] = p["beta"]
    return codes, fpar, crit, np.ascontiguousarray(np.stack(critics))
