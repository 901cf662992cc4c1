"""Exact ground truth for sequence problems and the group estimators (LLM reinforcement learning).

- :func:`kl_exact`: the KL-regularised objective ``J_beta = E[sum_t r_t] - beta E[sum_t l_t]`` with
  ``l_t = log pi(a_t|s_t) - log pi_ref(a_t|s_t)``, and its gradient: J under the reward
  ``r - beta l`` (the policy-gradient theorem with that reward; the extra term
  ``-beta E[sum_t grad l_t] = -beta E[sum_t grad log pi_t]`` has mean zero).
- :func:`sequences`: every complete episode (sequence) of a finite-horizon problem from each start
  state, with its probability, return, KL sum, length and steps.
- :func:`group_moments`: the exact mean of a group estimator by enumeration over the outcomes of
  the other episodes of the group (multisets of their (return, length) outcomes), and its
  variance by listing the ordered G-tuples of sequences where their number allows.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import combinations_with_replacement, product

import numpy as np

from pgbench.errors import PGBenchError
from pgbench.estimators.groups import claimed_unbiased  # noqa: F401  (the family's claims, re-exported)
from pgbench.exact.solve import exact
from pgbench.problems.mdp import TabularMDP

SEQUENCE_LIMIT = 500_000
"""Complete sequences :func:`sequences` lists at most (all start states together)."""
OUTCOME_LIMIT = 4_000_000
"""(own outcome, multiset of the others' outcomes) pairs the exact mean evaluates at most, per start state."""
TUPLE_LIMIT = 200_000
"""Ordered G-tuples of sequences the exact variance lists at most, per start state; beyond, the
variance comes from the moments of one and two episodes of a group."""
PAIR_ALWAYS = False  # tests: the one-and-two-episode formula even where the tuples could be listed


def kl_problem(problem, theta, beta: float):
    """The problem with the reward ``R - beta (log pi - log pi_ref)`` (the KL-regularised reward)."""
    if beta == 0:
        return problem
    mdp = problem.mdp
    th = problem.resolve_theta(theta)
    R = mdp.R - beta * (problem.policy.log_probs(th) - problem.log_pi_ref())
    R = np.where(mdp.terminal[:, None], 0.0, R)
    m2 = TabularMDP.from_sparse(mdp.next_idx, mdp.next_prob, R, mdp.rho0, mdp.gamma, horizon=mdp.horizon,
                                terminal=mdp.terminal, max_steps=mdp.max_steps, name=mdp.name)
    from pgbench.problems.problem import MDPProblem
    return MDPProblem(m2, problem.policy, th, problem.name, dict(problem.meta), problem.theta_ref)


def kl_exact(problem, theta=None, beta: float = 0.0):
    """Exact ``J_beta`` and its gradient (a GroundTruth of the KL-regularised reward)."""
    th = problem.resolve_theta(theta)
    return exact(kl_problem(problem, th, beta), th)


@dataclass
class Sequences:
    """Complete episodes from each start state: ``start`` (M,) start state, ``prob`` (M,) probability
    given the start, ``ret`` (M,) return (gamma = 1), ``klsum`` (M,) sum of the log ratios, ``length``
    (M,), ``states`` / ``actions`` (M, T) padded with -1."""

    start: np.ndarray
    prob: np.ndarray
    ret: np.ndarray
    klsum: np.ndarray
    length: np.ndarray
    states: np.ndarray
    actions: np.ndarray


def count_sequences(problem, stop_above: float = math.inf) -> float:
    """How many complete episodes :func:`sequences` would list (an upper bound by the tree's branching)."""
    mdp = problem.mdp
    if mdp.horizon is None:
        return math.inf
    live = (mdp.rho0 > 0).astype(float)
    total = 0.0
    branch = (mdp.next_prob > 0).sum(axis=2)  # successors per (s, a)
    for _ in range(mdp.horizon):
        out = np.zeros(mdp.S)
        for a in range(mdp.A):
            for k in range(mdp.K):
                ok = mdp.next_prob[:, a, k] > 0
                np.add.at(out, mdp.next_idx[ok, a, k], live[ok])
        total += out[mdp.terminal].sum()
        live = np.where(mdp.terminal, 0.0, out)
        if total + live.sum() > stop_above:
            return math.inf
    del branch
    return total + live.sum()


def sequences(problem, theta=None, limit: int = SEQUENCE_LIMIT) -> Sequences:
    """Every complete episode of a finite-horizon problem without reward noise, by start state."""
    mdp = problem.mdp
    if mdp.horizon is None:
        raise PGBenchError("sequences: the problem has an unbounded horizon")
    if mdp.reward_noise != "none":
        raise PGBenchError("sequences: the rewards are noisy (returns are not a function of the sequence)")
    n = count_sequences(problem, stop_above=limit)
    if n > limit:
        raise PGBenchError(f"sequences: more than {limit} complete episodes")
    th = problem.resolve_theta(theta)
    pi = problem.policy.probs(th)
    lr = problem.policy.log_probs(th) - (problem.log_pi_ref() if problem.theta_ref is not None else 0.0)
    T = mdp.horizon
    s0 = np.flatnonzero(mdp.rho0 > 0)
    cur = dict(start=s0, prob=np.ones(len(s0)), ret=np.zeros(len(s0)), klsum=np.zeros(len(s0)),
               state=s0.copy(), states=np.full((len(s0), T), -1, np.int64), actions=np.full((len(s0), T), -1, np.int64))
    done = []
    for t in range(T):
        m = len(cur["state"])
        if m == 0:
            break
        rep = mdp.A * mdp.K
        idx = np.repeat(np.arange(m), rep)
        a = np.tile(np.repeat(np.arange(mdp.A), mdp.K), m)
        k = np.tile(np.arange(mdp.K), m * mdp.A)
        s = cur["state"][idx]
        p = cur["prob"][idx] * pi[s, a] * mdp.next_prob[s, a, k]
        keep = mdp.next_prob[s, a, k] > 0
        idx, a, k, s, p = idx[keep], a[keep], k[keep], s[keep], p[keep]
        nxt = mdp.next_idx[s, a, k]
        states = cur["states"][idx]
        actions = cur["actions"][idx]
        states[:, t] = s
        actions[:, t] = a
        new = dict(start=cur["start"][idx], prob=p, ret=cur["ret"][idx] + mdp.R[s, a],
                   klsum=cur["klsum"][idx] + lr[s, a], state=nxt, states=states, actions=actions)
        end = mdp.terminal[nxt] | (t + 1 == T)
        done.append({key: v[end] for key, v in new.items()} | {"length": np.full(int(end.sum()), t + 1)})
        cur = {key: v[~end] for key, v in new.items()}
    cat = {key: np.concatenate([d[key] for d in done]) for key in ("start", "prob", "ret", "klsum", "length",
                                                                   "states", "actions")}
    return Sequences(**cat)


# ------------------------------------------------------------------------------------------ moments

def _multisets(D: int, m: int, p: np.ndarray):
    """All multisets of m outcomes out of D (as index rows (count, m)) and their probabilities under
    m independent draws with probabilities p."""
    if m == 0:
        return np.zeros((1, 0), np.int64), np.ones(1)
    rows = np.array(list(combinations_with_replacement(range(D), m)), np.int64)
    counts = np.zeros((len(rows), D))
    np.add.at(counts, (np.repeat(np.arange(len(rows)), m), rows.ravel()), 1.0)
    from scipy.special import gammaln
    logw = gammaln(m + 1) - gammaln(counts + 1).sum(axis=1)
    with np.errstate(divide="ignore"):
        logp = np.where(counts > 0, counts * np.log(np.where(p > 0, p, 1.0))[None, :], 0.0).sum(axis=1)
    return rows, np.exp(logw + logp)


def _n_multisets(D: int, m: int) -> float:
    return math.comb(D + m - 1, m) if m > 0 else 1


def _advantage(own, others, adv: str, G: int, ddof: int, eps: float):
    """A of an episode with return ``own`` (U,) given the others' returns (U, M, G-1)."""
    tot = own[:, None] + others.sum(axis=2)
    if adv == "none":
        return np.broadcast_to(own[:, None], tot.shape)
    if adv == "loo":
        return own[:, None] - (tot - own[:, None]) / (G - 1)
    mean = tot / G
    A = own[:, None] - mean
    if adv in ("mean_std", "mean_batchstd"):
        ss = (own[:, None] - mean) ** 2 + ((others - mean[..., None]) ** 2).sum(axis=2)
        A = A / (np.sqrt(ss / (G - ddof)) + eps)
    return A


def _length_tail(seqs: Sequences, rho0, G: int, P: int):
    """Distribution of the total length of the other P - 1 groups (a vector over totals 0..)."""
    out = np.ones(1)
    if P == 1:
        return out
    Lmax = int(seqs.length.max())
    grp = np.zeros(G * Lmax + 1)
    for s in np.flatnonzero(rho0 > 0):
        sel = seqs.start == s
        one = np.bincount(seqs.length[sel], weights=seqs.prob[sel], minlength=Lmax + 1)
        g = np.ones(1)
        for _ in range(G):
            g = np.convolve(g, one)
        grp[:len(g)] += rho0[s] * g
    for _ in range(P - 1):
        out = np.convolve(out, grp)
    return out


@dataclass
class GroupMoments:
    mean: np.ndarray | None  # exact E[g] (theta's size, flattened), or None
    variance: float | None  # exact tr Var(g), or None
    reason: str  # why a moment is Monte-Carlo only ("" when both are exact)
    seq_weight: np.ndarray | None = None  # (M,) E[h A | the episode is sequence j] (the sequences' order)


def group_moments(problem, theta, p: dict, G: int, P: int, seqs: Sequences | None = None,
                  variance: bool = True) -> GroupMoments:
    """Exact mean (and variance where the enumeration allows) of the group estimator with parameters
    ``p`` (adv, agg, ddof, eps, kl, kl_in, beta) on batches of P groups of G."""
    mdp = problem.mdp
    th = problem.resolve_theta(theta)
    if mdp.horizon is None:
        return GroupMoments(None, None, "MC only: unbounded horizon")
    if mdp.reward_noise != "none":
        return GroupMoments(None, None, "MC only: reward noise (a return is not a function of its sequence)")
    adv, agg, beta = p["adv"], p["agg"], float(p["beta"])
    if adv == "mean_batchstd" and P > 1:
        return GroupMoments(None, None, f"MC only: the batch std couples the P={P} groups")
    if seqs is None:
        try:
            seqs = sequences(problem, th)
        except PGBenchError as exc:
            return GroupMoments(None, None, "MC only: " + str(exc).split(": ", 1)[-1])
    kl_reward = beta > 0 and p["kl_in"] == "reward"
    kl_loss = beta > 0 and p["kl_in"] == "loss"
    lr = problem.policy.log_probs(th) - (problem.log_pi_ref() if beta > 0 else 0.0)
    N = P * G
    Lmax = mdp.horizon
    ret = seqs.ret - beta * seqs.klsum if kl_reward else seqs.ret
    use_len = agg == "token-mean"
    tail = _length_tail(seqs, mdp.rho0, G, P) if use_len else np.ones(1)
    S, A = mdp.S, mdp.A
    C = np.zeros((S, A))
    seq_weight = np.zeros(len(seqs.prob))
    step_ok = seqs.actions >= 0
    srow = np.where(step_ok, seqs.states, 0)
    arow = np.where(step_ok, seqs.actions, 0)
    kcoef = np.zeros(seqs.actions.shape)
    if kl_loss:
        l = lr[srow, arow]
        kcoef = {"k1": np.ones_like(l), "k2": l, "k3": 1.0 - np.exp(-l)}[p["kl"]]
        kcoef = np.where(step_ok, kcoef, 0.0)
    for s in np.flatnonzero(mdp.rho0 > 0):
        sel = np.flatnonzero(seqs.start == s)
        key = np.stack([ret[sel], seqs.length[sel] if use_len else np.zeros(len(sel))], axis=1)
        vals, inv = np.unique(key, axis=0, return_inverse=True)
        inv = inv.reshape(-1)
        D = len(vals)
        pv = np.bincount(inv, weights=seqs.prob[sel], minlength=D)
        fac = {"seq-mean-token-sum": 1.0, "seq-mean-token-mean": 1.0 / seqs.length[sel],
               "token-mean": 1.0, "seq-mean-token-sum-norm": 1.0 / Lmax}[agg]
        if adv in ("none", "mean", "loo") and not use_len:
            # a linear advantage: E[A | own return r] = a r - b E[R] (no enumeration of the others)
            mu = float(np.sum(pv * vals[:, 0]))
            a_, b_ = {"none": (1.0, 0.0), "mean": (1.0 - 1.0 / G, (G - 1.0) / G), "loo": (1.0, 1.0)}[adv]
            coefA = a_ * vals[:, 0] - b_ * mu
            coefH = np.ones(D)
            _accumulate(C, seq_weight, sel, inv, coefA, coefH, fac, mdp.rho0[s], seqs, step_ok, srow, arow, kcoef,
                        kl_loss, beta)
            continue
        work = D * _n_multisets(D, G - 1)
        if work > OUTCOME_LIMIT:
            return GroupMoments(None, None, f"MC only: {work:,} outcome combinations per prompt at G={G} "
                                f"(limit {OUTCOME_LIMIT:,})")
        rows, w = _multisets(D, G - 1, pv)
        others = np.broadcast_to(vals[rows][None, :, :, 0], (D, len(rows), G - 1))
        Adv = _advantage(vals[:, 0], others, adv, G, p["ddof"], p["eps"])  # (D, M)
        if use_len:
            x = (vals[:, 1][:, None] + vals[rows][:, :, 1].sum(axis=1)[None, :]).astype(np.int64)  # (D, M)
            T_ = np.arange(len(tail))
            f = {int(v): float(np.sum(tail * N / (v + T_))) for v in np.unique(x)}
            h = np.vectorize(f.get)(x) if x.size else np.zeros_like(x, dtype=float)
        else:
            h = np.ones_like(Adv)
        coefA = (Adv * h) @ w  # E[A h | own outcome]
        coefH = h @ w  # E[h | own outcome]
        _accumulate(C, seq_weight, sel, inv, coefA, coefH, fac, mdp.rho0[s], seqs, step_ok, srow, arow, kcoef,
                    kl_loss, beta)
    mean = problem.policy.contract(th, C).reshape(-1)
    if not variance:
        return GroupMoments(mean, None, "", seq_weight)
    var, why = _tuple_variance(problem, th, p, G, P, seqs, ret, kcoef, srow, arow, step_ok, mean)
    return GroupMoments(mean, var, why, seq_weight)


def length_profile(seqs: Sequences, rho0: np.ndarray, seq_weight: np.ndarray) -> dict:
    """``{n: E[h A | the episode has n tokens]}``: the weight an estimator puts, in expectation, on the
    score of a sequence of length n (length bias: how it treats long against short sequences)."""
    w = rho0[seqs.start] * seqs.prob
    out = {}
    for n in np.unique(seqs.length):
        sel = seqs.length == n
        out[int(n)] = float(np.sum(w[sel] * seq_weight[sel]) / np.sum(w[sel]))
    return out


def _accumulate(C, seq_weight, sel, inv, coefA, coefH, fac, rho, seqs, step_ok, srow, arow, kcoef, kl_loss, beta):
    """Add one start state's sequences to the expected score weights C: ``E[h A | j]`` on every step of
    sequence j, and with a KL in the loss ``-beta E[h | j] k'(l_t)`` on its step t."""
    seq_weight[sel] = coefA[inv] * fac
    wA = rho * seqs.prob[sel] * coefA[inv] * fac
    per_step = np.where(step_ok[sel], wA[:, None], 0.0)
    if kl_loss:
        wH = rho * seqs.prob[sel] * coefH[inv] * fac
        per_step = per_step - beta * wH[:, None] * kcoef[sel]
    ok = step_ok[sel]
    np.add.at(C, (srow[sel][ok], arow[sel][ok]), per_step[ok])


def _scores(problem, th, p, seqs, kcoef, srow, arow, step_ok):
    """Each sequence's score ``z_j = sum_t grad log pi_t`` and KL-loss vector ``y_j = sum_t k'(l_t)
    grad log pi_t`` (zeros without a KL in the loss), as (M, d) arrays."""
    mdp = problem.mdp
    M, d = len(seqs.prob), th.size
    Z = np.zeros((M, d))
    Y = np.zeros((M, d))
    for j in range(M):
        Cz = np.zeros((mdp.S, mdp.A))
        ok = step_ok[j]
        np.add.at(Cz, (srow[j][ok], arow[j][ok]), 1.0)
        Z[j] = problem.policy.contract(th, Cz).reshape(-1)
        if p["beta"] > 0 and p["kl_in"] == "loss":
            Ck = np.zeros((mdp.S, mdp.A))
            np.add.at(Ck, (srow[j][ok], arow[j][ok]), kcoef[j][ok])
            Y[j] = problem.policy.contract(th, Ck).reshape(-1)
    return Z, Y


def _pair_variance(problem, th, p, G, P, seqs, ret, Z, Y):
    """tr Var(g) from one and two episodes of a group: with v_i = f_i h (A_i z_i - beta y_i) (f_i the
    episode's own aggregation factor, h the token mean's G / sum n or 1), ``E||(1/G) sum_i v_i||^2 =
    (E||v_1||^2 + (G - 1) E[v_1 . v_2]) / G``, the conditional moments of A and h given the one or two
    episodes' outcomes enumerated over the multisets of the other G - 1 or G - 2 outcomes."""
    mdp = problem.mdp
    beta = float(p["beta"]) if p["kl_in"] == "loss" else 0.0
    use_len = p["agg"] == "token-mean"
    Lmax = mdp.horizon
    fac_all = {"seq-mean-token-sum": np.ones(len(seqs.prob)), "seq-mean-token-mean": 1.0 / seqs.length,
               "token-mean": np.ones(len(seqs.prob)),
               "seq-mean-token-sum-norm": np.full(len(seqs.prob), 1.0 / Lmax)}[p["agg"]]
    m2 = 0.0
    for s in np.flatnonzero(mdp.rho0 > 0):
        sel = np.flatnonzero(seqs.start == s)
        key = np.stack([ret[sel], seqs.length[sel] if use_len else np.zeros(len(sel))], axis=1)
        vals, inv = np.unique(key, axis=0, return_inverse=True)
        inv = inv.reshape(-1)
        D = len(vals)
        pv = np.bincount(inv, weights=seqs.prob[sel], minlength=D)
        work = D * D * _n_multisets(D, max(G - 2, 0))
        if work > OUTCOME_LIMIT:
            return None, f"variance MC only: {work:,} outcome combinations per prompt at G={G} (limit {OUTCOME_LIMIT:,})"

        def moments(fixed):  # fixed: (F, k) outcome indices of k episodes; others: multisets of G - k
            k = fixed.shape[1]
            rows, w = _multisets(D, G - k, pv)
            R = np.concatenate([np.broadcast_to(vals[fixed][:, None, :, 0], (len(fixed), len(rows), k)),
                                np.broadcast_to(vals[rows][None, :, :, 0], (len(fixed), len(rows), G - k))], axis=2)
                                # (F, M, G): the group's returns, the fixed episodes first
            mean = R.mean(axis=2, keepdims=True)
            adv = p["adv"]
            if adv == "none":
                A = R
            elif adv == "loo":
                A = R - (R.sum(axis=2, keepdims=True) - R) / (G - 1)
            else:
                A = R - mean
                if adv in ("mean_std", "mean_batchstd"):
                    A = A / (np.sqrt(((R - mean) ** 2).sum(axis=2, keepdims=True) / (G - p["ddof"])) + p["eps"])
            if use_len:
                n = (vals[fixed][:, :, 1].sum(axis=1)[:, None] + vals[rows][:, :, 1].sum(axis=1)[None, :])
                h2 = (G / n) ** 2
            else:
                h2 = np.ones((len(fixed), len(rows)))
            return A[:, :, :k], h2, w

        # one episode: E[A^2 h^2 | u], E[A h^2 | u], E[h^2 | u]
        A1, h2, w = moments(np.arange(D)[:, None])
        SAA, SA, SH = (A1[:, :, 0] ** 2 * h2) @ w, (A1[:, :, 0] * h2) @ w, h2 @ w
        qf = seqs.prob[sel] * fac_all[sel]
        zz = np.einsum("jd,jd->j", Z[sel], Z[sel])
        zy = np.einsum("jd,jd->j", Z[sel], Y[sel])
        yy = np.einsum("jd,jd->j", Y[sel], Y[sel])
        single = np.sum(qf * fac_all[sel] * (SAA[inv] * zz - 2 * beta * SA[inv] * zy + beta ** 2 * SH[inv] * yy))
        pair = 0.0
        if G >= 2:
            uu = np.array([(a, b) for a in range(D) for b in range(D)], np.int64)
            A2, h2, w = moments(uu)
            TAA = ((A2[:, :, 0] * A2[:, :, 1] * h2) @ w).reshape(D, D)
            TA1 = ((A2[:, :, 0] * h2) @ w).reshape(D, D)
            TH = (h2 @ w).reshape(D, D)
            onehot = np.zeros((D, len(sel)))
            onehot[inv, np.arange(len(sel))] = qf
            Zu, Yu = onehot @ Z[sel], onehot @ Y[sel]
            pair = (np.sum(TAA * (Zu @ Zu.T)) - beta * np.sum(TA1 * (Zu @ Yu.T)) - beta * np.sum(TA1.T * (Yu @ Zu.T))
                    + beta ** 2 * np.sum(TH * (Yu @ Yu.T)))
        m2 += mdp.rho0[s] * (single + (G - 1) * pair) / G
    return m2, ""


def _tuple_variance(problem, th, p, G, P, seqs, ret, kcoef, srow, arow, step_ok, mean):
    """tr Var(g) by listing the ordered G-tuples of sequences of each start state, or where they are
    too many from the moments of one and two episodes of a group (:func:`_pair_variance`); the P
    groups of a batch are independent (except under the token mean, refused for P > 1), so
    ``tr Var(g) = tr Var(one group's estimate) / P``."""
    mdp = problem.mdp
    if P > 1 and p["agg"] == "token-mean":
        return None, f"variance MC only: the token mean couples the P={P} groups"
    counts = np.bincount(seqs.start, minlength=mdp.S)
    d = th.size
    M = len(seqs.prob)
    if M * d > 50_000_000:
        return None, f"variance MC only: {M} sequences x {d} parameters"
    Z, Y = _scores(problem, th, p, seqs, kcoef, srow, arow, step_ok)
    big = int(counts.max()) ** G
    if big > TUPLE_LIMIT or PAIR_ALWAYS:
        m2, why = _pair_variance(problem, th, p, G, P, seqs, ret, Z, Y)
        if m2 is None:
            return None, why
        return max(m2 - float(mean @ mean), 0.0) / P, ""
    m1 = np.zeros(d)
    m2 = 0.0
    Lmax = mdp.horizon
    for s in np.flatnonzero(mdp.rho0 > 0):
        sel = np.flatnonzero(seqs.start == s)
        tup = np.array(list(product(range(len(sel)), repeat=G)), np.int64)
        j = sel[tup]  # (n, G)
        R = ret[j]
        n = seqs.length[j].astype(float)
        mean = R.mean(axis=1, keepdims=True)
        adv = p["adv"]
        if adv == "none":
            A = R
        elif adv == "loo":
            A = R - (R.sum(axis=1, keepdims=True) - R) / (G - 1)
        else:
            A = R - mean
            if adv in ("mean_std", "mean_batchstd"):
                A = A / (np.sqrt(((R - mean) ** 2).sum(axis=1, keepdims=True) / (G - p["ddof"])) + p["eps"])
        agg = p["agg"]
        h = {"seq-mean-token-sum": np.ones_like(n), "seq-mean-token-mean": 1.0 / n,
             "token-mean": G / n.sum(axis=1, keepdims=True) * np.ones_like(n),
             "seq-mean-token-sum-norm": np.full_like(n, 1.0 / Lmax)}[agg]
        wt = seqs.prob[j].prod(axis=1) * mdp.rho0[s]
        g = np.einsum("ng,ngd->nd", A * h / G, Z[j])
        if p["beta"] > 0 and p["kl_in"] == "loss":
            g -= p["beta"] * np.einsum("ng,ngd->nd", h / G, Y[j])
        m1 += wt @ g
        m2 += float(wt @ np.einsum("nd,nd->n", g, g))
    var_group = m2 - float(m1 @ m1)
    return max(var_group, 0.0) / P, ""
