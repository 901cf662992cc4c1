"""Compiled kernels (numba).

OpenMP workers (numba's ``omp`` threading layer) wait passively between parallel regions unless
the user chose otherwise: pgbench runs Python between launches (a batch estimator's callback after
each block of episodes), and workers spinning through it took the cores the next launch needed
(on a loaded two-core machine the episode sampler ran 10x slower a trial). Set before the first
parallel launch, which loads the OpenMP runtime.
"""
import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
