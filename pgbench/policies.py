"""Policies: tabular and linear softmax, and any differentiable policy given by its logits.

``LogitsPolicy(logits, vjp, theta)`` turns a function ``theta -> logits (S, A)`` and its
vector-Jacobian product into a policy with exact J, gradient and Fisher:
``pgbench.exact(problem, policy=pol)``, ``measure(problem, estimators, ..., policy=pol)``.
"""
from pgbench.problems.softmax import LinearSoftmax, LogitsPolicy, SoftmaxPolicy, TabularSoftmax

__all__ = ["LogitsPolicy", "TabularSoftmax", "LinearSoftmax", "SoftmaxPolicy", "jax_policy"]


def jax_policy(logits, theta, name: str = "jax"):
    """A :class:`LogitsPolicy` from a JAX function ``theta -> logits (S, A)``: the vjp is
    ``jax.vjp``'s (JAX's 64-bit mode is switched on, so exact values keep double precision).
    Needs the optional extra ``pgbench[jax]``."""
    try:
        import jax
    except ImportError:
        from pgbench.errors import PGBenchError
        raise PGBenchError("jax_policy needs JAX: pip install 'pgbench[jax]'") from None
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    def vjp(th, c):
        _, back = jax.vjp(logits, jnp.asarray(th))
        return back(jnp.asarray(c))[0]

    return LogitsPolicy(lambda th: logits(jnp.asarray(th)), vjp, theta, name=name)
