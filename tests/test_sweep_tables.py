"""What the sweep report's tables and sentences say, on small hand-made rows (no sweep is run).

Rows are built as ``tables.load`` returns them: key columns, numeric columns as floats (nan where
empty), ``reference`` and ``error`` as strings.  Each test pins one meaning a reader of
reports/condition_sweep/REPORT.md relies on: medians over seeds, the κ bands, which sizes a regime
ranks over, where a method first breaks, which column is which.
"""

from __future__ import annotations

import math

import pytest

from svdgrad.sweep import grid, markdown, tables
from svdgrad.sweep.cells import (GRAM_ROUTE, GRAM_SVD, GRAM_VIA_SIGMA, KEY, REF_EXACT64, REF_LIMIT64, REF_MPMATH,
                                 REF_SELF, VALUES)
from svdgrad.sweep.grid import default_grid

WELL, ILL, NEAR = (label for label, _, _ in grid.KAPPA_BANDS)


def row(method="exact", dtype="float32", n=16, k=2, spectrum="logspaced", seed=0, study="method",
        function="sqrt", reference=REF_MPMATH, **values) -> dict:
    """One loaded results row; numeric values not given are nan (an empty CSV cell)."""
    r = dict(zip(KEY, (study, function, method, "", dtype, n, k, spectrum, seed)))
    for col in VALUES:
        r[col] = "" if col in ("reference", "error") else math.nan
    r.update(reference=reference, error="")
    r.update(values)
    return r


def summary(rows):
    ax = tables.axes(rows, default_grid())
    return {(s["dtype"], s["spectrum"], s["band"]): s for s in tables.summary_rows(rows, ax)}


def markdown_table(text: str) -> list[dict]:
    """The rows of the first Markdown table in ``text`` as {header: cell}."""
    lines = [ln for ln in text.splitlines() if ln.startswith("|")]
    cells = [[c.strip() for c in ln.strip().strip("|").split("|")] for ln in lines]
    head, body = cells[0], cells[2:]
    return [dict(zip(head, r)) for r in body]


# ---------------------------------------------------------------------------
# One cell of the per-κ tables.
# ---------------------------------------------------------------------------

def test_a_cell_is_the_median_over_seeds_so_one_bad_seed_does_not_move_it():
    c = tables.Cell([row(seed=s, grad_err=e) for s, e in enumerate((1e-6, 1e-6, 1.0))])
    assert c.grad == 1e-6
    assert c.text() == "1.0e-06"


def test_at_the_floor_is_judged_from_the_gradient_error_not_the_forward_error():
    floor = 1e-13
    accurate_forward = tables.Cell([row(reference=REF_EXACT64, ref_floor=floor, grad_err=1e-9, fwd_err=1e-16)])
    assert not accurate_forward.at_floor and accurate_forward.text() == "1.0e-09"
    accurate_gradient = tables.Cell([row(reference=REF_EXACT64, ref_floor=floor, grad_err=1e-15, fwd_err=1e-9)])
    assert accurate_gradient.at_floor and accurate_gradient.text() == "≤floor"


# ---------------------------------------------------------------------------
# The summary: most accurate method per regime.
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("k, band", [(0, WELL), (4, WELL), (5, ILL), (8, ILL), (9, NEAR), (12, NEAR)])
def test_each_kappa_falls_in_its_band_edges_included(k, band):
    assert tables.band_of(k) == band
    s = summary([row("exact", k=k, grad_err=1e-6), row("taylor", k=k, grad_err=1e-3)])
    assert list(s) == [("float32", "logspaced", band)]
    assert s[("float32", "logspaced", band)]["best"] == "exact"


@pytest.mark.parametrize("ref", [REF_EXACT64, REF_LIMIT64])
def test_the_best_method_is_at_the_floor_when_at_least_half_its_rows_are(ref):
    """Either float64 reference (float64 exact; the limit at exact zero eigenvalues on rank_deficient)
    has its own error floor, below which a row counts as at the floor."""
    floor = 1e-13

    def rows(n_below, n_above):
        return ([row("exact", seed=s, reference=ref, ref_floor=floor, grad_err=1e-15) for s in range(n_below)]
                + [row("exact", seed=10 + s, reference=ref, ref_floor=floor, grad_err=2e-13)
                   for s in range(n_above)]
                + [row("taylor", seed=s, reference=ref, ref_floor=floor, grad_err=1e-3) for s in range(3)])

    half = summary(rows(1, 1))[("float32", "logspaced", WELL)]
    assert half["best"] == "exact" and half["best_floor"]
    # the floored row counts as the floor's value: median of (1e-13, 2e-13)
    assert half["best_err"] == pytest.approx(1.5e-13)
    third = summary(rows(1, 2))[("float32", "logspaced", WELL)]
    assert third["best"] == "exact" and not third["best_floor"]


