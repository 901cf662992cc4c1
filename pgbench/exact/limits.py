"""Limits of the exact solvers, shared by the tabular and the linear-Gaussian ones."""

STEP_LIMIT = 10 ** 9
"""Horizons (and sampling caps) beyond this many steps are refused: the exact solve loops over them."""
