"""Softmax policies over a tabular MDP (SPEC section 1).

A policy turns parameters ``theta`` into a table ``pi[s, a]`` and knows its score
``g(s, a) = grad_theta log pi(a|s)``. Estimators and the exact gradient are written as
weights ``C[s, a]`` on scores, ``sum_{s,a} C[s, a] g(s, a)``; :meth:`contract` evaluates that
sum without materialising a (S, A, d) table for tabular policies, which is what keeps the
large sparse problems cheap.
"""
from __future__ import annotations

import numpy as np

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
        try:
            th = np.array(theta, dtype=np.float64)
        except (TypeError, ValueError):
            raise PGBenchError("theta must be a numeric array") from None
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
        try:
            phi = np.array(features, dtype=np.float64)
        except (TypeError, ValueError):
            raise PGBenchError("features must be a numeric (S, A, d) array") from None
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
