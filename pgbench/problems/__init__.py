"""Problems: tabular MDPs, softmax policies, stochastic objectives and the registry of built-ins."""
from pgbench.problems.mdp import TabularMDP
from pgbench.problems.softmax import LinearSoftmax, TabularSoftmax
from pgbench.problems.problem import MDPProblem
from pgbench.problems.objectives import CategoricalObjective, GaussianToy
from pgbench.problems.registry import REGISTRY, make
from pgbench.problems.io import load_npz, save_npz

__all__ = ["TabularMDP", "TabularSoftmax", "LinearSoftmax", "MDPProblem", "GaussianToy",
           "CategoricalObjective", "REGISTRY", "make", "load_npz", "save_npz"]
