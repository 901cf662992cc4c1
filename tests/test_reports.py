"""Reports: figures, report.md / report.html, and run comparison (pgbench/reports/).

Fixture run directories are written here from synthetic cell records (plus one real, cheap
cell) with the store's own helpers, so the tests are fast and deterministic."""
from __future__ import annotations

import base64
import copy
import io
import json
import os
import re
import xml.etree.ElementTree as ET
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest

from pgbench.errors import PGBenchError
from pgbench.suites.registry import GAE_SWEEP, get_suite
from pgbench.suites.store import RunDir, cell_filename, write_json

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


# ----------------------------------------------------------------------------- synthetic fixtures

def _row(est, N, K=100, unbiased=True, bias=0.0, var=1.0, p=0.5, seconds=0.02, exact=None, rng=None):
    """One results row with self-consistent numbers (MSE = bias^2 + variance, standard errors
    and 95% intervals of the right order for K trials)."""
    rng = rng or np.random.default_rng(0)
    var = var / N
    noise = np.sqrt(var / K)
    b = float(np.hypot(bias, noise * (1 + 0.1 * rng.random())))
    mse = b * b + var
    vse, mse_se, bse = var * np.sqrt(2 / K), mse * np.sqrt(2 / K), noise / np.sqrt(2)
    row = {"problem": "synthetic", "estimator": est, "unbiased": unbiased, "N": N, "K": K, "seed": 0, "d": 4,
           "exact_grad_norm": 1.0, "mean": [0.1, 0.2, 0.3, 0.4], "bias_norm": b, "bias_norm_se": bse,
           "bias_norm_lo": max(0.0, b - 2 * bse), "bias_norm_hi": b + 2 * bse, "rel_bias": b,
           "variance": var, "variance_se": vse, "variance_lo": var - 1.9 * vse, "variance_hi": var + 2.1 * vse,
           "mse": mse, "mse_se": mse_se, "mse_lo": mse - 1.9 * mse_se, "mse_hi": mse + 2.1 * mse_se,
           "cosine": 0.9, "cosine_se": 0.01, "p_value": p, "test": "holm", "seconds": seconds,
           "episodes": N * K, "episodes_per_second": N * K / seconds, "mse_x_seconds": mse * seconds,
           "truncated_mass": None}
    if exact is not None:
        row["exact_variance"] = var * exact if exact else None
        row["exact_mse"] = mse * exact if exact else None
    return row


def _paired(rows):
    ref = rows[0]
    out = []
    for r in rows[1:]:
        d = r["mse"] - ref["mse"]
        se = 0.1 * abs(d) + 1e-6
        vr = r["variance"] / ref["variance"]
        out.append({"estimator": r["estimator"], "reference": ref["estimator"], "K": r["K"], "level": 0.95,
                    "mse_a": r["mse"], "mse_b": ref["mse"], "mse_diff": d, "mse_diff_se": se,
                    "mse_diff_ci": [d - 2 * se, d + 2 * se], "mse_diff_p": 1e-5, "variance_ratio": vr,
                    "variance_ratio_ci": [vr * 0.9, vr * 1.1], "variance_ratio_p": 1e-4, "p_value": 0.5})
    return out


def _record(suite, N, rows, figures, K=100, **extra):
    rec = {"suite": suite, "cell": f"{suite}/N={N}", "N": N, "K": K, "seed": 0, "quick": True,
           "tags": ["synthetic"], "problem": "synthetic", "figures": list(figures), "rows": rows,
           "paired": _paired(rows), "wall_seconds": 0.1, "exact": {"J": 1.0, "grad_norm": 1.0, "truncated_mass": None}}
    rec.update(extra)
    return rec


def synthetic_records() -> list[dict]:
    rng = np.random.default_rng(42)
    recs = []
    # ladder: three batch sizes, rloo absent at N = 1, exact variance/MSE on the rows (one null)
    for N in (1, 16, 256):
        ests = [("reinforce", 3.0), ("reinforce_rtg", 1.7), ("value_baseline", 0.7)]
        ests += [("rloo", 1.0)] if N > 1 else []
        rows = [_row(e, N, var=v, exact=(1.03 if e != "rloo" else 0.0), rng=rng) for e, v in ests]
        recs.append(_record("ladder/three-step-bandit", N, rows, ["variance_vs_N", "bias_variance"]))
    # baselines: a claimed-unbiased estimator with detected bias, a biased one (expected), proxy + scatter
    rows = [_row("reinforce", 16, var=16.0, rng=rng),
            _row("rloo", 16, var=0.4, rng=rng),
            _row("w_baseline", 16, unbiased=False, bias=0.3, var=0.35, p=1e-8, rng=rng),
            _row("value_baseline", 16, bias=0.2, var=0.08, p=1e-6, rng=rng),
            _row("batch_mean_baseline", 16, unbiased=False, var=0.35, p=0.3, rng=rng)]
    z = rng.gamma(2.0, 6.0, size=300)
    scatter = {"R": list(rng.normal(4, 1, 300)), "W": list(z * 0.5 + rng.gamma(2.0, 3.0, 300)), "znorm2": list(z)}
    recs.append(_record("baselines/garnet-20", 16, rows, ["bias_variance", "efficiency", "proxy"], scatter=scatter,
                        proxy={"corr_W_znorm2": 0.43, "mean_W": 13.3, "mean_znorm2": 13.4,
                               "predicted_var_ratio_w_vs_rloo": 0.88, "measured_var_ratio_w_vs_rloo": 0.87}))
    # GAE sweep with the registry's labels
    rows = []
    for lab in GAE_SWEEP + ("reinforce_rtg", "td0:critic=fitted", "gae:lambda=0.9,critic=fitted"):
        lam = 0.95
        m = re.search(r"lambda=([0-9.]+)", lab)
        if m:
            lam = float(m.group(1))
        biased = "perturbed" in lab or "fitted" in lab
        bias = (0.05 * (1 - lam) if "perturbed" in lab else 0.2 if "fitted" in lab else 0.0)
        var = 30.0 if lab == "reinforce_rtg" else 0.25 + lam ** 4
        rows.append(_row(lab, 16, K=80, unbiased=not biased, bias=bias, var=var, p=1e-9 if bias > 0.02 else 0.4,
                         rng=rng))
    decomposition = [{"estimator": "reinforce_rtg", "N": 16, "variance": 2.0, "state": 1.5, "action": 0.3, "noise": 0.2},
                     {"estimator": "gae:lambda=0.5", "N": 16, "variance": 0.04, "state": 0.01, "action": 0.01,
                      "noise": 0.02},
                     {"estimator": "gae:lambda=0.9,critic=fitted", "N": 16, "variance": 0.05, "state": None,
                      "action": None, "noise": None}]  # no split: left out of the figure
    recs.append(_record("gae/garnet-10", 16, rows, ["gae_lambda", "variance_decomposition"], K=80,
                        variance_decomposition=decomposition))
    # a suite this pgbench does not know, asking for an unknown figure too
    rows = [_row("naive", 10, unbiased=False, bias=2.0, var=4.0, p=1e-50, rng=rng),
            _row("score_function", 10, var=40.0, rng=rng)]
    recs.append(_record("custom/unknown-suite", 10, rows, ["bias_variance", "no_such_figure"]))
    return recs