def test_the_reference_is_named_per_spectrum_where_rank_deficient_has_its_own():
    rows = [row("exact", "float32", 64, spectrum="logspaced", reference=REF_EXACT64, ref_floor=1e-13, grad_err=1e-4),
            row("exact", "float32", 64, spectrum="rank_deficient", reference=REF_LIMIT64, ref_floor=1e-13,
                grad_err=1e-2),
            row("exact", "float32", 16, spectrum="rank_deficient", grad_err=1e-2)]
    cells = tables.method_cells(rows)
    assert tables.reference_of(cells, 64, "logspaced").startswith("float64 exact (errors below")
    assert tables.reference_of(cells, 64, "rank_deficient").startswith("float64 limit at the exact zero")
    both = tables.reference_of(cells, 64)
    assert both.startswith("float64 exact; on rank_deficient the float64 limit at the exact zero")
    assert tables.reference_of(cells, 16, "rank_deficient") == "mpmath (50 digits)"


def test_float64_regimes_rank_only_sizes_where_exact_is_measured():
    # n = 16: mpmath reference, every method measured; n = 64: float64 exact is the reference, so exact
    # has no error there, and ranking the others on n = 64 too would compare them over other matrices.
    rows = [row("exact", "float64", 16, grad_err=1e-6), row("ordinary", "float64", 16, grad_err=1e-7),
            row("exact", "float64", 64, reference=REF_SELF),
            row("ordinary", "float64", 64, reference=REF_EXACT64, ref_floor=1e-13, grad_err=1.0),
            # float32 has no reference row of its own: both sizes are ranked
            row("exact", "float32", 16, grad_err=1e-4), row("ordinary", "float32", 16, grad_err=1e-5),
            row("exact", "float32", 64, reference=REF_EXACT64, ref_floor=1e-13, grad_err=1e-4),
            row("ordinary", "float32", 64, reference=REF_EXACT64, ref_floor=1e-13, grad_err=1.0)]
    s = summary(rows)
    f64 = s[("float64", "logspaced", WELL)]
    assert f64["best"] == "ordinary" and f64["best_err"] == 1e-7
    assert f64["second"] == "exact" and f64["second_err"] == 1e-6
    f32 = s[("float32", "logspaced", WELL)]
    assert f32["best"] == "exact" and f32["best_err"] == 1e-4
    assert f32["second"] == "ordinary" and f32["second_err"] == pytest.approx((1e-5 + 1.0) / 2)


def test_ordinary_is_not_ranked_on_rank_deficient_matrices():
    assert grid.undefined_by_construction("ordinary", "rank_deficient", 4)
    assert grid.undefined_by_construction("ordinary", "logspaced", 4) is None
    rows = [row(m, spectrum="rank_deficient", k=k, grad_err=e)
            for k in (2, 4) for m, e in (("exact", 1e-5), ("ordinary", 1e-7), ("taylor", 1e-3))]
    s = summary(rows)[("float32", "rank_deficient", WELL)]
    assert "ordinary" in s["undefined"] and s["dropped_kappas"] == []
    assert s["best"] == "exact" and s["second"] == "taylor"


def test_the_summary_table_states_runner_up_over_best():
    rows = [row("exact", k=k, grad_err=1e-6) for k in (2, 4)] + [row("taylor", k=k, grad_err=3e-6) for k in (2, 4)]
    (line,) = markdown_table(markdown._summary_table(rows, tables.axes(rows, default_grid())))
    assert line["best"] == "exact" and line["runner-up"].startswith("taylor")
    assert line["runner-up / best"] == "3×"


# ---------------------------------------------------------------------------
# The other tables.
# ---------------------------------------------------------------------------

