"""The report's parts (tables, figures, Markdown) on a tiny hand-made results file."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from svdgrad.sweep import figures, markdown, report, tables
from svdgrad.sweep.cells import REF_MPMATH, _row
from svdgrad.sweep.grid import default_grid
from svdgrad.sweep.runner import GRID, RESULTS
from svdgrad.sweep.store import ResultStore

#: grad_err by (method, spectrum, log10 κ): ordinary is non-finite at κ = 1 (all eigenvalues tied) and equal
#: to exact elsewhere; on `repeated` (ties at every κ) it is poor but finite; taylor is 10× worse.
ERRORS = {
    ("exact", "logspaced"): {0: 1e-7, 2: 1e-6, 4: 1e-5},
    ("ordinary", "logspaced"): {0: math.inf, 2: 1e-6, 4: 1e-5},
    ("taylor", "logspaced"): {0: 0.9, 2: 1e-5, 4: 1e-4},
    ("exact", "repeated"): {0: 1e-7, 2: 1e-6, 4: 1e-5},
    ("ordinary", "repeated"): {0: math.inf, 2: 1e-1, 4: 1e-2},
    ("taylor", "repeated"): {0: 0.9, 2: 0.3, 4: 0.2},
}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny_report")
    store = ResultStore(out / RESULTS)
    store.reset()
    rows = []
    for (m, sp), by_k in ERRORS.items():
        for k, err in by_k.items():
            for seed in (0, 1):
                finite = math.isfinite(err)
                rows.append(_row(("method", "sqrt", m, "", "float32", 16, k, sp, seed), reference=REF_MPMATH,
                                 kappa_reached=10.0 ** k, fwd_err=1e-7, grad_err=err,
                                 nonfinite_out=0.0, nonfinite_grad=0.0 if finite else 1.0,
                                 blowup=1.0 if finite else math.inf, time_ms=0.1))
    for sp in ("logspaced", "repeated"):
        for k in (0, 2, 4):
            for seed in (0, 1):
                rows.append(_row(("eig", "", "eigvalsh", "", "float32", 16, k, sp, seed), kappa_reached=10.0 ** k,
                                 frac_nonpositive=0.0, frac_wrong_magnitude=0.0))
    store.append(rows)
    g = default_grid().narrow(methods=["exact", "ordinary", "taylor"], dtypes=["float32"], sizes=[16],
                              log10_kappas=[0, 2, 4], spectra=["logspaced", "repeated"], seeds=[0, 1])
    (out / GRID).write_text(g.to_json())
    return out


def _summary(out):
    rows = tables.load(out)
    return {(s["spectrum"], s["band"]): s for s in tables.summary_rows(rows, tables.axes(rows, tables.load_grid(out)))}


def test_ranking_leaves_out_the_tied_column_where_ordinary_is_undefined(tiny):
    s = _summary(tiny)[("logspaced", "well conditioned (κ ≤ 1e4)")]
    assert s["dropped_kappas"] == [0]
    # without the κ = 1 column exact and ordinary are equal (not "19× apart" because of an infinity)
    assert s["best_err"] == s["second_err"] == pytest.approx((1e-6 + 1e-5) / 2)
    assert {s["best"], s["second"]} == {"exact", "ordinary"} and s["worst"] == "taylor"


def test_ranking_leaves_out_a_method_undefined_on_the_whole_regime(tiny):
    s = _summary(tiny)[("repeated", "well conditioned (κ ≤ 1e4)")]
    assert "ordinary" in s["undefined"] and s["dropped_kappas"] == []
    assert s["best"] == "exact" and s["second"] == "taylor" and s["worst"] == "taylor"


def test_markdown_says_what_was_left_out(tiny):
    rows = tables.load(tiny)
    g = tables.load_grid(tiny)
    ax = tables.axes(rows, g)
    text = markdown.write(rows, [], g, ax, tables.method_cells(rows), {"grad_16": "x.png", "nonfinite": "n.png",
                                                                        "blowup": "b.png", "eig": "e.png"})
    assert "left out: κ = 1e0" in text and "not ranked: ordinary" in text


def test_blowup_draws_non_finite_values_at_the_edge_not_as_numbers(tiny, monkeypatch, tmp_path):
    drawn = {}
    monkeypatch.setattr(figures, "_save", lambda fig, path: drawn.setdefault("fig", fig))
    rows = tables.load(tiny)
    figures.fig_blowup(rows, tables.axes(rows, tables.load_grid(tiny)), tmp_path / "blowup.png")
    ax0 = drawn["fig"].axes[0]  # float32, logspaced
    assert ax0.get_ylabel()
    lines = {ln.get_label(): ln for ln in ax0.get_lines() if not ln.get_label().startswith("_")}
    y = list(lines["ordinary"].get_ydata())
    assert math.isnan(y[0]) and y[1:] == [1.0, 1.0]  # κ = 1 is a gap in the line, not a made-up 1e3
    edge = [ln for ln in ax0.get_lines() if ln.get_marker() == "^" and len(ln.get_xdata())]
    assert len(edge) == 1 and list(edge[0].get_xdata()) == [1.0] and list(edge[0].get_ydata()) == [1.0]
    assert edge[0].get_transform() == ax0.get_xaxis_transform()  # y in axes fraction: the top edge


def test_build_writes_every_figure_and_leads_with_the_mpmath_figure(tiny):
    path = report.build(tiny)
    text = path.read_text()
    for name in ("headline_mpmath.png", "grad_error_n16.png", "nonfinite.png", "blowup.png",
                 "float32_eigenvalues.png"):
        assert (tiny / name).stat().st_size > 0, name
    assert text.index("headline_mpmath.png") < text.index("grad_error_n16.png")


def test_a_figure_whose_write_fails_leaves_no_temporary(tmp_path, monkeypatch):
    """figures._save wrote NAME.png.tmp.png beside the figure (no PID: no later run could tell a dead writer's
    from a live one's) and left it behind when the write failed."""
    import os

    plt = figures._plt()
    fig = plt.figure()
    monkeypatch.setattr(os, "replace", lambda *a: (_ for _ in ()).throw(OSError(28, "No space left on device")))
    with pytest.raises(OSError, match="No space left"):
        figures._save(fig, tmp_path / "grad_error_n16.png")
    monkeypatch.undo()
    plt.close(fig)
    assert list(tmp_path.iterdir()) == []


def test_the_next_report_removes_a_killed_reports_temporary(tiny, tmp_path):
    """A kill -9 of `svdgrad report` inside an atomic write left REPORT.md.PID.tmp; the next report removes it."""
    import shutil

    from .test_io import dead_pid

    out = Path(shutil.copytree(tiny, tmp_path / "sweep"))
    tmp = out / f"REPORT.md.{dead_pid()}.tmp"
    tmp.write_text("# half a rep")
    report.build(out)
    assert not tmp.exists() and not list(out.glob("*.tmp"))
