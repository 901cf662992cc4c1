"""The house has floors and no circles.

Every import of a pgbench module counts, at the top of a file or inside a function (a lazy import
is still a dependency). Two rules:

- no circle of imports among the package's modules;
- no upward import: a module imports only from its own floor or the floors below it. From the
  ground up: the shared helpers (errors, arrays, inputs, threads), problems, estimators (names,
  parameters, per-step rules), kernels (compiled sampling), exact (ground truth), stats (statistics
  of trials), measure (cells); everything else (suites, reports, validate, the command line, ...)
  is above them all.
"""
import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent / "pgbench"

FLOORS = {"errors": 0, "arrays": 0, "inputs": 0, "threads": 0,
          "problems": 1, "estimators": 2, "kernels": 3, "exact": 4, "stats": 5, "measure": 6}
TOP = 7  # every other module or subpackage, and the package itself


def module_name(path: pathlib.Path, root: pathlib.Path = ROOT) -> str:
    rel = path.relative_to(root.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules(root: pathlib.Path = ROOT) -> dict:
    return {module_name(p, root): p for p in sorted(root.rglob("*.py"))}


def import_graph(root: pathlib.Path = ROOT) -> dict:
    """module -> set of pgbench modules it imports (anywhere in the file)."""
    mods = modules(root)
    top = root.name

    def resolve(name: str) -> str:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name

    graph = {}
    for name, path in mods.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        out = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                out.update(resolve(a.name) for a in node.names if a.name.split(".")[0] == top)
            elif isinstance(node, ast.ImportFrom):
                mod = node.module or ""
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    mod = ".".join(base + ([mod] if mod else []))
                if mod.split(".")[0] != top:
                    continue
                for a in node.names:
                    full = f"{mod}.{a.name}"
                    out.add(full if full in mods else resolve(mod))
        out.discard(name)
        out.discard("")
        graph[name] = out
    return graph


def circles(graph: dict) -> list:
    """The strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def floor(module: str) -> int:
    parts = module.split(".")
    return FLOORS.get(parts[1], TOP) if len(parts) > 1 else TOP


def upward_imports(graph: dict) -> list:
    return sorted((a, b) for a, bs in graph.items() for b in bs if floor(b) > floor(a))


def test_no_import_circles():
    assert circles(import_graph()) == []


def test_no_upward_imports():
    assert upward_imports(import_graph()) == []


@pytest.mark.parametrize("layer", ["kernels", "exact", "problems", "estimators", "stats"])
def test_lower_layers_do_not_import_measurement_or_anything_above(layer):
    graph = import_graph()
    bad = [(a, b) for a, bs in graph.items() if a.startswith(f"pgbench.{layer}") for b in bs
           if floor(b) >= FLOORS["measure"]]
    assert not bad, bad


# ------------------------------------------------------------------ the checks can fail

def _tree(tmp_path, files: dict) -> pathlib.Path:
    root = tmp_path / "pgbench"
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return root


def test_a_lazy_circle_is_found(tmp_path):
    root = _tree(tmp_path, {"__init__.py": "", "measure/__init__.py": "",
                            "measure/a.py": "def f():\n    from pgbench.measure.b import g\n",
                            "measure/b.py": "from pgbench.measure import a\n"})
    assert circles(import_graph(root)) == [["pgbench.measure.a", "pgbench.measure.b"]]


def test_a_lazy_upward_import_is_found(tmp_path):
    root = _tree(tmp_path, {"__init__.py": "", "kernels/__init__.py": "", "exact/__init__.py": "",
                            "kernels/k.py": "def f():\n    from pgbench.exact.lqg import exact_lqg\n",
                            "exact/lqg.py": "from pgbench.kernels import k\n"})
    assert upward_imports(import_graph(root)) == [("pgbench.kernels.k", "pgbench.exact.lqg")]
    assert circles(import_graph(root)) == [["pgbench.exact.lqg", "pgbench.kernels.k"]]


def test_relative_imports_are_resolved(tmp_path):
    root = _tree(tmp_path, {"__init__.py": "", "stats/__init__.py": "", "measure/__init__.py": "",
                            "stats/m.py": "from ..measure import x\n", "measure/x.py": ""})
    assert upward_imports(import_graph(root)) == [("pgbench.stats.m", "pgbench.measure.x")]
