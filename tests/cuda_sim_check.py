"""Run under NUMBA_ENABLE_CUDASIM=1 (by tests/test_cuda_sim.py, in a fresh process): compare the
CUDA kernels, run in numba's simulator, with the CPU kernels on tiny problems. Prints JSON."""
import json
import os
import sys

assert os.environ.get("NUMBA_ENABLE_CUDASIM") == "1", "set NUMBA_ENABLE_CUDASIM=1 before numba is imported"

import numpy as np  # noqa: E402
from numba import cuda, njit  # noqa: E402

import pgbench  # noqa: E402
from pgbench.kernels import cuda as kc  # noqa: E402
from pgbench.kernels import mdp as km  # noqa: E402
from pgbench.kernels.rng import seed_u64  # noqa: E402
from pgbench.measure.engine import make_tables, sample_mdp  # noqa: E402

FAMILIES = ["reinforce", "reinforce_rtg", "rtg_no_gamma_t", "const_baseline:b=0.5", "batch_mean_baseline", "rloo",
            "w_baseline", "w_baseline_loo", "score_norm_baseline", "optimal_const_baseline", "value_baseline",
            "time_baseline_loo", "true_advantage", "all_action", "gae:lambda=0.8", "td0:critic=fitted",
            "gae:lambda=0.5,critic=perturbed,scale=0.3", "geometric_termination",
            "importance_sampling:mu=mix,eps=0.4", "importance_sampling:mu=uniform,weighted=1",
            "entropy_bonus:beta=0.3", "natural"]


@njit
def cpu_rollouts(seed, cell, n, t):
    rho_thr, rho_alias, n_slots, thr, off, word, rew, nk, ns, cap = t
    S = np.zeros((n, cap + 1), np.int64) - 1
    A = np.zeros((n, cap), np.int64) - 1
    for i in range(n):
        s0, s1 = km.stream(seed, cell, np.uint64(0), np.uint64(i))
        L, u, s0, s1 = km._rollout(s0, s1, rho_thr, rho_alias, n_slots, thr, off, word, rew, nk, ns, cap, S[i], A[i],
                                   np.zeros(cap))
        S[i, L + 1:] = -1
        A[i, L:] = -1
    return S, A


@cuda.jit
def gpu_rollouts(seed, cell, rho_thr, rho_alias, n_slots, thr, off, word, rew, nk, ns, cap, S, A, buf_r):
    i = cuda.grid(1)
    if i < S.shape[0]:
        s0, s1 = kc._stream(seed, cell, np.uint64(0), np.uint64(i))
        L, u, s0, s1 = kc._rollout(s0, s1, rho_thr, rho_alias, n_slots, thr, off, word, rew, nk, ns, cap, S[i], A[i],
                                   buf_r[i])
        for t in range(L + 1, cap + 1):
            S[i, t] = -1
        for t in range(L, cap):
            A[i, t] = -1


def main():
    out = {}
    problems = {
        "garnet_finite_noise": pgbench.make("garnet:S=5,A=3,b=2,seed=1,horizon=5,noise=0.5"),
        "gridworld_terminal": pgbench.make("gridworld:n=2,slip=0.3,gamma=0.8"),
        "three_step_uniform_noise": pgbench.make("three_step_bandit"),
    }
    rng = np.random.default_rng(0)
    g = problems["garnet_finite_noise"]
    problems["linear_softmax"] = pgbench.MDPProblem.linear(g.mdp, rng.normal(size=(5, 3, 2)), theta=rng.normal(size=2))
    for name, p in problems.items():
        p = p.with_theta(np.random.default_rng(1).normal(size=p.policy.theta_shape))
        t = make_tables(p, p.theta)
        tup = (*t.sampler(), t.cap)
        n = 12
        Sc, Ac = cpu_rollouts(seed_u64(3), np.uint64(9), n, tup)
        Sg = np.zeros_like(Sc)
        Ag = np.zeros_like(Ac)
        dtup = [cuda.to_device(np.ascontiguousarray(x)) if isinstance(x, np.ndarray) else x for x in tup]
        dS, dA = cuda.to_device(Sg), cuda.to_device(Ag)
        gpu_rollouts[1, 16](seed_u64(3), np.uint64(9), *dtup, dS, dA, cuda.to_device(np.zeros((n, t.cap))))
        Sg, Ag = dS.copy_to_host(), dA.copy_to_host()
        a = sample_mdp(p, FAMILIES, N=5, K=2, seed=7, proxy=True)
        b = sample_mdp(p, FAMILIES, N=5, K=2, seed=7, proxy=True, backend="cuda")
        scale = np.maximum(np.abs(a.estimates), 1e-300)
        rel = np.abs(a.estimates - b.estimates) / np.maximum(scale, np.abs(a.estimates).max(axis=2, keepdims=True))
        out[name] = {"same_states": bool(np.array_equal(Sc, Sg)), "same_actions": bool(np.array_equal(Ac, Ag)),
                     "some_steps": int((Ac >= 0).sum()),
                     "max_rel_diff": {f: float(rel[:, j].max()) for j, f in enumerate(FAMILIES)},
                     "proxy_max_abs_diff": float(np.abs(a.extras["proxy"] - b.extras["proxy"]).max())}
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
