"""Command line: pgbench list | exact | measure | validate | run | report | compare | bench.

Bad input ends with one line on stderr and exit status 2, a failing environment (disk full,
read-only directory, a run directory in use) with one line and exit status 1; never a
traceback, unless ``--debug`` (or ``PGBENCH_DEBUG=1``) asks for it.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import warnings

import numpy as np

from pgbench.errors import PGBenchError, user_exit
from pgbench.suites.store import to_jsonable


def _theta_arg(problem, spec):
    """``zeros``, ``random:SEED`` or a ``.npy`` file; default: the problem's own theta."""
    if spec is None:
        return problem.theta
    if spec == "zeros":
        return np.zeros(problem.theta_shape if hasattr(problem, "theta_shape") and not callable(problem.theta_shape)
                        else problem.policy.theta_shape)
    shape = problem.policy.theta_shape if hasattr(problem, "policy") else problem.theta_shape
    if spec.startswith("random:"):
        try:
            seed = int(spec.split(":", 1)[1])
        except ValueError:
            raise PGBenchError(f"--theta random:SEED needs an integer seed; got {spec!r}") from None
        from pgbench.inputs import seed as check_seed
        seed = check_seed(seed, "--theta random:SEED")
        return np.random.default_rng(seed).normal(size=shape)
    if spec.endswith(".npy"):
        try:
            return np.load(spec, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise PGBenchError(f"cannot read theta from {spec}: {exc}") from None
    raise PGBenchError(f"--theta must be zeros, random:SEED or a .npy file; got {spec!r}")


def _cmd_list(args) -> int:
    from pgbench.problems.registry import describe
    what = args.what or "problems"
    if what == "problems":
        rows = [(name + (":" + params if params else ""), doc) for name, params, doc in describe()]
        _print_table(("problem id [:parameters with defaults]", "what"), rows)
        return 0
    if what == "estimators":
        from pgbench.estimators.catalogue import describe as edesc
        from pgbench.estimators.catalogue import estimator_class
        rows = []
        for name, params, unbiased, doc in edesc():
            try:
                cls = estimator_class(name, unbiased == "yes")
            except PGBenchError:  # needs a parameter to parse (const_baseline:b=..)
                cls = "practical" if unbiased == "yes" else "biased"
            rows.append((name + (":" + params if params else ""), unbiased, cls, doc))
        _print_table(("estimator [:parameters with defaults]", "unbiased", "class (defaults)", "what"), rows)
        return 0
    if what == "suites":
        from pgbench.suites.registry import SUITES
        _print_table(("suite", "problem", "batch sizes N", "trials K", "tags"),
                     [(sid, su.problem, ",".join(map(str, su.batch_sizes)), str(su.trials), ",".join(su.tags))
                      for sid, su in SUITES.items()])
        return 0
    raise PGBenchError(f"pgbench list takes 'problems', 'estimators' or 'suites'; got {what!r}")


def _print_table(headers, rows) -> None:
    """Left-aligned columns under a header line; the last column is not padded."""
    rows = [tuple(str(c).replace("``", "") for c in r) for r in rows]  # docstrings' reST literals
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers[:-1])]
    for r in [tuple(headers), tuple("-" * len(h) for h in headers)] + rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[-1])


def _policy_arg(prob, target):
    """``--policy FILE.py:NAME``: NAME is a policy, or a function of the problem returning one."""
    from pgbench.validate import import_plugin
    path, sep, name = (target or "").rpartition(":")
    if not sep or not path or not name:
        raise PGBenchError(f"--policy takes FILE.py:NAME (a LogitsPolicy or a function of the problem); got {target!r}")
    if getattr(prob, "kind", None) != "mdp" or not hasattr(prob, "with_policy"):
        raise PGBenchError(f"--policy replaces the softmax policy of an MDP problem; {prob.name!r} is a "
                           f"{getattr(prob, 'kind', 'non-MDP')} problem with its own parameterisation (use --theta)")
    module = import_plugin(path)
    if not hasattr(module, name):
        raise PGBenchError(f"{path} defines no {name!r}")
    pol = getattr(module, name)
    if callable(pol) and not hasattr(pol, "probs"):
        try:
            pol = pol(prob)
        except SystemExit as exc:
            raise user_exit(f"--policy {target}", exc) from None
        except PGBenchError:
            raise
        except Exception as exc:  # the user's function: named, on one line
            exc.add_note(f"raised by --policy {target} (called with the problem)")
            raise
    return prob.with_policy(pol)


