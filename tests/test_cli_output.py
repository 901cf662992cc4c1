"""What the command line prints: `exact --natural` and `--beta` in text mode, `measure`'s
verdict column and its missing exact values, and a line on stderr whenever numba compiles."""
from __future__ import annotations

import re
import textwrap

import numpy as np
import pytest

from pgbench import compile_notice
from pgbench.cli import main
from pgbench.kernels import mdp


def _run(capsys, argv):
    rc = main(argv)
    out, err = capsys.readouterr()
    assert rc == 0, err
    return out, err


def test_exact_text_prints_the_natural_gradient_and_beta(capsys):
    import pgbench
    out, _ = _run(capsys, ["exact", "three_step_bandit", "--natural", "--beta", "0.25"])
    assert re.search(r"^beta\s+0\.25\b", out, flags=re.M)
    assert "natural gradient" in out
    block = out.split("natural gradient", 1)[1].split("\n", 1)[1]
    printed = np.array([float(x) for x in re.findall(r"-?\d+\.\d+", block)])
    nat = pgbench.exact(pgbench.make("three_step_bandit"), beta=0.25).natural_gradient()
    np.testing.assert_allclose(printed, np.ravel(nat), atol=1e-6)
    out, _ = _run(capsys, ["exact", "three_step_bandit"])
    assert "natural gradient" not in out and "beta" not in out


def test_measure_prints_the_verdict_and_no_nan(capsys, tmp_path):
    """A biased estimator that claims to be unbiased is flagged as the report flags it; an
    estimator without exact moments prints '-' with the reason, never NaN."""
    plugin = tmp_path / "biased_plugin.py"
    plugin.write_text(textwrap.dedent("""
        from pgbench.estimators.batch import register_batch_estimator

        @register_batch_estimator("doubled_rtg_cli_test", unbiased=True, doc="reward-to-go times 2: biased")
        def doubled(batch):
            return 2.0 * batch.reward_to_go() * batch.discount()
    """))
    from pgbench.estimators.batch import unregister_batch_estimator
    try:
        out, _ = _run(capsys, ["measure", "three_step_bandit", "-e", "reinforce_rtg", "-e", "natural", "-e",
                               "doubled_rtg_cli_test", "-N", "4", "-K", "300", "--import", str(plugin)])
    finally:
        unregister_batch_estimator("doubled_rtg_cli_test")
    lines = out.splitlines()
    header = lines[1].split()
    assert "verdict" in header
    row = {ln.split()[0]: ln for ln in lines[2:5]}
    assert "BIAS DETECTED" in row["doubled_rtg_cli_test"]
    assert "consistent" in row["reinforce_rtg"]
    assert "nan" not in out.lower()
    assert re.search(r"^exact -: .*natural.*: .+\(MC only\)$", out, flags=re.M)


@pytest.fixture
def fresh_notice(monkeypatch):
    monkeypatch.setenv(compile_notice.ENV, "1")  # tests/conftest.py turns it off for the other tests
    compile_notice.finish()
    yield
    compile_notice.finish()


def test_compiling_is_announced(capsys, fresh_notice):
    from numba import njit
    compile_notice.watch()

    @njit
    def add_one_for_the_notice(x):
        return x + 1

    assert add_one_for_the_notice(1) == 2
    assert add_one_for_the_notice(2) == 3  # compiled once
    compile_notice.finish()
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("pgbench: compiling kernels (add_one_for_the_notice first;")
    assert re.fullmatch(r"pgbench: compiled 1 kernel\(s\) in \d+\.\d s \(cached for next time\)", err[-1])
    assert compile_notice.compiled() == ["add_one_for_the_notice"] and compile_notice.compile_seconds() > 0


def test_a_command_that_compiles_says_so(capsys, tmp_path, fresh_notice):
    plugin = tmp_path / "compiles_at_import.py"
    plugin.write_text("from numba import njit\n\n@njit\ndef twice_for_the_notice(x):\n    return 2 * x\n\n"
                      "assert twice_for_the_notice(2) == 4\n")
    _, err = _run(capsys, ["measure", "three_step_bandit", "-e", "reinforce", "-N", "2", "-K", "20",
                           "--import", str(plugin)])
    assert "pgbench: compiling kernels (twice_for_the_notice first;" in err
    assert re.search(r"^pgbench: compiled \d+ kernel\(s\) in ", err, flags=re.M)


def test_a_new_estimator_set_uses_the_cached_full_kernel(monkeypatch):
    """Once the all-branch pass 2 is cached, a set of estimators whose own variant is not cached
    uses it instead of compiling; with nothing cached the (cheaper) variant compiles."""
    from pgbench.estimators.catalogue import parse
    codes = [parse("reinforce").info.code]
    monkeypatch.setattr(mdp, "PER_BRANCH", True)
    monkeypatch.setattr(mdp, "_PASS2_VARIANTS", {})
    cached = set()
    monkeypatch.setattr(mdp, "on_disk", lambda d: d.py_func.__name__ in cached)
    full = mdp._score_weights
    if full.overloads:  # compiled in this process already: that counts as available
        assert mdp.score_weights_for(codes) is full
        return
    variant = mdp.score_weights_for(codes)
    assert variant is not full and variant.py_func.__name__.startswith("_score_weights__")
    cached.add("_score_weights")
    assert mdp.score_weights_for(codes) is full
    cached.add(variant.py_func.__name__)
    assert mdp.score_weights_for(codes) is variant
