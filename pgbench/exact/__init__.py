"""Exact ground truth (no sampling): values, visitation, gradient, Fisher, natural gradient."""
from pgbench.exact.solve import GroundTruth, exact, objective

__all__ = ["GroundTruth", "exact", "objective"]
