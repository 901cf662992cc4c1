"""pgbench: exact ground truth and fast Monte-Carlo measurement of policy-gradient estimators.

The top-level names are imported lazily, so that loading the pytest plugin (which every pytest
session of anyone who installs pgbench does) costs nothing.
"""
from pgbench.errors import PGBenchError

__version__ = "0.1.0"

_LAZY = {
    "make": "pgbench.problems", "MDPProblem": "pgbench.problems", "TabularMDP": "pgbench.problems",
    "TabularSoftmax": "pgbench.problems", "LinearSoftmax": "pgbench.problems",
    "exact": "pgbench.exact", "GroundTruth": "pgbench.exact",
    "measure": "pgbench.measure", "register_estimator": "pgbench.estimators",
}
__all__ = ["PGBenchError", "__version__", *_LAZY]


def __getattr__(name):
    if name in _LAZY:
        import importlib
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'pgbench' has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