def make_run(path, records, suites=None, quick=True, status="complete") -> str:
    suites = suites if suites is not None else list(dict.fromkeys(r["suite"] for r in records))
    rd = RunDir.create(str(path), suites, quick=quick, seed=0, source="tests/test_reports.py")
    for rec in records:
        rd.write_cell(rec)
    if status == "complete":
        rd.finalize()
    return str(path)


@pytest.fixture(scope="module")
def synthetic_run(tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("runs") / "synthetic", synthetic_records())


@pytest.fixture(scope="module")
def written_report(synthetic_run):
    from pgbench.reports.report import write_report
    return write_report(synthetic_run)


@pytest.fixture(scope="module")
def real_run(tmp_path_factory):
    from pgbench.suites.runner import run_cell_record
    rec = run_cell_record("ladder/three-step-bandit", 16, True, 0)
    return make_run(tmp_path_factory.mktemp("runs") / "real", [rec], suites=["ladder/three-step-bandit"])


# ----------------------------------------------------------------------------- helpers

def assert_png(data: bytes) -> None:
    assert isinstance(data, bytes) and len(data) > 1000
    assert data[:8] == PNG_SIGNATURE
    from PIL import Image
    im = Image.open(io.BytesIO(data))
    im.load()
    w, h = im.size
    assert w > 100 and h > 100
    import matplotlib.image as mpimg
    arr = mpimg.imread(io.BytesIO(data), format="png")
    assert arr.shape[0] == h and arr.shape[1] == w
    assert float(arr[..., :3].std()) > 0.01  # not a blank canvas


VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


