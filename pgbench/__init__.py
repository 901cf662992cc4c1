"""pgbench: exact ground truth and fast Monte-Carlo measurement of policy-gradient estimators.

``import pgbench`` is cheap: it points numba's cache at a per-user folder
(:mod:`pgbench.numba_cache`) and imports the public names below only when first used, so that
the pytest plugin and ``pgbench --version`` do not pay for numba, SciPy and pandas."""
from pgbench import numba_cache as _numba_cache

_numba_cache.configure()  # before anything imports numba

__version__ = "0.1.0"
__all__ = ["PGBenchError", "make", "MDPProblem", "TabularMDP", "TabularSoftmax", "LinearSoftmax",
           "exact", "GroundTruth", "Batch", "train", "__version__"]


def train(problem, estimators, **kwargs):
    """Learning runs scored with exact quantities; see :func:`pgbench.dynamics.train`."""
    from pgbench.dynamics import train as _train
    return _train(problem, estimators, **kwargs)


_LAZY = {
    "PGBenchError": "pgbench.errors",
    "make": "pgbench.problems", "MDPProblem": "pgbench.problems", "TabularMDP": "pgbench.problems",
    "TabularSoftmax": "pgbench.problems", "LinearSoftmax": "pgbench.problems",
    "GroundTruth": "pgbench.exact",
    "Batch": "pgbench.estimators.batch",
}


def __getattr__(name):
    import importlib
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
    elif name == "policies":
        value = importlib.import_module("pgbench.policies")
    else:
        raise AttributeError(f"module 'pgbench' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY) | {"exact", "policies"})


def _install_exact() -> None:
    """``pgbench.exact`` is the function ``pgbench.exact.exact``, though a subpackage has the same
    name: importing a subpackage binds it on its parent, so the name is a property of this
    module's class that always gives the function (``import pgbench.exact.dp`` and
    ``from pgbench.exact import ...`` go through ``sys.modules`` and are unaffected)."""
    import sys
    import types

    class _PGBench(types.ModuleType):
        @property
        def exact(self):
            from pgbench.exact import exact
            return exact

        @exact.setter
        def exact(self, value):  # the import system binding the subpackage: the function keeps the name
            pass

    sys.modules[__name__].__class__ = _PGBench


_install_exact()
