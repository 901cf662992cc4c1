"""Throughput of the sampling kernel: ``reinforce_rtg`` on ``garnet:S=20,A=4,b=3,seed=0,horizon=50``
(every episode runs the full 50 steps), the numba kernel against the vectorised-NumPy reference.
pytest-benchmark times both on the same work per round (the same number of episodes of 50 steps),
so the rows of its table compare directly; ``extra_info`` holds ns per environment step. Nothing
asserts a time (the machine is shared); the figures are measured and reported, as in ``pgbench bench``."""
from __future__ import annotations

import numpy as np
import pytest

from pgbench.kernels.numpy_ref import reinforce_rtg_numpy
from pgbench.measure.engine import sample_mdp
from pgbench.problems import make

BENCH_PROBLEM = "garnet:S=20,A=4,b=3,seed=0,horizon=50"
ESTIMATOR = "reinforce_rtg"


def _shape(quick: bool) -> tuple:
    """(N, K) of a timed round: 4,000 episodes (quick) or 40,000, for the kernel and NumPy alike."""
    return (500, 8) if quick else (2000, 20)


@pytest.fixture(scope="module")
def problem():
    prob = make(BENCH_PROBLEM)
    assert prob.mdp.horizon == 50 and not prob.mdp.terminal.any()  # steps per episode = horizon
    return prob


def test_kernel(benchmark, problem, request):
    quick = request.config.getoption("pgbench_quick")
    N, K = _shape(quick)
    sample_mdp(problem, [ESTIMATOR], N=64, K=2)  # compile (or load from the cache) outside the timing
    kernel_secs = []

    def once():
        res = sample_mdp(problem, [ESTIMATOR], N=N, K=K, seed=len(kernel_secs))
        kernel_secs.append(res.seconds / (res.episodes / (N * K)))  # per pass over the N*K episodes
        return res

    benchmark.group = "throughput: reinforce_rtg on garnet-20, horizon 50"
    res = benchmark.pedantic(once, rounds=3 if quick else 5, iterations=1, warmup_rounds=1)
    steps = N * K * problem.mdp.horizon
    import numba
    benchmark.extra_info.update(
        problem=BENCH_PROBLEM, estimator=ESTIMATOR, implementation="numba kernel", episodes=N * K, steps=steps,
        threads=numba.get_num_threads(),
        ns_per_step=min(kernel_secs) / steps * 1e9,  # the kernel's own clock (sampling + estimator)
        # the whole call as pytest-benchmark timed it (tables, exact critic, kernel)
        ns_per_step_call=(benchmark.stats.stats.min / steps * 1e9) if benchmark.stats else None)
    assert np.all(np.isfinite(res.estimates)) and res.estimates.shape[0] == K


def test_numpy_reference(benchmark, problem, request):
    quick = request.config.getoption("pgbench_quick")
    N, K = _shape(quick)
    n = N * K  # the kernel's episodes per round: the two rows of the table time the same work
    reinforce_rtg_numpy(problem, None, 10, seed=0)
    benchmark.group = "throughput: reinforce_rtg on garnet-20, horizon 50"
    g = benchmark.pedantic(reinforce_rtg_numpy, args=(problem, None, n), kwargs={"seed": 0},
                           rounds=2 if quick else 3, iterations=1)
    steps = n * problem.mdp.horizon
    benchmark.extra_info.update(
        problem=BENCH_PROBLEM, estimator=ESTIMATOR, implementation="vectorised NumPy (1 core)", episodes=n,
        steps=steps, ns_per_step=(benchmark.stats.stats.min / steps * 1e9) if benchmark.stats else None)
    assert np.all(np.isfinite(g)) and g.shape == problem.policy.theta_shape
