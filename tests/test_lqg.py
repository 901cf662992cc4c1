"""Linear-Gaussian control: exact J / gradient / Fisher, the sampling kernel against its NumPy
reference and against the exact gradient, input validation, .npz files and the command line."""
from __future__ import annotations

import numba
import numpy as np
import pytest

from pgbench.errors import PGBenchError
from pgbench.estimators.catalogue import parse
from pgbench.exact.lqg import exact_lqg, sampling_steps
from pgbench.kernels.lqg import CHUNK
from pgbench.measure.lqg import sample_lqg
from pgbench.problems import load_npz, make, save_npz
from pgbench.problems.lqg import LQGProblem, lqg

from conftest import run_cli, z_crit
from naive_lqg import episode_normals, reference_lqg, rollout, scores

ALL = [("reinforce", {}), ("reinforce_rtg", {}), ("value_baseline", {}), ("svg_inf", {}), ("svg0", {"scale": 0.0}),
       ("svg0", {"scale": 0.3}), ("mppi", {"lambda": 2.0})]


def perturbed(problem: LQGProblem, seed: int, scale: float = 0.1) -> np.ndarray:
    return problem.theta + np.random.default_rng(seed).normal(scale=scale, size=problem.dim)


def central_fd(problem, theta, h=1e-5):
    out = np.zeros(problem.dim)
    for i in range(problem.dim):
        e = np.zeros(problem.dim)
        e[i] = h * max(1.0, abs(theta[i]))
        out[i] = (exact_lqg(problem, theta + e).J - exact_lqg(problem, theta - e).J) / (2 * e[i])
    return out


# ----------------------------------------------------------------------------- exact values

SYSTEMS = [(1, 1, 5, 1.0, 0), (2, 1, 20, 0.95, 1), (3, 2, 15, 0.9, 2), (4, 2, 30, 0.99, 3), (6, 3, 25, 0.97, 4),
           (5, 3, 40, 1.0, 5), (2, 2, 0, 0.9, 6), (4, 2, 0, 0.95, 7), (6, 3, 0, 0.8, 8), (3, 1, 0, 0.99, 9)]


@pytest.mark.parametrize("n,m,T,gamma,seed", SYSTEMS)
def test_exact_gradient_equals_central_differences(n, m, T, gamma, seed):
    p = lqg(n=n, m=m, T=T, gamma=gamma, seed=seed)
    th = perturbed(p, seed, 0.03)
    g = exact_lqg(p, th).grad
    fd = central_fd(p, th)
    assert np.linalg.norm(fd - g) <= 1e-6 * np.linalg.norm(g)


def test_unbounded_is_the_limit_of_long_horizons():
    p = lqg(n=3, m=2, T=0, gamma=0.9, seed=3)
    th = perturbed(p, 1)
    inf = exact_lqg(p, th)
    fin = exact_lqg(p, th, horizon=400)
    assert abs(fin.J - inf.J) <= 1e-9 * abs(inf.J)
    np.testing.assert_allclose(fin.grad, inf.grad, rtol=1e-8, atol=1e-9 * np.abs(inf.grad).max())
    np.testing.assert_allclose(fin.fisher_matrix(), inf.fisher_matrix(), rtol=1e-8, atol=1e-9)
    # and the sampling cap keeps the J it cuts off below the documented fraction
    cut = inf.J - exact_lqg(p, th, horizon=sampling_steps(p, th)).J
    assert abs(cut) <= 1e-10 * abs(inf.J)


def test_pgbench_exact_dispatches_to_the_lqg_solver():
    import pgbench
    p = make("point_mass:T=0,gamma=0.9")
    assert pgbench.exact(p).J == exact_lqg(p).J
    with pytest.raises(PGBenchError, match="entropy"):
        pgbench.exact(p, beta=0.1)


