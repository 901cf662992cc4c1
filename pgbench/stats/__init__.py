"""Statistics of a cell's K x d trial estimates: the one home of everything a verdict is made of.

- :mod:`pgbench.stats.metrics`: bias, variance, MSE with standard errors and intervals, the
  unbiasedness tests (Hotelling, bootstrap max-t) and the verdict's p-value, paired comparisons, cost.
- :mod:`pgbench.stats.passes`: the compiled passes over the trials those need (column moments,
  per-trial sums, Gram blocks, bootstrap resamples), in O(d) memory beyond the trials.

Statistics know nothing of problems, estimators or the engine: they take arrays of trials.
"""
