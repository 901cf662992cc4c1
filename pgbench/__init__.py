"""pgbench: exact ground truth and fast Monte-Carlo measurement of policy-gradient estimators."""
from pgbench.errors import PGBenchError
from pgbench.problems import make, MDPProblem, TabularMDP, TabularSoftmax, LinearSoftmax
# the function shadows its subpackage's name on purpose: pgbench.exact(problem) is the entry point
from pgbench.exact import exact, GroundTruth
from pgbench.estimators.batch import Batch
from pgbench import policies  # noqa: F401  (pgbench.policies.LogitsPolicy)



def train(problem, estimators, **kwargs):
    """Learning runs scored with exact quantities; see :func:`pgbench.dynamics.train`."""
    from pgbench.dynamics import train as _train
    return _train(problem, estimators, **kwargs)


__version__ = "0.1.0"
__all__ = ["PGBenchError", "make", "MDPProblem", "TabularMDP", "TabularSoftmax", "LinearSoftmax",
           "exact", "GroundTruth", "Batch", "train", "__version__"]
