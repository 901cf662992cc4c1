"""CUDA target (numba-cuda, the optional ``cuda`` extra): the same rollouts and estimators
as :mod:`pgbench.kernels.mdp`, one GPU thread per episode.

The device code is not a port: the per-episode functions of the CPU kernels (stream seeding,
alias draws, rollout, episode scalars, pass-1 and pass-2 bodies) are recompiled for the
device from their own Python source, with their helper names rebound to device versions and
the accumulation helpers rebound to atomic adds. So the same seed gives the same episodes on
both targets and the estimates agree to rounding (atomic adds sum in another order).

The host wrappers ``_batch_stats`` and ``_score_weights`` take exactly the arguments of the
CPU kernels and fill the same (item, ...) outputs, so the engine drives either target.
Under ``NUMBA_ENABLE_CUDASIM=1`` everything runs in numba's simulator (tiny sizes, tests).
"""
from __future__ import annotations

import types

import numpy as np
from numba import config, cuda

import pgbench.kernels.mdp as _cpu
import pgbench.kernels.rng as _rng

SIMULATOR = bool(config.ENABLE_CUDASIM)
if SIMULATOR:
    import warnings
    # the simulator runs the generator's uint64 arithmetic in NumPy, which warns when it wraps
    # around (wrapping is the point); numba's compiled code never warns
    warnings.filterwarnings("ignore", message="overflow encountered in scalar", category=RuntimeWarning)
THREADS_PER_BLOCK = 32 if SIMULATOR else 128
MAX_THREADS = 64 if SIMULATOR else 1 << 16


@cuda.jit(device=True)
def _acc2_dev(arr, i, j, v):
    cuda.atomic.add(arr, (i, j), v)


@cuda.jit(device=True)
def _acc3_dev(arr, i, j, k, v):
    cuda.atomic.add(arr, (i, j, k), v)


@cuda.jit(device=True)
def _acc4_dev(arr, i, j, k, m, v):
    cuda.atomic.add(arr, (i, j, k, m), v)


def _device_family() -> dict:
    """Device versions of the CPU per-episode functions, compiled from the same source."""
    ns: dict = {"_acc2": _acc2_dev, "_acc3": _acc3_dev, "_acc4": _acc4_dev}
    g_rng = dict(vars(_rng))
    g_mdp = dict(vars(_cpu))

    def rebind(module_globals, fn):
        py = fn.py_func
        f = types.FunctionType(py.__code__, module_globals, py.__name__, py.__defaults__, py.__closure__)
        return cuda.jit(device=True)(f)

    for name in ("mix64", "next_u64", "uniform", "stream", "normal"):
        ns[name] = rebind(g_rng, getattr(_rng, name))
    for name in ("_column", "_alias_pick", "_rollout", "_episode_scalars", "_geometric_horizon", "_episode_stats",
                 "_episode_weights"):
        ns[name] = rebind(g_mdp, getattr(_cpu, name))
    # compilation is lazy: filling the shared globals now is enough for every call to resolve
    g_rng.update(ns)
    g_mdp.update(ns)
    return ns


_D = _device_family()
_stream = _D["stream"]
_rollout = _D["_rollout"]
_episode_scalars = _D["_episode_scalars"]
_episode_stats = _D["_episode_stats"]
_episode_weights = _D["_episode_weights"]


@cuda.jit
def _pass1_kernel(seed, cell, trial0, n_trials, N, per, rho_thr, rho_alias, n_slots, step_thr, step_off, step_word,
                  step_r, noise_kind, noise_scale, pi, pi2sum, terminal, gamma, gpow, cap, finite, linear, score,
                  need_z, rho_ratio, sc_s, sc_a, sc_r, sc_g, sc_cnt, sc_ns, sc_z,
                  out_stats, out_SG, out_fit_sum, out_fit_cnt, out_rho):
    tid = cuda.grid(1)
    nthreads = cuda.gridsize(1)
    if tid >= sc_s.shape[0]:
        return
    n_chunks = out_stats.shape[0] // n_trials
    for w in range(tid, n_trials * N, nthreads):
        k = w // N
        i = w - k * N
        row = k * n_chunks + i // per
        s0, s1 = _stream(seed, cell, np.uint64(trial0 + k), np.uint64(i))
        L, u_geo, s0, s1 = _rollout(s0, s1, rho_thr, rho_alias, n_slots, step_thr, step_off, step_word, step_r,
                                    noise_kind, noise_scale, cap, sc_s[tid], sc_a[tid], sc_r[tid])
        Rep, W, Z = _episode_scalars(L, sc_s[tid], sc_a[tid], sc_r[tid], gpow, pi, pi2sum, linear, score, True, True,
                                     need_z, sc_cnt[tid], sc_ns[tid], sc_z[tid])
        _episode_stats(row, L, sc_s[tid], sc_a[tid], sc_r[tid], sc_g[tid], Rep, W, Z, gamma, finite, rho_ratio, cap,
                       out_stats, out_SG, out_fit_sum, out_fit_cnt, out_rho)


