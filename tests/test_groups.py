"""Sequence problems and the group estimators (GRPO, Dr. GRPO, DAPO, REINFORCE++, RLOO, KL penalties):
exact J / J_beta and gradients against sequence enumeration and finite differences, exact means and
variances against a plain listing of all G-tuples, Monte-Carlo means against the exact ones, grouped
sampling, the kernels against a plain reference, and the one-line errors."""
from __future__ import annotations

import numpy as np
import pytest

from naive_groups import list_sequences, naive_group_estimate, naive_group_moments, naive_J

from pgbench import make
from pgbench.errors import PGBenchError
from pgbench.estimators.catalogue import parse
from pgbench.exact import exact
from pgbench.exact.groups import group_moments, kl_exact

FULL = dict(adv="mean", agg="seq-mean-token-sum", ddof=1, eps=1e-6, kl="k1", kl_in="reward", beta=0.0)


def fd_grad(f, theta, h=1e-6):
    th = np.array(theta, dtype=float)
    g = np.zeros(th.size)
    for i in range(th.size):
        e = np.zeros(th.size)
        e[i] = h
        g[i] = (f((th.ravel() + e).reshape(th.shape)) - f((th.ravel() - e).reshape(th.shape))) / (2 * h)
    return g


@pytest.mark.parametrize("spec", ["tokens:V=3,L=2,prompts=2,reward=verifier,seed=1",
                                  "tokens:V=3,L=3,prompts=1,reward=graded,seed=2",
                                  "tokens:V=2,L=3,prompts=2,reward=length,seed=3,policy=bigram"])
def test_sequence_problem_exact_J_and_J_beta(spec):
    prob = make(spec)
    th, ref = prob.theta, prob.theta_ref
    assert prob.mdp.gamma == 1.0 and prob.mdp.horizon == int(spec.split("L=")[1][0])
    seqs = list_sequences(prob, th)
    for s, lst in seqs.items():  # every prompt's sequences are a distribution
        assert abs(sum(q["prob"] for q in lst) - 1.0) < 1e-12
        assert all(q["steps"][-1][1] == 0 or q["n"] == prob.mdp.horizon for q in lst)  # EOS or full length
    gt = exact(prob)
    assert abs(gt.J - naive_J(prob, th)) < 1e-12
    np.testing.assert_allclose(gt.grad.ravel(), fd_grad(lambda t: naive_J(prob, t), th), atol=1e-7)
    for beta in (0.2, 1.0):
        kt = kl_exact(prob, th, beta)
        assert abs(kt.J - naive_J(prob, th, beta, ref)) < 1e-12
        np.testing.assert_allclose(kt.grad.ravel(), fd_grad(lambda t: naive_J(prob, t, beta, ref), th), atol=1e-7)


VARIANTS = [dict(adv="none"), dict(adv="mean"), dict(adv="loo"), dict(adv="mean_std"), dict(adv="mean_std", ddof=0),
            dict(adv="mean_batchstd"), dict(agg="seq-mean-token-mean", adv="mean_std"),
            dict(agg="token-mean", adv="mean_std"), dict(agg="seq-mean-token-sum-norm"),
            dict(adv="loo", beta=0.3), dict(adv="none", beta=0.3, kl="k1", kl_in="loss"),
            dict(adv="mean", beta=0.5, kl="k2", kl_in="loss", agg="token-mean"),
            dict(adv="mean_std", beta=0.5, kl="k3", kl_in="loss", agg="seq-mean-token-mean")]


@pytest.mark.parametrize("over", VARIANTS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()))
def test_exact_group_moments_match_listing_of_all_tuples(over):
    prob = make("tokens:V=3,L=2,prompts=2,reward=graded,seed=4")
    p = {**FULL, **over}
    G = 3
    m_ref, v_ref = naive_group_moments(prob, prob.theta, p, G, 1, prob.theta_ref)
    gm = group_moments(prob, None, p, G, 1)
    np.testing.assert_allclose(gm.mean, m_ref, atol=1e-10, rtol=0)
    assert gm.variance is not None and abs(gm.variance - v_ref) < 1e-10


@pytest.mark.parametrize("over", [dict(agg="token-mean", adv="mean_std"), dict(adv="loo"),
                                  dict(agg="token-mean", adv="none", beta=0.4, kl="k2", kl_in="loss")])
