"""Arrays handed back by user code (NumPy, torch, JAX), read without importing torch or JAX."""
from __future__ import annotations

import numpy as np

from pgbench.errors import PGBenchError


def as_array(x) -> np.ndarray | None:
    """A float64 NumPy array from NumPy, torch (``.detach().cpu().numpy()``) or JAX (``__array__``)
    output, without importing either; None when x is not numeric array-like."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):
        x = x.detach().cpu().numpy()
    if not (isinstance(x, (np.ndarray, np.generic)) or hasattr(x, "__array__")):
        return None
    try:
        out = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError):
        return None
    return out


_KINDS = {"c": "complex", "b": "boolean", "U": "string", "S": "bytes", "O": "Python-object",
          "M": "datetime", "m": "timedelta", "V": "structured"}


def real_output(x, where: str) -> np.ndarray:
    """Like :func:`as_array`, for user code's output, with an error naming ``where`` instead of
    None: not array-like, a conversion that raises (a failing ``__array__``), or entries that
    are not real numbers (complex, boolean, strings, Python objects) are refused, never converted
    (numpy would drop an imaginary part or parse '0.5')."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):
        try:
            x = x.detach().cpu().numpy()
        except Exception as exc:
            raise PGBenchError(f"{where} returned a {type(x).__name__} that could not be read as an array: "
                               f"{type(exc).__name__}: {' '.join(str(exc).split())}") from exc
    if not (isinstance(x, (np.ndarray, np.generic)) or hasattr(x, "__array__")):
        raise PGBenchError(f"{where} returned {type(x).__name__}, not an array")
    try:
        arr = np.asarray(x)
    except Exception as exc:  # the user's __array__ raised
        raise PGBenchError(f"{where} returned a {type(x).__name__} whose conversion to an array raised "
                           f"{type(exc).__name__}: {' '.join(str(exc).split())}") from exc
    if arr.dtype.kind not in "fiu":
        what = _KINDS.get(arr.dtype.kind, str(arr.dtype))
        hint = "; return a float array (np.asarray(x, dtype=float))" if arr.dtype.kind == "O" else ""
        raise PGBenchError(f"{where} returned {what} entries (dtype {arr.dtype}), not real numbers{hint}")
    return arr.astype(np.float64, copy=False)
