"""User code in the loop: warnings keep their origin, thread settings are left as found,
oracle reads are declared or seen, batches are trimmed, trial-by-trial estimates are reachable."""
from __future__ import annotations

import textwrap
import warnings

import numpy as np
import pytest

from conftest import run_cli


# ----------------------------------------------------------------------------- warnings keep their origin

def test_a_user_warning_keeps_its_category_and_file_line(capsys, tmp_path):
    from pgbench.estimators.batch import BATCH_ESTIMATORS
    plugin = tmp_path / "warny_plugin.py"
    plugin.write_text(textwrap.dedent("""\
        import warnings
        from pgbench.estimators.batch import register_batch_estimator

        @register_batch_estimator("warny", unbiased=True, replace=True)
        def warny(batch):
            warnings.warn("the critic diverged", RuntimeWarning)
            return batch.reward_to_go() * batch.discount()
        """))
    try:
        rc, out, err = run_cli(capsys, "measure", "three_step_bandit", "-N", "2", "-K", "4", "-e", "warny",
                               "--import", str(plugin))
    finally:
        BATCH_ESTIMATORS.pop("warny", None)
    assert rc == 0, err
    assert f"{plugin}:6: RuntimeWarning: the critic diverged" in err, err
    assert "pgbench: warning: the critic diverged" not in err


def test_pgbench_own_warnings_stay_on_one_line():
    from pgbench.cli import _warning_printer
    from pgbench.errors import PGBenchWarning
    import io
    show, buf = _warning_printer(), io.StringIO()
    show(PGBenchWarning("a long\nmessage"), PGBenchWarning, "/somewhere/else.py", 3, file=buf)
    assert buf.getvalue() == "pgbench: warning: a long message\n"


# ----------------------------------------------------------------------------- oracle reads of a batch estimator

def _advantage_psi(batch):  # the exact advantage, as gae with lambda = 1 and the exact critic would use
    v, q = batch.values()
    return (q - v[:, :-1]) * batch.discount()


def _rtg_psi(batch):
    return batch.reward_to_go() * batch.discount()


def _v_baseline_psi(batch):
    T = batch.actions.shape[1]
    rows = np.minimum(np.arange(T), batch.V.shape[0] - 1)
    v = np.where(batch.mask, batch.V[rows[None, :], np.maximum(batch.states[:, :T], 0)], 0.0)
    return (batch.reward_to_go() - v) * batch.discount()


@pytest.fixture
def registered():
    from pgbench.estimators.batch import BATCH_ESTIMATORS
    names = []
    yield names
    for n in names:
        BATCH_ESTIMATORS.pop(n, None)


@pytest.mark.parametrize("fn, kw, before, after", [
    (_advantage_psi, {}, "practical", "oracle"),  # seen reading V and Q through batch.values()
    (_v_baseline_psi, {}, "practical", "oracle"),  # seen reading batch.V
    (_v_baseline_psi, {"reads": ("V",)}, "oracle", "oracle"),  # declared
    (_rtg_psi, {"oracle": True}, "oracle", "oracle"),
    (_rtg_psi, {}, "practical", "practical"),  # reads no oracle: stays practical
    (_v_baseline_psi, {"oracle": False}, "practical", "practical"),  # the user's word wins
])
def test_a_batch_estimator_reading_the_oracle_is_classed_oracle(registered, fn, kw, before, after):
    from pgbench.measure import measure
    from pgbench.estimators.batch import register_batch_estimator
    from pgbench.estimators.catalogue import estimator_class
    name = f"u_{fn.__name__.strip('_')}_{len(kw)}_{'_'.join(map(str, kw.values()))}".replace("(", "").replace(")", "")
    name = "".join(c if c.isalnum() else "_" for c in name)
    registered.append(name)
    register_batch_estimator(name, unbiased=True, replace=True, **kw)(fn)
    assert estimator_class(name) == before
    df = measure("garnet:S=3,A=2,b=2,seed=0,horizon=3", ["gae:lambda=1.0", name], batch=2, trials=4)
    assert df.set_index("estimator").loc[name, "class"] == after
    assert estimator_class(name) == after
    assert df.set_index("estimator").loc["gae:lambda=1.0", "class"] == "oracle"


def test_reads_is_checked(registered):
    from pgbench import PGBenchError
    from pgbench.estimators.batch import register_batch_estimator
    with pytest.raises(PGBenchError, match="reads names.*'pi'"):
        register_batch_estimator("u_bad_reads", unbiased=True, reads=("pi",))
    with pytest.raises(PGBenchError, match="contradicts oracle=False"):
        register_batch_estimator("u_bad_reads", unbiased=True, reads="V", oracle=False)


# ----------------------------------------------------------------------------- thread settings left as found

_TORCH_SCRIPT = """
import torch
torch.set_num_threads(1)
assert torch.get_num_threads() == 1  # torch reads OpenMP's count from now on (its lazy init is done)
torch.ones(4) @ torch.ones(4)
from pgbench.measure import measure, run_cell
run_cell("three_step_bandit", ["reinforce"], batch=2, trials=4)  # the first cell starts numba's threads
a = torch.get_num_threads()
measure("garnet:S=3,A=2,b=2,seed=0,horizon=3", ["reinforce_rtg"], batch=2, trials=4)
print(a, torch.get_num_threads())
"""


