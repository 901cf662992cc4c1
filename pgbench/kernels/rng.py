"""Counter-based seeding and an inline xoroshiro128+ generator (the contract's :ref:`contract-randomness`).

Every episode owns a stream keyed by ``(seed, cell, trial, episode)``: the key is mixed
with splitmix64 (Steele, Lea & Flood 2014) into the two words of a xoroshiro128+ state
(Blackman & Vigna 2018). Streams therefore do not depend on how episodes are split over
threads or chunks, and the CUDA kernels can rebuild the same streams on the device.

The functions work on plain scalars (no arrays, no numpy generator), so the CUDA module
can mirror them line for line.
"""
from __future__ import annotations

import hashlib
import math

import numpy as np
from numba import njit, prange

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_TO_UNIT = 1.0 / 9007199254740992.0  # 2^-53


@njit(inline="always", cache=True)
def mix64(z):
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


@njit(inline="always", cache=True)
def stream(seed, cell, trial, episode):
    """xoroshiro128+ state (s0, s1) of one episode's stream."""
    h = mix64(seed + _GOLDEN)
    h = mix64(h ^ (cell + _GOLDEN))
    h = mix64(h ^ (trial * _M1 + _GOLDEN))
    h = mix64(h ^ (episode * _M2 + _GOLDEN))
    s0 = mix64(h + _GOLDEN)
    s1 = mix64(h + _GOLDEN + _GOLDEN)
    if s0 == np.uint64(0) and s1 == np.uint64(0):  # the one forbidden state
        s1 = _GOLDEN
    return s0, s1


@njit(inline="always", cache=True)
def next_u64(s0, s1):
    """One xoroshiro128+ step: (64-bit output, new s0, new s1)."""
    out = s0 + s1
    s1 = s1 ^ s0
    ns0 = ((s0 << np.uint64(24)) | (s0 >> np.uint64(40))) ^ s1 ^ (s1 << np.uint64(16))
    ns1 = (s1 << np.uint64(37)) | (s1 >> np.uint64(27))
    return out, ns0, ns1


@njit(inline="always", cache=True)
def uniform(s0, s1):
    """A double in [0, 1) from the top 53 bits, and the new state."""
    out, s0, s1 = next_u64(s0, s1)
    return float(out >> np.uint64(11)) * _TO_UNIT, s0, s1




@njit(inline="always", cache=True)
def normal(s0, s1):
    """Standard normal by Box-Muller (one of the pair; two uniforms)."""
    u1, s0, s1 = uniform(s0, s1)
    u2, s0, s1 = uniform(s0, s1)
    r = math.sqrt(-2.0 * math.log(1.0 - u1))  # 1 - u1 is in (0, 1]
    return r * math.cos(2.0 * math.pi * u2), s0, s1


def cell_key(*parts) -> int:
    """A 64-bit cell id from anything printable (problem id, theta bytes, batch size ...)."""
    h = hashlib.blake2b(digest_size=8)
    for p in parts:
        if isinstance(p, np.ndarray):
            h.update(np.ascontiguousarray(p, dtype=np.float64).tobytes())
        else:
            h.update(repr(p).encode())
        h.update(b"\x00")
    return int.from_bytes(h.digest(), "little")


def seed_u64(seed) -> np.uint64:
    """A seed in [0, 2^64) as the kernels' word (others are refused: they would wrap onto another seed)."""
    from pgbench.inputs import seed as check_seed
    return np.uint64(check_seed(seed))


@njit(cache=True)
def uniforms(seed, cell, trial, episode, n):
    """The first n uniforms of one stream (tests and references replay streams with this)."""
    s0, s1 = stream(seed, cell, trial, episode)
    out = np.empty(n)
    for i in range(n):
        out[i], s0, s1 = uniform(s0, s1)
    return out


@njit(parallel=True, cache=True)
def rng_floor(seed, cell, n_episodes, steps, n_chunks):
    """The generator alone at 2 uniforms per step, seeded per episode as the kernels are:
    the floor that sampling kernels are compared with (``pgbench bench``)."""
    out = np.zeros(n_chunks)
    per = (n_episodes + n_chunks - 1) // n_chunks
    for c in prange(n_chunks):
        acc = 0.0
        for i in range(c * per, min(n_episodes, (c + 1) * per)):
            s0, s1 = stream(seed, cell, np.uint64(0), np.uint64(i))
            for t in range(steps):
                u, s0, s1 = uniform(s0, s1)
                v, s0, s1 = uniform(s0, s1)
                acc += u * v
        out[c] = acc
    return out
