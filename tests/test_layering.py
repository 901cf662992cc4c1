"""Lower layers never import upper ones: the kernels (and the exact solvers) import neither the
measurement layer, the benchmark, the reports, the suites nor the command line."""
import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent / "pgbench"
UPPER = ("pgbench.measure", "pgbench.bench", "pgbench.reports", "pgbench.suites", "pgbench.cli", "pgbench.validate")


def imports(path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            yield node.module


@pytest.mark.parametrize("layer", ["kernels", "exact", "problems"])
def test_lower_layers_do_not_import_upper_ones(layer):
    bad = [(p.name, m) for p in sorted((ROOT / layer).glob("*.py")) for m in imports(p) if m.startswith(UPPER)]
    assert not bad, bad