def test_scalar_closed_form():
    """n = m = 1, T = 1: J = -(q + r k^2) E[s0^2] - r sigma^2; dJ/dk = -2 r k E[s0^2]; dJ/dlog sigma = -2 r sigma^2."""
    q, r, k, sig, mu, v = 2.0, 0.5, -0.7, 0.4, 1.5, 0.3
    p = LQGProblem([[0.8]], [[1.0]], [[q]], [[r]], [[0.1]], [mu], [[v]], 1.0, 1, theta=[k, np.log(sig)])
    m2 = v + mu * mu
    gt = exact_lqg(p)
    assert gt.J == pytest.approx(-(q + r * k * k) * m2 - r * sig * sig, rel=1e-14)
    np.testing.assert_allclose(gt.grad, [-2 * r * k * m2, -2 * r * sig * sig], rtol=1e-14)
    np.testing.assert_allclose(gt.fisher_matrix(), np.diag([m2 / sig ** 2, 2.0]), rtol=1e-14)


@pytest.mark.parametrize("spec", ["lqg:n=3,m=2,T=8,gamma=0.9,seed=1", "double_integrator:T=0,gamma=0.9"])
def test_J_and_fisher_against_monte_carlo(spec):
    """Exact J and Fisher against means over NumPy-reference rollouts (5 standard errors)."""
    p = make(spec)
    T = sampling_steps(p)
    gt = exact_lqg(p)
    rng = np.random.default_rng(0)
    M = 4000
    Rs, Fs = [], []
    disc = p.gamma ** np.arange(T)
    for _ in range(M):
        S, Aa, E, Xi, r, _ = rollout(p, p.theta, T, rng.normal(size=p.n + T * (p.m + p.n)))
        sc = scores(p, p.theta, S, E)
        Rs.append(disc @ r)
        Fs.append(np.einsum("t,ti,tj->ij", disc, sc, sc))
    Rs, Fs = np.array(Rs), np.array(Fs)
    assert abs(Rs.mean() - gt.J) <= 5 * Rs.std(ddof=1) / np.sqrt(M)
    se = Fs.std(axis=0, ddof=1) / np.sqrt(M)
    assert np.all(np.abs(Fs.mean(axis=0) - gt.fisher_matrix()) <= 5 * se + 1e-12)


# ----------------------------------------------------------------------------- validation

def _base(**kw):
    I2 = np.eye(2)
    args = dict(A=0.9 * I2, B=I2[:, :1], Q=I2, R=[[0.1]], W=0.01 * I2, mu0=[1.0, 0.0], Sigma0=0.1 * I2, gamma=0.9,
                horizon=0, theta=[0.0, 0.0, 0.0])
    args.update(kw)
    return args


@pytest.mark.parametrize("kw,msg", [
    (dict(A=[[1.2, 0.0], [0.0, 0.5]]), "spectral radius"),
    (dict(theta=[5.0, 0.0, 0.0]), "spectral radius"),
    (dict(gamma=1.0), "gamma < 1"),
    (dict(Q=[[1.0, 0.5], [0.0, 1.0]]), "Q is not symmetric"),
    (dict(R=[[-0.1]]), "R is not positive semi-definite"),
    (dict(W=[[1.0, 2.0], [2.0, 1.0]]), "W is not positive semi-definite"),
    (dict(Sigma0=np.eye(3)), "Sigma0 has shape"),
    (dict(B=np.ones((3, 1))), "B must have shape"),
    (dict(mu0=[np.nan, 0.0]), "mu0 has a non-finite"),
    (dict(theta=[0.0, 0.0]), "theta has 2 entries"),
    (dict(theta=[0.0, np.inf, 0.0]), "non-finite"),
    (dict(gamma=1.5, horizon=5), "gamma must be in"),
    (dict(horizon=-3), "horizon must be"),
])
def test_bad_input_refused_in_one_line(kw, msg):
    with pytest.raises(PGBenchError, match=msg) as ei:
        LQGProblem(**_base(**kw))
    assert "\n" not in str(ei.value)


def test_finite_horizon_accepts_an_unstable_closed_loop():
    p = LQGProblem(**_base(A=[[1.2, 0.0], [0.0, 0.5]], horizon=10, gamma=1.0))
    assert p.closed_loop_radius() > 1 and np.isfinite(exact_lqg(p).J)


def test_problem_is_immutable():
    p = make("point_mass")
    with pytest.raises(ValueError):
        p.A[0, 0] = 3.0
    with pytest.raises(Exception):
        p.gamma = 0.5