def test_a_cell_leaves_torch_thread_count_as_the_user_set_it(tmp_path):
    pytest.importorskip("torch")
    import os
    import subprocess
    import sys
    env = dict(os.environ)
    env.pop("OMP_NUM_THREADS", None)
    out = subprocess.run([sys.executable, "-c", _TORCH_SCRIPT], capture_output=True, text=True, env=env,
                         timeout=600)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["1", "1"], out.stdout


def test_a_cell_leaves_openmp_blas_and_numba_thread_counts_as_found():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    import numba
    from pgbench.measure import measure
    measure("three_step_bandit", ["reinforce"], batch=2, trials=4)  # numba's threads and OpenMP runtime loaded
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("one numba thread: nothing to change")
    ctl = threadpoolctl.ThreadpoolController()
    libs = [lib for lib in ctl.lib_controllers if lib.user_api in ("openmp", "blas")]
    if not libs:
        pytest.skip("threadpoolctl sees no OpenMP or BLAS library")
    before_numba = numba.get_num_threads()
    before = [(lib, lib.num_threads) for lib in libs]
    try:
        for lib in libs:
            lib.set_num_threads(1)
        numba.set_num_threads(1)
        measure("garnet:S=3,A=2,b=2,seed=0,horizon=3", ["reinforce_rtg"], batch=2, trials=4)
        got = {lib.filepath: lib.num_threads for lib in libs}
        assert all(n == 1 for n in got.values()), got
        assert numba.get_num_threads() == 1
    finally:
        for lib, n in before:
            lib.set_num_threads(n)
        numba.set_num_threads(before_numba)


# ----------------------------------------------------------------------------- batches trimmed to their longest episode

def test_batches_are_trimmed_to_their_longest_episode():
    from conftest import capture_batches
    from pgbench import make
    prob = make("gridworld")  # unbounded: the sampling cap (hundreds of steps) is far beyond the episodes
    cap = prob.mdp.episode_cap
    res, seen = capture_batches(prob, ["reinforce_rtg"], N=4, K=3, seed=0)
    assert len(seen) == 3
    for b in seen:
        L = int(b.lengths.max())
        assert b.actions.shape == (4, L) and b.rewards.shape == (4, L) and b.states.shape == (4, L + 1)
        assert b.T == L < cap
        assert b.trim() is b  # already trimmed
        # every episode's last state is still there, -1 after it
        assert np.all(b.states[np.arange(4), b.lengths] >= 0)
        assert np.all(b.mask.sum(axis=1) == b.lengths)


def test_trim_cuts_the_padding_and_keeps_the_steps():
    from pgbench.estimators.batch import Batch
    states = np.array([[0, 1, 2, -1, -1, -1], [0, 2, -1, -1, -1, -1]])
    actions = np.array([[1, 0, -1, -1, -1], [1, -1, -1, -1, -1]])
    rewards = np.array([[0.5, 1.0, 0, 0, 0], [2.0, 0, 0, 0, 0]])
    V = np.arange(3.0)[None, :]
    Q = np.arange(6.0).reshape(1, 3, 2)
    b = Batch(states=states, actions=actions, rewards=rewards, lengths=np.array([2, 1]),
              terminated=np.array([True, True]), truncated=np.array([False, False]), gamma=0.5,
              pi=np.full((3, 2), 0.5), V=V, Q=Q, theta=np.zeros(6), policy=None)
    t = b.trim()
    assert t.T == 2 and t.states.shape == (2, 3) and b.T == 5
    np.testing.assert_array_equal(t.states, states[:, :3])
    np.testing.assert_array_equal(t.reward_to_go(), b.reward_to_go()[:, :2])
    np.testing.assert_array_equal(t.reward_to_go(), [[0.5 + 0.5 * 1.0, 1.0], [2.0, 0.0]])
    v, q = t.values()
    np.testing.assert_array_equal(q, [[1.0, 2.0], [1.0, 0.0]])  # Q(0, 1), Q(1, 0); nothing past the end


# ----------------------------------------------------------------------------- trial-by-trial estimates

def test_the_measure_module_is_reachable_beside_the_function():
    import importlib
    import types

    import pgbench.measure
    mod = importlib.import_module("pgbench.measure.api")
    assert isinstance(mod, types.ModuleType)
    assert pgbench.measure.measure is mod.measure and callable(pgbench.measure.measure)
    assert pgbench.measure.run_cell is mod.run_cell and pgbench.measure.Cell is mod.Cell


def test_trial_by_trial_estimates_as_documented():
    """The route the docs give: run_cell's (K, estimators, d) array, the same trials summarize_cell
    summarises, and what measure() returns for the same cell."""
    from pgbench.measure import measure, run_cell, summarize_cell
    prob, ests, N, K = "garnet:S=3,A=2,b=2,seed=0,horizon=3", ["reinforce", "reinforce_rtg"], 4, 50
    cell = run_cell(prob, ests, batch=N, trials=K, seed=3)
    d = cell.targets.shape[1]
    assert cell.estimates.shape == (K, 2, d) and [s.label for s in cell.specs] == ests
    df = summarize_cell(cell)
    np.testing.assert_allclose(np.ravel(df["mean"][1]), cell.estimates[:, 1].mean(axis=0), rtol=1e-12, atol=1e-15)
    again = measure(prob, ests, batch=N, trials=K, seed=3)
    np.testing.assert_allclose(np.ravel(again["mean"][0]), cell.estimates[:, 0].mean(axis=0), rtol=1e-12, atol=1e-15)