class _Balance(HTMLParser):
    """Checks that every non-void tag is closed in order."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.stack, self.errors, self.imgs, self.tags = [], [], [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        if tag == "img":
            self.imgs.append(dict(attrs))
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        self.tags.append(tag)
        if tag == "img":
            self.imgs.append(dict(attrs))
        if tag not in VOID:
            self.errors.append(f"self-closed non-void <{tag}/>")

    def handle_endtag(self, tag):
        if tag in VOID:
            self.errors.append(f"end tag for void <{tag}>")
        elif not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1] if self.stack else 'nothing'}")
        else:
            self.stack.pop()


def md_image_links(md: str) -> list[str]:
    return re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)


# ----------------------------------------------------------------------------- figures

def test_every_figure_function_gives_a_readable_png(synthetic_run):
    from pgbench.reports import figures as F
    res, _ = RunDir(synthetic_run).tables()
    ladder = res[res["suite"] == "ladder/three-step-bandit"]
    base = res[res["suite"] == "baselines/garnet-20"]
    gae = res[res["suite"] == "gae/garnet-10"]
    rec = next(c for c in RunDir(synthetic_run).cells() if "scatter" in c)
    figs = {"variance_vs_N": F.variance_vs_n(ladder), "bias_variance": F.bias_variance(ladder),
            "efficiency": F.efficiency(base, "baselines/garnet-20"), "gae_lambda": F.gae_lambda(gae),
            "proxy": F.proxy_scatter(rec["scatter"], rec["proxy"]["corr_W_znorm2"], rec["suite"], rec["cell"]),
            "horizon": F.horizon(_horizon_rows()),
            "variance_decomposition": F.variance_decomposition(
                next(c for c in RunDir(synthetic_run).cells() if "variance_decomposition" in c)["variance_decomposition"],
                "gae/garnet-10", "gae/garnet-10/N=16")}
    assert set(figs) == set(F.FIGURES)
    for name, fig in figs.items():
        assert_png(F.png_bytes(fig))
        title = (fig._suptitle.get_text() if fig._suptitle else "") + " ".join(a.get_title() for a in fig.axes)
        assert "/" in title, f"{name}: the title names the suite"
    assert "0.430" in figs["proxy"].axes[0].get_title()  # the correlation is in the title


def _horizon_rows() -> pd.DataFrame:
    rows = []
    for sid, scale in (("horizon/T=2", 1.0), ("horizon/T=8", 4.0), ("horizon/gamma=0.5", 1.0),
                       ("horizon/gamma=0.9", 5.0)):
        for est, v in (("reinforce", 2.0), ("reinforce_rtg", 1.0), ("value_baseline", 0.1)):
            r = _row(est, 16, var=v * scale * 16)
            r["suite"] = sid
            r["exact_variance"] = v * scale if sid == "horizon/T=2" else None
            rows.append(r)
    return pd.DataFrame(rows)


def test_horizon_figure_draws_variance_against_T_and_the_effective_horizon():
    from pgbench.reports import figures as F
    fig = F.horizon(_horizon_rows())
    ax_T, ax_g = fig.axes[:2]
    assert "horizon T" in ax_T.get_xlabel() and "1 / (1 - gamma)" in ax_g.get_xlabel()
    # effective horizons 1/(1 - 0.5) = 2 and 1/(1 - 0.9) = 10 on the right panel
    line = ax_g.containers[0].lines[0]  # the first estimator's errorbar data line
    np.testing.assert_allclose(sorted(line.get_xdata()), [2.0, 10.0])
    assert_png(F.png_bytes(fig))
    with pytest.raises(PGBenchError, match="no suite of the form"):
        F.horizon(_horizon_rows().assign(suite="baselines/x"))


def test_estimator_colours_are_consistent_across_figures(synthetic_run):
    from pgbench.reports import figures as F
    res, _ = RunDir(synthetic_run).tables()
    ladder = res[res["suite"] == "ladder/three-step-bandit"]
    styles = F.estimator_styles(ladder["estimator"])
    f1, f2 = F.variance_vs_n(ladder, styles=styles), F.efficiency(ladder, styles=styles)
    for fig in (f1, f2):
        handles, labels = fig.axes[0].get_legend_handles_labels()
        # legend labels carry the class of non-practical estimators: "value_baseline [oracle]"
        colours = {lab.split(" [")[0]: (h.lines[0] if hasattr(h, "lines") else h).get_color()
                   for h, lab in zip(handles, labels)}
        for est, (colour, _) in styles.items():
            assert colours[est] == colour


def test_variance_vs_n_has_one_over_n_reference(synthetic_run):
    from pgbench.reports import figures as F
    res, _ = RunDir(synthetic_run).tables()
    ladder = res[res["suite"] == "ladder/three-step-bandit"]
    fig = F.variance_vs_n(ladder)
    ax = fig.axes[0]
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    dashed = [ln for ln in ax.get_lines() if ln.get_linestyle() == "--"]
    assert len(dashed) == 1  # only rloo has no exact variance in the synthetic ladder
    for ln in dashed:  # v(N) * N is constant along the reference: anchored at the smallest N, slope -1
        x, y = np.asarray(ln.get_xdata(), float), np.asarray(ln.get_ydata(), float)
        assert np.allclose(x * y, x[0] * y[0])


def test_variance_vs_n_lines_are_the_exact_ones(synthetic_run):
    from pgbench.reports import figures as F
    res, _ = RunDir(synthetic_run).tables()
    ladder = res[res["suite"] == "ladder/three-step-bandit"]
    ax = F.variance_vs_n(ladder).axes[0]
    solid = [ln for ln in ax.get_lines() if ln.get_linestyle() == "-" and len(ln.get_xdata()) >= 2]
    # rloo (no exact values) joins its measured points; every other estimator's line is the exact one
    measured = [ln for ln in solid if ln.get_markerfacecolor() != "none"]
    solid = [ln for ln in solid if ln.get_markerfacecolor() == "none"]
    assert len(measured) == 1 and np.allclose(measured[0].get_ydata(),
                                              ladder[ladder["estimator"] == "rloo"].sort_values("N")["variance"])
    assert len(solid) == 3
    for ln in solid:
        x, y = np.asarray(ln.get_xdata(), float), np.asarray(ln.get_ydata(), float)
        match = [e for e in ("reinforce", "reinforce_rtg", "value_baseline")
                 if np.allclose(ladder[ladder["estimator"] == e].sort_values("N")["exact_variance"], y)]
        assert len(match) == 1 and list(x) == [1, 16, 256]
        assert not np.allclose(ladder[ladder["estimator"] == match[0]].sort_values("N")["variance"], y)


def test_variance_decomposition_figure_stacks_the_shares_and_shows_the_totals(synthetic_run):
    from pgbench.reports import figures as F
    rec = next(c for c in RunDir(synthetic_run).cells() if "variance_decomposition" in c)
    fig = F.variance_decomposition(rec["variance_decomposition"], rec["suite"], rec["cell"])
    shares, totals = fig.axes[0], fig.axes[1]
    # two estimators with a split (the third has none); three parts each, stacked to 1
    assert len(shares.patches) == 6 and len(totals.patches) == 2
    ends = {}
    for p in shares.patches:
        y = round(p.get_y(), 6)
        ends[y] = max(ends.get(y, 0.0), p.get_x() + p.get_width())
    assert np.allclose(sorted(ends.values()), [1.0, 1.0])
    widths = sorted(p.get_width() for p in shares.patches)
    assert np.allclose(widths, sorted([0.75, 0.15, 0.1, 0.25, 0.25, 0.5]))  # e.g. rtg: 1.5 / 2 state
    assert np.allclose(sorted(p.get_width() for p in totals.patches), [0.04, 2.0])
    assert [t.get_text() for t in shares.get_yticklabels()] == ["reinforce_rtg", "gae:lambda=0.5"]
    with pytest.raises(PGBenchError, match="finite"):
        F.variance_decomposition([{"estimator": "x", "variance": 1.0}])


def test_suite_cells_carry_the_exact_decomposition_of_the_per_step_estimators():
    from pgbench.exact.moments import exact_moments
    from pgbench.problems.registry import make
    from pgbench.suites.runner import exact_decomposition
    prob = make("garnet:S=5,A=2,b=2,seed=3,gamma=0.9,horizon=6,noise=0.5")
    theta = np.random.default_rng(0).normal(size=prob.policy.theta_shape)
    rows = exact_decomposition(prob, ["reinforce", "reinforce_rtg", "gae:lambda=0.5", "rloo", "td0:critic=fitted"],
                               4, theta)
    assert [r["estimator"] for r in rows] == ["reinforce_rtg", "gae:lambda=0.5"]  # per-step, DP-split ones only
    em = exact_moments(prob, ["reinforce_rtg", "gae:lambda=0.5"], batch=4, theta=theta, method="dp")
    for r, v in zip(rows, em.variance):
        assert r["variance"] == pytest.approx(v, rel=1e-12)
        assert r["state"] + r["action"] + r["noise"] == pytest.approx(v, rel=1e-9)
        assert min(r["state"], r["action"], r["noise"]) > 0
    assert exact_decomposition(prob, ["rloo", "natural"], 4, theta) == []


def test_parse_gae_label():
    from pgbench.reports.figures import parse_gae_label
    p = parse_gae_label("gae:lambda=0.9,critic=perturbed,scale=0.3")
    assert (p["lambda"], p["critic"], p["scale"]) == (0.9, "perturbed", 0.3)
    assert (parse_gae_label("gae")["lambda"], parse_gae_label("gae")["critic"]) == (0.95, "exact")
    assert parse_gae_label("td0:critic=fitted")["lambda"] == 0.0
    assert parse_gae_label("reinforce_rtg") is None


def test_figure_functions_reject_bad_tables():
    import pandas as pd
    from pgbench.reports import figures as F
    with pytest.raises(PGBenchError):
        F.variance_vs_n(pd.DataFrame({"estimator": ["a"]}))
    with pytest.raises(PGBenchError):
        F.gae_lambda(pd.DataFrame({"estimator": ["reinforce"], "N": [4], "bias_norm": [0.1], "variance": [1.0]}))
    with pytest.raises(PGBenchError):
        F.proxy_scatter({"W": [1, 2]})


# ----------------------------------------------------------------------------- report

def test_report_files_and_markdown_links(synthetic_run, written_report):
    md_path, html_path = written_report
    assert md_path == os.path.join(synthetic_run, "report.md") and os.path.isfile(md_path)
    assert html_path == os.path.join(synthetic_run, "report.html") and os.path.isfile(html_path)
    md = open(md_path).read()
    links = md_image_links(md)
    # ladder: 2, baselines: 3 (bias_variance, efficiency, proxy), gae: 2 (+ decomposition), unknown suite: 1
    assert len(links) == 8
    for rel in links:
        assert not os.path.isabs(rel) and rel.startswith("figures/")
        with open(os.path.join(synthetic_run, rel), "rb") as f:
            assert_png(f.read())
    assert "could not be drawn" not in md
    assert not [f for d in (synthetic_run, os.path.join(synthetic_run, "figures")) for f in os.listdir(d)
                if f.startswith(".tmp-")]


def test_html_is_well_formed_and_self_contained(written_report):
    text = open(written_report[1], encoding="utf-8").read()
    low = text.lower()
    for bad in ("http://", "https://", "<script", "<link", "src=\"//", "url("):
        assert bad not in low, bad
    p = _Balance()
    p.feed(text)
    p.close()
    assert not p.errors and not p.stack, (p.errors, p.stack)
    assert {"html", "head", "body", "style", "table", "img"} <= set(p.tags)
    assert len(p.imgs) == 8
    for img in p.imgs:
        src = img["src"]
        assert src.startswith("data:image/png;base64,")
        assert_png(base64.b64decode(src.split(",", 1)[1]))
        assert img.get("alt")
    # XHTML-style: it parses as XML too
    root = ET.fromstring(text.split("\n", 1)[1] if text.startswith("<!DOCTYPE") else text)
    assert root.tag == "html" and len(root.findall(".//img")) == 8


def test_report_content(synthetic_run, written_report):
    from pgbench.reports.report import fmt
    md = open(written_report[0]).read()
    html_text = open(written_report[1]).read()
    # metadata
    for s in ("quick", "seed", "git commit", "status", "machine", "started"):
        assert s in md
    # suite descriptions from the registry, and a fallback for an unknown suite
    assert get_suite("ladder/three-step-bandit").description.split(",")[0] in md
    assert "not a suite of this pgbench's registry" in md
    assert "Unknown figure 'no_such_figure'" in md
    # verdicts: claimed unbiased with p < 0.001 in bold; claimed biased and detected: expected
    line = next(ln for ln in md.splitlines() if ln.startswith("| `value_baseline`") and "e-06" in ln)
    assert "**BIAS DETECTED**" in line
    line = next(ln for ln in md.splitlines() if ln.startswith("| `w_baseline`"))
    assert "biased (expected)" in line and "BIAS DETECTED" not in line
    assert '<strong class="flag">BIAS DETECTED</strong>' in html_text
    # the conclusions at the top name the winners
    summary = md.split("## Conclusions", 1)[1].split("## Suite", 1)[0]
    from pgbench.estimators.catalogue import estimator_class
    for rec in RunDir(synthetic_run).cells():
        # winners per class: an oracle (exact V, Q, A, b*) is a reference, never the practical winner
        prac = [r for r in rec["rows"] if estimator_class(r["estimator"], r["unbiased"]) == "practical"]
        best = min(prac, key=lambda r: r["mse"])["estimator"]
        assert f"| `{rec['cell']}` | `{best}` (" in summary
        # the oracle reference: unbiased oracles (one biased by design is ranked with the biased)
        oracles = [r for r in rec["rows"] if estimator_class(r["estimator"], r["unbiased"]) == "oracle"
                   and r["unbiased"]]
        if oracles:
            best_o = min(oracles, key=lambda r: r["mse"])["estimator"]
            line = next(ln for ln in summary.split("Winners per cell", 1)[1].splitlines()
                        if ln.startswith(f"| `{rec['cell']}` |"))
            assert line.rstrip(" |").endswith(f"`{best_o}` ({fmt(min(r['mse'] for r in oracles))})")
    assert "oracle (reference)" in summary
    assert "BIAS DETECTED" in summary
    # exact values beside the measured ones when present (ladder), absent otherwise (gae)
    ladder = md.split("## Suite ladder/three-step-bandit", 1)[1].split("## Suite", 1)[0]
    gae = md.split("## Suite gae/garnet-10", 1)[1].split("## Suite", 1)[0]
    assert "exact variance" in ladder and "exact MSE" in ladder
    assert "| exact variance |" not in gae  # no column (the decomposition figure is named "exact variance ...")
    # an estimator without exact moments is marked, with the reason, where the column exists
    assert "MC only" in ladder and "rloo: exact moments not computed for this cell" in ladder
    assert "MC only" not in gae
    assert "figures/gae_garnet-10_N=16-variance_decomposition.png" in gae

    # paired table against the reference
    assert "Paired against the reference `reinforce`" in md
    # W proxy diagnostics
    assert "corr(W, ||z||^2)" in html_text and "mean W" in md


def test_why_no_exact_names_the_dp_reason():
    from pgbench.reports.report import _why_no_exact
    assert "pseudo-inverse" in _why_no_exact("natural")
    assert "fitted critic" in _why_no_exact("td0:critic=fitted")
    assert "ratio of batch sums" in _why_no_exact("w_baseline_loo")
    assert "not computed" in _why_no_exact("no_such_estimator:x=1")


def test_report_of_a_real_cell(real_run):
    from pgbench.reports.report import write_report
    md_path, html_path = write_report(real_run)
    md = open(md_path).read()
    assert "ladder/three-step-bandit/N=16" in md and "could not be drawn" not in md
    for rel in md_image_links(md):
        with open(os.path.join(real_run, rel), "rb") as f:
            assert_png(f.read())
    p = _Balance()
    p.feed(open(html_path).read())
    assert not p.errors and not p.stack


def test_report_of_a_run_without_cells(tmp_path):
    from pgbench.reports.report import write_report
    path = make_run(tmp_path / "empty", [], suites=["ladder/three-step-bandit"], status="running")
    md_path, html_path = write_report(path)
    md = open(md_path).read()
    assert "no finished cells" in md and "Partial run" in md
    assert "ladder/three-step-bandit/N=16" in md  # the cells still to run are named


# ----------------------------------------------------------------------------- verdicts and formatting

def test_the_p_shown_is_the_verdicts_with_its_test():
    """A claimed-biased row whose normal-theory p is tiny but whose bootstrap p is not: the table
    shows the bootstrap's p (the verdict's), names that test, and says 'bias not resolved'."""
    from pgbench.reports.report import Doc, _cell_table, render_markdown
    row = _row("gae:lambda=0.9,critic=perturbed,scale=0.3", 16, unbiased=False, bias=0.1)
    row.update(p_value=1.3e-31, test="hotelling", p_bootstrap=0.3)
    doc = Doc()
    _cell_table(doc, {"cell": "c", "N": 16, "rows": [row]})
    line = [ln for ln in render_markdown(doc).splitlines() if ln.startswith("| `gae")][0]
    assert "| bias not resolved | 0.3 | bootstrap max-t |" in line and "1.3e-31" not in line
    assert "| biased; reads oracle |" in line  # biased by design, whatever else it reads


def test_truncation_note_states_the_J_lost_and_is_silent_when_negligible():
    from pgbench.reports.report import truncation_note
    # a chain that never terminates: every episode reaches the cap, but the J lost is 2.6e-12
    assert truncation_note({"J": 3.0, "truncated_mass": 1.0, "truncated_J": 2.6e-12}) == ""
    note = truncation_note({"J": 2.0, "truncated_mass": 0.01, "truncated_J": 1e-3})
    assert "J = 0.001" in note and "0.0005 of |J|" in note and "0.01" in note
    assert truncation_note({"J": 1.0, "truncated_mass": None, "truncated_J": None}) == ""


def test_wide_tables_scroll_in_html():
    from pgbench.reports.report import Doc, render_html
    doc = Doc()
    doc.table(["a"] * 30, [["x" * 20] * 30])
    out = render_html(doc, "t")
    assert '<div class="scroll"><table>' in out and "overflow-x: auto" in out


def test_verdicts():
    from pgbench.reports.report import verdict
    assert verdict(True, 1e-5).text == "BIAS DETECTED" and verdict(True, 1e-5).kind == "b"
    assert verdict(True, 0.2).text == "consistent"
    assert verdict(False, 1e-9).text == "biased (expected)"
    assert verdict(False, 0.3).text == "bias not resolved"
    assert verdict(True, None).text == "no test"


# ----------------------------------------------------------------------------- compare

def _copy_run(src, dst, edit=None):
    """A copy of a run directory whose cell records pass through ``edit(rec)``."""
    rd = RunDir(src)
    meta = rd.meta()
    os.makedirs(os.path.join(dst, "cells"))
    write_json(os.path.join(dst, "meta.json"), meta)
    for rec in rd.cells():
        rec = copy.deepcopy(rec)
        if edit is not None:
            rec = edit(rec)
        if rec is not None:
            write_json(os.path.join(dst, "cells", cell_filename(rec["cell"])), rec)
    return str(dst)


def _jitter(seed):
    rng = np.random.default_rng(seed)

    def edit(rec):
        for r in rec["rows"]:
            for m in ("bias_norm", "variance", "mse"):
                r[m] = r[m] + r[m + "_se"] * rng.uniform(-1, 1)  # within one standard error
            r["episodes_per_second"] *= rng.uniform(0.7, 1.4)
        return rec
    return edit


def test_compare_ignores_noise(synthetic_run, tmp_path):
    from pgbench.reports.compare import compare, format_compare
    b = _copy_run(synthetic_run, tmp_path / "jittered", _jitter(1))
    df = compare(synthetic_run, b)
    both = df[df["status"] == "both"]
    assert len(both) == 4 * sum(len(c["rows"]) for c in RunDir(synthetic_run).cells())
    assert not df["flagged"].any()
    assert (both["z"].abs().max()) < 4
    assert set(df["status"]) == {"both"}
    text = format_compare(df)
    assert "No metric moved" in text and "|z| > 4" in text


def test_compare_flags_a_planted_regression(synthetic_run, tmp_path):
    from pgbench.reports.compare import compare, format_compare
    target = ("baselines/garnet-20/N=16", "rloo")

    def small_se(rec):
        for r in rec["rows"]:
            r["variance_se"] = 0.01 * r["variance"]
        return rec

    def plant(rec):
        rec = _jitter(2)(small_se(rec))
        for r in rec["rows"]:
            if (rec["cell"], r["estimator"]) == target:
                r["variance"] *= 3
        return rec

    a = _copy_run(synthetic_run, tmp_path / "a", small_se)
    b = _copy_run(synthetic_run, tmp_path / "b", plant)
    df = compare(a, b)
    flagged = df[df["flagged"]]
    assert len(flagged) == 1
    r = flagged.iloc[0]
    assert (r["cell"], r["estimator"], r["metric"]) == (*target, "variance")
    assert r["ratio"] == pytest.approx(3.0, rel=0.05) and r["z"] > 4
    text = format_compare(df)
    assert "rloo" in text and "variance" in text and "x3" in text


def test_compare_added_removed_and_speed(synthetic_run, tmp_path):
    from pgbench.reports.compare import compare, format_compare

    def edit(rec):
        if rec["suite"] == "gae/garnet-10":
            return None  # the whole cell is gone from B
        if rec["cell"] == "ladder/three-step-bandit/N=16":
            rec["rows"] = [r for r in rec["rows"] if r["estimator"] != "rloo"]
            for r in rec["rows"]:
                r["episodes_per_second"] /= 3  # three times slower
        return rec

    b = _copy_run(synthetic_run, tmp_path / "b", edit)
    extra = _record("ladder/three-step-bandit", 64, [_row("reinforce", 64)], ["variance_vs_N"])
    write_json(os.path.join(b, "cells", cell_filename(extra["cell"])), extra)
    df = compare(synthetic_run, b)
    removed, added = df[df["status"] == "removed"], df[df["status"] == "added"]
    assert set(removed[removed["scope"] == "cell"]["cell"]) == {"gae/garnet-10/N=16"}
    assert list(removed[removed["scope"] == "estimator"]["estimator"]) == ["rloo"]
    assert list(added["cell"]) == ["ladder/three-step-bandit/N=64"] and set(added["scope"]) == {"cell"}
    speed = df[(df["metric"] == "episodes_per_second") & (df["cell"] == "ladder/three-step-bandit/N=16")]
    assert np.allclose(speed["ratio"], 1 / 3) and not speed["flagged"].any()  # reported, not flagged
    df2 = compare(synthetic_run, b, speed_factor=2.0)
    flagged = df2[df2["flagged"]]
    assert set(flagged["metric"]) == {"episodes_per_second"}
    assert set(flagged["cell"]) == {"ladder/three-step-bandit/N=16"}
    text = format_compare(df2)
    assert "Added (only in B)" in text and "Removed (only in A)" in text
    assert "cell gae/garnet-10/N=16" in text and "estimator rloo in cell ladder/three-step-bandit/N=16" in text
    assert "flagged beyond a factor 2" in text
    json.loads(df2.to_json(orient="records"))  # what `pgbench compare --json` prints
    with pytest.raises(PGBenchError):
        compare(synthetic_run, b, speed_factor=0.5)


def test_z_score():
    from pgbench.reports.compare import z_score
    assert z_score(1.0, 2.0, 0.3, 0.4) == pytest.approx(2.0)
    assert np.isnan(z_score(1.0, 2.0, float("nan"), 0.1))
    assert z_score(1.0, 1.0, 0.0, 0.0) == 0.0 and z_score(1.0, 2.0, 0.0, 0.0) == float("inf")


# ----------------------------------------------------------------------------- bad input

def _bad_dirs(tmp_path, good_run):
    missing = tmp_path / "does-not-exist"
    no_meta = tmp_path / "no-meta"
    (no_meta / "cells").mkdir(parents=True)
    bad_meta = tmp_path / "bad-meta"
    bad_meta.mkdir()
    (bad_meta / "meta.json").write_text("{ not json")
    list_meta = tmp_path / "list-meta"
    list_meta.mkdir()
    (list_meta / "meta.json").write_text("[1, 2]")
    old_format = _copy_run(good_run, tmp_path / "old-format")
    meta = json.load(open(os.path.join(old_format, "meta.json")))
    meta["format"] = 99
    write_json(os.path.join(old_format, "meta.json"), meta)
    bad_cell = _copy_run(good_run, tmp_path / "bad-cell")
    with open(os.path.join(bad_cell, "cells", "broken.json"), "w") as f:
        f.write('{"suite": "x", "cell": ')
    keyless = _copy_run(good_run, tmp_path / "keyless-cell")
    write_json(os.path.join(keyless, "cells", "keyless.json"), {"suite": "x", "rows": []})
    bad_rows = _copy_run(good_run, tmp_path / "bad-rows")
    write_json(os.path.join(bad_rows, "cells", "bad_rows.json"), {"suite": "x", "cell": "x/N=1", "N": 1,
                                                                  "rows": [{"no_estimator": 1}]})
    a_file = tmp_path / "a-file"
    a_file.write_text("hello")
    return {"missing": (missing, "no run directory"), "no-meta": (no_meta, "no meta.json"),
            "bad-meta": (bad_meta, "malformed JSON"), "list-meta": (list_meta, "JSON object"),
            "old-format": (old_format, "format 99"), "bad-cell": (bad_cell, "broken.json"),
            "keyless": (keyless, "missing cell, N"), "bad-rows": (bad_rows, "estimator"),
            "a-file": (a_file, "no run directory")}


def test_bad_run_directories_raise_pgbench_error(tmp_path, real_run):
    from pgbench.reports.compare import compare
    from pgbench.reports.report import write_report
    for name, (path, msg) in _bad_dirs(tmp_path, real_run).items():
        with pytest.raises(PGBenchError, match=re.escape(msg)):
            write_report(str(path))
        with pytest.raises(PGBenchError, match=re.escape(msg)):
            compare(real_run, str(path))
        with pytest.raises(PGBenchError):
            compare(str(path), real_run)
        assert not os.path.exists(os.path.join(str(path), "report.md")), name
    with pytest.raises(PGBenchError):
        write_report(None)


def _strip_written(md: str) -> str:
    """The report without its clock times (each run directory was made at its own moment)."""
    return re.sub(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d{4}", "TIME", md)


def test_figures_drawn_in_worker_processes_equal_those_drawn_here(tmp_path, monkeypatch):
    """Same PNG bytes and the same report with figure workers as without; a figure that fails
    in a worker is a named 'Figure missing' note either way, and the rest of the report stands."""
    from pgbench.reports.report import REPORT_WORKERS_ENV, write_report
    recs = synthetic_records()
    bad = [{"estimator": "reinforce_rtg", "N": 16, "variance": 1.0, "state": 0.5, "action": 0.5, "noise": 0.0}]
    recs.append(_record("decomp/bad", 16, [_row("reinforce_rtg", 16)], ["variance_decomposition"],
                        variance_decomposition=[{"estimator": "x", "variance": float("nan")}]))
    recs.append(_record("decomp/good", 16, [_row("reinforce_rtg", 16)], ["variance_decomposition"],
                        variance_decomposition=bad))
    out = {}
    for workers in ("1", "2"):
        path = make_run(tmp_path / f"w{workers}" / "run", recs)
        monkeypatch.setenv(REPORT_WORKERS_ENV, workers)
        md_path, _ = write_report(path)
        md = _strip_written(open(md_path).read())
        figs = {f: open(os.path.join(path, "figures", f), "rb").read()
                for f in sorted(os.listdir(os.path.join(path, "figures")))}
        out[workers] = (md, figs)
        assert re.search(r"Figure missing:\*\* figure decomp\S*bad\S*variance_decomposition\.png could not be drawn: "
                         r"PGBenchError", md), md[-2000:]
        assert any("decomp_good" in f for f in figs) and not any("decomp_bad" in f for f in figs)
    assert out["1"][0] == out["2"][0]
    assert out["1"][1].keys() == out["2"][1].keys() and len(out["1"][1]) >= 8
    for f, data in out["1"][1].items():
        assert data == out["2"][1][f], f


def test_report_workers_setting_is_checked(tmp_path, monkeypatch, synthetic_run):
    from pgbench.reports.report import REPORT_WORKERS_ENV, write_report
    monkeypatch.setenv(REPORT_WORKERS_ENV, "two")
    with pytest.raises(PGBenchError, match=REPORT_WORKERS_ENV):
        write_report(synthetic_run)


def test_exact_values_outside_the_measured_interval_are_marked_and_counted(tmp_path):
    """An exact variance outside its row's 95% interval is marked in the cell table, named in the
    note under it, and counted in the summary; one inside is not marked."""
    from pgbench.reports.report import OUTSIDE, write_report
    rows = [_row("reinforce", 16, K=100, var=1.0, exact=1.02),   # inside: var*(1 +- ~0.27)
            _row("reinforce_rtg", 16, K=100, var=1.0, exact=3.0),  # far above the interval
            _row("rloo", 16, K=100, var=1.0)]                     # no exact value at all
    path = make_run(tmp_path / "run", [_record("ladder/three-step-bandit", 16, rows, [])])
    md = open(write_report(path)[0]).read()
    table = [line for line in md.splitlines() if line.startswith("| `")]
    marked = [line.split("|")[1].strip() for line in table if OUTSIDE in line]
    assert marked == ["`reinforce_rtg`"]
    assert "**Outside the interval:** the exact value lies outside the measured 95% interval (reinforce_rtg: variance and MSE)" in md
    assert "Exact variances against the measured 95% intervals: 1 of 2 (50.0%) lie outside" in md


# ----------------------------------------------------------------------------- a report a reviewer reads

def _md_of(rec_or_recs, fn="_cell_table"):
    from pgbench.reports import report as R
    doc = R.Doc()
    getattr(R, fn)(doc, rec_or_recs)
    return render_of(doc)


def render_of(doc):
    from pgbench.reports.report import render_markdown
    return render_markdown(doc)


def test_paired_p_uses_the_verdicts_policy():
    """metrics.paired with a bootstrap: p_robust is verdict_p of the normal-theory p and the
    bootstrap max-t p of the paired differences, so the paired test and the verdicts agree."""
    from pgbench.stats import metrics
    rng = np.random.default_rng(3)
    K, d = 300, 3
    # skewed, heavy-tailed trials whose means agree: exponential noise shared and not shared
    common = rng.exponential(1.0, (K, d)) ** 2
    A = common + rng.exponential(1.0, (K, d)) ** 2
    Bm = common + rng.exponential(1.0, (K, d)) ** 2
    g = np.full(d, 2.0)
    plain = metrics.paired(A, Bm, g)
    robust = metrics.paired(A, Bm, g, bootstrap=199, seed=0)
    assert plain["p_value"] == robust["p_value"]  # the normal-theory p itself is unchanged
    assert np.isnan(plain["p_bootstrap"]) and plain["p_robust"] == plain["p_value"]
    boot = metrics.bootstrap_max_t(A - Bm, np.zeros(d), B=199, seed=0)["p_value"]
    assert robust["p_bootstrap"] == boot
    assert (robust["p_robust"], robust["p_test"]) == metrics.verdict_p(robust["p_value"], robust["test"], boot, 199)
    assert robust["p_robust"] >= min(robust["p_value"], boot)


def test_paired_table_shows_the_robust_p_and_names_its_test():
    from pgbench.stats.metrics import TEST_NAMES
    rows = [_row("reinforce_rtg", 16), _row("gae", 16)]
    rec = _record("practice/chain-6", 16, rows, [])
    rec["paired"][0].update(p_value=4.0e-4, test="hotelling", p_bootstrap=0.21, p_robust=0.21,
                            p_test=TEST_NAMES["bootstrap-max-t"])
    md = _md_of(rec, "_paired_table")
    line = next(ln for ln in md.splitlines() if ln.startswith("| `gae`"))
    assert "| 0.21 | bootstrap max-t |" in line and "0.0004" not in line and "4.0e-04" not in line
    assert "test of that p" in md
    # a record written before the paired bootstrap: its p, named as normal theory only
    del rec["paired"][0]["p_robust"], rec["paired"][0]["p_test"]
    line = next(ln for ln in _md_of(rec, "_paired_table").splitlines() if ln.startswith("| `gae`"))
    assert "4.0e-04" in line and "Hotelling T2 only" in line


def test_interval_excluding_zero_beside_consistent_is_explained():
    r = _row("reinforce_rtg", 16, p=0.004)
    r.update(bias_norm=0.00431, bias_norm_lo=0.000625, bias_norm_hi=0.00737)
    ok = _row("rloo", 16, p=0.6)
    md = _md_of({"cell": "practice/chain-6/N=16", "N": 16, "rows": [r, ok]})
    note = next(ln for ln in md.splitlines() if ln.startswith("**Interval and verdict:**"))
    assert "reinforce_rtg" in note and "rloo" not in note and "95%" in note and "0.001" in note
    assert "verdict (p < 0.001)" in md


def test_exact_bias_norm_is_zero_for_every_exactly_unbiased_estimator():
    rows = [_row("reinforce_rtg", 16), _row("gae", 16), _row("gpomdp_baseline", 16),
            _row("ppo_gae", 16, unbiased=False, bias=0.4, p=1e-9), _row("my_user_thing", 16),
            _row("svg_inf", 16), _row("reparameterization", 16)]
    rows[2]["exact_bias_norm"], rows[3]["exact_bias_norm"] = 0.0, 0.376
    md = _md_of({"cell": "c", "N": 16, "rows": rows})
    header = next(ln for ln in md.splitlines() if ln.startswith("| estimator"))
    col = [h.strip() for h in header.strip("|").split("|")].index("exact bias norm")

    def exact_of(est):
        line = next(ln for ln in md.splitlines() if ln.startswith(f"| `{est}`"))
        return [c.strip() for c in line.strip("|").split("|")][col]
    assert exact_of("reinforce_rtg") == exact_of("gae") == exact_of("gpomdp_baseline") == "0"
    assert exact_of("svg_inf") == exact_of("reparameterization") == "0"  # LQG and objective targets too
    assert exact_of("ppo_gae") == "0.376"
    assert exact_of("my_user_thing") == "-"  # not in the catalogue: its claim is what is tested


def _conclusions_md(records, tmp_path):
    from pgbench.reports import report as R
    path = make_run(tmp_path / "run", records)
    meta, cells = R.load_run(path)
    doc = R.Doc()
    R._conclusions(doc, meta, cells)
    return render_of(doc)


def test_summary_ranks_only_within_a_target(tmp_path):
    rows = [_row("entropy_bonus:beta=0.0", 16, var=1.0), _row("entropy_bonus:beta=0.1", 16, var=2.0),
            _row("reinforce_rtg", 16, var=3.0)]
    rows[1]["exact_grad_norm"] = 0.342  # another target: the entropy-regularised gradient
    md = _conclusions_md([_record("entropy/garnet-8", 16, rows, [])], tmp_path)
    table = [ln for ln in md.split("Winners per cell", 1)[1].splitlines() if ln.startswith("| `entropy")]
    assert len(table) == 2  # one row per target
    mine = next(ln for ln in table if "target of `entropy_bonus:beta=0.1`" in ln)
    assert "beta=0.0" not in mine.split("|", 2)[2]  # never ranked against another target's estimator
    other = next(ln for ln in table if "target of `entropy_bonus:beta=0.0`" in ln)
    assert "runner-up `reinforce_rtg`" in other and "beta=0.1" not in other.split("|", 2)[2]


def test_biased_by_design_is_biased_whatever_it_reads(tmp_path):
    rows = [_row("reinforce_rtg", 16, var=3.0), _row("gae", 16, var=0.5),
            _row("ppo_gae", 16, unbiased=False, bias=0.4, var=0.1, p=1e-12)]
    for r, c in zip(rows, ("practical", "oracle", "oracle")):
        r["class"] = c
    for r in rows:
        r["exact_grad_norm"] = 0.0175
    rows[2]["exact_bias_norm"] = 0.376
    md = _conclusions_md([_record("practice/chain-6", 16, rows, [])], tmp_path)
    head = next(ln for ln in md.splitlines() if ln.startswith("- **Biased by design**"))
    assert "ppo_gae 21 (exact" in head
    biased = md.split("### Biased by design", 1)[1].split("###", 1)[0]
    line = next(ln for ln in biased.splitlines() if ln.startswith("| `ppo_gae`"))
    assert "biased (expected)" in line and "21.5 (exact)" in line and "biased; reads oracle" in line
    win = next(ln for ln in md.split("Winners per cell", 1)[1].splitlines() if ln.startswith("| `practice"))
    cells = [c.strip() for c in win.strip("|").split("|")]
    assert cells[2].startswith("`ppo_gae`") and cells[3].startswith("`gae`")  # biased column; oracle: gae


def test_first_screen_is_the_conclusions_and_details_fold_below(synthetic_run, written_report):
    html_text = open(written_report[1]).read()
    body = html_text.split("<body>", 1)[1]
    h2 = re.findall(r"<h2[^>]*>(.*?)</h2>", body)
    assert h2[0] == "Conclusions" and h2[-1] == "Run details"
    first_table = body.index("<table>")
    conclusions = body[:first_table]
    for what in ("What was run:", "No failures" if "No failures" in body else "BIAS DETECTED",
                 "Practical winners", "Biased by design"):
        assert what in conclusions
    # the table of contents is folded, after the conclusions; the metadata is the last section
    toc = body.index('<details class="toc">')
    assert body.index(">Conclusions<") < toc < body.index("Suite ladder")
    assert body.index('<h2 id="run">Run details</h2>') > body.rindex('<h2 id="suite-')
    assert "<nav>" not in body[:toc]


def test_verdict_columns_stay_visible_on_a_narrow_screen(written_report):
    """Every table that carries a verdict has it in its first two columns, marked to stay whole,
    and the winners table has at most five columns."""
    html_text = open(written_report[1]).read()
    heads = re.findall(r"<thead><tr>(.*?)</tr></thead>", html_text)
    with_verdict = 0
    for h in heads:
        cols = re.findall(r"<th[^>]*>(.*?)</th>", h)
        marked = re.findall(r'<th class="verdict">', h)
        if any(c.startswith("verdict") or c == "MSE vs reference" for c in cols):
            with_verdict += 1
            idx = next(i for i, c in enumerate(cols) if c.startswith("verdict") or c == "MSE vs reference")
            assert idx <= 1 and marked, cols
        if cols and cols[0] == "cell (and target)":
            assert len(cols) <= 5
    assert with_verdict >= 5
    assert "@media (max-width: 1000px)" in html_text


def test_cold_cell_wall_time_excludes_compilation_and_report_time_is_when_written(tmp_path, monkeypatch):
    from pgbench.reports import report as R
    rows = [_row("reinforce", 16), _row("reinforce_rtg", 16)]
    rec = _record("ladder/three-step-bandit", 16, rows, [])
    rec.update(wall_seconds=24.6, compile_seconds=24.5)
    md = _md_of(rec, "_cell_header")
    assert "wall time 0.1 s, plus 24.5 s compiling kernels" in md
    path = make_run(tmp_path / "run", [rec])
    # the 'report written' stamp is taken after the figures are drawn, not when the tables start
    stamps = iter(["2000-01-01T00:00:0%d+0000" % i for i in range(10)])
    monkeypatch.setattr(R.time, "strftime", lambda fmt, *a: next(stamps))
    drawn = []
    real = R._resolve_figures
    monkeypatch.setattr(R, "_resolve_figures", lambda *a: (drawn.append(next(stamps)), real(*a)))
    doc, _, _ = R.build_report(path)
    md = render_of(doc)
    written = re.search(r"\| report written \| (\S+)", md).group(1)
    assert drawn and written > drawn[0]


def test_compile_timer_counts_numba_compilation():
    import numba
    from pgbench.suites.cell import _compile_timer

    @numba.njit(cache=False)
    def fresh(x):
        return x * 2.0 + 1.0
    with _compile_timer() as c:
        fresh(1.5)
    with _compile_timer() as again:
        fresh(2.5)  # compiled already
    assert c.seconds > 0.0 and again.seconds == 0.0


def _ladder_df(Ns=(1, 16, 256), exact=True, K=100):
    rng = np.random.default_rng(5)
    rows = []
    for N in Ns:
        for e, v in (("reinforce", 3.0), ("reinforce_rtg", 1.7), ("value_baseline", 0.7),
                     ("importance_sampling:mu=mix,eps=0.3,weighted=1", 2.0)):
            rows.append({**_row(e, N, K=K, var=v, exact=1.02 if exact else None, rng=rng), "suite": "ladder/x"})
    return pd.DataFrame(rows)


def _texts(fig):
    fig.canvas.draw()
    return [t for t in fig.findobj(lambda o: hasattr(o, "get_text") and hasattr(o, "get_fontsize"))
            if t.get_visible() and t.get_text().strip()]


def test_variance_vs_n_speaks_of_one_batch_size_only_when_there_is_one():
    from pgbench.reports.figures import variance_vs_n
    for Ns, exact in (((1, 16, 256), True), ((1, 16, 256), False), ((16,), True)):
        said = [t.get_text() for t in _texts(variance_vs_n(_ladder_df(Ns, exact)))]
        one = any("one batch size only" in s for s in said)
        assert one == (len(Ns) == 1), (Ns, exact, said)


def test_bias_bars_draw_the_noise_floor_tr_var_over_K():
    from pgbench.reports.figures import bias_variance
    df = _ladder_df((16,), K=100)
    fig = bias_variance(df)
    ticks = [ln for ax in fig.axes for ln in ax.get_lines() if ln.get_gid() == "noise-floor"]
    floors = sorted(float(ln.get_xdata()[0]) for ln in ticks)
    expect = sorted((df["variance"] / df["K"]).tolist())
    assert np.allclose(floors, expect, rtol=1e-12)
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert any("noise floor tr Var / K" in s for s in labels)


@pytest.mark.parametrize("which", ["bias_variance", "variance_vs_n", "efficiency", "horizon", "gae_lambda"])
def test_figures_stay_legible_on_a_900px_page(which):
    """The page shows a figure at most 880 px wide: its smallest text must stay >= 8 px there."""
    from pgbench.reports import figures as F
    if which == "horizon":
        rows = []
        for sid in ("horizon/T=2", "horizon/T=8", "horizon/gamma=0.5", "horizon/gamma=0.9"):
            for e in ("reinforce", "reinforce_rtg"):
                rows.append({**_row(e, 16), "suite": sid})
        fig = F.horizon(pd.DataFrame(rows))
    elif which == "gae_lambda":
        rows = [_row(lab, 16) for lab in GAE_SWEEP + ("reinforce_rtg",)]
        fig = F.gae_lambda(pd.DataFrame(rows), "gae/garnet-10")
    else:
        fig = getattr(F, which)(_ladder_df((1, 16, 256)))
    width_px = fig.get_figwidth() * F.DPI
    scale = min(1.0, 880.0 / width_px)
    smallest = min(t.get_fontsize() for t in _texts(fig)) * F.DPI / 72.0 * scale
    assert smallest >= 8.0, (which, fig.get_figwidth(), smallest)
