"""Sampling engine: turns (problem, estimators, N, K, seed) into K gradient estimates per estimator.

The numba kernels live in :mod:`pgbench.kernels.mdp`; this module prepares their tables
(sampling CDFs, oracle values, critics), splits the work into items whose layout depends on
N alone, reduces items in a fixed order and turns score weights into gradients.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from pgbench.errors import PGBenchError
from pgbench.estimators import catalogue as cat
from pgbench.estimators.catalogue import EstimatorSpec, parse
from pgbench.estimators.registry import BATCH_CODE
from pgbench.estimators.registry import USER_CODE, USER_ESTIMATORS
from pgbench.exact import GroundTruth, exact
from pgbench.kernels import mdp as K_
from pgbench.kernels.rng import cell_key, seed_u64
from pgbench.kernels.tables import (  # noqa: F401  (re-exported: the engine's historical names)
    Tables, _thresholds, alias_tables, behaviour_policy, kernel_parameters, make_tables, oracle_tables, pair_tables,
    perturbed_critic)
from pgbench.exact.targets import estimator_target
from pgbench.problems.problem import MDPProblem

MAX_CHUNKS = 16
MIN_CHUNK = 256
ITEM_MEMORY_BUDGET = 2 ** 19  # bytes of per-item arrays alive at once (memory flat in K, few parallel launches)
PILOT_EPISODES = 100_000


def n_chunks_for(N: int) -> int:
    """Chunks per trial: a function of N only, so results do not depend on the thread count."""
    return int(min(MAX_CHUNKS, max(1, -(-N // MIN_CHUNK))))


@dataclass
class SampleResult:
    """K estimates per estimator, on common random numbers, with what they estimate."""

    specs: list
    estimates: np.ndarray  # (K, n_est, d)
    targets: np.ndarray  # (n_est, d): the exact gradient each estimator is measured against
    seconds: float
    episodes: int  # episodes sampled in the timed passes (all groups and passes)
    N: int
    K: int
    extras: dict = field(default_factory=dict)


def _specs(estimators) -> list:
    if isinstance(estimators, (str, EstimatorSpec)):
        estimators = [estimators]
    specs = [parse(e) for e in estimators]
    if not specs:
        raise PGBenchError("no estimator given")
    return specs


def _check_sizes(N, K):
    for name, v, lo in (("batch size N", N, 1), ("trials K", K, 1)):
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < lo:
            raise PGBenchError(f"{name} must be an integer >= {lo}; got {v!r}")


def check_group(group, N: int):
    """The group size G: None (ungrouped) or a positive integer dividing N."""
    if group is None:
        return None
    if not isinstance(group, (int, np.integer)) or isinstance(group, bool) or group < 1:
        raise PGBenchError(f"group size G must be an integer >= 1; got {group!r}")
    if N % int(group):
        raise PGBenchError(f"group size G={group} does not divide the batch size N={N} (N = P G episodes in P groups)")
    return int(group)


def grouped_specs(problem: MDPProblem, specs: list, G) -> list:
    """The estimators of a grouped cell: the group family, and ``rloo`` / ``reinforce`` as its members
    (within the groups); Python batch estimators see the groups; other built-ins are refused."""
    from pgbench.estimators import groups as grp
    from pgbench.estimators.batch import BATCH_ESTIMATORS
    out = []
    for sp in specs:
        if grp.is_group(sp):
            if G is None:
                raise PGBenchError(f"estimator {sp.label} needs grouped sampling: give group=G (--group G)")
        elif G is not None and G > 1:
            if sp.name in grp.GROUPED and sp.info.code >= 0 and not sp.params:
                sp = cat.grouped_spec(sp)
            elif not (sp.info.code == BATCH_CODE and sp.name in BATCH_ESTIMATORS):
                raise PGBenchError(f"estimator {sp.label} does not run on grouped batches (G={G}); use the group "
                                   f"family (group, grpo, dr_grpo, dapo, reinforce_pp, rloo, reinforce) or a Python "
                                   f"batch estimator")
        if grp.is_group(sp):
            grp.check_group(sp, G, problem.mdp.gamma, problem.name, problem.theta_ref is not None)
        out.append(sp)
    return out


GROUP_SCORE_TABLE = 50_000_000
"""Entries of the (S, A, d) score table up to which a group estimator under a linear policy (e.g. the
bigram policy of a sequence problem) forms its gradient episode by episode, not from (S, A) weights."""


def group_direct(problem: MDPProblem) -> bool:
    return problem.policy.kind == "linear" and problem.mdp.S * problem.mdp.A * problem.policy.dim <= GROUP_SCORE_TABLE


def sample_mdp(problem: MDPProblem, estimators, N: int, K: int, seed: int = 0, cell=None, theta=None,
               proxy: bool = False, gt: GroundTruth | None = None, backend: str = "cpu", group=None) -> SampleResult:
    """Run K trials of batch size N for every estimator, on the same episodes.

    Trial k, episode i draws the stream ``(seed, cell, k, i)``; ``cell`` defaults to a hash of
    the problem id, theta and N, so two cells never share episodes while estimators in one cell do.
    ``group=G``: the N = P G episodes are P groups of G sharing a start state (drawn by the
    group's first episode); the group family of estimators needs it.
    """
    _check_sizes(N, K)
    specs = _specs(estimators)
    G = check_group(group, N)
    specs = grouped_specs(problem, specs, G)
    if G is not None and G > 1 and backend != "cpu":
        raise PGBenchError("grouped sampling (group > 1) runs on the CPU backend only (use --backend cpu)")
    th = problem.resolve_theta(theta)
    mdp = problem.mdp
    for sp in specs:
        if sp.info.target != "mdp":
            raise PGBenchError(f"estimator {sp.name} is for stochastic objectives, not MDPs")
        if N < 2 and sp.name in ("rloo", "w_baseline_loo", "time_baseline_loo"):
            raise PGBenchError(f"{sp.name} needs batch size N >= 2 (leave-one-out); got N={N}")
        if sp.name == "natural" and N < 1:
            raise PGBenchError("natural needs N >= 1")
    gt = gt or exact(problem, th)
    cell = cell_key(problem.name, th, N) if cell is None else int(cell)
    seed64, cell64 = seed_u64(seed), np.uint64(cell % (1 << 64))

    # the kernel's estimator list: requested ones, bases of natural, the Fisher accumulator
    kspecs: list = []

    def kindex(sp) -> int:
        for j, q in enumerate(kspecs):
            if q.label == sp.label and q.name == sp.name:
                return j
        kspecs.append(sp)
        return len(kspecs) - 1

    fisher_spec = EstimatorSpec(cat.EstimatorInfo("_fisher", "", "", code=cat.FISHER), ())
    plan = []  # (kind, index, index) per requested spec
    for sp in specs:
        if sp.name == "natural":
            plan.append(("natural", kindex(sp.base), kindex(fisher_spec)))
        else:
            plan.append(("plain", kindex(sp), -1))

    V, Q = oracle_tables(gt)
    finite = mdp.horizon is not None
    tabs = make_tables(problem, th)
    cap = tabs.cap
    extras: dict = {}
    # oracle optimal constant baseline from an independent pilot (its own cell: unbiased)
    opt_b = None
    if any(q.name == "optimal_const_baseline" for q in kspecs):
        opt_b, how = optimal_constant_baseline_value(problem, th, seed)
        extras["optimal_const_baseline_b"] = opt_b
        extras["optimal_const_baseline_source"] = how

    # group estimators by behaviour policy: on-policy, and one group per IS behaviour
    groups: dict = {}
    for j, q in enumerate(kspecs):
        if q.info.code == -4:  # the group family
            key = ("group", q.label)
        elif q.info.code == USER_CODE:
            key = ("user", q.name)
        elif q.info.code == BATCH_CODE:
            key = ("batch", q.label)
        elif q.name == "importance_sampling":
            key = ("is", q.p["mu"], q.p["eps"])
        else:
            key = ("on",)
        groups.setdefault(key, []).append(j)

    n_k = len(kspecs)
    # group estimators under a linear policy give their gradients directly (no (S, A) weights per trial)
    grad_direct = {j for j, q in enumerate(kspecs) if q.info.code == -4 and group_direct(problem)}
    C_all = np.zeros((K, n_k, mdp.S, mdp.A) if len(grad_direct) < n_k else (K, n_k, 0, 0))
    n_chunks = n_chunks_for(N)
    # per item: the batch statistics, and the weight accumulators unless they go straight into C_all
    item_bytes = 8 * (K_.N_STATS + (0 if n_chunks == 1 and len(groups) == 1 else n_k * mdp.S * mdp.A))
    block = int(max(1, min(K, ITEM_MEMORY_BUDGET // (n_chunks * item_bytes))))
    proxy_stats = np.zeros((K, K_.N_PROXY)) if proxy else None
    episodes = 0
    seconds = 0.0
    direct: dict = {}  # kernel index -> (K, d) estimates given directly (batch estimators returning grad)
    for key, members in groups.items():
        if key[0] == "user":
            if backend != "cpu":
                raise PGBenchError("user-defined estimators run on the CPU backend only")
            t0 = time.perf_counter()
            C_all[:, members[0]] = _run_user(kspecs[members[0]], tabs, V, Q, seed64, cell64, N, K, n_chunks)
            seconds += time.perf_counter() - t0
            episodes += N * K
            continue
        if key[0] == "group":
            if backend != "cpu":
                raise PGBenchError("group estimators run on the CPU backend only")
            from pgbench.measure.batch_runner import run_group
            t0 = time.perf_counter()
            out = run_group(kspecs[members[0]], problem, th, tabs, seed64, cell64, N, K, G,
                            direct=members[0] in grad_direct)
            if members[0] in grad_direct:
                direct[members[0]] = out
            else:
                C_all[:, members[0]] = out
            seconds += time.perf_counter() - t0
            episodes += N * K
            continue
        if key[0] == "batch":
            if backend != "cpu":
                raise PGBenchError("Python batch estimators run on the CPU backend only")
            from pgbench.measure.batch_runner import run_batch
            t0 = time.perf_counter()
            kind, out = run_batch(kspecs[members[0]], problem, th, tabs, V, Q, seed64, cell64, N, K, mdp.horizon,
                                  group=G)
            seconds += time.perf_counter() - t0
            episodes += N * K
            if kind == "psi":
                C_all[:, members[0]] = out
            else:
                direct[members[0]] = out
            continue
        gtabs = tabs if key[0] != "is" else make_tables(problem, th, behaviour_policy(tabs.pi, kspecs[members[0]]))
        gspecs = [kspecs[j] for j in members]
        codes, fpar, crit, critics_arr = kernel_parameters(gspecs, V, mdp.terminal, finite, opt_b)
        need_fit = any(q.name in ("gae", "td0") and q.p["critic"] == "fitted" for q in gspecs)
        need_sg = any(q.name == "time_baseline_loo" for q in gspecs)
        need_rho = any(q.name == "importance_sampling" and q.p["weighted"] for q in gspecs)
        want_proxy = proxy and key[0] == "on"
        need_z = want_proxy or any(q.name == "score_norm_baseline" for q in gspecs)
        need_pass1 = want_proxy or any(q.in_batch for q in gspecs)
        Tfit = mdp.horizon if finite else 1
        if backend == "cpu":
            kb = K_
            score_weights = K_.score_weights_for(codes)  # only the branches these estimators use
            _warm(gtabs, seed64, cell64, N, need_pass1, score_weights)
        else:
            from pgbench.kernels import cuda as kb
            score_weights = kb._score_weights
        for k0 in range(0, K, block):
            nb = min(block, K - k0)
            n_items = nb * n_chunks
            t0 = time.perf_counter()
            b_stats = np.zeros((nb, K_.N_STATS))
            b_SG = np.zeros((nb, cap if need_sg else 0))
            b_fitV = np.zeros((nb, (Tfit + 1) if finite else 1, mdp.S if need_fit else 0))
            b_rho = np.zeros((nb, cap if need_rho else 0))
            if need_pass1:
                st = np.zeros((n_items, K_.N_STATS))
                sg = np.zeros((n_items, b_SG.shape[1]))
                fs = np.zeros((n_items, Tfit if need_fit else 0, mdp.S))
                fc = np.zeros_like(fs)
                rh = np.zeros((n_items, b_rho.shape[1]))
                kb._batch_stats(seed64, cell64, k0, nb, N, n_chunks, *gtabs.sampler(), gtabs.pi, gtabs.pi2sum,
                                gtabs.terminal, gtabs.gamma, gtabs.gpow, cap, finite,
                                gtabs.linear, gtabs.score, need_z, gtabs.rho_ratio, st, sg, fs, fc, rh)
                episodes += nb * N
                b_stats = _reduce(st, nb, n_chunks)
                b_SG = _reduce(sg, nb, n_chunks)
                b_rho = _reduce(rh, nb, n_chunks)
                if need_fit:
                    fsum, fcnt = _reduce(fs, nb, n_chunks), _reduce(fc, nb, n_chunks)
                    with np.errstate(invalid="ignore", divide="ignore"):
                        fit = np.where(fcnt > 0, fsum / np.maximum(fcnt, 1.0), 0.0)
                    b_fitV[:, :Tfit, :] = fit
            whole = n_chunks == 1 and members == list(range(n_k))  # one item per trial: accumulate in place
            outC = C_all[k0:k0 + nb] if whole else np.zeros((n_items, len(gspecs), mdp.S, mdp.A))
            out_proxy = np.zeros((n_items, K_.N_PROXY if want_proxy else 0))
            score_weights(seed64, cell64, k0, nb, N, n_chunks, *gtabs.sampler(), gtabs.pi, gtabs.logpi,
                              gtabs.pi2sum, gtabs.terminal, gtabs.gamma, gtabs.gpow, cap, finite, gtabs.linear,
                              gtabs.score, codes, fpar, crit, critics_arr, V, Q, gtabs.rho_ratio,
                              b_stats, b_SG, b_fitV, b_rho, need_z, want_proxy,
                              K_._log_inv_gamma(gtabs.gamma), outC, out_proxy)
            episodes += nb * N
            seconds += time.perf_counter() - t0
            if not whole:
                C_all[k0:k0 + nb][:, members] = _reduce(outC, nb, n_chunks)
            if want_proxy:
                proxy_stats[k0:k0 + nb] = _reduce(out_proxy, nb, n_chunks)
    C_all /= N
    pol = problem.policy
    d = int(np.prod(th.shape))
    # tabular scores: a trial's gradient has the shape of its weights, so plain estimators in
    # kernel order are contracted in place (block by block), without a second K x d array
    in_place = (pol.kind == "tabular" and [j for _, j, _ in plan] == list(range(n_k))
                and all(kind == "plain" for kind, _, _ in plan))
    est = C_all.reshape(K, n_k, d) if in_place else np.zeros((K, len(specs), d))
    targets = np.zeros((len(specs), d))
    for r, (sp, (kind, j, jf)) in enumerate(zip(specs, plan)):
        if j not in direct:
            _trial_gradients(pol, th, C_all[:, j], C_all[:, jf] if kind == "natural" else None, est[:, r])
        targets[r] = estimator_target(problem, th, gt, sp)
    for r, (kind, j, _) in enumerate(plan):
        if j in direct:
            est[:, r] = direct[j]
    from pgbench.exact.practice import exact_mean
    means = {sp.label: m for sp in specs if (m := exact_mean(problem, th, gt, sp)) is not None}
    if means:
        extras["exact_mean"] = means
    if proxy:
        extras["proxy"] = proxy_stats
    return SampleResult(specs, est, targets, seconds, episodes, N, K, extras)


CONTRACT_BLOCK_BYTES = 2 ** 18


def _trial_gradients(pol, th, Cg: np.ndarray, Cf, out: np.ndarray) -> None:
    """Score weights (K, S, A) into gradients ``out`` (K, d), vectorised over trials in blocks
    (bounded temporaries); the natural gradient ``F_k^+ g_k`` where Fisher weights ``Cf`` are given."""
    K = Cg.shape[0]
    if Cf is None and pol.kind == "tabular":  # one compiled pass, no temporaries (in place when out is Cg)
        from pgbench.kernels.contract import contract_tabular
        contract_tabular(Cg, np.ascontiguousarray(pol.probs(th), dtype=np.float64), out)
        return
    per = 8 * max(Cg[0].size, out.shape[1]) * (1 if Cf is None else 4 * max(pol.A, out.shape[1]))
    block = max(1, CONTRACT_BLOCK_BYTES // per)
    for k0 in range(0, K, block):
        k1 = min(K, k0 + block)
        if Cf is None:
            out[k0:k1] = pol.contract_trials(th, Cg[k0:k1])
        else:
            out[k0:k1] = pol.natural_trials(th, Cg[k0:k1], Cf[k0:k1])


def _reduce(x: np.ndarray, nb: int, n_chunks: int) -> np.ndarray:
    """Sum item accumulators per trial, chunks in order (the fixed reduction order)."""
    if n_chunks == 1:  # one item per trial: nothing to add (and no pass over the array)
        return x
    return x.reshape((nb, n_chunks) + x.shape[1:]).sum(axis=1)


_target = estimator_target  # the former private name

_WARMED: set = set()


def _warm(t: Tables, seed64, cell64, N, pass1: bool = True, score_weights=None) -> None:
    """Compile (or load from cache) the kernels for these argument types outside the timed region;
    pass 1 only for cells that run it and pass 2 with only the cell's branches (a cold start
    compiles only what the cell uses)."""
    score_weights = K_._score_weights if score_weights is None else score_weights
    key = (t.linear, t.noise_kind, pass1, score_weights.py_func.__name__)
    if key in _WARMED or (not pass1 and key[:2] + (True,) + key[3:] in _WARMED):
        return
    z = np.zeros
    if pass1:
        K_._batch_stats(seed64, cell64, 0, 0, 1, 1, *t.sampler(), t.pi, t.pi2sum, t.terminal, t.gamma, t.gpow, t.cap, t.finite, t.linear,
                        t.score, False, t.rho_ratio, z((0, K_.N_STATS)), z((0, 0)), z((0, 0, 0)), z((0, 0, 0)),
                        z((0, 0)))
    score_weights(seed64, cell64, 0, 0, 1, 1, *t.sampler(), t.pi, t.logpi, t.pi2sum, t.terminal, t.gamma, t.gpow, t.cap, t.finite,
                      t.linear, t.score, z(1, np.int64), z((1, 2)), z(1, np.int64), z((1, 1, 1)), z((1, 1)),
                      z((1, 1, 1)), t.rho_ratio, z((0, K_.N_STATS)), z((0, 0)), z((0, 0, 0)), z((0, 0)), False, False,
                      0.0, z((0, 1, 1, 1)), z((0, 0)))
    _WARMED.add(key)


def precompile(batch_path: bool = True) -> None:
    """Compile (or load from numba's cache) the CPU sampler for the argument types every MDP
    problem shares: pass 1 and the full pass 2 (every branch, as suite runs use it), and the
    episode kernels of the Python batch path. A cold ``pgbench run`` calls this in a second
    process while the first runs the cells that need none of it."""
    from pgbench.problems.registry import make
    prob = make("three_step_bandit")
    th = prob.resolve_theta(None)
    t = make_tables(prob, th)
    _warm(t, seed_u64(0), np.uint64(1), 1, True, K_._score_weights)
    if batch_path:
        sample_mdp(prob, ["ppo_gae"], 2, 2)


EXACT_BASELINE_LIMIT = 20_000


def optimal_constant_baseline_value(problem: MDPProblem, th: np.ndarray, seed: int) -> tuple[float, str]:
    """b* exactly (the moment DP of pgbench.exact.dp, or trajectory enumeration) where the problem
    is small enough, else from a pilot."""
    from pgbench.exact.dp import DP_WORK_LIMIT, dp_work
    from pgbench.exact.moments import count_trajectories, exact_optimal_constant_baseline
    if dp_work(problem) <= DP_WORK_LIMIT:
        return float(exact_optimal_constant_baseline(problem, th)), "exact"
    if count_trajectories(problem, stop_above=EXACT_BASELINE_LIMIT) <= EXACT_BASELINE_LIMIT:
        return float(exact_optimal_constant_baseline(problem, th, limit=EXACT_BASELINE_LIMIT,
                                                     method="enumerate")), "exact"
    return optimal_constant_baseline(problem, th, seed), "pilot"


def optimal_constant_baseline(problem: MDPProblem, th: np.ndarray, seed: int,
                              episodes: int = PILOT_EPISODES) -> float:
    """``b* = E[R ||z||^2] / E[||z||^2]`` (the trace-optimal constant baseline).

    Estimated from an independent pilot batch (its own cell), so the estimator that uses it
    stays unbiased whatever the pilot's error.
    """
    tabs = make_tables(problem, th)
    n_chunks = n_chunks_for(episodes)
    st = np.zeros((n_chunks, K_.N_STATS))
    z = np.zeros
    cell = np.uint64(cell_key("optimal_const_baseline pilot", problem.name, th) % (1 << 64))
    K_._batch_stats(seed_u64(seed), cell, 0, 1, episodes, n_chunks, *tabs.sampler(), tabs.pi, tabs.pi2sum,
                    tabs.terminal, tabs.gamma, tabs.gpow, tabs.cap, tabs.finite, tabs.linear, tabs.score, True,
                    tabs.rho_ratio, st, z((n_chunks, 0)), z((n_chunks, 0, 0)), z((n_chunks, 0, 0)), z((n_chunks, 0)))
    s = st.sum(axis=0)
    return float(s[K_.ST_ZR] / s[K_.ST_Z]) if s[K_.ST_Z] > 0 else 0.0


def _run_user(spec: EstimatorSpec, t: Tables, V, Q, seed64, cell64, N: int, K: int, n_chunks: int) -> np.ndarray:
    """Score weights of a user estimator, per trial, on the cell's streams."""
    user = USER_ESTIMATORS[spec.name]
    kern = K_.user_kernel(user.fn, user.with_end)
    out = np.zeros((K, t.pi.shape[0], t.pi.shape[1]))
    args = (*t.sampler(), t.gamma, t.cap, t.pi, V, Q, t.terminal, K_.END_HORIZON if t.finite else K_.END_CAP)
    z = np.zeros((0, 1) + t.pi.shape)
    try:
        kern(seed64, cell64, 0, 0, 1, 1, *args, z)  # compile outside the loop, with a clear error
    except Exception as exc:
        raise PGBenchError(f"user estimator {spec.name!r} failed to compile or run with the documented "
                           f"signature (states, actions, rewards, L, gamma, pi, V, Q, psi[, end]): {exc}") from None
    block = max(1, min(K, ITEM_MEMORY_BUDGET // max(1, n_chunks * t.pi.size * 8)))
    for k0 in range(0, K, block):
        nb = min(block, K - k0)
        outC = np.zeros((nb * n_chunks, 1) + t.pi.shape)
        kern(seed64, cell64, k0, nb, N, n_chunks, *args, outC)
        out[k0:k0 + nb] = _reduce(outC[:, 0], nb, n_chunks)
    return out


def episode_samples(problem: MDPProblem, theta=None, n: int = 2000, seed: int = 0) -> dict:
    """Per-episode return R, proxy W(tau) and exact ||z||^2 of n episodes (for scatter plots):
    pass 1 with one episode per trial makes every work item a single episode."""
    th = problem.resolve_theta(theta)
    t = make_tables(problem, th)
    st = np.zeros((n, K_.N_STATS))
    z = np.zeros
    cell = np.uint64(cell_key("episode samples", problem.name, th) % (1 << 64))
    K_._batch_stats(seed_u64(seed), cell, 0, n, 1, 1, *t.sampler(), t.pi, t.pi2sum, t.terminal, t.gamma,
                    t.gpow, t.cap, t.finite, t.linear, t.score, True, t.rho_ratio, st, z((n, 0)), z((n, 0, 0)),
                    z((n, 0, 0)), z((n, 0)))
    return {"R": st[:, K_.ST_R], "W": st[:, K_.ST_W], "znorm2": st[:, K_.ST_Z]}
