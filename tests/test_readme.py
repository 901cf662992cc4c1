"""The code blocks of the README and of every documentation page under docs/ run.

Per document (README.md, docs/**/*.rst): every python block (in order, in one namespace, in a
scratch directory of its own: the blocks of a page build on each other like a notebook), then
every `pgbench ...` (or `python -m pgbench ...`) line of its bash blocks, in-process, in the same
scratch directory, except the long or environment-changing ones, each skipped below with its
reason. Markdown blocks are ```python / ```bash fences; rst blocks are `.. code-block:: python` /
`.. code-block:: bash` directives. Blocks of other languages (console transcripts, text) are
shown, not run."""
from __future__ import annotations

import glob
import os
import re
import shlex
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "README.md")
DOCS = [README] + sorted(
    p for p in glob.glob(os.path.join(ROOT, "docs", "**", "*.rst"), recursive=True)
    if os.sep + "_build" + os.sep not in p
)

# a bash line starting with one of these prefixes is not run here; the reason says what covers it
SKIPPED = {
    "python3 -m venv": "installs into a fresh virtual environment (CI's .ci/run does)",
    "pip install": "installs packages",
    "python -m pytest": "the test suite itself",
    "pytest": "the test suite itself",
    "python -m sphinx": "the documentation build (CI's .ci/run builds docs/ with warnings as errors)",
    "python benchmarks/": "a benchmark or device check (minutes; tests/test_gpu_check.py covers gpu_check.py)",
    "pgbench run": "runs suites for minutes (.ci/run runs the quick one; tests/test_store.py small ones)",
    "pgbench report results/": "needs a run directory (tests/test_reports.py)",
    "pgbench compare": "needs two run directories (tests/test_reports.py)",
    "pgbench validate": "a panel of six problems (tests/test_validate.py covers the command)",
    "pgbench bench": "a timing run (tests/test_bench.py)",
}
SKIPPED_IF = {"--backend cuda": "needs a CUDA GPU"}
RUN_PREFIXES = ("pgbench ", "python -m pgbench ")


def _rel(doc: str) -> str:
    return os.path.relpath(doc, ROOT)


def _blocks(doc: str, lang: str) -> list[str]:
    with open(doc, encoding="utf-8") as f:
        text = f.read()
    if doc.endswith(".md"):
        return re.findall(rf"^```{lang}\n(.*?)^```", text, flags=re.S | re.M)
    # rst: the directive, its options, a blank line, then the indented body
    out = []
    for m in re.finditer(rf"^\.\. code-block:: {lang}[ \t]*\n((?:[ \t]+:.*\n)*)((?:[ \t]*\n|[ \t]+\S.*\n)*)", text, flags=re.M):
        out.append(textwrap.dedent(m.group(2)).strip("\n") + "\n")
    return out


def _bash_lines(doc: str) -> list[str]:
    out = []
    for block in _blocks(doc, "bash"):
        for line in block.splitlines():
            line = line.strip()
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


def _runnable(line: str) -> bool:
    return line.startswith(RUN_PREFIXES)


def test_block_parser_reads_both_formats(tmp_path):
    rst = tmp_path / "page.rst"
    rst.write_text("Title\n=====\n\n.. code-block:: python\n   :caption: x\n\n   a = 1\n\n   b = a + 1\n\ntext\n"
                   ".. code-block:: bash\n\n   pgbench list\n", encoding="utf-8")
    assert _blocks(str(rst), "python") == ["a = 1\n\nb = a + 1\n"]
    assert _bash_lines(str(rst)) == ["pgbench list"]
    md = tmp_path / "page.md"
    md.write_text("```python\nx = 2\n```\n```bash\npgbench exact boltzmann_bandit  # c\n```\n", encoding="utf-8")
    assert _blocks(str(md), "python") == ["x = 2\n"] and _bash_lines(str(md)) == ["pgbench exact boltzmann_bandit  # c"]


def test_docs_have_code_to_run():
    assert len(_blocks(README, "python")) >= 1 and any(ln.startswith("pgbench exact") for ln in _bash_lines(README))
    assert len(DOCS) > 5  # the README and the pages under docs/
    assert sum(len(_blocks(d, "python")) for d in DOCS) >= 10
    # every bash line is either run below or skipped with a reason
    for doc in DOCS:
        for line in _bash_lines(doc):
            assert _runnable(line) or _skip_reason(line), f"{_rel(doc)}: {line}"


