"""Throughput benchmark (``pgbench bench``): ns per environment step of the sampling kernel,
against a vectorised-NumPy implementation of the same estimator and against the generator
alone, all timed in one run (ratios, not absolute times, are what survive a noisy machine)."""
from __future__ import annotations

import os
import platform
import time

import numba
import numpy as np

from pgbench.kernels.rng import rng_floor, seed_u64
from pgbench.measure.engine import sample_mdp
from pgbench.problems.registry import make

BENCH_PROBLEM = "garnet:S=20,A=4,b=3,seed=0,horizon=50"
ALL_AT_ONCE = ["reinforce", "reinforce_rtg", "rtg_no_gamma_t", "const_baseline:b=1", "batch_mean_baseline", "rloo",
               "w_baseline", "w_baseline_loo", "score_norm_baseline", "value_baseline", "time_baseline_loo",
               "true_advantage", "all_action", "gae:lambda=0.9", "td0", "geometric_termination", "entropy_bonus",
               "natural"]


def _best(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def _kernel_ns(problem, estimators, episodes: int, threads: int, seed: int = 0) -> tuple[float, int]:
    """ns per episode step of a cell (every pass over the episodes included), and the passes."""
    numba.set_num_threads(threads)
    K = 2 * max(2, threads)
    N = max(1, episodes // K)
    res = sample_mdp(problem, estimators, N=N, K=K, seed=seed)
    return res.seconds / (N * K * problem.mdp.horizon) * 1e9, res.episodes // (N * K)


def run_bench(episodes: int = 400_000, repeat: int = 5, quick: bool = False, backend: str = "cpu") -> dict:
    """Time the kernel (1 thread and all threads), the NumPy reference and the generator floor.

    The kernel on 1 thread, on all threads and the floor are timed in interleaved rounds and each
    keeps its best round, so a burst of load on a shared machine hits all three alike.
    """
    if quick:
        episodes, repeat = 20_000, 1
    prob = make(BENCH_PROBLEM)
    steps = prob.mdp.horizon
    n_all = numba.config.NUMBA_NUM_THREADS
    sample_mdp(prob, ["reinforce_rtg"], N=64, K=2)  # compile outside the timings
    sample_mdp(prob, ALL_AT_ONCE, N=64, K=2)
    rng_floor(seed_u64(0), np.uint64(1), 10, steps, 2)
    out: dict = {"problem": BENCH_PROBLEM, "estimator": "reinforce_rtg", "steps_per_episode": steps,
                 "episodes": episodes, "threads": n_all, "backend": backend, "repeat": repeat}
    one = every = floor = float("inf")
    for r in range(repeat):
        one = min(one, _kernel_ns(prob, ["reinforce_rtg"], episodes, 1, seed=r)[0])
        every = min(every, _kernel_ns(prob, ["reinforce_rtg"], episodes, n_all, seed=r)[0])
        # the generator alone, seeded per episode like the kernel, on all threads
        numba.set_num_threads(n_all)
        t0 = time.perf_counter()
        rng_floor(seed_u64(r), np.uint64(1), episodes, steps, 16)
        floor = min(floor, (time.perf_counter() - t0) / (episodes * steps) * 1e9)
    out["ns_per_step_1thread"] = one
    out["ns_per_step_all_threads"] = every
    out["thread_scaling"] = one / every
    out["ns_per_step"] = every
    out["ns_per_step_per_core"] = every * n_all
    out["ns_per_step_rng_floor"] = floor
    # vectorised NumPy, same estimator (NumPy runs on one core; its generator is its own)
    from pgbench.kernels.numpy_ref import reinforce_rtg_numpy
    n_np = max(1000, episodes // 20)
    t = _best(lambda: reinforce_rtg_numpy(prob, None, n_np, seed=0), max(1, repeat - 2))
    out["ns_per_step_numpy"] = t / (n_np * steps) * 1e9
    out["speedup_vs_numpy"] = out["ns_per_step_numpy"] / out["ns_per_step"]
    out["speedup_vs_numpy_1thread"] = out["ns_per_step_numpy"] / out["ns_per_step_1thread"]
    out["ratio_to_rng_floor"] = out["ns_per_step"] / out["ns_per_step_rng_floor"]
    # every estimator at once, on the same episodes
    out["all_estimators"] = len(ALL_AT_ONCE)
    # per episode step of the cell: in-batch estimators need a first pass for batch statistics
    ns_all, passes = min(_kernel_ns(prob, ALL_AT_ONCE, episodes // 4, n_all, seed=r) for r in range(max(1, repeat - 2)))
    out["ns_per_step_all_estimators"] = ns_all
    out["passes_all_estimators"] = passes
    numba.set_num_threads(n_all)
    out["machine"] = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                      "numba": numba.__version__, "numpy": np.__version__, "threading_layer": _layer()}
    return out


def _layer() -> str:
    try:
        return numba.threading_layer()
    except ValueError:
        return "not initialised"


def format_bench(r: dict) -> str:
    lines = [
        f"pgbench bench: {r['estimator']} on {r['problem']} ({r['steps_per_episode']} steps/episode), "
        f"{r['threads']} threads",
        f"  kernel, all threads   {r['ns_per_step']:8.2f} ns/step  ({r['ns_per_step_per_core']:.2f} ns/step per core)",
        f"  kernel, 1 thread      {r['ns_per_step_1thread']:8.2f} ns/step  (scaling x{r['thread_scaling']:.2f})",
        f"  generator floor       {r['ns_per_step_rng_floor']:8.2f} ns/step  (kernel / floor = {r['ratio_to_rng_floor']:.2f})",
        f"  vectorised NumPy      {r['ns_per_step_numpy']:8.2f} ns/step  (kernel is x{r['speedup_vs_numpy']:.1f} faster; "
        f"x{r['speedup_vs_numpy_1thread']:.1f} on 1 thread)",
        f"  all {r['all_estimators']} estimators    {r['ns_per_step_all_estimators']:8.2f} ns/step of the cell, on the "
        f"same episodes ({r['passes_all_estimators']} passes: batch statistics, then weights)",
    ]
    return "\n".join(lines)


def run_bench_cuda(episodes: int = 4_000_000, repeat: int = 3, quick: bool = False) -> dict:
    """Steps per second of the fused kernels on the device (reinforce_rtg, the bench problem)."""
    from pgbench.kernels.cuda import SIMULATOR, device_name
    if quick:
        episodes, repeat = (256 if SIMULATOR else 100_000), 1
    prob = make(BENCH_PROBLEM)
    steps = prob.mdp.horizon
    sample_mdp(prob, ["reinforce_rtg"], N=32, K=2, backend="cuda")  # compile
    K = 4
    N = max(1, episodes // K)
    best = float("inf")
    for r in range(repeat):
        t0 = time.perf_counter()
        res = sample_mdp(prob, ["reinforce_rtg"], N=N, K=K, seed=r, backend="cuda")
        best = min(best, res.seconds)
    sps = N * K * steps / best
    return {"backend": "cuda", "device": device_name(), "simulator": SIMULATOR, "problem": BENCH_PROBLEM,
            "estimator": "reinforce_rtg", "steps_per_episode": steps, "episodes": N * K,
            "seconds": best, "steps_per_second": sps, "ns_per_step": 1e9 / sps}
