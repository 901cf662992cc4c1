"""Installing and starting pgbench: the numba cache lives outside the package, `--version`
names this pgbench (PostgreSQL ships a `pgbench` too), and what the README's commands write into
a checkout is ignored by git."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from pgbench.numba_cache import default_numba_cache_dir

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("platform, environ, expected", [
    ("linux", {"XDG_CACHE_HOME": "/xdg"}, os.path.join("/xdg", "pgbench", "numba")),
    ("linux", {}, os.path.join("/home/u", ".cache", "pgbench", "numba")),
    ("linux", {"XDG_CACHE_HOME": "relative"}, os.path.join("/home/u", ".cache", "pgbench", "numba")),
    ("darwin", {"XDG_CACHE_HOME": "/xdg"}, os.path.join("/home/u", "Library", "Caches", "pgbench", "numba")),
    ("win32", {"LOCALAPPDATA": "C:/Users/u/AppData/Local"}, os.path.join("C:/Users/u/AppData/Local", "pgbench", "numba")),
    ("win32", {}, os.path.join("/home/u", "AppData", "Local", "pgbench", "numba")),
])
def test_platform_cache_dirs(platform, environ, expected):
    assert default_numba_cache_dir(platform, environ, home="/home/u") == expected


def _fresh(code: str, tmp_path, **env):
    e = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    e.update(XDG_CACHE_HOME=str(tmp_path / "xdg"), PYTHONPATH=ROOT, **env)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=e, cwd=str(tmp_path))
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


@pytest.mark.skipif(sys.platform in ("darwin", "win32"), reason="the XDG variable is read on Linux and Unix")
@pytest.mark.parametrize("numba_first", [False, True])
def test_kernels_cache_in_the_user_folder(tmp_path, numba_first):
    """Without NUMBA_CACHE_DIR, numba's cache for pgbench's kernels is the per-user folder, also
    when numba was imported before pgbench; never the package's __pycache__."""
    code = ("import numba\n" if numba_first else "") + (
        "import os, pgbench, numba\n"
        "from pgbench.kernels import mdp\n"
        "print(os.environ['NUMBA_CACHE_DIR'], numba.config.CACHE_DIR, mdp._score_weights._cache._cache_path)")
    env_dir, config_dir, kernel_dir = _fresh(code, tmp_path)
    want = str(tmp_path / "xdg" / "pgbench" / "numba")
    assert env_dir == want and config_dir == want
    assert kernel_dir.startswith(want + os.sep)
    assert not kernel_dir.startswith(os.path.join(ROOT, "pgbench"))


def test_numba_cache_dir_is_respected(tmp_path):
    mine = str(tmp_path / "mine")
    code = "import pgbench, numba; from pgbench.kernels import rng; print(numba.config.CACHE_DIR)"
    assert _fresh(code, tmp_path, NUMBA_CACHE_DIR=mine) == [mine]


@pytest.mark.parametrize("argv", [["-m", "pgbench", "--version"], ["-m", "pgbench.cli", "--version"]])
def test_version(argv):
    import pgbench
    out = subprocess.run([sys.executable, *argv], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    line = out.stdout.strip()
    assert line.startswith(f"pgbench {pgbench.__version__} (policy-gradient estimator benchmark;")
    assert os.path.dirname(os.path.abspath(pgbench.__file__)) in line  # which copy answers


def test_what_the_readme_commands_write_is_ignored():
    if not os.path.isdir(os.path.join(ROOT, ".git")) and not os.path.isfile(os.path.join(ROOT, ".git")):
        pytest.skip("not a git checkout")
    paths = ["results/quickstart/report.html", "results/py/meta.json", "results/py-bench.json",
             "results/run-20260101-000000-quick/results.csv", ".numba_cache/x.nbi"]
    out = subprocess.run(["git", "check-ignore", "--no-index", *paths], capture_output=True, text=True, cwd=ROOT)
    assert sorted(out.stdout.split()) == sorted(paths)
    # the reference run and the benchmark figures stay tracked
    out = subprocess.run(["git", "check-ignore", "--no-index", "results/reference/results.csv",
                          "results/bench/x.json"], capture_output=True, text=True, cwd=ROOT)
    assert out.stdout.strip() == ""
