"""Arrays handed back by user code (NumPy, torch, JAX), read without importing torch or JAX."""
from __future__ import annotations

import numpy as np


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
