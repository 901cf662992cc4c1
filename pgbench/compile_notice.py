"""Saying on stderr that numba is compiling, for every command that compiles.

Compiling pgbench's kernels takes seconds to a minute the first time (afterwards numba loads
them from its on-disk cache, :mod:`pgbench.numba_cache`). A silent pause of that length reads as
a hang, so the command line installs :func:`watch`: a listener on numba's ``numba:compile``
event, which numba fires only for a real compilation (a cache hit fires nothing). On the first
compilation of a command it prints one line, and when the command ends the seconds spent
compiling (:func:`finish`). ``pgbench run`` says so up front (:func:`announce`), and the
listener then only counts.
"""
from __future__ import annotations

import os
import sys
import time

_state = {"listener": None, "announced": False, "seconds": 0.0, "cpu_seconds": 0.0, "depth": 0, "t0": 0.0, "c0": 0.0,
          "names": []}


def _say(msg: str) -> None:
    print(f"pgbench: {msg}", file=sys.stderr, flush=True)


def announce(msg: str | None = None) -> None:
    """Say that compiling starts (``msg``; none: say nothing); the listener then does not repeat it."""
    _state["announced"] = True
    if msg:
        _say(msg)


def _make_listener():
    from numba.core import event

    class _Listener(event.Listener):
        def on_start(self, ev):
            if _state["depth"] == 0:
                _state["t0"], _state["c0"] = time.perf_counter(), time.process_time()
                disp = (ev.data or {}).get("dispatcher")
                name = getattr(getattr(disp, "py_func", None), "__name__", "a kernel")
                _state["names"].append(name)
                if not _state["announced"]:
                    from pgbench.numba_cache import configure
                    announce(f"compiling kernels ({name} first; first use only: they are cached in "
                             f"{configure()})")
            _state["depth"] += 1

        def on_end(self, ev):
            _state["depth"] = max(0, _state["depth"] - 1)
            if _state["depth"] == 0:
                _state["seconds"] += time.perf_counter() - _state["t0"]
                _state["cpu_seconds"] += time.process_time() - _state["c0"]

    return _Listener()


ENV = "PGBENCH_COMPILE_NOTICE"
"""Set to ``0`` to silence the notice (the test suite does, where commands' stderr is compared)."""


def watch() -> None:
    """Install the listener (idempotent), unless ``PGBENCH_COMPILE_NOTICE=0``."""
    if os.environ.get(ENV, "").strip() == "0":
        return
    if _state["listener"] is None:
        from numba.core import event
        _state.update(announced=False, seconds=0.0, cpu_seconds=0.0, depth=0, names=[])
        _state["listener"] = _make_listener()
        event.register("numba:compile", _state["listener"])


def compile_seconds() -> float:
    """Seconds spent compiling since :func:`watch` (top-level compilations only)."""
    return _state["seconds"]


def compile_cpu_seconds() -> float:
    """CPU seconds of this process spent compiling (numba compiles on one thread): unlike the
    wall seconds, about the same on a busy machine."""
    return _state["cpu_seconds"]


def compiled() -> list:
    """The kernels compiled since :func:`watch`, outermost first."""
    return list(_state["names"])


def finish() -> None:
    """Say how long compiling took, if anything was compiled; then stop listening."""
    listener = _state["listener"]
    if listener is None:
        return
    from numba.core import event
    try:
        event.unregister("numba:compile", listener)
    except Exception:  # pragma: no cover - numba without unregister
        pass
    _state["listener"] = None
    if _state["names"]:
        _say(f"compiled {len(_state['names'])} kernel(s) in {_state['seconds']:.1f} s (cached for next time)")
