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
from pgbench.arrays import as_array, real_output
from pgbench.errors import PGBenchError, user_exit


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
        th = inputs.real_array(f"LogitsPolicy {name!r}: theta", theta)  # no complex, string, boolean theta
        if th.ndim == 0 or th.size == 0 or not np.all(np.isfinite(th)):
            raise PGBenchError(f"theta must be a non-empty finite array; got shape {th.shape}")
        self._logits_fn, self._vjp_fn, self.name = logits, vjp, str(name)
        self._shape = th.shape
        th.setflags(write=False)
        self.theta = th
        out = self._call(self._logits_fn, "logits", th.copy())
        if out.ndim != 2 or min(out.shape) < 1:
            raise PGBenchError(f"policy {self.name!r}: logits(theta) must be an (S, A) array; got shape {out.shape}")
        self.S, self.A = out.shape
        self._check_functions(out)

    FD_RTOL = 1e-2
    """The vjp's directional derivatives must match logits' central differences to 1% (a step of
    1e-3 relative to theta: float32 networks pass, a vjp off by a factor or transposed does not)."""

    def _check_functions(self, first: np.ndarray) -> None:
        """Once per policy, at its default theta: logits gives the same numbers twice, and
        ``<vjp(theta, c), v>`` agrees with ``<c, (logits(theta + h v) - logits(theta - h v)) / 2h>``
        for a random cotangent c and two directions v (the vjp's own and a random one). A wrong
        vjp would make every exact gradient wrong; changing logits would make J a random number."""
        th = self.theta
        again = self.logits(th)
        scale = max(1.0, float(np.abs(first).max()))
        drift = float(np.abs(again - first).max())
        if drift > 1e-9 * scale:
            raise PGBenchError(f"policy {self.name!r}: logits(theta) is not repeatable: two calls at the same "
                               f"theta differ by {drift:.3g} (max abs); exact values need a deterministic function")
        rng = np.random.default_rng(20231)
        c = rng.standard_normal(first.shape)
        g = self.vjp(th, c).reshape(-1)
        h = 1e-3 * max(1.0, float(np.abs(th).max()))
        dirs = [rng.standard_normal(th.size)]
        if np.any(g != 0.0):
            dirs.insert(0, g)
        for v in dirs:
            v = v / np.linalg.norm(v)
            step = (h * v).reshape(self._shape)
            with np.errstate(over="ignore", invalid="ignore"):
                fd = float(np.sum(c * (self.logits(th + step) - self.logits(th - step)))) / (2 * h)
            an = float(g @ v)
            err = abs(an - fd)
            floor = 1e-7 * float(np.linalg.norm(c)) * max(float(np.linalg.norm(g)), abs(fd), 1e-300)
            if not err <= self.FD_RTOL * max(abs(an), abs(fd)) + floor:
                rel = err / max(abs(an), abs(fd), 1e-300)
                raise PGBenchError(
                    f"policy {self.name!r}: vjp disagrees with logits: along a direction of theta the vjp gives "
                    f"the derivative {an:.6g} and a central difference of logits {fd:.6g} (off by {rel:.0%}); "
                    f"vjp(theta, c) must be (d logits / d theta)^T c")

    @property
    def theta_shape(self) -> tuple:
        return self._shape

    def _call(self, fn, what: str, *args) -> np.ndarray:
        try:
            res = fn(*args)
        except SystemExit as exc:
            raise user_exit(f"policy {self.name!r}: {what}", exc) from None
        except PGBenchError:
            raise
        except Exception as exc:  # the user's function: its exception, named
            raise PGBenchError(f"policy {self.name!r}: {what} raised {type(exc).__name__}: "
                               f"{' '.join(str(exc).split())}") from exc
        if not (isinstance(res, (np.ndarray, np.generic)) or hasattr(res, "__array__")
                or (hasattr(res, "detach") and hasattr(res, "cpu"))):
            raise PGBenchError(f"policy {self.name!r}: {what} did not return an array (got {type(res).__name__})")
        arr = real_output(res, f"policy {self.name!r}: {what}")
        if not np.all(np.isfinite(arr)):
            raise PGBenchError(f"policy {self.name!r}: {what} returned a non-finite value (NaN or inf)")
        return arr

    def logits(self, theta) -> np.ndarray:
        out = self._call(self._logits_fn, "logits", self.check_theta(theta).copy())  # a copy: ours stays intact
        if out.shape != (self.S, self.A):
            raise PGBenchError(f"policy {self.name!r}: logits(theta) has shape {out.shape}, expected {(self.S, self.A)}")
        return out

    def vjp(self, theta, c) -> np.ndarray:
        """``(d logits / d theta)^T c``, shaped like theta."""
        # copies: a vjp that writes into its arguments must not change ours (one cotangent is reused
        # for every (s, a) of the score table)
        out = self._call(self._vjp_fn, "vjp", self.check_theta(theta).copy(), np.array(c, dtype=np.float64))
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
