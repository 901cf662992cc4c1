"""Cost of grouped sampling and of the group estimators (LLM reinforcement learning).

Run with ``.venv/bin/python -m pytest benchmarks/bench_groups.py -s``. Nothing is asserted but
finiteness: the figures are printed (and collected in the terminal summary), each a ratio or a time
measured in this run, best of a few rounds.

- grouped against ungrouped sampling, seconds per episode step, on the V=5, L=8 token tree
  (21,845 prefixes a prompt, 4 prompts, the bigram policy) at N = 64: the same kernel layout, one extra start-state
  draw per episode;
- the group estimators (grpo, dr_grpo, dapo, reinforce_pp, rloo together, one cell) on that tree
  at N = 64 (G = 8), K = 10^4: sampler seconds and the whole ``run_cell`` call;
- the exact means of every estimator of each ``llm/`` suite at its largest G, per suite.
"""
from __future__ import annotations

import time

import numpy as np

from pgbench import make

TREE = "tokens:V=5,L=8,prompts=4,reward=length,seed=0,policy=bigram"
N, G, ROUNDS = 64, 8, 3


def _best(f, rounds=ROUNDS):
    out = np.inf
    for _ in range(rounds):
        t0 = time.perf_counter()
        f()
        out = min(out, time.perf_counter() - t0)
    return out


def test_grouped_sampling_cost_per_step(record_note):
    from pgbench.kernels.rng import seed_u64
    from pgbench.kernels.tables import make_tables
    from pgbench.measure.batch_runner import episode_blocks
    prob = make(TREE)
    t = make_tables(prob, prob.theta)
    K = 2000
    steps = {}

    def sample(group):
        n = 0
        for blk in episode_blocks(t, seed_u64(0), np.uint64(1), N, K, None, group):
            n += int(blk[4].sum())
        steps[group] = n

    sample(None), sample(G)  # compile / warm
    plain = _best(lambda: sample(None))
    grouped = _best(lambda: sample(G))
    line = (f"{TREE}, N={N}, K={K}: ungrouped {plain / steps[None] * 1e9:.1f} ns/step, grouped (G={G}) "
            f"{grouped / steps[G] * 1e9:.1f} ns/step, ratio {grouped / steps[G] / (plain / steps[None]):.2f}")
    print(line)
    record_note(line)
    assert np.isfinite(grouped / plain)


def test_group_estimators_seconds(record_note):
    from pgbench.measure.measure import run_cell
    prob = make(TREE)
    ests = ["grpo", "dr_grpo", "dapo", "reinforce_pp", "rloo"]
    K = 10_000
    run_cell(prob, ests, N, 4, seed=0, group=G, exact=False)  # compile / warm
    cells = []
    wall = _best(lambda: cells.append(run_cell(prob, ests, N, K, seed=1, group=G, exact=False)), 2)
    line = (f"{TREE}: {len(ests)} group estimators, N={N}, G={G}, K={K}: sampler and estimators "
            f"{min(c.seconds for c in cells):.2f} s, whole run_cell {wall:.2f} s")
    print(line)
    record_note(line)
    assert np.isfinite(wall)


def test_exact_means_on_suite_trees(record_note):
    from pgbench.estimators.catalogue import parse
    from pgbench.exact.groups import group_moments, sequences
    from pgbench.suites.registry import SUITES
    for s in [s for s in SUITES.values() if s.id.startswith("llm/")]:
        prob = make(s.problem)
        Gmax = max(s.batch_sizes)
        t0 = time.perf_counter()
        seqs = sequences(prob)
        n_exact = 0
        for e in s.estimators:
            p = parse(e).p if parse(e).info.code == -4 else None
            if p is None:
                from pgbench.estimators.groups import defaults
                p = defaults(e)
            gm = group_moments(prob, None, p, Gmax, s.groups, seqs, variance=False)
            n_exact += gm.mean is not None
        secs = time.perf_counter() - t0
        line = (f"{s.id} ({s.problem}, G={Gmax}, P={s.groups}): exact means of {n_exact}/{len(s.estimators)} "
                f"estimators in {secs:.3f} s ({secs / len(s.estimators):.3f} s each)")
        print(line)
        record_note(line)
    prob = make(TREE)
    t0 = time.perf_counter()
    gm = group_moments(prob, None, parse("grpo").p, G, N // G, variance=False)
    line = f"{TREE}: exact mean of grpo at G={G}, P={N // G} in {time.perf_counter() - t0:.2f} s ({gm.reason or 'exact'})"
    print(line)
    record_note(line)
