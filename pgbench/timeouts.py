"""A wall-clock limit on one cell of work, for user code that may never return.

:func:`time_limit` arms ``SIGALRM`` (``setitimer``) in the main thread; when the limit passes,
the signal handler raises :class:`CellTimeout` inside whatever Python code runs then (a
plug-in's ``time.sleep``, a loop in a batch estimator or a policy), and the command ends with
one line naming the cell. What it cannot interrupt: compiled code that never returns to Python
(a numba function looping forever) and code off the main thread; elsewhere (no ``SIGALRM``, or
not the main thread) the limit is not enforced.
"""
from __future__ import annotations

import contextlib
import math
import signal
import threading

from pgbench.errors import PGBenchError


class CellTimeout(PGBenchError):
    """A cell ran past its time limit (``--timeout``)."""


def check_timeout(seconds, what: str = "--timeout"):
    """None (no limit) or a positive finite number of seconds."""
    if seconds is None:
        return None
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not math.isfinite(seconds) \
            or seconds <= 0:
        raise PGBenchError(f"{what} must be a positive number of seconds; got {seconds!r}")
    return float(seconds)


@contextlib.contextmanager
def time_limit(seconds, what: str):
    """Raise :class:`CellTimeout` naming ``what`` if the block runs longer than ``seconds``
    (None or 0: no limit)."""
    seconds = check_timeout(seconds or None)
    usable = (seconds is not None and hasattr(signal, "setitimer")
              and threading.current_thread() is threading.main_thread())
    if not usable:
        yield
        return

    def on_alarm(signum, frame):
        raise CellTimeout(f"{what} ran past its time limit of {seconds:g} s (a plug-in that hangs or sleeps?); "
                          "raise it with --timeout")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
