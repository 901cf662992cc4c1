"""Run Python batch estimators (:mod:`pgbench.estimators.batch`) on a cell's episodes.

Episodes are materialised per block of trials by :func:`pgbench.kernels.mdp._episodes` (the
built-ins' streams, in parallel, into buffers reused from block to block); the user's function
then runs on this thread for trial 0, 1, 2, ... in order, so its output does not depend on the
numba thread count. The psi of a block of trials are folded into score weights ``C[s, a]`` by
one compiled call, each trial's steps added in a fixed order (``np.bincount``'s).
"""
from __future__ import annotations

import numpy as np

from pgbench.errors import PGBenchError
from pgbench.estimators.batch import BATCH_ESTIMATORS, Batch, as_array
from pgbench.kernels import groups as KG
from pgbench.kernels import mdp as K_

BLOCK_BYTES = 4 * 2 ** 20
"""Padded episode arrays (and psi) of one block of trials: small enough to stay in cache between
the sampler writing them and the user's function reading them (32 MiB blocks were 2x slower a
trial), large enough that the parallel launches are few."""


def episode_blocks(t, seed64, cell64, N: int, K: int, block: int | None = None, group=None):
    """Yield ``(k0, states, actions, rewards, lengths, terminated)`` for blocks of trials, as
    read-only views (overwritten by the next block: copy what must outlive it). ``group=G``:
    episodes in groups of G sharing a start state (:mod:`pgbench.kernels.groups`)."""
    cap = t.cap
    if block is None:
        block = block_size(N, cap, K)
    states = np.empty((block, N, cap + 1), np.int64)
    actions = np.empty((block, N, cap), np.int64)
    rewards = np.empty((block, N, cap))
    lengths = np.empty((block, N), np.int64)
    ended = np.empty((block, N), np.int64)
    for k0 in range(0, K, block):
        nb = min(block, K - k0)
        if group is None:
            K_._episodes(seed64, cell64, k0, nb, N, *t.sampler(), t.terminal, cap, states, actions, rewards,
                         lengths, ended)
        else:
            KG.episodes_grouped(seed64, cell64, k0, nb, N, group, *t.sampler(), t.terminal, cap, states, actions,
                                rewards, lengths, ended)
        yield (k0, *(_read_only(x[:nb]) for x in (states, actions, rewards, lengths)), ended[:nb].astype(bool))