@cuda.jit
def _pass2_kernel(seed, cell, trial0, n_trials, N, per, rho_thr, rho_alias, n_slots, step_thr, step_off, step_word,
                  step_r, noise_kind, noise_scale, pi, logpi, pi2sum, terminal, gamma, gpow, cap, finite, linear,
                  score, codes, fpar, crit, critics, Vtab, Qtab, rho_ratio, b_stats, b_SG, b_fitV, b_rho, need_z,
                  want_proxy, lg, need_r, need_w, need_rho, sc_s, sc_a, sc_r, sc_g, sc_cnt, sc_ns, sc_z,
                  outC, out_proxy):
    tid = cuda.grid(1)
    nthreads = cuda.gridsize(1)
    if tid >= sc_s.shape[0]:
        return
    n_chunks = outC.shape[0] // n_trials
    for w in range(tid, n_trials * N, nthreads):
        k = w // N
        i = w - k * N
        row = k * n_chunks + i // per
        s0, s1 = _stream(seed, cell, np.uint64(trial0 + k), np.uint64(i))
        L, u_geo, s0, s1 = _rollout(s0, s1, rho_thr, rho_alias, n_slots, step_thr, step_off, step_word, step_r,
                                    noise_kind, noise_scale, cap, sc_s[tid], sc_a[tid], sc_r[tid])
        Rep, W, Z = _episode_scalars(L, sc_s[tid], sc_a[tid], sc_r[tid], gpow, pi, pi2sum, linear, score, need_r,
                                     need_w, need_z, sc_cnt[tid], sc_ns[tid], sc_z[tid])
        _episode_weights(row, k, N, L, u_geo, (sc_s[tid], sc_a[tid], sc_r[tid], sc_g[tid]), Rep, W, Z,
                         (gamma, gpow, cap, finite, lg, pi, logpi, terminal),
                         (codes, fpar, crit, critics, Vtab, Qtab, rho_ratio), (b_stats, b_SG, b_fitV, b_rho),
                         need_rho, want_proxy, outC, out_proxy)


