"""Where numba keeps pgbench's compiled kernels: a per-user cache folder, never the package.

numba's default puts a ``cache=True`` function's object code in ``__pycache__`` beside its
source file. For an installed pgbench that is ``site-packages/pgbench/*/__pycache__``: files pip
does not know about (an uninstall leaves them behind, and the leftover folders then shadow a
later editable install as a namespace package), and a read-only or shared environment cannot be
written at all. So unless ``NUMBA_CACHE_DIR`` is set, pgbench points numba at
``<user cache dir>/pgbench/numba``:

- Linux and other Unix: ``$XDG_CACHE_HOME/pgbench/numba``, or ``~/.cache/pgbench/numba``;
- macOS: ``~/Library/Caches/pgbench/numba``;
- Windows: ``%LOCALAPPDATA%\\pgbench\\numba`` (or ``~\\AppData\\Local\\pgbench\\numba``).

numba files each function's cache under the full path of its source file, so two checkouts or
environments never mix their kernels in this folder. numba reads ``NUMBA_CACHE_DIR`` when it is
first imported; :func:`configure` (run by ``import pgbench``) therefore sets the variable, and
when numba was imported before pgbench it also sets ``numba.config.CACHE_DIR``, which numba reads
when a cached function is defined (pgbench's kernels are defined after this runs).
"""
from __future__ import annotations

import os
import sys


def user_cache_dir(platform: str | None = None, environ=None, home: str | None = None) -> str:
    """The platform's per-user cache folder for pgbench (without the ``numba`` part)."""
    platform = sys.platform if platform is None else platform
    environ = os.environ if environ is None else environ
    home = os.path.expanduser("~") if home is None else home
    if platform.startswith("win"):
        base = environ.get("LOCALAPPDATA") or os.path.join(home, "AppData", "Local")
    elif platform == "darwin":
        base = os.path.join(home, "Library", "Caches")
    else:
        xdg = environ.get("XDG_CACHE_HOME", "")
        base = xdg if os.path.isabs(xdg) else os.path.join(home, ".cache")  # the XDG spec ignores relative paths
    return os.path.join(base, "pgbench")


def default_numba_cache_dir(platform: str | None = None, environ=None, home: str | None = None) -> str:
    return os.path.join(user_cache_dir(platform, environ, home), "numba")


def configure() -> str:
    """Point numba's cache at the per-user folder unless ``NUMBA_CACHE_DIR`` already chooses one;
    returns the folder in use."""
    path = os.environ.get("NUMBA_CACHE_DIR", "")
    if not path:
        path = default_numba_cache_dir()
        os.environ["NUMBA_CACHE_DIR"] = path  # child processes (the cold-start compiler) inherit it
    numba = sys.modules.get("numba")
    config = getattr(getattr(numba, "core", None), "config", None) if numba is not None else None
    if config is not None and not getattr(config, "CACHE_DIR", ""):
        config.CACHE_DIR = path  # numba came first and read an empty variable
    return path
