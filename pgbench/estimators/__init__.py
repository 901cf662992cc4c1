"""Estimators: the catalogue of the contract's :ref:`contract-estimators` (names, parameters, unbiasedness) and user plug-ins."""
from pgbench.estimators.catalogue import MDP_ESTIMATORS, EstimatorSpec, parse, describe
from pgbench.estimators.user import register_estimator, unregister_estimator, USER_ESTIMATORS
from pgbench.estimators.batch import (register_batch_estimator, unregister_batch_estimator, BATCH_ESTIMATORS,
                                      Batch)

__all__ = ["MDP_ESTIMATORS", "EstimatorSpec", "parse", "describe", "register_estimator", "unregister_estimator",
           "USER_ESTIMATORS", "register_batch_estimator", "unregister_batch_estimator", "BATCH_ESTIMATORS", "Batch"]
