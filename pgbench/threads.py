"""Thread settings: one BLAS thread for the small dense linear algebra of the statistics, and the
user's OpenMP, BLAS and numba thread counts left as pgbench found them (:func:`keep_thread_settings`).

An SVD of 1000 x 80 trial estimates took 2.5 s with OpenBLAS's two threads on a 2-core machine
whose cores were busy, and 17 ms with one: BLAS threads that wait for a core cost far more
than they save on matrices this small. :func:`one_blas_thread` limits every BLAS library
loaded in the process (NumPy's and SciPy's OpenBLAS, MKL) to one thread for the duration of a
block, through threadpoolctl; without threadpoolctl it does nothing.
"""
from __future__ import annotations

import contextlib
import functools
import threading

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


# ----------------------------------------------------------------------------- the user's thread settings

_DEPTH = threading.local()


def _openmp_blas_controllers():
    """threadpoolctl's controllers of every OpenMP and BLAS library loaded now (a fresh scan: a
    library loaded after an earlier call, such as torch's libgomp, is included), or ``[]``."""
    try:
        from threadpoolctl import ThreadpoolController
        return list(ThreadpoolController().lib_controllers)
    except Exception:  # threadpoolctl missing or unable to inspect this process
        return []


def _numba_threads(started_only: bool = False):
    """numba's thread count for this thread; with ``started_only``, None while numba has not started
    its threads (asking would start them; and the user cannot have set it without starting them)."""
    try:
        import numba
        if started_only:
            from numba.np.ufunc import parallel
            if not parallel._is_initialized:
                return None
        return numba.get_num_threads()
    except Exception:  # pragma: no cover - numba is a dependency
        return None


@contextlib.contextmanager
def keep_thread_settings():
    """Leave the caller's thread settings as they were found.

    numba's OpenMP threading layer sets OpenMP's thread count (``omp_set_num_threads``) to numba's
    own on every parallel launch, and the OpenMP runtime is shared with other libraries of the
    process: after a cell, ``torch.get_num_threads()`` said 2 where the user had set 1. Around
    pgbench's entry points this records the thread count of every OpenMP and BLAS library
    threadpoolctl sees, and numba's, and sets back any that changed. Nested uses record once.
    """
    depth = getattr(_DEPTH, "n", 0)
    if depth:
        _DEPTH.n = depth + 1
        try:
            yield
        finally:
            _DEPTH.n = depth
        return
    # before numba starts its threads: starting them sets OpenMP's count in the OpenMP runtime
    # already loaded (torch's libgomp, found by its soname)
    found = [(lib, lib.num_threads) for lib in _openmp_blas_controllers()]
    numba_n = _numba_threads(started_only=True)
    _DEPTH.n = 1
    try:
        yield
    finally:
        _DEPTH.n = 0
        _restore(found, numba_n)


def _restore(found, numba_n) -> None:
    for lib, n in found:
        try:
            if lib.num_threads != n:
                lib.set_num_threads(n)
        except Exception:  # a library that cannot be set back: leave it
            pass
    if numba_n is not None and _numba_threads() != numba_n:
        import numba
        numba.set_num_threads(numba_n)


def keeps_thread_settings(fn):
    """Decorator: ``fn`` runs under :func:`keep_thread_settings`."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with keep_thread_settings():
            return fn(*args, **kwargs)
    return wrapper