def _require_finite_output(out: dict) -> None:
    """Exact values that are inf or NaN are refused, naming the value (JSON has no inf or NaN)."""
    for key, v in out.items():
        a = np.asarray(v) if isinstance(v, (int, float, list, np.ndarray)) and not isinstance(v, bool) else None
        if a is not None and a.dtype.kind == "f" and not np.all(np.isfinite(a)):
            raise PGBenchError(f"the exact {key} of {out.get('problem')} is not finite (it overflows floats); "
                               f"rescale the problem" + (" or lower --beta" if "beta" in out else ""))


def _cmd_exact(args) -> int:
    from pgbench.problems import make
    from pgbench.exact import exact
    from pgbench.exact.solve import safe_norm
    prob = make(args.problem)
    if getattr(args, "policy", None):
        prob = _policy_arg(prob, args.policy)
    theta = _theta_arg(prob, args.theta)
    if prob.kind != "mdp":
        th = prob.check_theta(theta)
        if prob.kind == "lqg":  # theta = (K row-major, log sigma)
            gt = exact(prob, th)
            out = {"problem": prob.name, "J": gt.J, "grad": gt.grad.tolist(), "grad_norm": safe_norm(gt.grad),
                   "n": prob.n, "m": prob.m, "gamma": prob.gamma, "horizon": prob.horizon}
            if args.natural:
                out["natural_grad"] = gt.natural_gradient().tolist()
        else:
            out = {"problem": prob.name, "J": prob.J(th), "grad": prob.grad(th).tolist(),
                   "grad_norm": safe_norm(prob.grad(th))}
    else:
        gt = exact(prob, theta, beta=args.beta, method=args.method)
        out = {"problem": prob.name, "J": gt.J, "grad": gt.grad.tolist(), "grad_norm": gt.grad_norm,
               "S": prob.mdp.S, "A": prob.mdp.A, "gamma": prob.mdp.gamma, "horizon": prob.mdp.horizon,
               "policy": prob.policy.kind, "method": gt.method}
        if args.beta:
            out["beta"] = args.beta
        if prob.mdp.horizon is None:
            out.update(max_steps=prob.mdp.max_steps, truncated_mass=gt.truncated_mass, truncated_J=gt.truncated_J)
        if args.natural:
            out["natural_grad"] = gt.natural_gradient().tolist()
    _require_finite_output(out)
    if args.json:
        _emit(json.dumps(out))
        return 0
    print(f"problem   {out['problem']}")
    for k in ("S", "A", "n", "m", "gamma", "horizon", "policy", "method"):
        if k in out:
            print(f"{k:9s} {out[k]}")
    if out.get("beta"):
        print(f"beta      {out['beta']:g} (entropy-regularised: J and its gradient include beta * entropy)")
    print(f"J         {out['J']:.10g}")
    print(f"|grad J|  {out['grad_norm']:.10g}")
    if "truncated_mass" in out:
        print(f"cap       {out['max_steps']} steps: P(still running) = {out['truncated_mass']:.3g}, "
              f"J lost = {out['truncated_J']:.3g}")
    g = np.asarray(out["grad"])
    with np.printoptions(precision=6, suppress=True, threshold=200):
        print("grad J =")
        print(g)
        if "natural_grad" in out:
            print("natural gradient F^+ grad J =")
            print(np.asarray(out["natural_grad"]))
    return 0


class _Parser(argparse.ArgumentParser):
    """Usage errors end like every other bad input: one line, exit status 2."""

    def error(self, message):
        message = " ".join(str(message).split())
        self.exit(2, f"pgbench: error: {message} (see `{self.prog} --help`)\n")


