"""The registries of estimators users bring (numba per-episode and Python batch functions) and their
kernel codes: the bottom of :mod:`pgbench.estimators`, read by the catalogue's ``parse`` and filled by
:mod:`pgbench.estimators.user` and :mod:`pgbench.estimators.batch` (which import the catalogue, never
the other way round)."""
from __future__ import annotations

USER_ESTIMATORS: dict = {}
BATCH_ESTIMATORS: dict = {}
USER_CODE = -2
BATCH_CODE = -3
END_TERMINAL, END_HORIZON, END_CAP = 0, 1, 2  # how an episode ended: a user function's ``end`` argument
