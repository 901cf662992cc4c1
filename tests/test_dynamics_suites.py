"""Learning-dynamics suites: declared as data, run by the runner, reported in their own section."""
import json
import os

import numpy as np

from pgbench.suites.registry import SUITES, select


def test_dynamics_suites_declared():
    ids = [s.id for s in select(["dynamics"])]
    assert "dynamics/three-armed" in ids and "dynamics/committal/lr=0.1" in ids
    assert any("garnet" in i for i in ids) and any("gridworld" in i for i in ids)
    three = SUITES["dynamics/three-armed"]
    assert three.train.optimizer == "npg" and three.train.lr == 0.025 and three.train.steps == 1000
    assert len(three.estimators) == 8 and three.trials == 4000
    quick = [s.id for s in select(["dynamics"]) if s.cells(quick=True)]
    assert quick == ["dynamics/three-armed", "dynamics/committal/lr=0.1"]


def test_runner_and_report(tmp_path, monkeypatch):
    """A learning cell through the runner and the report (a small variant of the committal suite)."""
    from dataclasses import replace

    from pgbench.suites import registry, runner
    sid = "dynamics/committal/lr=0.1"
    small = replace(SUITES[sid], quick_trials=50, train=replace(SUITES[sid].train, quick_steps=30, nsr_points=3))
    monkeypatch.setitem(registry.SUITES, sid, small)
    out = runner.run([sid], quick=True, out=str(tmp_path / "run"), progress=False)
    cells = os.listdir(os.path.join(out, "cells"))
    assert len(cells) == 1
    rec = json.load(open(os.path.join(out, "cells", cells[0])))
    tr = rec["train"]
    assert tr["config"]["runs"] == 50 and tr["config"]["steps"] == 30
    summ = {r["estimator"]: r for r in tr["summary"]}
    assert set(summ) == {"const_baseline:b=-1.0", "optimal_const_baseline", "value_baseline"}
    for r in summ.values():
        assert r["p_stuck_lo"] <= r["p_stuck"] <= r["p_stuck_hi"]
    nsr = np.array(tr["curves"]["exact_nsr"], dtype=float)
    assert np.isfinite(nsr).sum() == 3 * 3
    md = open(os.path.join(out, "report.md")).read()
    assert "Learning dynamics" in md and "dynamics/committal/lr=0.1/N=1" in md
    figs = os.listdir(os.path.join(out, "figures"))
    assert any(f.startswith("dynamics_") and f.endswith("_J.png") for f in figs)
    assert any(f.endswith("_stuck.png") for f in figs) and any(f.endswith("_nsr.png") for f in figs)


def test_simplex_figure_for_three_actions():
    from pgbench.reports.dynamics import figures
    from pgbench.suites.dynamics import run_train_record
    from dataclasses import replace
    s = SUITES["dynamics/three-armed"]
    s = replace(s, estimators=s.estimators[:2], quick_trials=4, train=replace(s.train, quick_steps=20, nsr_points=2))
    rec = run_train_record(s, 1, True, 0, {})
    assert np.asarray(rec["train"]["simplex"]["pi"]).shape == (2, 4, 21, 3)
    assert set(figures(rec)) == {"J", "stuck", "nsr", "simplex"}