def _cmd_train(args) -> int:
    from pgbench.dynamics import train
    res = train(args.problem, args.estimator, optimizer=args.optimizer, lr=args.lr, steps=args.steps, runs=args.runs,
                batch=args.batch, seed=args.seed, stuck_below=args.stuck_below)
    if args.out:
        res.write(args.out)
    if args.json:
        print(json.dumps(res.to_dict()["summary"]))
        return 0
    import pandas as pd
    cols = ["estimator", "J0", "J_final_mean", "J_final_median", "regret_mean", "regret_median", "regret_iqm"]
    cols += ["p_stuck", "p_stuck_lo", "p_stuck_hi"] if args.stuck_below is not None else []
    with pd.option_context("display.width", 200, "display.max_columns", 20, "display.float_format", "{:.4g}".format):
        print(f"{res.problem}: {args.optimizer}, lr={res.config['lr']:g}, T={res.config['steps']}, "
              f"R={res.config['runs']}, N={res.config['batch']}, J*={res.J_star:.6g}, {res.seconds:.3g} s")
        print(res.summary[cols].to_string(index=False))
    if args.out:
        print(f"wrote {args.out}/train.json, summary.csv, curves.csv, regret.csv")
    return 0


def _cmd_measure(args) -> int:
    from pgbench.problems import make
    from pgbench.measure.api import measure
    prob = make(args.problem)
    if args.policy:
        prob = _policy_arg(prob, args.policy)
    theta = _theta_arg(prob, args.theta) if args.theta else None
    from pgbench.timeouts import time_limit
    with time_limit(args.timeout, f"measure on {prob.name}"):
        df = measure(prob, args.estimator, batch=args.batch, trials=args.trials, seed=args.seed, theta=theta,
                     proxy=args.proxy, backend=args.backend, group=args.group)
    rows = [to_jsonable(r) for r in df.to_dict(orient="records")]
    if args.json:
        if args.proxy and "proxy" in df.attrs:
            for r in rows:
                r["proxy"] = to_jsonable(df.attrs["proxy"])
        _emit(json.dumps(rows[0] if len(rows) == 1 else rows))
        return 0
    import pandas as pd
    cols = ["estimator", "class", "unbiased", "bias_norm", "bias_norm_se", "variance", "variance_se", "mse",
            "mse_se", "cosine", "nsr", "p_robust", "p_test"]
    if "exact_variance" in df and df["exact_variance"].notna().any():  # exact moments by enumeration
        cols += ["exact_variance", "exact_mse", "exact_nsr"]
    if "exact_bias_norm" in df and df["exact_bias_norm"].notna().any():  # exact mean in closed form
        cols += ["exact_bias_norm"]
    if args.group is not None:  # group estimators: the exact mean's scale and direction, or why MC only
        cols += ["exact_scale", "exact_cosine", "exact_note"]
    table, notes = _measure_table(df, cols)
    with pd.option_context("display.width", 250, "display.max_columns", 30, "display.float_format", "{:.4g}".format):
        grp = f", G={args.group}" if args.group is not None else ""
        print(f"{prob.name}: N={args.batch}{grp}, K={args.trials}, seed={args.seed}, |grad J|={df['exact_grad_norm'][0]:.6g}")
        print(table.to_string(index=False, na_rep="-"))
        for line in notes:
            print(line)
        print(f"sampling: {df['seconds'][0]:.3g} s, {df['episodes_per_second'][0]:.3g} episodes/s")
        if not np.isnan(df["truncated_mass"][0]):
            print(f"episode cap cuts off probability {df['truncated_mass'][0]:.3g} of still running")
        if df.attrs.get("paired"):
            paired = pd.DataFrame(df.attrs["paired"])
            print("paired against " + str(paired["reference"][0]) + " (same episodes):")
            print(paired[["estimator", "mse_diff", "mse_diff_se", "variance_ratio", "p_value"]]
                  .rename(columns={"p_value": "p (means agree)"}).to_string(index=False))
        if "proxy" in df.attrs:
            print("W(tau) proxy: " + ", ".join(f"{k}={v:.4g}" for k, v in df.attrs["proxy"].items()))
    return 0


