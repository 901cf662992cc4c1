"""Learning dynamics from exact quantities: :func:`train` and its result."""
from pgbench.dynamics.train import TrainResult, iqm, recorded_steps, train, wilson

__all__ = ["train", "TrainResult", "wilson", "iqm", "recorded_steps"]