def test_exact_group_mean_with_two_groups(over):
    """P = 2 groups: the token mean's denominator couples them (their lengths)."""
    prob = make("tokens:V=2,L=2,prompts=2,reward=length,seed=5")
    p = {**FULL, **over}
    m_ref, v_ref = naive_group_moments(prob, prob.theta, p, 2, 2, prob.theta_ref)
    gm = group_moments(prob, None, p, 2, 2)
    np.testing.assert_allclose(gm.mean, m_ref, atol=1e-10, rtol=0)
    if gm.variance is not None:
        assert abs(gm.variance - v_ref) < 1e-10


def test_claimed_unbiased_exactly_as_listed():
    """Unbiased for grad J_beta: adv none/loo with seq-mean-token-sum, a KL only as k1 in the reward;
    every other variant has a non-zero exact bias on this tree."""
    prob = make("tokens:V=3,L=3,prompts=2,reward=length,seed=0")
    for over in VARIANTS + [dict(adv="loo", beta=0.3, kl="k1", kl_in="loss"), dict(adv="loo", beta=0.3, kl="k3",
                                                                                   kl_in="loss")]:
        p = {**FULL, **over}
        label = "group:" + ",".join(f"{k}={v}" for k, v in over.items())
        sp = parse(label)
        gm = group_moments(prob, None, p, 4, 1, variance=False)
        target = kl_exact(prob, None, p["beta"]).grad.ravel()
        bias = np.linalg.norm(gm.mean - target)
        assert sp.unbiased == (bias < 1e-12), (label, bias)
    for name in ("grpo", "dr_grpo", "dapo", "reinforce_pp"):
        assert not parse(name).unbiased


def test_scales_of_centring():
    """Mean-centring scales the gradient by (1 - 1/G); Dr. GRPO by (1 - 1/G) / L (a single prompt)."""
    prob = make("tokens:V=3,L=3,prompts=1,reward=verifier,seed=2")
    g = exact(prob).grad.ravel()
    for G in (2, 4, 8):
        m = group_moments(prob, None, {**FULL}, G, 1, variance=False).mean
        np.testing.assert_allclose(m, (1 - 1 / G) * g, atol=1e-12)
        m = group_moments(prob, None, parse("dr_grpo").p, G, 1, variance=False).mean
        np.testing.assert_allclose(m, (1 - 1 / G) / 3 * g, atol=1e-12)


@pytest.mark.parametrize("spec,G,N", [("tokens:V=3,L=3,prompts=2,reward=length,seed=0", 3, 6),
                                      ("tokens:V=3,L=3,prompts=1,reward=verifier,seed=1,policy=bigram", 4, 4)])
def test_monte_carlo_means_within_three_standard_errors(spec, G, N):
    from pgbench.measure.measure import run_cell
    ests = ["rloo", "grpo", "dr_grpo", "dapo", "reinforce_pp", "group:adv=loo,beta=0.3",
            "group:adv=none,beta=0.3,kl=k3,kl_in=loss", "grpo:beta=0.2,kl=k2,kl_in=loss"]
    K = 6000
    cell = run_cell(spec, ests, batch=N, trials=K, seed=3, group=G)
    checked = 0
    for j, sp in enumerate(cell.specs):
        m_exact = cell.extras.get("exact_mean", {}).get(sp.label)
        if m_exact is None:
            assert cell.extras["exact_note"][sp.label].startswith("MC only")
            continue
        est = cell.estimates[:, j, :]
        tr = np.trace(np.atleast_2d(np.cov(est.T)))
        ev = cell.extras["exact_moments"].get(sp.label, (None,))[0]
        if ev is not None:
            assert abs(tr - ev) < 0.1 * ev + 1e-12  # the sample trace variance near the exact one
        assert np.linalg.norm(est.mean(axis=0) - m_exact) < 3 * np.sqrt(tr / K), sp.label
        checked += 1
    assert checked >= 6