def block_size(N: int, cap: int, K: int) -> int:
    """Trials per block: states, actions, rewards and psi of N episodes padded to cap steps."""
    return int(max(1, min(K, BLOCK_BYTES // (N * (4 * cap + 3) * 8))))


def _read_only(x: np.ndarray) -> np.ndarray:
    """A read-only view: user code cannot corrupt what the next trials or estimators read."""
    v = x.view()
    v.setflags(write=False)
    return v


def batch_function(spec):
    """``(f, returns)`` of a batch estimator: a user's registered one, or a practice estimator."""
    if spec.name in BATCH_ESTIMATORS:
        return BATCH_ESTIMATORS[spec.name].fn, BATCH_ESTIMATORS[spec.name].returns
    from pgbench.estimators.practice import function
    return function(spec)


def checked_output(res, returns: str, shape: tuple, d: int, where: str, k: int) -> np.ndarray:
    """The user's output as a float64 array after checking its type and shape: psi (N, T), or
    the gradient (d,) (also checked finite; psi's finiteness is checked on the steps taken, by
    :func:`psi_weights`)."""
    arr = as_array(res)
    if arr is None:
        raise PGBenchError(f"{where} returned {type(res).__name__}, not an array")
    if returns == "psi":
        if arr.shape != shape:
            raise PGBenchError(f"{where} returned psi of shape {arr.shape}; expected (N, T) = {shape}")
        return arr
    if arr.size != d or arr.ndim not in (1, 2):
        raise PGBenchError(f"{where} returned a gradient of shape {arr.shape}; expected ({d},)")
    if not np.all(np.isfinite(arr)):
        raise PGBenchError(f"{where} returned a non-finite gradient (NaN or inf) in trial {k}")
    return arr.reshape(-1)


def psi_weights(states, actions, lengths, psi, C, where: str, k0: int) -> None:
    """Fold the per-step weights psi (n, N, T) of trials ``k0 ..`` into score weights C (n, S, A)
    summed over each batch (padded steps ignored); a non-finite psi on a step taken is an error
    naming the first such trial."""
    if len(psi) == 0:
        return
    bad = K_._psi_weights(states, actions, lengths, psi, C)
    if bad.any():
        raise PGBenchError(f"{where} returned a non-finite psi (NaN or inf) in trial {k0 + int(np.argmax(bad))}")


class _Trials:
    """Batches of one block's trials: the fields shared by every trial are filled once, the
    per-trial views are swapped in (a fresh Batch each call, so one kept by the user stays valid)."""

    def __init__(self, **common):
        self.common = common

    def batch(self, states, actions, rewards, lengths, terminated, truncated) -> Batch:
        b = object.__new__(Batch)  # a frozen dataclass: fill its __dict__ without 13 checked setattrs
        d = b.__dict__
        d.update(self.common)
        d["states"], d["actions"], d["rewards"] = states, actions, rewards
        d["lengths"], d["terminated"], d["truncated"] = lengths, terminated, truncated
        return b


def run_group(spec, problem, th, t, seed64, cell64, N: int, K: int, G: int, direct: bool = False) -> np.ndarray:
    """Score weights (K, S, A) summed over each batch (not yet divided by N) of a group estimator
    (:mod:`pgbench.estimators.groups`) on grouped episodes: psi by one compiled call per block of trials.
    ``direct``: the estimates themselves (K, d), formed episode by episode from the score table
    (linear policies with a small one: no (S, A) weights per trial)."""
    from pgbench.estimators.groups import codes
    p = spec.p
    adv, agg, kl, kl_in_reward = codes(p)
    S, A = t.pi.shape
    logratio = problem.policy.log_probs(th) - problem.log_pi_ref() if p["beta"] > 0 else np.zeros((S, A))
    score = problem.policy.score_table(th) if direct else None
    out = np.zeros((K, th.size)) if direct else np.zeros((K, S, A))
    block = block_size(N, t.cap, K)
    psi = np.empty((block, N, t.cap))
    where = f"group estimator {spec.label!r} on problem {problem.name!r}"
    for k0, states, actions, rewards, lengths, term in episode_blocks(t, seed64, cell64, N, K, block, G):
        nb = states.shape[0]
        KG.group_psi(states, actions, rewards, lengths, G, adv, agg, int(p["ddof"]), float(p["eps"]), kl,
                     bool(kl_in_reward), float(p["beta"]), logratio, float(problem.mdp.horizon or t.cap), psi[:nb])
        if direct:
            KG.psi_gradients(states, actions, lengths, psi[:nb], score, out[k0:k0 + nb])
        else:
            psi_weights(states, actions, lengths, psi[:nb], out[k0:k0 + nb], where, k0)
    return out


def run_batch(spec, problem, th, t, V, Q, seed64, cell64, N: int, K: int, horizon=None, group=None):
    """``(kind, out)``: kind ``"psi"`` with score weights (K, S, A) summed over the batch (not yet
    divided by N), or ``"grad"`` with the estimates (K, d).

    The user's function runs trial after trial on this thread; its psi are gathered for a block of
    trials and folded into score weights in one compiled call (each trial in a fixed order). An
    error is raised for the earliest trial at fault (a non-finite psi of an earlier trial of the
    block is reported before a later trial's wrong output or exception)."""
    fn, returns = batch_function(spec)
    S, A = t.pi.shape
    d = int(th.size)
    want_psi = returns == "psi"
    out = np.zeros((K, S, A)) if want_psi else np.zeros((K, d))
    where = f"batch estimator {spec.label!r} on problem {problem.name!r}"
    gidx = _read_only(np.arange(N) // (group or 1)) if group is not None else None
    ref = getattr(problem, "theta_ref", None)
    trials = _Trials(gamma=t.gamma, pi=_read_only(t.pi), V=_read_only(V), Q=_read_only(Q), theta=th,
                     policy=problem.policy, horizon=horizon, group=gidx, theta_ref=ref,
                     log_pi_ref=_read_only(problem.log_pi_ref()) if ref is not None else None)
    block = block_size(N, t.cap, K)
    psi = np.empty((block, N, t.cap)) if want_psi else None
    shape = (N, t.cap)
    for k0, states, actions, rewards, lengths, term in episode_blocks(t, seed64, cell64, N, K, block, group):
        nb = states.shape[0]
        trunc = ~term
        b = 0
        try:
            for b in range(nb):
                batch = trials.batch(states[b], actions[b], rewards[b], lengths[b], term[b], trunc[b])
                try:
                    res = fn(batch)
                except Exception as exc:
                    exc.add_note(f"raised by {where} (trial {k0 + b})")
                    raise
                if want_psi:
                    psi[b] = checked_output(res, returns, shape, d, where, k0 + b)
                else:
                    out[k0 + b] = checked_output(res, returns, shape, d, where, k0 + b)
        except Exception:
            if want_psi:  # the earlier trials' errors first
                psi_weights(states[:b], actions[:b], lengths[:b], psi[:b], out[k0:k0 + b], where, k0)
            raise
        if want_psi:
            psi_weights(states, actions, lengths, psi[:nb], out[k0:k0 + nb], where, k0)
    return returns, out


# ------------------------------------------------------------------------------ exact moments by enumeration

USER_EXACT_LIMIT = 5_000
"""Exact moments of user estimators list at most this many trajectories (per-episode numba
functions) or ordered batches (Python batch estimators): each is one call of the user's code."""


def exact_user_columns(problem, specs, batch: int, theta, extras: dict) -> None:
    """Add user and practice estimators' exact moments (where cheap to enumerate) to a cell's
    ``extras``: ``exact_moments[label] = (variance, mse)`` and ``exact_mean[label]``."""
    done = extras.get("exact_moments", {})
    for sp in specs:
        if sp.label in done:  # already exact by the moment DP (ppo_gae)
            continue
        got = exact_user_moments(problem, sp, batch, theta)
        if got is not None:
            mean, var, mse = got
            extras.setdefault("exact_moments", {})[sp.label] = (var, mse)
            extras.setdefault("exact_mean", {})[sp.label] = mean


def _padded(tr, idx, cap, R, terminal):
    """Trajectories ``idx`` of an enumeration as a Batch's padded arrays (mean rewards)."""
    n = len(idx)
    states = np.full((n, cap + 1), -1, np.int64)
    actions = np.full((n, cap), -1, np.int64)
    rewards = np.zeros((n, cap))
    for r, i in enumerate(idx):
        L = int(tr.lengths[i])
        states[r, :L + 1] = tr.states[i, :L + 1]
        actions[r, :L] = tr.actions[i, :L]
        rewards[r, :L] = R[tr.states[i, :L], tr.actions[i, :L]]
    lengths = tr.lengths[idx].astype(np.int64)
    term = np.array([L > 0 and bool(terminal[states[r, L]]) for r, L in enumerate(lengths)])
    return states, actions, rewards, lengths, term


def exact_user_moments(problem, spec, batch: int, theta=None, limit: int = USER_EXACT_LIMIT):
    """``(mean, variance, mse)`` of a user estimator (per-episode numba or Python batch) at batch
    size N, exactly, by listing every trajectory (per-episode: N = 1, then Var / N) or every ordered
    batch of N trajectories (batch estimators) with its probability. None when the problem has
    reward noise (the estimate need not be affine in the rewards) or too many to list."""
    import itertools

    from pgbench.estimators.registry import BATCH_CODE
    from pgbench.estimators.registry import USER_CODE, USER_ESTIMATORS
    from pgbench.exact import exact
    from pgbench.exact.moments import count_trajectories, enumerate_trajectories
    from pgbench.kernels.tables import oracle_tables
    mdp = problem.mdp
    code = spec.info.code
    if code not in (USER_CODE, BATCH_CODE) or mdp.reward_noise != "none":
        return None
    n_listed = 1 if code == USER_CODE else batch
    n = count_trajectories(problem, stop_above=limit)
    if n ** n_listed > limit:
        return None
    th = problem.resolve_theta(theta)
    gt = exact(problem, th)
    V, Q = oracle_tables(gt)
    tr = enumerate_trajectories(problem, limit=limit)
    pi = gt.pi
    p = tr.probs(pi)
    cap, (S, A) = tr.cap, pi.shape
    target = gt.grad.reshape(-1)
    pol = problem.policy
    ests = []
    weights = []
    if code == USER_CODE:
        user = USER_ESTIMATORS[spec.name]
        states, actions, rewards, lengths, term = _padded(tr, np.arange(len(tr)), cap, mdp.R, mdp.terminal)
        cut = 1 if mdp.horizon is not None else 2  # END_HORIZON, END_CAP
        psi = np.zeros(cap)
        for i in range(len(tr)):
            L = int(lengths[i])
            psi[:] = 0.0
            args = (states[i], actions[i], rewards[i], L, gt.problem.mdp.gamma, pi, V, Q, psi)
            user.fn(*args, *((0 if term[i] else cut,) if user.with_end else ()))
            C = np.zeros((S, A))
            np.add.at(C, (states[i, :L], actions[i, :L]), psi[:L])
            ests.append(pol.contract(th, C).reshape(-1))
            weights.append(p[i])
        G, w = np.array(ests), np.array(weights)
        mean = w @ G
        var1 = float(w @ ((G - mean) ** 2).sum(axis=1))
        variance = var1 / batch
    else:
        for tup in itertools.product(range(len(tr)), repeat=batch):
            idx = np.array(tup)
            w = float(np.prod(p[idx]))
            if w == 0.0:
                continue
            states, actions, rewards, lengths, term = _padded(tr, idx, cap, mdp.R, mdp.terminal)
            res = _evaluate_once(spec, problem, th, pi, V, Q, states, actions, rewards, lengths, term,
                                 mdp.gamma, mdp.horizon)
            ests.append(res)
            weights.append(w)
        G, w = np.array(ests), np.array(weights)
        mean = w @ G
        variance = float(w @ ((G - mean) ** 2).sum(axis=1))
    bias2 = float(((mean - target) ** 2).sum())
    return mean, variance, variance + bias2


def _evaluate_once(spec, problem, th, pi, V, Q, states, actions, rewards, lengths, term, gamma, horizon):
    """One batch's estimate (d,) from a Python batch estimator, as :func:`run_batch` computes it."""
    fn, returns = batch_function(spec)
    batch = Batch(states=states, actions=actions, rewards=rewards, lengths=lengths, terminated=term,
                  truncated=~term, gamma=gamma, pi=pi, V=V, Q=Q, theta=th, policy=problem.policy, horizon=horizon)
    where = f"batch estimator {spec.label!r} on problem {problem.name!r}"
    out = checked_output(fn(batch), returns, actions.shape, int(th.size), where, 0)
    if returns == "grad":
        return out
    C = np.zeros((1,) + pi.shape)
    psi_weights(states[None], actions[None], lengths[None], out[None], C, where, 0)
    return problem.policy.contract(th, C[0] / states.shape[0]).reshape(-1)