def _measure_table(df, cols):
    """``measure``'s text table: the report's verdict beside the p-value, and ``-`` (never NaN)
    where a value is missing, with a line saying why an exact value is missing."""
    from pgbench.reports.report import ALPHA, _p_and_test, _why_no_exact, verdict
    rows = df.to_dict(orient="records")
    table = df[cols].rename(columns={"p_robust": "p (mean = exact)", "p_test": "test"}).copy()
    table.insert(list(table.columns).index("test") + 1, "verdict",
                 [verdict(r.get("unbiased"), _p_and_test(r)[0]).text for r in rows])
    notes = [f"verdict: the claim of unbiasedness against the test of mean = exact gradient at level {ALPHA:g}"]
    ex_cols = [c for c in ("exact_variance", "exact_mse", "exact_bias_norm") if c in table]
    reasons: dict = {}
    for r in rows:
        if any(not np.isfinite(r.get(c, np.nan)) for c in ex_cols):
            note = r.get("exact_note")  # the cell's own reason (group estimators) before the catalogue's
            note = note.removeprefix("MC only: ") if isinstance(note, str) and note else _why_no_exact(str(r["estimator"]))
            reasons.setdefault(note, []).append(str(r["estimator"]))
    for why, names in reasons.items():
        notes.append(f"exact -: {', '.join(names)}: {why} (MC only)")
    return table, notes


def _cmd_validate(args) -> int:
    from pgbench.validate import format_validation, validate
    df = validate(args.estimator, problems=args.problems, batch=args.batch, trials=args.trials, seed=args.seed,
                  alpha=args.alpha, timeout=args.timeout or None)
    if args.json:
        _emit(json.dumps({"estimator": df.attrs["estimator"], "passed": df.attrs["passed"], "alpha": df.attrs["alpha"],
                          "correction": df.attrs["correction"], "references": df.attrs["references"],
                          "problems": [to_jsonable(r) for r in df.to_dict(orient="records")]}))
    else:
        print(format_validation(df))
    return 0 if df.attrs["passed"] else 1


def _cmd_run(args) -> int:
    from pgbench.suites.runner import run
    if args.resume and (args.suites or args.out):
        raise PGBenchError("--resume continues a run as it was started; give no suites or --out with it")
    executor = None
    if args.executor != "local":
        from pgbench.suites.distributed import make_executor
        executor = make_executor(args.executor, args.scheduler, args.workers)
    try:
        path = run(args.suites or None, quick=args.quick or None, out=args.out, seed=args.seed, resume=args.resume,
                   executor=executor, report=not args.no_report, backend=args.backend, group=args.group)
    finally:
        if executor is not None:
            executor.close()
    print(f"results: {path}")
    if not args.no_report:
        import os
        print(f"report:  {os.path.join(path, 'report.md')} and report.html")
    return 0


def _cmd_report(args) -> int:
    from pgbench.reports.report import write_report
    md, html = write_report(args.run_dir, progress=lambda msg: print(f"pgbench: {msg}", file=sys.stderr, flush=True))
    print(f"wrote {md} and {html}")
    return 0


def _cmd_compare(args) -> int:
    from pgbench.reports.compare import compare, format_compare
    df = compare(args.run_a, args.run_b)
    if args.json:
        _emit(df.to_json(orient="records"))
    else:
        print(format_compare(df))
    return 0


def _cmd_bench(args) -> int:
    from pgbench.bench import format_bench, run_bench
    from pgbench.measure.backend import resolve_backend
    if args.episodes < 1000 or args.repeat < 1:
        raise PGBenchError(f"bench needs --episodes >= 1000 and --repeat >= 1; got {args.episodes} and {args.repeat}")
    backend = resolve_backend(args.backend)
    if backend == "cuda":
        from pgbench.bench import run_bench_cuda
        r = run_bench_cuda(episodes=args.episodes, repeat=args.repeat, quick=args.quick)
    else:
        r = run_bench(episodes=args.episodes, repeat=args.repeat, quick=args.quick)
    if getattr(args, "end_to_end", False):
        from pgbench.bench import format_end_to_end, run_end_to_end
        r["end_to_end"] = run_end_to_end(quick=args.quick)
        _emit(json.dumps(to_jsonable(r))) if args.json else print(format_bench(r) + "\n" + format_end_to_end(r["end_to_end"]))
        return 0
    _emit(json.dumps(to_jsonable(r))) if args.json else print(format_bench(r))
    return 0