def test_group_kernel_matches_plain_reference_trial_by_trial():
    """The compiled psi of every variant against the definition, on the same grouped episodes."""
    from pgbench.estimators.groups import codes
    from pgbench.kernels import groups as KG
    from pgbench.kernels.rng import seed_u64
    from pgbench.kernels.tables import make_tables
    from pgbench.measure.batch_runner import episode_blocks
    prob = make("tokens:V=3,L=3,prompts=2,reward=graded,seed=6")
    th = prob.theta
    t = make_tables(prob, th)
    G, N = 3, 6
    pi = prob.policy.probs(th)
    lr = np.log(pi) - prob.log_pi_ref()
    for k0, states, actions, rewards, lengths, term in episode_blocks(t, seed_u64(1), np.uint64(7), N, 5, 5, G):
        for over in VARIANTS:
            p = {**FULL, **over}
            adv, agg, kl, kin = codes(p)
            psi = np.zeros((5, N, t.cap))
            logratio = lr if p["beta"] > 0 else np.zeros_like(lr)
            KG.group_psi(states, actions, rewards, lengths, G, adv, agg, p["ddof"], p["eps"], kl, kin, p["beta"],
                         logratio, 3.0, psi)
            for b in range(5):
                groups = []
                for g0 in range(0, N, G):
                    grp = []
                    for i in range(g0, g0 + G):
                        n = lengths[b, i]
                        st = [(int(states[b, i, u]), int(actions[b, i, u])) for u in range(n)]
                        kls = sum(lr[s, a] for s, a in st)
                        grp.append(dict(prob=1.0, ret=rewards[b, i, :n].sum(), klsum=kls, n=n, steps=st))
                    assert len({q["steps"][0][0] for q in grp}) == 1  # one prompt per group
                    groups.append(grp)
                ref = naive_group_estimate(prob, th, p, groups, prob.theta_ref)
                C = np.zeros((prob.mdp.S, prob.mdp.A))
                for i in range(N):
                    for u in range(lengths[b, i]):
                        C[states[b, i, u], actions[b, i, u]] += psi[b, i, u]
                got = prob.policy.contract(th, C / N).ravel()
                np.testing.assert_allclose(got, ref, atol=1e-12, rtol=0)


def test_grouped_sampling_shares_start_and_keeps_streams():
    from pgbench.kernels.rng import seed_u64
    from pgbench.kernels.tables import make_tables
    from pgbench.measure.batch_runner import episode_blocks
    prob = make("tokens:V=3,L=3,prompts=4,reward=verifier,seed=0")
    t = make_tables(prob, prob.theta)

    def block(G):
        return [np.array(x) for x in next(episode_blocks(t, seed_u64(2), np.uint64(9), 8, 50, 50, G))[1:5]]

    plain = block(None)
    one = block(1)
    for a, b in zip(plain, one):
        np.testing.assert_array_equal(a, b)  # G = 1 is ungrouped sampling
    four = block(4)
    st = four[0]
    assert np.all(st[:, :, 0].reshape(50, 2, 4) == st[:, ::4, 0].reshape(50, 2, 1))  # one start per group
    np.testing.assert_array_equal(four[0][:, ::4], plain[0][:, ::4])  # leaders are the ungrouped episodes
    assert len(np.unique(st[:, ::4, 0])) == 4  # all prompts drawn


def test_grouped_cells_bit_identical_across_thread_counts():
    import numba
    from pgbench.measure.measure import run_cell
    ests = ["grpo", "rloo", "dapo:beta=0.1,kl=k3,kl_in=loss"]
    out = []
    old = numba.get_num_threads()
    try:
        for n in (1, min(2, numba.config.NUMBA_NUM_THREADS)):
            numba.set_num_threads(n)
            out.append(run_cell("tokens:V=3,L=3,prompts=2,seed=1", ests, 8, 40, seed=5, group=4, exact=False).estimates)
    finally:
        numba.set_num_threads(old)
    assert out[0].tobytes() == out[1].tobytes()


def test_batch_estimators_see_groups_and_reference():
    from pgbench.estimators.batch import register_batch_estimator, unregister_batch_estimator
    from pgbench.measure.measure import run_cell
    seen = []

    @register_batch_estimator("_peek_groups", unbiased=True, returns="psi", replace=True)
    def peek(batch):
        seen.append((batch.group.copy(), batch.log_pi_ref is not None, batch.states[:, 0].copy()))
        return np.zeros(batch.rewards.shape)

    try:
        run_cell("tokens:V=3,L=2,prompts=3,seed=1", ["_peek_groups"], 6, 3, seed=0, group=3, exact=False)
    finally:
        unregister_batch_estimator("_peek_groups")
    for grp, has_ref, s0 in seen:
        np.testing.assert_array_equal(grp, [0, 0, 0, 1, 1, 1])
        assert has_ref and len(set(s0[:3])) == 1 and len(set(s0[3:])) == 1


