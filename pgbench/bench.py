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
    out["lqg"] = lqg_bench(episodes // 20, repeat)
    out["machine"] = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                      "numba": numba.__version__, "numpy": np.__version__, "threading_layer": _layer()}
    return out


LQG_BENCH_PROBLEM = "lqg:n=4,m=2,T=100,gamma=0.99,seed=0"
LQG_BENCH_ESTIMATORS = ("reinforce_rtg", "svg_inf")


def lqg_bench(episodes: int = 20_000, repeat: int = 3) -> dict:
    """ns per step of the linear-Gaussian rollout kernel (n = 4, m = 2, T = 100) on all threads,
    for a score-function and the pathwise estimator alone, for both on the same episodes, and for
    the normal draws alone ((n + m) / 2 Box-Muller pairs a step); timed in interleaved rounds, each
    keeping its best, so the ratio to the draws survives a loaded machine."""
    from pgbench.kernels.lqg import normal_floor
    from pgbench.measure.lqg import sample_lqg
    prob = make(LQG_BENCH_PROBLEM)
    T = prob.horizon
    K = 2 * max(2, numba.config.NUMBA_NUM_THREADS)
    N = max(1, episodes // K)
    pairs = (prob.n + prob.m + 1) // 2
    jobs = {label: (lambda names=names: sample_lqg(prob, names, None, N, K, 0, 1))
            for label, names in [(e, [e]) for e in LQG_BENCH_ESTIMATORS] + [("both", list(LQG_BENCH_ESTIMATORS))]}
    jobs["normals_floor"] = lambda: normal_floor(seed_u64(0), np.uint64(1), N * K, T, pairs, 16)
    sample_lqg(prob, list(LQG_BENCH_ESTIMATORS), None, 2, 2, 0, 1)  # compile outside the timings
    normal_floor(seed_u64(0), np.uint64(1), 10, T, pairs, 2)
    best = {label: float("inf") for label in jobs}
    for _ in range(max(1, repeat)):
        for label, fn in jobs.items():
            best[label] = min(best[label], _best(fn, 1))
    out = {"problem": LQG_BENCH_PROBLEM, "steps_per_episode": T, "episodes": N * K}
    for label, t in best.items():
        out[f"ns_per_step_{label}"] = t / (N * K * T) * 1e9
    out["ratio_to_normals_floor"] = out["ns_per_step_svg_inf"] / out["ns_per_step_normals_floor"]
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
    if "lqg" in r:
        q = r["lqg"]
        lines.append(f"  LQG {q['problem']}: {q['ns_per_step_reinforce_rtg']:.2f} ns/step reinforce_rtg, "
                     f"{q['ns_per_step_svg_inf']:.2f} svg_inf, {q['ns_per_step_both']:.2f} both (all threads); "
                     f"normals alone {q['ns_per_step_normals_floor']:.2f} (svg_inf / floor = "
                     f"{q['ratio_to_normals_floor']:.2f})")
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


# ------------------------------------------------------------------------------ end to end

END_TO_END_PROBLEMS = ("three_step_bandit", BENCH_PROBLEM)
END_TO_END_CELLS = ((1, 10 ** 6), (16, 10 ** 5), (1024, 10 ** 3))


def _peak_bytes(fn) -> int:
    """Peak bytes allocated while ``fn`` runs (tracemalloc: NumPy arrays and numba's allocations)."""
    import tracemalloc
    tracemalloc.start()
    try:
        fn()
        return int(tracemalloc.get_traced_memory()[1])
    finally:
        tracemalloc.stop()


def run_end_to_end(problems=END_TO_END_PROBLEMS, cells=END_TO_END_CELLS, estimator: str = "reinforce",
                   quick: bool = False) -> list:
    """``measure()`` against the kernel, per (problem, N, K): wall time of the whole call (sampling,
    contraction, statistics with the bootstrap test, the DataFrame) over the kernel's own time
    (``seconds``, the timed sampling passes), and the peak memory allocated during the call,
    also net of the K x d trial estimates that any measurement must hold.

    Wall time and peak memory come from separate calls (tracemalloc slows allocation); ``quick``
    divides K by 100."""
    import resource

    from pgbench.measure.measure import measure
    rows = []
    for name in problems:
        measure(name, [estimator], batch=2, trials=20)  # compile outside the timings
        for N, K in cells:
            K = max(20, K // 100) if quick else K
            t0 = time.perf_counter()
            df = measure(name, [estimator], batch=N, trials=K)
            wall = time.perf_counter() - t0
            kernel = float(df["seconds"].iloc[0])
            d = int(df["d"].iloc[0])
            peak = _peak_bytes(lambda: measure(name, [estimator], batch=N, trials=K))
            est_bytes = 8 * K * d
            rows.append({"problem": name, "estimator": estimator, "N": N, "K": K, "d": d, "wall_s": wall,
                         "kernel_s": kernel, "wall_over_kernel": wall / kernel if kernel > 0 else float("nan"),
                         "peak_mb": peak / 2 ** 20, "estimates_mb": est_bytes / 2 ** 20,
                         "peak_beyond_estimates_mb": (peak - est_bytes) / 2 ** 20,
                         "max_rss_mb_so_far": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024})
    return rows


def format_end_to_end(rows: list) -> str:
    lines = ["end to end: measure() wall time over the kernel's time, peak memory (tracemalloc)",
             f"  {'problem':<40} {'N':>5} {'K':>8} {'d':>4} {'wall s':>8} {'kernel s':>9} {'ratio':>6} "
             f"{'peak MB':>8} {'beyond K x d':>12}"]
    for r in rows:
        lines.append(f"  {r['problem']:<40} {r['N']:>5} {r['K']:>8} {r['d']:>4} {r['wall_s']:>8.3f} "
                     f"{r['kernel_s']:>9.3f} {r['wall_over_kernel']:>6.2f} {r['peak_mb']:>8.1f} "
                     f"{r['peak_beyond_estimates_mb']:>12.1f}")
    return "\n".join(lines)
