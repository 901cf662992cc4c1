"""Softmax policies over a tabular MDP (the contract's :ref:`contract-policies`).

A policy turns parameters ``theta`` into a table ``pi[s, a]`` and knows its score
``g(s, a) = grad_theta log pi(a|s)``. Estimators and the exact gradient are written as
weights ``C[s, a]`` on scores, ``sum_{s,a} C[s, a] g(s, a)``; :meth:`contract` evaluates that
sum without materialising a (S, A, d) table for tabular policies, which is what keeps the
large sparse problems cheap.
"""
from __future__ import annotations

import numpy as np

from pgbench import inputs
from pgbench.arrays import as_array
from pgbench.errors import PGBenchError


def softmax_rows(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def log_softmax_rows(logits: np.ndarray) -> np.ndarray:
    """``log softmax`` without forming ``log(0) = -inf`` for actions whose probability underflows."""
    z = logits - logits.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


class SoftmaxPolicy:
    kind: str
    S: int
    A: int

    @property
    def theta_shape(self) -> tuple:
        raise NotImplementedError

    @property
    def dim(self) -> int:
        return int(np.prod(self.theta_shape))

    def check_theta(self, theta) -> np.ndarray:
        th = inputs.real_array("theta", theta)
        if th.shape != self.theta_shape:
            if th.size == self.dim and th.ndim <= 1:
                th = th.reshape(self.theta_shape)
            else:
                raise PGBenchError(f"theta has shape {th.shape}, expected {self.theta_shape} for this {self.kind} policy")
        if not np.all(np.isfinite(th)):
            raise PGBenchError("theta has a non-finite entry (NaN or inf)")
        return th

    def logits(self, theta) -> np.ndarray:
        raise NotImplementedError

    def probs(self, theta) -> np.ndarray:
        return softmax_rows(self.logits(theta))

    def log_probs(self, theta) -> np.ndarray:
        return log_softmax_rows(self.logits(theta))

    def contract(self, theta, C: np.ndarray) -> np.ndarray:
        """``sum_{s,a} C[s, a] grad log pi(a|s)``, shaped like theta."""
        raise NotImplementedError

    def score_table(self, theta) -> np.ndarray:
        """``g[s, a, :]`` flattened over theta (S, A, d); only for small problems."""
        raise NotImplementedError

    def fisher(self, theta, C: np.ndarray):
        """``sum_{s,a} C[s, a] g(s, a) g(s, a)^T``; tabular: per-state (S, A, A) blocks, linear: (d, d)."""
        raise NotImplementedError

    def fisher_solve(self, theta, F, g: np.ndarray) -> np.ndarray:
        """Minimum-norm solution ``F^+ g`` for a Fisher from :meth:`fisher`."""
        raise NotImplementedError

    def fisher_dense(self, F) -> np.ndarray:
        """The Fisher from :meth:`fisher` as a dense (d, d) matrix (tests, small problems)."""
        raise NotImplementedError

    def contract_trials(self, theta, C: np.ndarray) -> np.ndarray:
        """:meth:`contract` of each of K weight tables ``C`` (K, S, A), as one (K, d) array."""
        return np.stack([self.contract(theta, c).reshape(-1) for c in C]).reshape(len(C), self.dim)

    def natural_trials(self, theta, Cg: np.ndarray, Cf: np.ndarray) -> np.ndarray:
        """``F_k^+ g_k`` per trial, with ``g_k`` from weights ``Cg[k]`` and the Fisher ``F_k`` from
        ``Cf[k]`` (both (K, S, A)); (K, d)."""
        return np.stack([self.fisher_solve(theta, self.fisher(theta, f), self.contract(theta, c)).reshape(-1)
                         for c, f in zip(Cg, Cf)]).reshape(len(Cg), self.dim)


class TabularSoftmax(SoftmaxPolicy):
    """``pi(a|s) = softmax(theta[s])``; score ``e_a - pi(.|s)`` in row s (zero elsewhere)."""

    kind = "tabular"

    def __init__(self, S: int, A: int):
        self.S, self.A = int(S), int(A)

    @property
    def theta_shape(self) -> tuple:
        return (self.S, self.A)

    def logits(self, theta) -> np.ndarray:
        return self.check_theta(theta)

    def contract(self, theta, C):
        pi = self.probs(theta)
        return C - pi * C.sum(axis=1, keepdims=True)

    def score_table(self, theta):
        S, A = self.S, self.A
        pi = self.probs(theta)
        g = np.zeros((S, A, S, A))
        for s in range(S):
            g[s, :, s, :] = np.eye(A) - pi[s][None, :]
        return g.reshape(S, A, S * A)

    def fisher(self, theta, C):
        # sum_a C_a (e_a - p)(e_a - p)^T = diag(C) - C p^T - p C^T + (sum C) p p^T, per state
        p = self.probs(theta)
        c = C.sum(axis=1)
        F = -C[:, :, None] * p[:, None, :]
        F = F + np.swapaxes(F, 1, 2)
        F += c[:, None, None] * p[:, :, None] * p[:, None, :]
        idx = np.arange(self.A)
        F[:, idx, idx] += C
        return F

    def fisher_solve(self, theta, F, g):
        g = np.asarray(g).reshape(self.S, self.A)
        # per-state blocks are tiny (A x A): a batched pseudo-inverse is exact and cheap
        return np.einsum("sab,sb->sa", np.linalg.pinv(F, rcond=1e-10, hermitian=True), g)

    def contract_trials(self, theta, C):
        pi = self.probs(theta)
        return (C - pi * C.sum(axis=2, keepdims=True)).reshape(C.shape[0], -1)

    def natural_trials(self, theta, Cg, Cf):
        # the per-state blocks of fisher and fisher_solve, stacked over the trials
        p = self.probs(theta)
        g = Cg - p * Cg.sum(axis=2, keepdims=True)
        c = Cf.sum(axis=2)
        F = -Cf[:, :, :, None] * p[:, None, :]
        F = F + np.swapaxes(F, 2, 3)
        F += c[:, :, None, None] * p[:, :, None] * p[:, None, :]
        idx = np.arange(self.A)
        F[:, :, idx, idx] += Cf
        return np.einsum("ksab,ksb->ksa", np.linalg.pinv(F, rcond=1e-10, hermitian=True), g).reshape(len(Cg), -1)

    def fisher_dense(self, F):
        S, A = self.S, self.A
        D = np.zeros((S * A, S * A))
        for s in range(S):
            D[s * A:(s + 1) * A, s * A:(s + 1) * A] = F[s]
        return D

    def __repr__(self):
        return f"TabularSoftmax(S={self.S}, A={self.A})"


class LinearSoftmax(SoftmaxPolicy):
    """``pi(a|s) = softmax_a(theta . phi[s, a])``; score ``phi[s, a] - sum_b pi(b|s) phi[s, b]``."""

    kind = "linear"

    def __init__(self, features):
        phi = inputs.real_array("features", features)
        if phi.ndim != 3:
            raise PGBenchError(f"features must have shape (S, A, d); got {phi.shape}")
        if not np.all(np.isfinite(phi)):
            raise PGBenchError("features have a non-finite entry (NaN or inf)")
        phi.setflags(write=False)
        self.features = phi
        self.S, self.A, self.d = phi.shape

    @property
    def theta_shape(self) -> tuple:
        return (self.d,)

    def logits(self, theta):
        return self.features @ self.check_theta(theta)

    def score_table(self, theta):
        pi = self.probs(theta)
        mean = np.einsum("sa,sad->sd", pi, self.features)
        return self.features - mean[:, None, :]

    def contract(self, theta, C):
        pi = self.probs(theta)
        return np.einsum("sa,sad->d", C, self.features) - np.einsum("s,sa,sad->d", C.sum(axis=1), pi, self.features)

    def fisher(self, theta, C):
        g = self.score_table(theta)
        return np.einsum("sa,sad,sae->de", C, g, g)

    def fisher_solve(self, theta, F, g):
        return np.linalg.pinv(F, rcond=1e-10, hermitian=True) @ np.asarray(g).reshape(self.d)

    def contract_trials(self, theta, C):
        pi = self.probs(theta)
        return (np.einsum("ksa,sad->kd", C, self.features)
                - np.einsum("ks,sa,sad->kd", C.sum(axis=2), pi, self.features))

    def natural_trials(self, theta, Cg, Cf):
        g = self.score_table(theta)
        F = np.einsum("ksa,sad,sae->kde", Cf, g, g)
        return np.einsum("kde,ke->kd", np.linalg.pinv(F, rcond=1e-10, hermitian=True), self.contract_trials(theta, Cg))

    def fisher_dense(self, F):
        return F

    def __repr__(self):
        return f"LinearSoftmax(S={self.S}, A={self.A}, d={self.d})"


class LogitsPolicy(SoftmaxPolicy):
    """Any differentiable policy: ``pi(a|s) = softmax(logits(theta)[s])`` for a user's function
    ``logits(theta) -> (S, A)`` and its vector-Jacobian product ``vjp(theta, c) -> theta-shaped``
    (``c`` an (S, A) cotangent: ``vjp(theta, c) = (d logits / d theta)^T c``).

    Everything pgbench does with a policy goes through weights ``C[s, a]`` on scores, and by the
    chain rule ``sum_{s,a} C[s, a] grad_theta log pi(a|s) = vjp(theta, C - pi sum_b C[., b])``
    (the logit-space score of softmax is ``e_a - pi(.|s)``): one vjp per gradient, whatever the
    network. Tabular softmax is ``logits = theta``, ``vjp = c``; linear softmax is
    ``logits = phi theta``, ``vjp = phi^T c``. The score table and the Fisher (small problems:
    tests, natural gradients, exact moments) take one vjp per (s, a).

    ``theta`` is the default parameter vector (its shape is the parameters' shape); ``name``
    labels the policy in outputs. Outputs may be NumPy arrays, torch tensors or JAX arrays.
    """

    kind = "logits"

    def __init__(self, logits, vjp, theta, name: str = "logits"):
        if not callable(logits) or not callable(vjp):
            raise PGBenchError("LogitsPolicy takes two functions, logits(theta) and vjp(theta, c), and a theta")
        try:
            th = np.array(theta, dtype=np.float64)
        except (TypeError, ValueError):
            raise PGBenchError("theta must be a numeric array") from None
        if th.ndim == 0 or th.size == 0 or not np.all(np.isfinite(th)):
            raise PGBenchError(f"theta must be a non-empty finite array; got shape {th.shape}")
        self._logits_fn, self._vjp_fn, self.name = logits, vjp, str(name)
        self._shape = th.shape
        th.setflags(write=False)
        self.theta = th
        out = self._call(self._logits_fn, "logits", th)
        if out.ndim != 2 or min(out.shape) < 1:
            raise PGBenchError(f"policy {self.name!r}: logits(theta) must be an (S, A) array; got shape {out.shape}")
        self.S, self.A = out.shape

    @property
    def theta_shape(self) -> tuple:
        return self._shape

    def _call(self, fn, what: str, *args) -> np.ndarray:
        arr = as_array(fn(*args))
        if arr is None:
            raise PGBenchError(f"policy {self.name!r}: {what} did not return an array")
        if not np.all(np.isfinite(arr)):
            raise PGBenchError(f"policy {self.name!r}: {what} returned a non-finite value (NaN or inf)")
        return arr

    def logits(self, theta) -> np.ndarray:
        out = self._call(self._logits_fn, "logits", self.check_theta(theta))
        if out.shape != (self.S, self.A):
            raise PGBenchError(f"policy {self.name!r}: logits(theta) has shape {out.shape}, expected {(self.S, self.A)}")
        return out

    def vjp(self, theta, c) -> np.ndarray:
        """``(d logits / d theta)^T c``, shaped like theta."""
        out = self._call(self._vjp_fn, "vjp", self.check_theta(theta), np.ascontiguousarray(c, dtype=np.float64))
        if out.size != self.dim:
            raise PGBenchError(f"policy {self.name!r}: vjp returned {out.size} numbers, expected {self.dim}")
        return out.reshape(self._shape)

    def contract(self, theta, C):
        C = np.asarray(C, dtype=np.float64)
        pi = self.probs(theta)
        return self.vjp(theta, C - pi * C.sum(axis=1, keepdims=True))

    def logit_jacobian(self, theta) -> np.ndarray:
        """``d logits[s, a] / d theta`` as an (S, A, d) array: one vjp per (s, a)."""
        S, A = self.S, self.A
        jac = np.empty((S, A, self.dim))
        e = np.zeros((S, A))
        for s in range(S):
            for a in range(A):
                e[s, a] = 1.0
                jac[s, a] = self.vjp(theta, e).reshape(-1)
                e[s, a] = 0.0
        return jac

    def score_table(self, theta):
        jac = self.logit_jacobian(theta)
        pi = self.probs(theta)
        return jac - np.einsum("sb,sbd->sd", pi, jac)[:, None, :]

    def fisher(self, theta, C):
        g = self.score_table(theta)
        return np.einsum("sa,sad,sae->de", C, g, g)

    def fisher_solve(self, theta, F, g):
        return (np.linalg.pinv(F, rcond=1e-10, hermitian=True) @ np.asarray(g).reshape(-1)).reshape(self._shape)

    def fisher_dense(self, F):
        return F

    def __repr__(self):
        return f"LogitsPolicy({self.name!r}, S={self.S}, A={self.A}, d={self.dim})"