@pytest.mark.parametrize("call,msg", [
    (dict(est=["grpo"], N=6, G=4), "does not divide"),
    (dict(est=["group:adv=loo"], N=4, G=1), "leave-one-out"),
    (dict(est=["rloo"], N=4, G=1, problem="garnet:S=4,A=2,gamma=1.0,horizon=3"), None),
    (dict(est=["grpo"], N=4, G=2, problem="garnet:S=4,A=2,gamma=0.9,horizon=3"), "gamma = 1"),
    (dict(est=["grpo"], N=4, G=None), "needs grouped sampling"),
    (dict(est=["reinforce_rtg"], N=4, G=2), "does not run on grouped batches"),
    (dict(est=["group:adv=loo,beta=0.1"], N=4, G=2, problem="garnet:S=4,A=2,gamma=1.0,horizon=3"),
     "no reference policy"),
])
def test_bad_inputs_one_line(call, msg):
    from pgbench.measure.measure import run_cell
    problem = call.get("problem", "tokens:V=3,L=2")
    if msg is None:
        run_cell(problem, call["est"], call["N"], 2, group=call["G"], exact=False)
        return
    with pytest.raises(PGBenchError) as e:
        run_cell(problem, call["est"], call["N"], 2, group=call["G"], exact=False)
    assert msg in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("spec,msg", [("group:adv=median", "unknown adv"), ("grpo:agg=sum", "unknown agg"),
                                      ("dapo:kl=k4", "unknown kl"), ("grpo:kl_in=both", "unknown kl_in"),
                                      ("group:beta=0.1,kl=k2", "k1 only")])
def test_bad_estimator_parameters(spec, msg):
    with pytest.raises(PGBenchError, match=msg):
        parse(spec)


def test_sequence_problem_bad_parameters_and_npz_reference(tmp_path):
    with pytest.raises(PGBenchError, match="gamma = 1"):
        make("tokens:V=3,L=2,gamma=0.9")
    with pytest.raises(PGBenchError, match="unknown reward"):
        make("tokens:reward=exact")
    prob = make("tokens:V=3,L=2,prompts=2")
    from pgbench.problems.io import load_npz, save_npz
    ref = np.random.default_rng(0).normal(size=prob.theta_ref.shape)
    from pgbench.problems.problem import MDPProblem
    p2 = MDPProblem(prob.mdp, prob.policy, prob.theta, "x", {}, ref)
    save_npz(str(tmp_path / "x.npz"), p2)
    back = load_npz(str(tmp_path / "x.npz"))
    np.testing.assert_array_equal(back.theta_ref, ref)
    np.savez(tmp_path / "y.npz", P=prob.mdp.P, R=prob.mdp.R, rho0=prob.mdp.rho0, gamma=1.0, horizon=2,
             terminal=prob.mdp.terminal)
    assert not load_npz(str(tmp_path / "y.npz")).theta_ref.any()  # default: zeros, the uniform policy


def test_llm_suites_declared_and_quick_cells_small():
    from pgbench.suites.registry import SUITES
    from pgbench.suites.runner import cell_id, plan
    llm = [s for s in SUITES.values() if s.id.startswith("llm/")]
    assert len(llm) >= 6 and all(s.groups >= 1 and tuple(s.batch_sizes) == (2, 4, 8, 16) for s in llm)
    quick = plan(llm, True)
    assert len(quick) == 2 and all(SUITES[sid].n_trials(True) <= 200 for sid, _ in quick)
    assert cell_id(SUITES["llm/verifier-4p"], 8) == "llm/verifier-4p/G=8"
    assert SUITES["llm/verifier-4p"].cell_shape(8) == (32, 8)
    assert plan([SUITES["llm/verifier-4p"]], False, group=4) == [("llm/verifier-4p", 4)]


def test_llm_report_section(tmp_path):
    """A run of one quick grouped cell: the record carries G, exact scale / cosine and the length
    profile, and the report has the LLM section with its two figures."""
    from pgbench.suites.runner import run
    path = run(["llm/length-1p"], quick=True, out=str(tmp_path / "run"), progress=False)
    import json
    import os
    cells = [json.load(open(os.path.join(path, "cells", f))) for f in os.listdir(os.path.join(path, "cells"))]
    (rec,) = cells
    assert rec["G"] == 4 and rec["cell"] == "llm/length-1p/G=4"
    rows = {r["estimator"]: r for r in rec["rows"]}
    assert abs(rows["rloo"]["exact_scale"] - 1) < 1e-12 and abs(rows["group"]["exact_scale"] - 0.75) < 1e-12
    assert abs(rows["dr_grpo"]["exact_scale"] - 0.75 / 4) < 1e-12
    assert set(rec["length_profile"]["grpo"]) == {"1", "2", "3", "4"}
    md = open(os.path.join(path, "report.md")).read()
    assert "LLM group estimators" in md and "llm-length-1p-scale-vs-G.png" in md and "llm-length-1p-length-bias.png" in md
    assert os.path.exists(os.path.join(path, "figures", "llm-length-1p-length-bias.png"))


