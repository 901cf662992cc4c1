"""The README's code blocks run: every ```python block (in order, in one namespace, in a scratch
directory), and every `pgbench ...` line of the ```bash blocks in-process, except the long or
environment-changing ones, each skipped below with its reason."""
from __future__ import annotations

import os
import re
import shlex

import pytest

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")

# a bash line starting with one of these prefixes is not run here; the reason says what covers it
SKIPPED = {
    "python3 -m venv": "installs into a fresh virtual environment (CI's .ci/run does)",
    "pip install": "installs packages",
    "python -m pytest": "the test suite itself",
    "pytest": "the test suite itself",
    "pgbench run": "runs suites for minutes (.ci/run runs the quick one; tests/test_store.py small ones)",
    "pgbench report results/": "needs a run directory (tests/test_reports.py)",
    "pgbench compare": "needs two run directories (tests/test_reports.py)",
    "pgbench validate": "a panel of six problems (tests/test_validate.py covers the command)",
    "pgbench bench": "a timing run (tests/test_bench.py)",
}
SKIPPED_IF = {"--backend cuda": "needs a CUDA GPU"}


def _blocks(lang: str) -> list[str]:
    with open(README, encoding="utf-8") as f:
        text = f.read()
    return re.findall(rf"^```{lang}\n(.*?)^```", text, flags=re.S | re.M)


def _bash_lines() -> list[str]:
    """The command lines of the bash blocks; ``python -m pgbench ...`` runs as ``pgbench ...``
    (the same entry point; the module form avoids PostgreSQL's program of the same name)."""
    out = []
    for block in _blocks("bash"):
        for line in block.splitlines():
            line = line.strip()
            if line.startswith("python -m pgbench "):
                line = line[len("python -m "):]
            if line and not line.startswith("#"):
                out.append(line)
    return out


def _skip_reason(line: str):
    for prefix, why in SKIPPED.items():
        if line.startswith(prefix):
            return why
    for part, why in SKIPPED_IF.items():
        if part in line:
            return why
    return None


def test_readme_has_code_to_run():
    assert len(_blocks("python")) >= 3 and any(ln.startswith("pgbench exact") for ln in _bash_lines())
    # every bash line is either run below or skipped with a reason
    for line in _bash_lines():
        assert line.startswith("pgbench ") or _skip_reason(line), line


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    d = tmp_path_factory.mktemp("readme")
    old = os.getcwd()
    os.chdir(d)
    yield d
    os.chdir(old)


@pytest.fixture(scope="module")
def python_blocks_ran(scratch):
    """Run the python blocks in order (they build on each other like a notebook)."""
    import matplotlib
    matplotlib.use("Agg")
    from pgbench.estimators.batch import BATCH_ESTIMATORS
    from pgbench.estimators.user import USER_ESTIMATORS
    saved = [(r, dict(r)) for r in (BATCH_ESTIMATORS, USER_ESTIMATORS)]
    ns: dict = {"__name__": "readme"}
    for i, code in enumerate(_blocks("python")):
        exec(compile(code, f"README.md python block {i + 1}", "exec"), ns)
    yield ns
    # what the blocks registered stays in this module (other tests register the same names)
    for registry, before in saved:
        registry.clear()
        registry.update(before)


def test_python_blocks(python_blocks_ran, capsys):
    ns = python_blocks_ran
    df = ns["df"]
    # the first snippet's frame: one row per estimator, classes from the catalogue
    assert {"estimator", "class", "p_robust", "p_test"} <= set(df.columns)
    assert os.path.isfile("my_mdp.npz")
    assert ns["ob"].b_star == pytest.approx(1.0)  # the README's comment: b* = 1 on the three-step bandit


@pytest.mark.parametrize("line", [ln for ln in _bash_lines() if ln.startswith("pgbench ")])
def test_bash_pgbench_lines(line, python_blocks_ran, capsys, request):
    why = _skip_reason(line)
    if why:
        pytest.skip(why)
    from pgbench.cli import main
    if "--import" in line:  # a fresh process in real use: none of the python blocks' registrations
        from pgbench.estimators.batch import BATCH_ESTIMATORS
        from pgbench.estimators.user import USER_ESTIMATORS
        for registry in (BATCH_ESTIMATORS, USER_ESTIMATORS):
            saved = dict(registry)
            registry.clear()
            request.addfinalizer(lambda r=registry, s=saved: (r.clear(), r.update(s)))
    # lines run in the scratch directory (beside the python blocks' files); the repository's
    # examples/ are named from the checkout
    examples = os.path.join(os.path.dirname(README), "examples") + os.sep
    argv = [a.replace("examples/", examples) for a in shlex.split(line, comments=True)[1:]]
    try:
        rc = main(argv)
    except SystemExit as exc:
        rc = exc.code
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert out.strip()
    if argv[:2] == ["exact", "boltzmann_bandit"]:
        grad = float(re.search(r"grad J =\s*\[\s*(\S+?)\s*\]", out).group(1))
        assert round(grad, 2) == -20.79  # the README's comment beside the line
