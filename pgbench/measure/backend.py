"""Choosing where kernels run: ``cpu``, ``cuda`` or ``auto`` (CUDA when usable, else the CPU)."""
from __future__ import annotations

import sys

from pgbench.errors import PGBenchError

BACKENDS = ("cpu", "cuda", "auto")


def cuda_status() -> tuple[bool, str]:
    """(usable, why not): numba-cuda importable and a device (or the simulator) present."""
    try:
        from numba import cuda
    except Exception as exc:  # pragma: no cover - depends on the install
        return False, f"numba's CUDA target cannot be imported ({exc}); install the 'cuda' extra: pip install 'pgbench[cuda]'"
    try:
        if cuda.is_available():
            return True, ""
    except Exception as exc:  # pragma: no cover
        return False, f"CUDA is not usable: {exc}"
    return False, "no CUDA device is available (and NUMBA_ENABLE_CUDASIM is not set)"


def resolve_backend(name: str) -> str:
    if name not in BACKENDS:
        raise PGBenchError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")
    if name == "cpu":
        return "cpu"
    ok, why = cuda_status()
    if ok:
        try:
            import pgbench.kernels.cuda  # noqa: F401
        except ImportError as exc:
            ok, why = False, f"the CUDA kernels are not available ({exc})"
    if ok:
        return "cuda"
    if name == "cuda":
        raise PGBenchError(f"backend 'cuda' requested but {why}")
    print(f"pgbench: backend auto: {why}; running on the CPU", file=sys.stderr)
    return "cpu"