# checks of what a page's python blocks computed, beyond running without an error
def _check_readme(ns):
    df = ns["df"]  # the first look's frame: one row per estimator, classes from the catalogue
    assert {"estimator", "class", "p_robust", "p_test"} <= set(df.columns)
    assert len(df) == 4


def _check_mdp(ns):
    assert os.path.isfile("my_mdp.npz")


def _check_moments(ns):
    assert ns["ob"].b_star == pytest.approx(1.0)  # the page's comment: b* = 1 on the three-step bandit


def _check_tutorial(ns):
    df = ns["df"]
    assert list(df["estimator"]) == ["reinforce", "reinforce_rtg", "value_baseline", "rloo"]
    # the page says the variance falls from the full return to the reward-to-go and again with a baseline
    v = dict(zip(df["estimator"], df["exact_variance"]))
    assert v["reinforce"] > v["reinforce_rtg"] > v["value_baseline"]


def _check_pytest(ns):
    assert ns["test_my_estimator_is_unbiased"]() is None  # the page's test function, as pytest would call it


CHECKS = {
    os.path.join("docs", "howto", "pytest.rst"): _check_pytest,
    "README.md": _check_readme,
    os.path.join("docs", "howto", "mdp.rst"): _check_mdp,
    os.path.join("docs", "moments.rst"): _check_moments,
    os.path.join("docs", "tutorial.rst"): _check_tutorial,
}


@pytest.fixture(scope="module")
def ran(tmp_path_factory):
    """Run a document's python blocks once, in its own scratch directory; returns (dir, namespace)."""
    import matplotlib
    matplotlib.use("Agg")
    from pgbench.estimators.batch import BATCH_ESTIMATORS
    from pgbench.estimators.user import USER_ESTIMATORS
    saved = [(r, dict(r)) for r in (BATCH_ESTIMATORS, USER_ESTIMATORS)]
    cache: dict = {}
    old = os.getcwd()

    def run(doc: str):
        if doc not in cache:
            d = tmp_path_factory.mktemp(re.sub(r"\W+", "_", _rel(doc)))
            ns: dict = {"__name__": "docs"}
            os.chdir(d)
            try:
                for i, code in enumerate(_blocks(doc, "python")):
                    exec(compile(code, f"{_rel(doc)} python block {i + 1}", "exec"), ns)
            finally:
                os.chdir(old)
            cache[doc] = (d, ns)
        return cache[doc]

    yield run
    os.chdir(old)
    # what the blocks registered stays in this module (other tests register the same names)
    for registry, before in saved:
        registry.clear()
        registry.update(before)


@pytest.mark.parametrize("doc", [d for d in DOCS if _blocks(d, "python")], ids=_rel)
def test_python_blocks(doc, ran, monkeypatch, capsys):
    d, ns = ran(doc)
    check = CHECKS.get(_rel(doc))
    if check:
        monkeypatch.chdir(d)
        check(ns)


def test_checked_pages_exist():
    for rel in CHECKS:
        assert os.path.isfile(os.path.join(ROOT, rel)), rel


@pytest.mark.parametrize("doc,line", [(d, ln) for d in DOCS for ln in _bash_lines(d) if _runnable(ln)],
                         ids=lambda v: _rel(v) if os.path.isabs(str(v)) else str(v))
def test_bash_pgbench_lines(doc, line, ran, monkeypatch, capsys, request):
    why = _skip_reason(line)
    if why:
        pytest.skip(why)
    d, _ = ran(doc)  # the page's python blocks first: lines use the files they write
    monkeypatch.chdir(d)
    from pgbench.cli import main
    if "--import" in line:  # a fresh process in real use: none of the python blocks' registrations
        from pgbench.estimators.batch import BATCH_ESTIMATORS
        from pgbench.estimators.user import USER_ESTIMATORS
        for registry in (BATCH_ESTIMATORS, USER_ESTIMATORS):
            saved = dict(registry)
            registry.clear()
            request.addfinalizer(lambda r=registry, s=saved: (r.clear(), r.update(s)))
    # the repository's examples/ are named from the checkout
    examples = os.path.join(ROOT, "examples") + os.sep
    words = shlex.split(line, comments=True)
    words = words[3:] if words[:3] == ["python", "-m", "pgbench"] else words[1:]
    argv = [a.replace("examples/", examples) for a in words]
    capsys.readouterr()
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
