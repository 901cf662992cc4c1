"""One BLAS thread for the small dense linear algebra of the statistics.

An SVD of 1000 x 80 trial estimates took 2.5 s with OpenBLAS's two threads on a 2-core machine
whose cores were busy, and 17 ms with one: BLAS threads that wait for a core cost far more
than they save on matrices this small. :func:`one_blas_thread` limits every BLAS library
loaded in the process (NumPy's and SciPy's OpenBLAS, MKL) to one thread for the duration of a
block, through threadpoolctl; without threadpoolctl it does nothing.
"""
from __future__ import annotations

import contextlib
import functools

_CONTROLLER = None


def _controller():
    global _CONTROLLER
    if _CONTROLLER is None:
        try:
            import scipy.linalg  # noqa: F401  (load SciPy's BLAS too, so that it is limited as well)
            from threadpoolctl import ThreadpoolController
            _CONTROLLER = ThreadpoolController()
        except Exception:  # threadpoolctl missing or unable to inspect this process: leave BLAS alone
            _CONTROLLER = False
    return _CONTROLLER


@contextlib.contextmanager
def one_blas_thread():
    """Run the block with BLAS limited to one thread (restored afterwards)."""
    ctl = _controller()
    if not ctl:
        yield
        return
    with ctl.limit(limits=1, user_api="blas"):
        yield


def blas_single_threaded(fn):
    """Decorator: ``fn`` runs under :func:`one_blas_thread`."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with one_blas_thread():
            return fn(*args, **kwargs)
    return wrapper