def _add_import(p) -> None:
    """``--import``, shared by the commands that take estimator names (run before the command)."""
    p.add_argument("--import", dest="imports", action="append", metavar="MODULE_OR_FILE",
                   help="import a module or .py file first (e.g. one registering user estimators; repeatable)")


_JSON_OUT = None
"""Where ``--json`` output goes: the real standard output, which user code (plug-ins, policies,
numba functions that print) cannot write into while it runs (their output goes to stderr)."""


def _emit(text: str) -> None:
    """Print one JSON document to the real standard output."""
    out = _JSON_OUT if _JSON_OUT is not None else sys.stdout
    out.write(text + "\n")
    out.flush()


@contextlib.contextmanager
def _json_channel(active: bool):
    """With ``--json``: the command's standard output is kept for the JSON alone; anything else
    written to stdout meanwhile (``print`` in a plug-in, C-level writes to file descriptor 1)
    goes to stderr."""
    global _JSON_OUT
    if not active:
        yield
        return
    saved_sys, real_fd, stream = sys.stdout, None, sys.stdout
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # not a file (captured in a test, a notebook)
        fd = None
    if fd == 1:
        sys.stdout.flush()
        real_fd = os.dup(1)
        stream = os.fdopen(os.dup(real_fd), "w", encoding=getattr(saved_sys, "encoding", None) or "utf-8")
        os.dup2(2, 1)
    _JSON_OUT, sys.stdout = stream, sys.stderr
    try:
        yield
    finally:
        _JSON_OUT, sys.stdout = None, saved_sys
        if real_fd is not None:
            try:
                stream.close()
            except OSError:
                pass
            os.dup2(real_fd, 1)
            os.close(real_fd)


def _import_plugins(args) -> None:
    from pgbench.validate import import_plugin
    for target in getattr(args, "imports", None) or []:
        import_plugin(target)


DESCRIPTION = """Exact policy-gradient ground truth on small MDPs, and the bias, variance and MSE
of gradient estimators measured against it."""

EPILOG = """examples:
  pgbench list estimators
  pgbench exact boltzmann_bandit
  pgbench measure three_step_bandit -e reinforce -e value_baseline --batch 16 --trials 400
  pgbench run --quick --out results/quick

'pgbench COMMAND --help' describes a command's options."""


