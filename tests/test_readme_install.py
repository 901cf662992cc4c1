"""The README's two quick-start commands, one after the other in one fresh checkout, in either
order: the install must work afterwards (issue: numba's cache files inside site-packages
survived `pip uninstall` and shadowed the editable install as a namespace package).

Long (two virtual environments, and the quick start compiling its kernels cold into an empty
per-user cache: about ten minutes on a loaded 2-core machine), so it runs only with
PGBENCH_LONG_README=1, as .ci/run sets it. The second command's test run is narrowed to the
tests that broke (tests/test_gpu_check.py) and this package's install tests: the full suite is
what CI runs beside this test."""
from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "README.md")
FULL_TESTS = "python -m pytest tests suites --pgbench-quick"
NARROW_TESTS = "python -m pytest -q -p no:cacheprovider tests/test_gpu_check.py tests/test_install.py"

pytestmark = pytest.mark.skipif(os.environ.get("PGBENCH_LONG_README", "") in ("", "0"),
                                reason="long: set PGBENCH_LONG_README=1 (.ci/run does)")


def quickstart_commands() -> list[str]:
    """The command lines of the README's quick start (the first bash block after its heading)."""
    with open(README, encoding="utf-8") as f:
        text = f.read()
    section = text[text.index("## Quick start"):]
    block = re.search(r"^```bash\n(.*?)^```", section, flags=re.S | re.M).group(1)
    return [ln.strip() for ln in block.splitlines() if ln.strip() and not ln.strip().startswith("#")]


def _copy_checkout(dest: str) -> None:
    """The checkout's files as a fresh clone would have them (tracked and not ignored)."""
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                         capture_output=True, check=True)
    for rel in out.stdout.decode().split("\0"):
        src = os.path.join(ROOT, rel)
        if rel and os.path.isfile(src):
            os.makedirs(os.path.dirname(os.path.join(dest, rel)), exist_ok=True)
            shutil.copy2(src, os.path.join(dest, rel))


def _env(tmp_path) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("NUMBA_CACHE_DIR", "VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "PGBENCH_LONG_README")}
    venv_bin = os.path.join(sys.prefix, "bin")
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if p != venv_bin)
    # pip keeps its own (warm) cache; numba's default cache goes to this empty per-user folder
    env.setdefault("PIP_CACHE_DIR", os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"),
                                                 "pip"))
    env["XDG_CACHE_HOME"] = str(tmp_path / "user-cache")
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def _bash(cmd: str, cwd: str, env: dict) -> None:
    out = subprocess.run(["bash", "-c", "set -e\n" + cmd], cwd=cwd, env=env, capture_output=True, text=True)
    assert out.returncode == 0, f"{cmd}\n--- stdout ---\n{out.stdout[-4000:]}\n--- stderr ---\n{out.stderr[-4000:]}"


def _numba_files(path: str) -> list[str]:
    return [f for ext in ("nbi", "nbc") for f in glob.glob(os.path.join(path, "**", f"*.{ext}"), recursive=True)]


@pytest.mark.skipif(sys.platform.startswith("win"), reason="the README's commands are POSIX shell")
@pytest.mark.parametrize("order", ["readme", "reversed"])
def test_quickstart_commands_in_sequence(tmp_path, order):
    install, tests = quickstart_commands()
    assert "pip install ." in install and "pgbench run --quick" in install, install
    assert 'pip install -e ".[test]"' in tests and tests.endswith(FULL_TESTS), tests
    tests = tests[: -len(FULL_TESTS)] + NARROW_TESTS
    checkout = str(tmp_path / "checkout")
    _copy_checkout(checkout)
    env = _env(tmp_path)
    commands = [install, tests] if order == "readme" else [tests, install]
    for cmd in commands:
        _bash(cmd, checkout, env)
        site = glob.glob(os.path.join(checkout, ".venv", "lib", "python*", "site-packages"))[0]
        # compiled kernels never land in the environment (nor in the checkout)
        assert _numba_files(site) == [] and _numba_files(os.path.join(checkout, "pgbench")) == []
    assert _numba_files(env["XDG_CACHE_HOME"]), "the kernels went to no per-user cache"
    assert os.path.isfile(os.path.join(checkout, "results", "quickstart", "report.html"))
    # the install the last command made works: its own pgbench, every subpackage, the CLI
    py = os.path.join(checkout, ".venv", "bin", "python")
    expect = os.path.join(checkout, "pgbench") if commands[-1] is tests else os.path.join(site, "pgbench")
    out = subprocess.run([py, "-c", "import pgbench, pgbench.estimators.catalogue, os; "
                          "print(os.path.dirname(pgbench.__file__))"], cwd=str(tmp_path), env=env,
                         capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == expect, out.stderr
    if commands[-1] is tests:  # the editable install is not shadowed by leftovers of the first one
        assert not os.path.exists(os.path.join(site, "pgbench"))
    for argv in (["--version"], ["list", "estimators"]):
        out = subprocess.run([os.path.join(checkout, ".venv", "bin", "pgbench"), *argv], cwd=str(tmp_path), env=env,
                             capture_output=True, text=True)
        assert out.returncode == 0 and "internal error" not in out.stderr, out.stderr
