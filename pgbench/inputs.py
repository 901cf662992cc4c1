"""Checks of user-given values shared by every layer: real numbers, integers, seeds, and the
memory a piece of work would take (refused above a limit before anything is allocated).

The memory limit is ``PGBENCH_MAX_MEMORY`` (bytes, or with a unit: ``4G``, ``512MB``, ``2GiB``;
``none`` for no limit), 4 GiB by default. Estimates are deliberately rough (within a small
factor): their job is to refuse what would exhaust a machine, with the figure, before numpy
does it with a ``MemoryError``.
"""
from __future__ import annotations

import os
import re
import warnings
from numbers import Integral, Real

import numpy as np

from pgbench.errors import PGBenchError, PGBenchWarning, ResourceLimitError

DEFAULT_MAX_MEMORY = 4 * 2 ** 30
MEMORY_ENV = "PGBENCH_MAX_MEMORY"
SEED_LIMIT = 2 ** 64
MAX_REWARD = 1e100
"""Largest reward magnitude accepted: returns and their squares (variances) stay finite."""
STEP_WARNING = 10 ** 6
"""Python-level loop iterations (e.g. horizon steps of the exact solve) beyond which a warning says so."""
EPISODE_WARNING = 10 ** 10
"""Episodes (N x K) of one cell beyond which a warning gives the count."""

_UNITS = {"": 1, "b": 1, "k": 2 ** 10, "kb": 10 ** 3, "kib": 2 ** 10, "m": 2 ** 20, "mb": 10 ** 6,
          "mib": 2 ** 20, "g": 2 ** 30, "gb": 10 ** 9, "gib": 2 ** 30, "t": 2 ** 40, "tb": 10 ** 12, "tib": 2 ** 40}


def fmt_bytes(n: float) -> str:
    for unit, size in (("TiB", 2.0 ** 40), ("GiB", 2.0 ** 30), ("MiB", 2.0 ** 20), ("KiB", 2.0 ** 10)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{int(n)} bytes"


def parse_bytes(text: str, what: str = MEMORY_ENV) -> float:
    """``"4G"`` -> 4294967296; ``none``/``inf`` -> infinity."""
    t = str(text).strip().lower()
    if t in ("none", "inf", "off", "unlimited"):
        return float("inf")
    m = re.fullmatch(r"([0-9]*\.?[0-9]+(?:e[0-9]+)?)\s*([a-z]*)", t)
    if not m or m.group(2) not in _UNITS:
        raise PGBenchError(f"{what} must be a size like 4G, 512MB or 2000000000 (bytes), or 'none'; got {text!r}")
    value = float(m.group(1)) * _UNITS[m.group(2)]
    if value <= 0:
        raise PGBenchError(f"{what} must be positive; got {text!r}")
    return value


def max_memory() -> float:
    """The memory limit in bytes (``PGBENCH_MAX_MEMORY``, default 4 GiB)."""
    text = os.environ.get(MEMORY_ENV)
    return DEFAULT_MAX_MEMORY if text is None or not text.strip() else parse_bytes(text)


def require_memory(nbytes: float, what: str, alternative: str = "") -> None:
    """Refuse (one line, with the figure) work estimated to need more than the limit."""
    limit = max_memory()
    if nbytes > limit:
        alt = f"; {alternative}" if alternative else ""
        raise ResourceLimitError(f"{what} would need about {fmt_bytes(nbytes)} of memory, above the limit of "
                                 f"{fmt_bytes(limit)} ({MEMORY_ENV} raises it){alt}")


SECONDS_WARNING = 10.0
"""Estimated seconds of one solve beyond which a warning says what it is doing and how long it may take."""


def warn_seconds(seconds: float, what: str) -> None:
    """Say (a :class:`PGBenchWarning`, printed at once by the CLI) that a solve will be long."""
    if seconds > SECONDS_WARNING:
        warnings.warn(f"{what} will take roughly {seconds:.3g} s", PGBenchWarning, stacklevel=3)


def warn_steps(steps: float, what: str) -> None:
    if steps > STEP_WARNING:
        warnings.warn(f"{what} loops over {steps:.3g} steps in Python (at roughly 10 us a step, "
                      f"{steps * 1e-5:.3g} s)", PGBenchWarning, stacklevel=3)


# ----------------------------------------------------------------------------- numbers


def real_array(name: str, x, shape: tuple | None = None) -> np.ndarray:
    """A float64 copy of ``x``; refuses complex, bool, string and object entries (which numpy
    would otherwise convert silently: the imaginary part dropped, '0.5' parsed, True read as 1)."""
    if isinstance(x, (str, bytes)):
        raise PGBenchError(f"{name} must be numeric (real numbers); got the string {x!r}")
    try:
        arr = np.asarray(x)
    except (TypeError, ValueError) as exc:
        raise PGBenchError(f"{name} must be a numeric array: {' '.join(str(exc).split())}") from None
    if arr.dtype.kind not in "fiu":
        what = {"c": "complex", "b": "boolean", "U": "string", "S": "bytes", "O": "non-numeric (object)",
                "M": "datetime", "m": "timedelta", "V": "structured"}.get(arr.dtype.kind, str(arr.dtype))
        raise PGBenchError(f"{name} must be numeric (real numbers); got {what} entries (dtype {arr.dtype})")
    if shape is not None and arr.shape != shape:
        raise PGBenchError(f"{name} has shape {arr.shape}, expected {shape}")
    out = np.array(arr, dtype=np.float64)
    if not np.all(np.isfinite(out)):
        bad = np.argwhere(~np.isfinite(out))
        where = f" at index {tuple(int(i) for i in bad[0])}" if out.ndim else ""
        raise PGBenchError(f"{name} has a non-finite entry (NaN or inf){where}")
    return out


def real_scalar(name: str, x) -> float:
    """A real number: Python or numpy int/float (or a 0-d real array); not bool, str or complex."""
    if isinstance(x, np.ndarray) and x.ndim == 0 and x.dtype.kind in "fiu":
        x = x.item()
    if isinstance(x, (bool, np.bool_)) or not isinstance(x, Real):
        raise PGBenchError(f"{name} must be a real number; got {type(x).__name__} {x!r}")
    v = float(x)
    if not np.isfinite(v):
        raise PGBenchError(f"{name} must be finite; got {x!r}")
    return v


def integer(name: str, x, lo: int | None = None, hi: int | None = None) -> int:
    """A Python int from an int (or an integral numpy scalar); not bool, float or str."""
    if isinstance(x, np.ndarray) and x.ndim == 0 and x.dtype.kind in "iu":
        x = x.item()
    if isinstance(x, (bool, np.bool_)) or not isinstance(x, Integral):
        raise PGBenchError(f"{name} must be an integer; got {type(x).__name__} {x!r}")
    v = int(x)
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        rng = f">= {lo}" if hi is None else f"in [{lo}, {hi}]" if lo is not None else f"<= {hi}"
        raise PGBenchError(f"{name} must be an integer {rng}; got {v}")
    return v


def seed(x, name: str = "seed") -> int:
    """A seed: an integer in [0, 2^64) (larger ones would wrap onto smaller ones' streams)."""
    if isinstance(x, np.ndarray) and x.ndim == 0 and x.dtype.kind in "iu":
        x = x.item()
    if isinstance(x, (bool, np.bool_)) or not isinstance(x, Integral):
        raise PGBenchError(f"{name} must be an integer in [0, 2^64); got {type(x).__name__} {x!r}")
    if not 0 <= int(x) < SEED_LIMIT:
        raise PGBenchError(f"{name} must be an integer in [0, 2^64); got {int(x)}")
    return int(x)
