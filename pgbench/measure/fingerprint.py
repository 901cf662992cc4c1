"""A fingerprint of the sampler's draws: results made by samplers whose draws differ must not mix.

The fingerprint hashes what the kernels draw for a fixed small problem and seed (returns, the W
proxy and the exact score norm of the first episodes, rounded to 9 significant digits so that
last-bit differences of libm or FMA contraction between machines do not count). Any change to
the random streams, the alias tables or the rollout changes it; a change that keeps the same
draws (a faster loop, a reordering of independent work) does not.
"""
from __future__ import annotations

import functools
import hashlib

import numpy as np

FINGERPRINT_PROBLEM = "garnet:S=6,A=3,b=3,seed=0,horizon=12,noise=0.5"
FINGERPRINT_EPISODES = 64


@functools.lru_cache(maxsize=1)
def sampler_fingerprint() -> str:
    """16 hex digits identifying the sampler's draws (same for every run of the same sampler)."""
    from pgbench.measure.engine import episode_samples
    from pgbench.problems.registry import make
    s = episode_samples(make(FINGERPRINT_PROBLEM), n=FINGERPRINT_EPISODES, seed=0)
    parts = [np.array([float(f"{x:.9g}") for x in s[k]]).tobytes() for k in ("R", "W", "znorm2")]
    return hashlib.sha256(b"".join(parts)).hexdigest()[:16]
