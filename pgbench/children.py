"""Child Python processes that never import from the working directory.

``python -m module`` and ``python -c code`` (which :mod:`multiprocessing`'s spawn start method
uses for every worker) put the current directory first on the child's ``sys.path``: a
``numpy.py`` or ``multiprocessing.py`` in the directory where the user typed the command would be
imported, and run, before any of pgbench's code. Python 3.11's safe-path mode (``-P``, or the
``PYTHONSAFEPATH`` environment variable that spawned children inherit) leaves that entry out.
Every process pgbench starts is started with it.
"""
from __future__ import annotations

import contextlib
import os

SAFE_PATH_ENV = "PYTHONSAFEPATH"


@contextlib.contextmanager
def safe_path():
    """Within the block, child Python processes (spawned workers, ``subprocess`` children that
    inherit the environment) do not put the working directory on ``sys.path``; the environment
    is restored afterwards (workers spawned later, e.g. a restarted Dask worker, should be
    started inside the block too, or the process should call :func:`enable` once)."""
    old = os.environ.get(SAFE_PATH_ENV)
    os.environ[SAFE_PATH_ENV] = "1"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(SAFE_PATH_ENV, None)
        else:
            os.environ[SAFE_PATH_ENV] = old


def enable() -> None:
    """For the whole process (the command line does this at start): every child inherits it."""
    os.environ[SAFE_PATH_ENV] = "1"


def child_env(extra_path: str | None = None) -> dict:
    """A copy of the environment for a ``subprocess`` child: safe-path mode, and ``extra_path``
    (pgbench's own source root) first on ``PYTHONPATH``."""
    env = dict(os.environ)
    env[SAFE_PATH_ENV] = "1"
    if extra_path:
        env["PYTHONPATH"] = extra_path + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env