def version_text() -> str:
    """``pgbench --version``: this package's version and location, so that PostgreSQL's
    ``pgbench`` (another program of the same name) or another environment's copy is easy to tell
    apart; ``python -m pgbench`` always reaches this one."""
    import pgbench
    where = os.path.dirname(os.path.abspath(pgbench.__file__))
    return (f"pgbench {pgbench.__version__} (policy-gradient estimator benchmark; Python "
            f"{sys.version.split()[0]}; {where})")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="pgbench", description=DESCRIPTION, epilog=EPILOG,
                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=version_text(),
                   help="print pgbench's version and where it is installed, then exit")
    p.add_argument("--debug", action="store_true",
                   help="show the traceback of a failure (also PGBENCH_DEBUG=1); any position on the line")
    sub = p.add_subparsers(dest="cmd", metavar="COMMAND")
    pl = sub.add_parser("list", help="list problems, estimators or suites")
    pl.add_argument("what", nargs="?", default="problems", help="problems (default), estimators or suites")
    pl.set_defaults(fn=_cmd_list)
    pe = sub.add_parser("exact", help="exact J and gradient of a problem")
    pe.add_argument("problem", help="a problem id (see 'pgbench list') or a .npz path")
    pe.add_argument("--theta", default=None, help="zeros | random:SEED | FILE.npy (default: the problem's theta)")
    pe.add_argument("--beta", type=float, default=0.0, help="entropy-regularisation weight")
    pe.add_argument("--method", default="auto", choices=["auto", "dense", "sparse"],
                    help="linear solver for unbounded problems (default auto: sparse for large S)")
    pe.add_argument("--natural", action="store_true", help="also print the min-norm natural gradient")
    pe.add_argument("--json", action="store_true", help="print one JSON object")
    pe.add_argument("--policy", default=None, metavar="FILE.py:NAME",
                    help="evaluate another policy on the problem's MDP (a LogitsPolicy, or a function of the problem)")
    pe.set_defaults(fn=_cmd_exact)
    pm = sub.add_parser("measure", help="measure estimators' bias, variance and MSE on one cell")
    pm.add_argument("problem", help="a problem id or a .npz path")
    pm.add_argument("--estimator", "-e", action="append", required=True,
                    help="estimator id, e.g. reinforce_rtg or gae:lambda=0.9,critic=perturbed,scale=0.1 (repeatable)")
    pm.add_argument("--batch", "-N", type=int, required=True, help="batch size N (episodes per estimate)")
    pm.add_argument("--trials", "-K", type=int, default=100, help="independent trials K (default 100)")
    pm.add_argument("--seed", type=int, default=0, help="the run's seed: same seed, same numbers (default 0)")
    pm.add_argument("--theta", default=None, help="zeros | random:SEED | FILE.npy (default: the problem's theta)")
    pm.add_argument("--proxy", action="store_true", help="also report the W(tau) proxy diagnostics")
    pm.add_argument("--group", "-G", type=int, default=None, metavar="G",
                    help="grouped sampling: the N = P G episodes in P groups of G sharing a start state (prompt); "
                         "the group estimators (grpo, dr_grpo, dapo, reinforce_pp, group:...) need it")
    pm.add_argument("--backend", default="cpu", choices=["cpu", "cuda", "auto"],
                    help="where episodes are sampled (default cpu; auto: CUDA when usable)")
    pm.add_argument("--json", action="store_true", help="print JSON: an object for one estimator, a list for several")
    pm.add_argument("--timeout", type=float, default=None, metavar="SECONDS",
                    help="stop the cell after this many seconds (a plug-in that hangs; default: no limit)")
    _add_import(pm)
    pm.add_argument("--policy", default=None, metavar="FILE.py:NAME",
                    help="sample from another policy on the problem's MDP (a LogitsPolicy, or a function of the problem)")
    pm.set_defaults(fn=_cmd_measure)
    pv = sub.add_parser("validate", help="test an estimator for unbiasedness on a panel of problems (exit 1 if biased)")
    pv.add_argument("estimator", help="estimator id, or a user estimator's name (see --import)")
    pv.add_argument("--problems", "-p", nargs="+", default=None, metavar="P",
                    help="problem ids or .npz paths (default: the standard panel, pgbench.validate.PANEL)")
    pv.add_argument("--batch", "-N", type=int, default=10, help="batch size N (default 10)")
    pv.add_argument("--trials", "-K", type=int, default=400, help="trials K per problem (default 400)")
    pv.add_argument("--seed", type=int, default=0, help="the run's seed (default 0)")
    pv.add_argument("--alpha", type=float, default=0.05,
                    help="family-wise false-alarm rate over the panel (Holm; default 0.05)")
    pv.add_argument("--timeout", type=float, default=600.0, metavar="SECONDS",
                    help="stop a problem's cell after this many seconds (a plug-in that hangs; default 600; 0: none)")
    _add_import(pv)
    pv.add_argument("--json", action="store_true", help="print one JSON object with a row per problem")
    pv.set_defaults(fn=_cmd_validate)
    pr = sub.add_parser("run", help="run benchmark suites and write results and a report")
    pr.add_argument("suites", nargs="*", help="suite ids or families (default: all; see `pgbench list suites`)")
    pr.add_argument("--quick", action="store_true", help="the cheap subset of every suite")
    pr.add_argument("--out", default=None, help="run directory (default results/run-DATE-TIME)")
    pr.add_argument("--seed", type=int, default=None, help="seed of a new run (default 0)")
    pr.add_argument("--resume", default=None, metavar="RUN_DIR", help="continue an interrupted run")
    pr.add_argument("--no-report", action="store_true", help="skip writing report.md / report.html")
    pr.add_argument("--group", "-G", type=int, default=None, metavar="G",
                    help="grouped suites (llm/) run only their cells of group size G")
    pr.add_argument("--executor", default="local", choices=["local", "dask", "dask-local"],
                    help="where cells run: here, a Dask cluster (--scheduler), or a local Dask cluster")
    pr.add_argument("--scheduler", default=None, help="Dask scheduler address for --executor dask")
    pr.add_argument("--workers", type=int, default=2, help="workers of --executor dask-local")
    pr.add_argument("--backend", default="cpu", choices=["cpu", "cuda", "auto"],
                    help="where MDP cells sample (objectives always run on the CPU)")
    pr.set_defaults(fn=_cmd_run)
    _add_import(pr)

    prep = sub.add_parser("report", help="write report.md and report.html for a run directory")
    prep.add_argument("run_dir", help="a run directory written by 'pgbench run'")
    prep.set_defaults(fn=_cmd_report)
    pc = sub.add_parser("compare", help="cells whose metrics moved beyond their confidence intervals")
    pc.add_argument("run_a", help="the earlier run directory")
    pc.add_argument("run_b", help="the later run directory")
    pc.add_argument("--json", action="store_true", help="print the comparison as JSON records")
    pc.set_defaults(fn=_cmd_compare)
    pt = sub.add_parser("train", help="learning runs: R runs of T updates per estimator, scored with the exact J")
    pt.add_argument("problem", help="a problem id, e.g. 'bandit:r=1;0.7;0,theta=0;3;5' (tabular softmax)")
    pt.add_argument("--estimator", "-e", action="append", required=True,
                    help="estimator id, or 'exact' for the exact gradient (repeatable; common random numbers)")
    pt.add_argument("--optimizer", default="sgd", help="sgd | npg (exact Fisher, min-norm) | adam (default sgd)")
    pt.add_argument("--lr", type=float, default=0.1, help="step size (default 0.1)")
    pt.add_argument("--steps", "-T", type=int, default=100, help="updates per run (default 100)")
    pt.add_argument("--runs", "-R", type=int, default=100, help="independent runs (default 100)")
    pt.add_argument("--batch", "-N", type=int, default=1, help="episodes per update (default 1)")
    pt.add_argument("--seed", type=int, default=0, help="the job's seed (default 0)")
    pt.add_argument("--stuck-below", type=float, default=None, metavar="J",
                    help="a run is stuck when its final exact J is <= J (adds p_stuck and its Wilson interval)")
    pt.add_argument("--out", default=None, metavar="DIR", help="write train.json and CSV files into DIR")
    pt.add_argument("--json", action="store_true", help="print the summary as JSON")
    pt.set_defaults(fn=_cmd_train)
    pb = sub.add_parser("bench", help="kernel throughput against NumPy and the generator floor")
    pb.add_argument("--episodes", type=int, default=400_000, help="episodes per timing round (default 400000)")
    pb.add_argument("--repeat", type=int, default=5, help="timing rounds; each figure keeps its best round")
    pb.add_argument("--quick", action="store_true", help="a few seconds, for smoke tests")
    pb.add_argument("--backend", default="cpu", choices=["cpu", "cuda", "auto"],
                    help="time the CPU kernel (default) or the CUDA one")
    pb.add_argument("--json", action="store_true", help="print one JSON object")
    pb.add_argument("--end-to-end", action="store_true",
                    help="also time measure() against the kernel and its peak memory at three (N, K) per problem")
    pb.set_defaults(fn=_cmd_bench)
    return p


