"""Command line: ``pgbench list | exact | measure | bench``.

Bad input ends with one line on stderr and exit status 2, never a traceback.
"""
from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from pgbench.errors import PGBenchError


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
        for name, params, doc in describe():
            print(f"{name + (':' + params if params else ''):48s} {doc}")
        return 0
    if what == "estimators":
        from pgbench.estimators.catalogue import describe as edesc
        for name, params, unbiased, doc in edesc():
            print(f"{name + (':' + params if params else ''):40s} {unbiased:10s} {doc}")
        return 0
    raise PGBenchError(f"pgbench list takes 'problems' or 'estimators'; got {what!r}")


def _cmd_exact(args) -> int:
    from pgbench.problems import make
    from pgbench.exact import exact
    prob = make(args.problem)
    theta = _theta_arg(prob, args.theta)
    if prob.kind != "mdp":
        th = prob.check_theta(theta)
        out = {"problem": prob.name, "J": prob.J(th), "grad": prob.grad(th).tolist(),
               "grad_norm": float(np.linalg.norm(prob.grad(th)))}
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
    if args.json:
        print(json.dumps(out))
        return 0
    print(f"problem   {out['problem']}")
    for k in ("S", "A", "gamma", "horizon", "policy", "method"):
        if k in out:
            print(f"{k:9s} {out[k]}")
    print(f"J         {out['J']:.10g}")
    print(f"|grad J|  {out['grad_norm']:.10g}")
    if "truncated_mass" in out:
        print(f"cap       {out['max_steps']} steps: P(still running) = {out['truncated_mass']:.3g}, "
              f"J lost = {out['truncated_J']:.3g}")
    g = np.asarray(out["grad"])
    with np.printoptions(precision=6, suppress=True, threshold=200):
        print("grad J =")
        print(g)
    return 0


class _Parser(argparse.ArgumentParser):
    """Usage errors end like every other bad input: one line, exit status 2."""

    def error(self, message):
        message = " ".join(str(message).split())
        self.exit(2, f"pgbench: error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="pgbench", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    pl = sub.add_parser("list", help="list problems or estimators")
    pl.add_argument("what", nargs="?", default="problems")
    pl.set_defaults(fn=_cmd_list)
    pe = sub.add_parser("exact", help="exact J and gradient of a problem")
    pe.add_argument("problem", help="a problem id (see `pgbench list`) or a .npz path")
    pe.add_argument("--theta", default=None, help="zeros | random:SEED | FILE.npy (default: the problem's theta)")
    pe.add_argument("--beta", type=float, default=0.0, help="entropy-regularisation weight")
    pe.add_argument("--method", default="auto", choices=["auto", "dense", "sparse"])
    pe.add_argument("--natural", action="store_true", help="also print the min-norm natural gradient")
    pe.add_argument("--json", action="store_true")
    pe.set_defaults(fn=_cmd_exact)
    try:
        from pgbench.measure.cli import add_commands
        add_commands(sub)
    except ImportError:  # measurement not built yet
        pass
    return p


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.fn(args)
    except PGBenchError as exc:
        print(f"pgbench: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("pgbench: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