# ----------------------------------------------------------------------------- files, registry, CLI

def test_npz_round_trip_and_refusals(tmp_path):
    p = make("lqg:n=3,m=2,T=0,gamma=0.9,seed=4")
    th = perturbed(p, 2, 0.05)
    f = str(tmp_path / "sys.npz")
    save_npz(f, p, theta=th)
    q = load_npz(f)
    assert q.kind == "lqg" and q.horizon is None
    np.testing.assert_array_equal(q.theta, th)
    assert exact_lqg(q).J == exact_lqg(p, th).J
    arrays = dict(np.load(f))
    del arrays["Sigma0"]
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(PGBenchError, match="lacks array.*Sigma0"):
        load_npz(str(tmp_path / "bad.npz"))
    arrays = dict(np.load(f))
    arrays["K"] = np.zeros((3, 2))
    np.savez(tmp_path / "bad2.npz", **arrays)
    with pytest.raises(PGBenchError, match="K must have shape"):
        load_npz(str(tmp_path / "bad2.npz"))


def test_cli_exact_and_measure(capsys, tmp_path):
    rc, out, err = run_cli(capsys, "exact", "lqg:n=4,m=2,T=20,gamma=0.95,seed=1", "--json", "--natural")
    assert rc == 0, err
    import json
    d = json.loads(out)
    p = make("lqg:n=4,m=2,T=20,gamma=0.95,seed=1")
    np.testing.assert_allclose(d["grad"], exact_lqg(p).grad, rtol=1e-12)
    assert d["n"] == 4 and d["m"] == 2 and len(d["natural_grad"]) == 10
    rc, out, err = run_cli(capsys, "measure", "point_mass:T=10", "-e", "svg_inf", "-e", "reinforce", "-N", "8",
                           "-K", "20", "--json")
    assert rc == 0, err
    rows = json.loads(out)
    assert [r["estimator"] for r in rows] == ["svg_inf", "reinforce"]
    rc, out, err = run_cli(capsys, "measure", "point_mass", "-e", "rloo", "-N", "4")
    assert rc == 2 and "does not apply to an lqg problem" in err and err.count("\n") == 1
    rc, out, err = run_cli(capsys, "measure", "chain:n=4", "-e", "svg_inf", "-N", "4")
    assert rc == 2 and "lqg" in err and err.count("\n") == 1
    rc, out, err = run_cli(capsys, "exact", "point_mass:T=0", "--theta", "random:1")
    assert rc == 2 and "spectral radius" in err


def test_parse_applies_lqg_estimators_to_lqg_only():
    assert parse("svg_inf", "lqg").info.target == "lqg"
    assert parse("svg0:scale=0.2", "lqg").unbiased is False
    assert parse("svg0", "lqg").unbiased is True
    assert parse("mppi:lambda=3", "lqg").in_batch
    assert parse("reinforce", "lqg").info.target == "lqg"
    assert parse("reinforce", "mdp").info.target == "mdp"
    for name, kind in (("svg_inf", "mdp"), ("mppi", "gaussian"), ("svg0", "categorical")):
        with pytest.raises(PGBenchError, match="lqg"):
            parse(name, kind)
    with pytest.raises(PGBenchError, match="does not apply to an lqg"):
        parse("gae:lambda=0.9", "lqg")
    with pytest.raises(PGBenchError, match="unknown parameter"):
        parse("mppi:tau=1", "lqg")


def test_mppi_needs_a_batch_and_a_positive_lambda():
    p = make("point_mass:T=5")
    with pytest.raises(PGBenchError, match="N >= 2"):
        sample_lqg(p, ["mppi"], None, 1, 2, 0, 0)
    with pytest.raises(PGBenchError, match="lambda"):
        sample_lqg(p, ["mppi"], [{"lambda": 0.0}], 4, 2, 0, 0)


# ----------------------------------------------------------------------------- kernel vs reference

@pytest.mark.parametrize("spec", ["lqg:n=3,m=2,T=7,gamma=0.9,seed=1", "double_integrator:T=6,gamma=1.0",
                                  "lqg:n=2,m=1,T=0,gamma=0.5,seed=2"])
