"""What one cell's sampling returns, before any statistics: the K trial estimates of every estimator
and the exact values they estimate (built by :func:`pgbench.measure.run_cell` and the LQG path)."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Cell:
    """Raw output of one cell: the K estimates of every estimator and what they estimate."""

    problem: object
    specs: list
    estimates: np.ndarray  # (K, n_est, d)
    targets: np.ndarray  # (n_est, d)
    N: int
    K: int
    seed: int
    seconds: float
    episodes: int
    theta_shape: tuple
    extras: dict = field(default_factory=dict)