def test_numpy_grpo_example_reproduces_builtins_trial_by_trial():
    import importlib.util
    import os
    from pgbench.estimators.batch import unregister_batch_estimator
    from pgbench.measure.measure import run_cell
    path = os.path.join(os.path.dirname(__file__), "..", "examples", "grpo_numpy.py")
    spec = importlib.util.spec_from_file_location("grpo_numpy_example", path)
    mod = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(mod)
        cell = run_cell("tokens:V=3,L=4,prompts=2,reward=length,seed=2", ["grpo", "np_grpo",
                        "dapo:beta=0.1,kl=k3,kl_in=loss", "np_dapo_k3"], 8, 300, seed=4, group=4, exact=False)
    finally:
        unregister_batch_estimator("np_grpo")
        unregister_batch_estimator("np_dapo_k3")
    est = cell.estimates
    assert np.abs(est[:, 0]).max() > 0.01  # not trivially zero
    np.testing.assert_allclose(est[:, 1], est[:, 0], atol=1e-12, rtol=0)
    np.testing.assert_allclose(est[:, 3], est[:, 2], atol=1e-12, rtol=0)


def test_direct_gradients_of_linear_policies_match_score_weights(monkeypatch):
    """Under a linear (bigram) policy the group estimates are formed episode by episode; the same
    cell through (S, A) score weights gives the same estimates."""
    from pgbench.measure import engine
    from pgbench.measure.measure import run_cell
    spec = "tokens:V=3,L=3,prompts=2,reward=length,seed=1,policy=bigram"
    ests = ["grpo", "dapo:beta=0.2,kl=k2,kl_in=loss", "rloo"]
    direct = run_cell(spec, ests, 8, 50, seed=2, group=4, exact=False).estimates
    monkeypatch.setattr(engine, "GROUP_SCORE_TABLE", 0)
    via_c = run_cell(spec, ests, 8, 50, seed=2, group=4, exact=False).estimates
    assert np.abs(direct).max() > 0.01
    np.testing.assert_allclose(direct, via_c, atol=1e-12, rtol=0)


@pytest.mark.parametrize("argv,msg", [
    (["-e", "grpo", "-N", "6", "-G", "4"], "does not divide"),
    (["-e", "group:adv=loo", "-N", "4", "-G", "1"], "leave-one-out"),
    (["-e", "grpo:adv=median", "-N", "4", "-G", "2"], "unknown adv"),
    (["-e", "grpo", "-N", "4"], "needs grouped sampling"),
])
def test_cli_group_errors_are_one_line(capsys, argv, msg):
    from conftest import run_cli
    rc, out, err = run_cli(capsys, "measure", "tokens:V=3,L=2", "-K", "5", *argv)
    assert rc == 2 and err.startswith("pgbench: error:") and msg in err and err.strip().count("\n") == 0


def test_cli_measure_group_json(capsys):
    import json
    from conftest import run_cli
    rc, out, err = run_cli(capsys, "measure", "tokens:V=3,L=3,prompts=2", "-e", "dr_grpo", "-N", "8", "-G", "4",
                           "-K", "50", "--json")
    row = json.loads(out)
    assert rc == 0 and row["G"] == 4 and abs(row["exact_scale"] - 0.75 / 3) < 1e-12 and row["exact_cosine"] > 0.999


@pytest.mark.parametrize("over", VARIANTS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()))
def test_pair_formula_variance_matches_tuple_listing(over, monkeypatch):
    """The variance from one and two episodes of a group (used where the G-tuples are too many)
    equals the listing of every G-tuple."""
    from pgbench.exact import groups as EG
    prob = make("tokens:V=3,L=2,prompts=2,reward=graded,seed=4")
    p = {**FULL, **over}
    listed = group_moments(prob, None, p, 3, 2 if p["agg"] != "token-mean" and p["adv"] != "mean_batchstd" else 1)
    monkeypatch.setattr(EG, "PAIR_ALWAYS", True)
    paired = group_moments(prob, None, p, 3, 2 if p["agg"] != "token-mean" and p["adv"] != "mean_batchstd" else 1)
    assert listed.variance is not None and abs(paired.variance - listed.variance) < 1e-12
