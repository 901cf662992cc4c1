"""One-command GPU check (a few minutes on a device): ``python benchmarks/gpu_check.py OUT.json [--quick]``.

1. CPU/GPU equality: every estimator on three problems, the same seed on both targets; the
   largest relative difference of the estimates (atomic adds sum in another order: ~1e-12).
2. Throughput at N = 4096: steps/s of ``reinforce_rtg`` and of all estimators at once on the
   bench problem, on the GPU and (for the ratio, in the same run) on the CPU.
3. Registers per thread, local memory and the theoretical occupancy of the two kernels at the
   launch's block size.

Prints a summary and writes JSON to OUT.json. Without a usable GPU it says why, writes
``{"available": false, "reason": ...}`` and exits with status 1. Under ``NUMBA_ENABLE_CUDASIM=1``
it runs in numba's simulator at tiny sizes (a smoke test of the script, not a measurement).
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np

EQUALITY_PROBLEMS = ("three_step_bandit", "garnet:S=5,A=3,b=2,seed=1,horizon=5,noise=0.5",
                     "gridworld:n=3,slip=0.1,gamma=0.9")
N_THROUGHPUT = 4096


def _equality(sim: bool) -> dict:
    from pgbench.bench import ALL_AT_ONCE
    from pgbench.measure.engine import sample_mdp
    from pgbench.problems.registry import make
    ests = ["reinforce", "reinforce_rtg", "rloo", "gae:lambda=0.9", "natural"] if sim else ALL_AT_ONCE
    N, K = (4, 2) if sim else (64, 8)
    out = {}
    for name in EQUALITY_PROBLEMS:
        prob = make(name)
        cpu = sample_mdp(prob, ests, N=N, K=K, seed=11).estimates
        gpu = sample_mdp(prob, ests, N=N, K=K, seed=11, backend="cuda").estimates
        scale = np.maximum(np.abs(cpu).max(axis=(0, 2)), 1e-300)
        rel = np.abs(gpu - cpu).max(axis=(0, 2)) / scale
        out[name] = {"N": N, "K": K, "max_rel_diff": float(rel.max()),
                     "per_estimator": dict(zip(ests, map(float, rel)))}
    return out


def _steps_per_second(prob, ests, N: int, K: int, backend: str, repeat: int) -> float:
    from pgbench.measure.engine import sample_mdp
    sample_mdp(prob, ests, N=min(N, 64), K=2, backend=backend)  # compile outside the timing
    best = float("inf")
    for r in range(repeat):
        best = min(best, sample_mdp(prob, ests, N=N, K=K, seed=r, backend=backend).seconds)
    return N * K * prob.mdp.horizon / best


def _throughput(sim: bool, quick: bool) -> dict:
    from pgbench.bench import ALL_AT_ONCE, BENCH_PROBLEM
    from pgbench.problems.registry import make
    prob = make(BENCH_PROBLEM)
    N = 8 if sim else N_THROUGHPUT
    K_gpu = 2 if sim else (64 if quick else 256)
    K_cpu = 2 if sim else 4
    repeat = 1 if (sim or quick) else 3
    out = {"problem": BENCH_PROBLEM, "N": N}
    for label, ests in (("reinforce_rtg", ["reinforce_rtg"]), ("all_estimators", ALL_AT_ONCE)):
        gpu = _steps_per_second(prob, ests, N, K_gpu, "cuda", repeat)
        cpu = _steps_per_second(prob, ests, N, K_cpu, "cpu", repeat)
        out[label] = {"gpu_steps_per_s": gpu, "cpu_steps_per_s": cpu, "gpu_over_cpu": gpu / cpu,
                      "episodes_gpu": N * K_gpu}
    return out


def _occupancy() -> dict:
    """Registers and theoretical occupancy of every compiled specialisation of the two kernels."""
    from numba import cuda

    from pgbench.kernels import cuda as kc
    out = {"threads_per_block": kc.THREADS_PER_BLOCK}
    try:
        dev = cuda.get_current_device()
        regs_sm = int(getattr(dev, "MAX_REGISTERS_PER_MULTIPROCESSOR", 65536))
        threads_sm = int(getattr(dev, "MAX_THREADS_PER_MULTI_PROCESSOR", 2048))
        blocks_sm = int(getattr(dev, "MAX_BLOCKS_PER_MULTIPROCESSOR", 32))
        out["multiprocessors"] = int(getattr(dev, "MULTIPROCESSOR_COUNT", 0))
    except Exception as exc:  # the simulator has no such attributes
        return {**out, "error": f"device attributes unavailable: {exc}"}
    tpb = kc.THREADS_PER_BLOCK
    for name in ("_pass1_kernel", "_pass2_kernel"):
        k = getattr(kc, name)
        rows = []
        for sig in list(getattr(k, "overloads", {}).keys()):
            try:
                regs = int(k.get_regs_per_thread(sig))
                local = int(k.get_local_mem_per_thread(sig))
                max_tpb = int(k.get_max_threads_per_block(sig))
            except Exception as exc:
                rows.append({"error": str(exc)})
                continue
            # warps' registers are allocated in units of 256 per warp
            regs_warp = -(-regs * 32 // 256) * 256
            by_regs = regs_sm // (regs_warp * (tpb // 32)) if regs_warp else blocks_sm
            blocks = max(0, min(by_regs, threads_sm // tpb, blocks_sm))
            rows.append({"regs_per_thread": regs, "local_bytes_per_thread": local, "max_threads_per_block": max_tpb,
                         "blocks_per_sm": blocks, "occupancy": blocks * tpb / threads_sm})
        out[name] = rows
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out", help="where to write the JSON summary")
    ap.add_argument("--quick", action="store_true", help="fewer episodes and one timing round")
    args = ap.parse_args(argv)
    from pgbench.measure.backend import cuda_status
    from pgbench.suites.store import environment, write_json
    ok, why = cuda_status()
    if not ok:
        print(f"gpu_check: no GPU to check: {why}", file=sys.stderr)
        write_json(args.out, {"available": False, "reason": why})
        return 1
    from pgbench.kernels import cuda as kc
    sim = kc.SIMULATOR
    t0 = time.perf_counter()
    res = {"available": True, "device": kc.device_name(), "simulator": sim}
    res["equality"] = _equality(sim)
    res["throughput"] = _throughput(sim, args.quick)
    res["occupancy"] = _occupancy()
    res["seconds"] = time.perf_counter() - t0
    try:
        res["environment"] = environment()
    except Exception:  # informative only
        pass
    write_json(args.out, res)
    worst = max(v["max_rel_diff"] for v in res["equality"].values())
    print(f"gpu_check on {res['device']}{' (simulator: not a measurement)' if sim else ''}, {res['seconds']:.0f} s")
    print(f"  CPU/GPU estimates, {len(EQUALITY_PROBLEMS)} problems: largest relative difference {worst:.2e}")
    th = res["throughput"]
    for label in ("reinforce_rtg", "all_estimators"):
        r = th[label]
        print(f"  {label:<15} N={th['N']}: GPU {r['gpu_steps_per_s']:.3g} steps/s, CPU {r['cpu_steps_per_s']:.3g} "
              f"steps/s (GPU/CPU {r['gpu_over_cpu']:.1f}x)")
    for name in ("_pass1_kernel", "_pass2_kernel"):
        for r in res["occupancy"].get(name, []):
            if "regs_per_thread" in r:
                print(f"  {name}: {r['regs_per_thread']} registers/thread, {r['local_bytes_per_thread']} B local, "
                      f"occupancy {r['occupancy']:.0%} at {res['occupancy']['threads_per_block']} threads/block")
    print(f"  JSON: {args.out}")
    return 0 if worst <= 1e-9 else 2


if __name__ == "__main__":
    sys.exit(main())
