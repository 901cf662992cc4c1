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
