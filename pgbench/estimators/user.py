"""Bring your own estimator: a small numba function of one episode, measured like the built-ins.

The function fills per-step weights ``psi[t]``; pgbench turns them into the estimate
``(1/N) sum_i sum_t psi_t^i grad log pi(a_t|s_t)`` and measures it on the same episodes
(the same random streams) as the built-in estimators of the cell. Signature::

    @numba.njit
    def my_estimator(states, actions, rewards, L, gamma, pi, V, Q, psi):
        ...  # fill psi[0:L]

- ``states[t], actions[t], rewards[t]`` for ``t < L``; ``states[L]`` is the state after the
  last step (terminal, or where the cap cut the episode).
- ``pi[s, a]`` the policy; ``V[tv, s]`` and ``Q[tq, s, a]`` exact oracle values: for a finite
  horizon ``tv = tq = t`` and ``V[T] = 0``; for an unbounded problem use row 0.
- ``psi`` has room for the whole episode; write ``psi[t]`` for every ``t < L``.
- optionally a tenth argument ``end``: how the episode ended, ``END_TERMINAL`` (0: it entered a
  terminal state), ``END_HORIZON`` (1: the finite horizon) or ``END_CAP`` (2: the sampling cap of
  an unbounded problem). Functions of nine arguments keep working.
"""
from __future__ import annotations

from dataclasses import dataclass

from pgbench.errors import PGBenchError
from pgbench.estimators.catalogue import MDP_ESTIMATORS, EstimatorInfo, EstimatorSpec
from pgbench.estimators.registry import (BATCH_ESTIMATORS, END_CAP, END_HORIZON, END_TERMINAL,  # noqa: F401
                                        USER_CODE, USER_ESTIMATORS)



@dataclass(frozen=True)
class UserEstimator:
    name: str
    fn: object
    unbiased: bool
    doc: str
    with_end: bool = False  # fn takes the tenth argument ``end``

    def spec(self, params: dict):
        if params:
            raise PGBenchError(f"user estimator {self.name} takes no parameters; got {', '.join(params)}")
        info = EstimatorInfo(self.name, self.doc, "yes" if self.unbiased else "no", target="mdp", code=USER_CODE)
        return EstimatorSpec(info, ())


UserSpec = UserEstimator


def register_estimator(name: str, unbiased: bool, doc: str = "user-defined estimator", replace: bool = False):
    """Decorator: register a numba-compiled per-episode weight function under ``name``.

    ``unbiased`` is your claim; pgbench tests it against the exact gradient with the p-value every
    verdict uses, ``p_robust`` (its test named in ``p_test``; see :func:`pgbench.stats.metrics.verdict_p`).
    """
    if not isinstance(name, str) or not name.isidentifier():
        raise PGBenchError(f"an estimator name must be an identifier; got {name!r}")
    if name in MDP_ESTIMATORS:
        raise PGBenchError(f"{name!r} is a built-in estimator; choose another name")

    def deco(fn):
        if not hasattr(fn, "py_func"):
            raise PGBenchError(f"estimator {name!r} must be a numba.njit function (got {type(fn).__name__})")
        if (name in USER_ESTIMATORS or name in BATCH_ESTIMATORS) and not replace:
            raise PGBenchError(f"estimator {name!r} is already registered (pass replace=True to redefine it)")
        import inspect
        n_args = len(inspect.signature(fn.py_func).parameters)
        if n_args not in (9, 10):
            raise PGBenchError(f"estimator {name!r} takes {n_args} arguments; expected (states, actions, rewards, L, "
                               f"gamma, pi, V, Q, psi) or the same with a tenth, end")
        BATCH_ESTIMATORS.pop(name, None)
        USER_ESTIMATORS[name] = UserEstimator(name, fn, bool(unbiased), doc, with_end=n_args == 10)
        return fn

    return deco


def unregister_estimator(name: str) -> None:
    USER_ESTIMATORS.pop(name, None)