def test_kernel_matches_reference(spec):
    p = make(spec)
    th = perturbed(p, 3, 0.05)
    got = sample_lqg(p, [n for n, _ in ALL], [q for _, q in ALL], 5, 3, 11, 7, theta=th)
    ref = reference_lqg(p, ALL, 5, 3, 11, 7, theta=th)
    for j in range(len(ALL)):
        scale = np.abs(ref[:, j]).max()
        np.testing.assert_allclose(got[:, j], ref[:, j], rtol=1e-10, atol=1e-12 * scale, err_msg=ALL[j][0])


def test_reference_normals_are_standard():
    z = np.concatenate([episode_normals(1, 2, 0, i, 51) for i in range(400)])
    assert abs(z.mean()) < 5 / np.sqrt(z.size) and abs(z.var() - 1) < 5 * np.sqrt(2 / z.size)


def test_mppi_tends_to_the_batch_mean_baseline_as_lambda_grows():
    """lambda sum_i (w_i - 1/N) z_i -> (1/N) sum_i (R_i - mean R) z_i (the documented limit)."""
    p = make("lqg:n=2,m=2,T=6,gamma=0.9,seed=3")
    N, T = 6, 6
    got = sample_lqg(p, ["mppi"], [{"lambda": 1e7}], N, 2, 5, 9)
    for k in range(2):
        Rs, zs = [], []
        for i in range(N):
            S, Aa, E, Xi, r, _ = rollout(p, p.theta, T, episode_normals(5, 9, k, i, p.n + T * (p.m + p.n)))
            Rs.append(p.gamma ** np.arange(T) @ r)
            zs.append(scores(p, p.theta, S, E).sum(axis=0))
        Rs, zs = np.array(Rs), np.array(zs)
        want = ((Rs - Rs.mean()) @ zs) / N
        np.testing.assert_allclose(got[k, 0], want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


def test_results_do_not_depend_on_threads_or_chunking():
    p = make("point_mass:T=12")
    names = ["reinforce_rtg", "svg_inf", "mppi"]
    N = CHUNK + 37  # two chunks per trial
    numba.set_num_threads(1)
    try:
        one = sample_lqg(p, names, None, N, 3, 4, 2)
    finally:
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    every = sample_lqg(p, names, None, N, 3, 4, 2)
    np.testing.assert_array_equal(one, every)
    # across a chunk boundary (mppi merges its per-chunk log-sum-exp accumulators) against the reference
    q = make("lqg:n=2,m=1,T=4,gamma=0.9,seed=5")
    mix = [("reinforce_rtg", {}), ("svg_inf", {}), ("mppi", {"lambda": 0.5})]
    got = sample_lqg(q, [a for a, _ in mix], [b for _, b in mix], CHUNK + 3, 1, 8, 3)
    ref = reference_lqg(q, mix, CHUNK + 3, 1, 8, 3)
    np.testing.assert_allclose(got, ref, rtol=1e-9, atol=1e-12 * np.abs(ref).max())


# ----------------------------------------------------------------------------- against the exact gradient

STAT_SYSTEMS = ["lqg:n=3,m=2,T=15,gamma=0.95,seed=1", "double_integrator:T=0,gamma=0.9", "point_mass:T=25"]
UNBIASED = [("reinforce", {}), ("reinforce_rtg", {}), ("value_baseline", {}), ("svg_inf", {}), ("svg0", {"scale": 0.0})]
BIASED = [("svg0", {"scale": 0.3}), ("mppi", {"lambda": 2.0})]


@pytest.mark.parametrize("spec", STAT_SYSTEMS)
def test_unbiased_not_rejected_biased_flagged(spec):
    """Per coordinate, |mean - grad| within z_crit standard errors (Bonferroni over all coordinates
    and estimators) for the unbiased ones; the biased ones are rejected at the same level."""
    p = make(spec)
    g = exact_lqg(p).grad
    Ktr, N = 400, 50
    ests = UNBIASED + BIASED
    est = sample_lqg(p, [n for n, _ in ests], [q for _, q in ests], N, Ktr, 2024, 1)
    mean = est.mean(axis=0)
    se = est.std(axis=0, ddof=1) / np.sqrt(Ktr)
    zc = z_crit(len(UNBIASED) * p.dim)
    for j, (name, _) in enumerate(UNBIASED):
        z = np.abs(mean[j] - g) / se[j]
        assert z.max() < zc, f"{name} on {spec}: max |z| = {z.max():.2f}"
    for j, (name, q) in enumerate(BIASED, start=len(UNBIASED)):
        z = np.abs(mean[j] - g) / se[j]
        assert z.max() > zc, f"{name}{q} on {spec}: bias not resolved (max |z| = {z.max():.2f})"


def test_measure_reports_pathwise_variance_far_below_score_function():
    from pgbench.measure.measure import measure
    df = measure("double_integrator:T=50", ["reinforce", "value_baseline", "svg_inf", "mppi:lambda=5"], batch=16,
                 trials=200, seed=0).set_index("estimator")
    assert df.loc["svg_inf", "variance_hi"] < df.loc["value_baseline", "variance_lo"]
    assert df.loc["value_baseline", "variance_hi"] < df.loc["reinforce", "variance_lo"]
    assert not df.loc["mppi:lambda=5.0", "unbiased"] and df.loc["mppi:lambda=5.0", "p_value"] < 1e-6


# ----------------------------------------------------------------------------- bench, suites, figure

def test_bench_reports_lqg_ns_per_step():
    from pgbench.bench import LQG_BENCH_PROBLEM, format_bench, lqg_bench
    q = lqg_bench(episodes=400, repeat=1)
    assert q["problem"] == LQG_BENCH_PROBLEM and q["steps_per_episode"] == 100
    assert q["ratio_to_normals_floor"] == q["ns_per_step_svg_inf"] / q["ns_per_step_normals_floor"]
    for key in ("ns_per_step_reinforce_rtg", "ns_per_step_svg_inf", "ns_per_step_both", "ns_per_step_normals_floor"):
        assert np.isfinite(q[key]) and q[key] > 0
    line = format_bench({"lqg": q, **{k: 1.0 for k in (
        "ns_per_step", "ns_per_step_per_core", "ns_per_step_1thread", "thread_scaling", "ns_per_step_rng_floor",
        "ratio_to_rng_floor", "ns_per_step_numpy", "speedup_vs_numpy", "speedup_vs_numpy_1thread",
        "ns_per_step_all_estimators")}, "estimator": "e", "problem": "p", "steps_per_episode": 1, "threads": 1,
        "all_estimators": 1, "passes_all_estimators": 1}).splitlines()[-1]
    assert "LQG" in line and "svg_inf" in line


def test_control_suites_are_declared_for_every_horizon_and_sigma():
    from pgbench.suites.registry import CONTROL_HORIZONS, CONTROL_SIGMAS, SUITES
    horizon = [s for s in SUITES.values() if s.id.startswith("control/horizon/")]
    sigma = [s for s in SUITES.values() if s.id.startswith("control/sigma/")]
    assert sorted(make(s.problem).horizon for s in horizon) == sorted(CONTROL_HORIZONS)
    assert sorted(float(np.exp(make(s.problem).theta[-1])) for s in sigma) == pytest.approx(sorted(CONTROL_SIGMAS))
    # each family draws its figure once, from its last suite
    assert [s.figures for s in horizon].count(("variance_vs_T",)) == 1
    assert [s.figures for s in sigma].count(("variance_vs_sigma",)) == 1
    for s in horizon + sigma:
        for e in s.estimators:
            parse(e, "lqg")


def test_variance_vs_param_figure_plots_each_estimator_against_T():
    import pandas as pd
    from pgbench.errors import PGBenchError as E
    from pgbench.reports.figures import FAMILY_FIGURES, variance_vs_param
    rows = [{"estimator": e, "N": 16, "unbiased": e != "mppi:lambda=10.0", "problem": f"double_integrator:T={T},gamma=0.99",
             "variance": v * T, "variance_lo": v * T / 2, "variance_hi": v * T * 2}
            for T in (5, 50, 200) for e, v in (("reinforce", 100.0), ("svg_inf", 0.1), ("mppi:lambda=10.0", 5.0))]
    fig = FAMILY_FIGURES["variance_vs_T"](pd.DataFrame(rows), "control/horizon")
    ax = fig.axes[0]
    lines = [c.lines[0] for c in ax.containers]  # the data line of each errorbar
    assert len(lines) == 3
    for l in lines:
        np.testing.assert_array_equal(l.get_xdata(), [5, 50, 200])
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "mppi:lambda=10.0 [biased]" in labels and "svg_inf" in labels and ax.get_yscale() == "log"
    with pytest.raises(E, match="sigma"):
        variance_vs_param(pd.DataFrame(rows), param="sigma")


# ----------------------------------------------------------------------------- exact variance (Gaussian moments)

def test_quadratic_form_moments_match_chi_square_and_gaussian_identities():
    from pgbench.exact.lqg_moments import Quad, moment
    D = 5
    chi = Quad(np.eye(D), np.zeros(D), 0.0)
    assert moment([chi] * 4) == pytest.approx(D * (D + 2) * (D + 4) * (D + 6), rel=1e-12)
    b = np.arange(1.0, D + 1)
    lin = Quad(np.zeros((D, D)), b, 0.0)
    assert moment([lin] * 4) == pytest.approx(3 * (b @ b) ** 2, rel=1e-12)
    # mixed: E[(x0^2 + 1)(x0 + x1)^2] = E[x0^4] + E[x0^2] + E[x0^2] + 1 = 3 + 1 + 1 + 1
    q1 = Quad(np.diag([1.0, 0, 0, 0, 0]), np.zeros(D), 1.0)
    q2 = Quad(np.zeros((D, D)), np.array([1.0, 1.0, 0, 0, 0]), 0.0)
    assert moment([q1, q2, q2]) == pytest.approx(6.0, rel=1e-12)


@pytest.mark.parametrize("spec", ["lqg:n=2,m=1,T=3,gamma=0.9,seed=1", "double_integrator:T=10",
                                  "lqg:n=3,m=2,T=6,gamma=0.95,seed=2"])
def test_exact_variance_against_monte_carlo(spec):
    """Exact per-episode tr Cov of reinforce, svg_inf and svg0 (exact and wrong critic) against
    the kernel's N = 1 estimates (5 standard errors of the mean squared deviation); their exact
    means equal the exact gradient (svg0 with a wrong critic: its exact bias, matched by the kernel)."""
    from pgbench.exact.lqg_moments import per_episode_variance
    p = make(spec)
    g = exact_lqg(p).grad
    cases = [("reinforce", 0.0), ("svg_inf", 0.0), ("svg0", 0.0), ("svg0", 0.5)]
    Ktr = 100_000
    est = sample_lqg(p, [c[0] for c in cases], [{"scale": c[1]} if c[0] == "svg0" else {} for c in cases], 1, Ktr,
                     3, 5)
    for j, (name, scale) in enumerate(cases):
        var, mean = per_episode_variance(p, name, scale=scale)
        e = est[:, j]
        d2 = ((e - e.mean(axis=0)) ** 2).sum(axis=1)
        assert abs(d2.mean() - var) <= 5 * d2.std(ddof=1) / np.sqrt(Ktr), (name, scale, var, d2.mean())
        se = e.std(axis=0, ddof=1) / np.sqrt(Ktr)
        assert np.all(np.abs(e.mean(axis=0) - mean) <= 5 * se), (name, scale)
        if scale == 0.0:
            np.testing.assert_allclose(mean, g, rtol=1e-9, atol=1e-11 * np.abs(g).max())
        else:
            assert np.linalg.norm(mean - g) > 10 * np.linalg.norm(se)


def test_measure_shows_exact_variance_beside_measured():
    from pgbench.measure.measure import measure
    df = measure("double_integrator:T=8", ["reinforce", "svg_inf", "value_baseline"], batch=4, trials=50,
                 seed=1).set_index("estimator")
    assert np.isfinite(df.loc["svg_inf", "exact_variance"]) and np.isfinite(df.loc["reinforce", "exact_mse"])
    assert np.isnan(df.loc["value_baseline", "exact_variance"])
    assert np.isnan(measure("double_integrator:T=0,gamma=0.9", ["svg_inf"], batch=4, trials=5)["exact_variance"][0])