def _one_line(text) -> str:
    return " ".join(str(text).split())


_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


def _own_warning(category, filename) -> bool:
    """Whether pgbench itself raised the warning (its own category, or its code did)."""
    from pgbench.errors import PGBenchWarning
    if issubclass(category, PGBenchWarning):
        return True
    try:
        return os.path.abspath(str(filename)).startswith(_PACKAGE_DIR)
    except (TypeError, ValueError):
        return False


def _warning_printer():
    """pgbench's own warnings on one line each (``pgbench: warning: ...``); a warning raised by
    user code (an estimator, a policy, an imported module) or a library keeps Python's format:
    its file:line, its category and the source line, so that its origin can be found."""
    def show(message, category, filename, lineno, file=None, line=None):
        if _own_warning(category, filename):
            print(f"pgbench: warning: {_one_line(message)}", file=file or sys.stderr)
        else:
            (file or sys.stderr).write(warnings.formatwarning(message, category, filename, lineno, line))
    return show


def _check_threads() -> None:
    """A plug-in's non-daemon thread would keep the process alive after the command: name it and
    leave without waiting (the command line only; called in-process, main() returns as usual)."""
    import threading
    left = [t for t in threading.enumerate()
            if t is not threading.main_thread() and t.is_alive() and not t.daemon]
    if left:
        names = ", ".join(repr(t.name) for t in left[:3]) + (f" and {len(left) - 3} more" if len(left) > 3 else "")
        sys.stdout.flush()
        print(f"pgbench: error: user code left {len(left)} non-daemon thread(s) running ({names}); pgbench does "
              "not wait for them (make them daemon threads, or join them)", file=sys.stderr, flush=True)
        os._exit(2)