def test_non_finite_table_gives_the_smallest_kappa_where_a_method_breaks():
    rows = [row("ordinary", k=k, spectrum=sp, nonfinite_grad=nf, grad_err=math.inf if nf else 1e-6)
            for k, sp, nf in ((0, "logspaced", 1.0), (4, "logspaced", 0.0), (8, "repeated", 0.5),
                              (12, "logspaced", 1.0))]
    rows.append(row("exact", k=12, grad_err=1e-4, nonfinite_grad=0.0))
    head, body = tables.nonfinite_table(rows, tables.axes(rows, default_grid()))
    by = {(r[0], r[1]): dict(zip(head, r)) for r in body}
    o = by[("ordinary", "float32")]
    assert o["runs with a non-finite gradient"] == "3/4"
    assert o["spectra"] == "logspaced, repeated"
    assert o["smallest κ"] == "1e0"
    assert by[("exact", "float32")]["smallest κ"] == "-"


def test_eigenvalue_table_keeps_its_three_quantities_apart():
    rows = [row("eigvalsh", "float32", 16, k=8, seed=s, study="eig", function="", reference="",
                frac_nonpositive=p, frac_wrong_magnitude=w, kappa_reached=kr)
            for s, (p, w, kr) in enumerate(((0.25, 0.5, 1e7), (0.75, 1.0, math.inf), (0.5, 0.75, 1e8)))]
    head, body = tables.eig_table(rows)
    assert head == ["κ", "float32 n=16"]
    (k, (nonpositive, wrong, reached)), = body
    assert k == "1e8"
    assert nonpositive == pytest.approx(0.5) and wrong == pytest.approx(0.75) and reached == 1e8


def test_timing_table_puts_each_time_under_its_own_size_and_dtype():
    times = {(16, "float32"): 1.0, (16, "float64"): 2.0, (64, "float32"): 3.0, (64, "float64"): 4.0}
    rows = [row("exact", d, n, grad_err=1e-6, time_ms=t) for (n, d), t in times.items()]
    head, body = tables.timing_table(rows, tables.axes(rows, default_grid()))
    (line,) = body
    got = dict(zip(head, line))
    assert got.pop("method") == "exact"
    assert got == {f"n={n} {d}": t for (n, d), t in times.items()}


def test_headline_figure_is_at_the_largest_size_with_an_mpmath_reference():
    g = default_grid()
    assert tables.headline_size({"sizes": [16, g.mpmath_max_n, 2 * g.mpmath_max_n]}, g) == g.mpmath_max_n
    assert tables.headline_size({"sizes": [2 * g.mpmath_max_n]}, g) is None


def test_features_route_sentence_quotes_the_largest_float32_error():
    rows = []
    for k, route in ((2, 1e-6), (8, 1e-3), (4, 1e-5)):
        for m, e in ((GRAM_ROUTE, route), (GRAM_VIA_SIGMA, 10 * route), (GRAM_SVD, 3 * route)):
            rows.append(row(m, "float32", 16, k=k, study="gram", grad_err=e))
    text = "\n".join(markdown._gram_section(7, rows, default_grid(), {"gram": "gram.png"}))
    assert "largest median error of `gram_sqrtm` is 1.0e-03 (n = 16, κ = 1e8)" in text
    assert "`sqrtm(X X^T)` has 1.0e-02" in text


def test_features_route_sentence_skips_a_cell_without_a_gram_sqrtm_value():
    # κ = 1e4 has only a sqrtm(X X^T) row (the route's rows all failed): its missing value is not "the largest"
    rows = [row(GRAM_ROUTE, "float32", 16, k=2, study="gram", grad_err=1e-3),
            row(GRAM_VIA_SIGMA, "float32", 16, k=2, study="gram", grad_err=1e-2),
            row(GRAM_VIA_SIGMA, "float32", 16, k=4, study="gram", grad_err=1e-1)]
    text = "\n".join(markdown._gram_section(7, rows, default_grid(), {"gram": "gram.png"}))
    assert "largest median error of `gram_sqrtm` is 1.0e-03 (n = 16, κ = 1e2)" in text


def test_features_route_svd_ratio_median_of_an_even_count():
    # svd / route = 1 and 3 over two cells: the median is 2, not the upper middle value
    rows = []
    for k, ratio in ((2, 1.0), (4, 3.0)):
        rows += [row(GRAM_ROUTE, "float32", 16, k=k, study="gram", grad_err=1e-6),
                 row(GRAM_VIA_SIGMA, "float32", 16, k=k, study="gram", grad_err=1e-5),
                 row(GRAM_SVD, "float32", 16, k=k, study="gram", grad_err=ratio * 1e-6)]
    text = "\n".join(markdown._gram_section(7, rows, default_grid(), {"gram": "gram.png"}))
    assert "from 1 to 3, median 2, over 2 cells" in text