def _launch_shape(work: int) -> tuple[int, int]:
    threads = max(1, min(work, MAX_THREADS))
    blocks = -(-threads // THREADS_PER_BLOCK)
    return blocks, blocks * THREADS_PER_BLOCK


def _scratch(n, cap, S, A, need_z, linear, d):
    zt = need_z and not linear
    return dict(
        sc_s=cuda.device_array((n, cap + 1), np.int64), sc_a=cuda.device_array((n, cap), np.int64),
        sc_r=cuda.device_array((n, cap)), sc_g=cuda.device_array((n, cap)),
        sc_cnt=cuda.to_device(np.zeros((n, S, A) if zt else (n, 1, 1))),
        sc_ns=cuda.to_device(np.zeros((n, S) if zt else (n, 1))), sc_z=cuda.to_device(np.zeros((n, d))))


def _dev(*arrays):
    return [cuda.to_device(np.ascontiguousarray(a)) for a in arrays]


def _batch_stats(seed, cell, trial0, n_trials, N, n_chunks, rho_thr, rho_alias, n_slots, step_thr, step_off, step_word,
                 step_r, noise_kind, noise_scale, pi, pi2sum, terminal, gamma, gpow, cap, finite, linear, score,
                 need_z, rho_ratio, out_stats, out_SG, out_fit_sum, out_fit_cnt, out_rho):
    """Pass 1 on the device; same arguments and outputs as :func:`pgbench.kernels.mdp._batch_stats`."""
    if n_trials == 0:
        return out_stats
    blocks, n = _launch_shape(n_trials * N)
    per = (N + n_chunks - 1) // n_chunks
    S, A = pi.shape
    sc = _scratch(n, cap, S, A, need_z, linear, score.shape[2])
    (d_rho_thr, d_rho_alias, d_thr, d_off, d_word, d_r, d_noise, d_pi, d_pi2sum, d_term, d_gpow, d_score,
     d_rho) = _dev(rho_thr, rho_alias, step_thr, step_off, step_word, step_r, noise_scale, pi, pi2sum, terminal, gpow,
                   score, rho_ratio)
    outs = _dev(out_stats, out_SG, out_fit_sum, out_fit_cnt, out_rho)
    _pass1_kernel[blocks, THREADS_PER_BLOCK](
        seed, cell, np.int64(trial0), np.int64(n_trials), np.int64(N), np.int64(per), d_rho_thr, d_rho_alias,
        np.int64(n_slots), d_thr, d_off, d_word, d_r, np.int64(noise_kind), d_noise, d_pi, d_pi2sum, d_term,
        np.float64(gamma), d_gpow, np.int64(cap), finite, linear, d_score, need_z, d_rho,
        sc["sc_s"], sc["sc_a"], sc["sc_r"], sc["sc_g"], sc["sc_cnt"], sc["sc_ns"], sc["sc_z"], *outs)
    for host, dev in zip((out_stats, out_SG, out_fit_sum, out_fit_cnt, out_rho), outs):
        host[...] = dev.copy_to_host()
    return out_stats


def _score_weights(seed, cell, trial0, n_trials, N, n_chunks, rho_thr, rho_alias, n_slots, step_thr, step_off, step_word,
                   step_r, noise_kind, noise_scale, pi, logpi, pi2sum, terminal, gamma, gpow, cap, finite, linear,
                   score, codes, fpar, crit, critics, Vtab, Qtab, rho_ratio, b_stats, b_SG, b_fitV, b_rho, need_z,
                   want_proxy, lg, outC, out_proxy):
    """Pass 2 on the device; same arguments and outputs as :func:`pgbench.kernels.mdp._score_weights`."""
    if n_trials == 0:
        return outC
    need_r, need_w, need_rho = _cpu._needs(codes, want_proxy)
    blocks, n = _launch_shape(n_trials * N)
    per = (N + n_chunks - 1) // n_chunks
    S, A = pi.shape
    sc = _scratch(n, cap, S, A, need_z, linear, score.shape[2])
    (d_rho_thr, d_rho_alias, d_thr, d_off, d_word, d_r, d_noise, d_pi, d_logpi, d_pi2sum, d_term, d_gpow, d_score,
     d_codes, d_fpar, d_crit, d_critics, d_V, d_Q, d_rho, d_bs, d_bsg, d_bfit,
     d_brho) = _dev(rho_thr, rho_alias, step_thr, step_off, step_word, step_r, noise_scale, pi, logpi, pi2sum, terminal,
                    gpow, score, codes, fpar, crit, critics, Vtab, Qtab, rho_ratio, b_stats, b_SG, b_fitV, b_rho)
    outs = _dev(outC, out_proxy)
    _pass2_kernel[blocks, THREADS_PER_BLOCK](
        seed, cell, np.int64(trial0), np.int64(n_trials), np.int64(N), np.int64(per), d_rho_thr, d_rho_alias,
        np.int64(n_slots), d_thr, d_off, d_word, d_r, np.int64(noise_kind), d_noise, d_pi, d_logpi, d_pi2sum,
        d_term, np.float64(gamma), d_gpow, np.int64(cap), finite, linear, d_score, d_codes, d_fpar,
        d_crit, d_critics, d_V, d_Q, d_rho, d_bs, d_bsg, d_bfit, d_brho, need_z, want_proxy, np.float64(lg),
        need_r, need_w, need_rho, sc["sc_s"], sc["sc_a"], sc["sc_r"], sc["sc_g"], sc["sc_cnt"],
        sc["sc_ns"], sc["sc_z"], *outs)
    outC[...] = outs[0].copy_to_host()
    out_proxy[...] = outs[1].copy_to_host()
    return outC


def device_name() -> str:
    if SIMULATOR:
        return "numba CUDA simulator"
    dev = cuda.get_current_device()
    name = dev.name
    return name.decode() if isinstance(name, bytes) else str(name)