def main(argv=None) -> int:
    command_line = argv is None
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = os.environ.get("PGBENCH_DEBUG", "").strip() not in ("", "0")
    if "--debug" in argv[:argv.index("--")] if "--" in argv else "--debug" in argv:
        debug = True
        argv.remove("--debug")
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "fn", None) is None:  # 'pgbench' alone: the usage, not an error
        parser.print_help()
        return 0

    def go() -> int:
        from pgbench import compile_notice
        compile_notice.watch()  # any numba compilation of this command says so on stderr
        try:
            with _json_channel(bool(getattr(args, "json", False))):
                _import_plugins(args)
                rc = args.fn(args)
        finally:
            compile_notice.finish()
        if command_line:
            _check_threads()
        return rc

    if debug:
        return go()
    # numpy's floating-point RuntimeWarnings (overflow, invalid value) are held back until the
    # command succeeds: a refusal is one line, not the warnings of the arithmetic that led to it
    held: list = []
    printer = _warning_printer()

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, RuntimeWarning):
            held.append((message, category, filename, lineno))
        else:
            printer(message, category, filename, lineno, file, line)

    try:
        with warnings.catch_warnings():
            warnings.showwarning = show
            rc = go()
        seen: set = set()
        for m, c, f, n in held:  # each distinct warning once, with its origin
            if (str(m), c) not in seen:
                seen.add((str(m), c))
                printer(m, c, f, n)
        return rc
    except PGBenchError as exc:
        print(f"pgbench: error: {_one_line(exc)}", file=sys.stderr)
        return exc.exit_status
    except BrokenPipeError:  # output piped into head & co.
        sys.stderr.close()
        return 0
    except KeyboardInterrupt as exc:  # Ctrl-C; a run also handles SIGTERM (RunInterrupted: 130 or 143)
        print(f"pgbench: {getattr(exc, 'message', None) or 'interrupted'}", file=sys.stderr)
        return getattr(exc, "exit_status", 130)
    except SystemExit as exc:  # user code that pgbench did not call by name (a thread, a callback)
        print(f"pgbench: error: user code called sys.exit({exc.code!r}); the command did not finish",
              file=sys.stderr)
        return 1
    except MemoryError:
        print("pgbench: error: out of memory; lower the work (or PGBENCH_MAX_MEMORY, so that it is refused "
              "up front)", file=sys.stderr)
        return 1
    except OSError as exc:  # the environment: disk full, read-only directory, permissions
        where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
        print(f"pgbench: error: {_one_line(exc.strerror or exc)}{where}", file=sys.stderr)
        return 1
    except Exception as exc:  # a bug, or user code's own exception: still one line; --debug shows where
        notes = getattr(exc, "__notes__", None)
        if notes:  # raised inside user code (an estimator or policy), which pgbench names in a note
            print(f"pgbench: error: {type(exc).__name__}: {_one_line(exc)} ({_one_line('; '.join(notes))}; "
                  "--debug shows the traceback)", file=sys.stderr)
            return 1
        print(f"pgbench: internal error: {type(exc).__name__}: {_one_line(exc)} (rerun with --debug for the "
              "traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
