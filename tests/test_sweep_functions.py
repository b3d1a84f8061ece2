"""The sweep's function axis, features route, options study and baselines, on the tiny grid of test_sweep."""

from __future__ import annotations

import pytest

pytest.importorskip("joblib")

import torch  # noqa: E402

import svdgrad  # noqa: E402
from svdgrad.sweep import cells, grid, runner, tables  # noqa: E402
from svdgrad.sweep.grid import default_grid  # noqa: E402
from svdgrad.sweep.store import read_rows, row_key  # noqa: E402

from .test_sweep import tiny_run  # noqa: E402,F401  (the module-scoped tiny sweep)


def test_grid_pairs_functions_with_their_valid_methods_only():
    g = default_grid()
    for n, _, sp, s in g.matrices()[:: 37]:
        for f, m in g.pairs(n, sp, s):
            assert m.partition(":")[0] in svdgrad.methods(f)
            assert not (f in grid.UNBOUNDED_AT_ZERO and sp == "rank_deficient")
            cap = g.size_cap(m)
            assert cap is None or n <= cap
    # every function is measured with every method valid for it somewhere in the grid
    seen = {p for n, _, sp, s in g.matrices() for p in g.pairs(n, sp, s)}
    assert seen == {(f, m) for f in g.functions for m in g.methods if m in svdgrad.methods(f)}
    # the options study covers the settings the issue names
    for spec in ("newton_schulz:iterations=3", "newton_schulz:iterations=10,backward=lyapunov",
                 "mpa:num_degree=3,den_degree=3", "mpa:num_degree=8,den_degree=8", "mtp:degree=20",
                 "power_iteration:iterations=19", "taylor:degree=9"):
        assert spec in g.option_specs
        assert svdgrad.method_spec(svdgrad.get_method(spec)) == spec


def test_baseline_is_planned_only_when_torch_has_it(monkeypatch):
    g = default_grid().narrow(methods=["exact"], functions=["sqrt"], sizes=[16], log10_kappas=[2],
                              spectra=["logspaced"], seeds=[0])
    have, skipped = grid.available_baselines()
    keys = runner.matrix_keys(g, 16, 2, "logspaced", 0)
    assert any(k[0] == "baseline" for k in keys) == bool(have)
    assert set(have) | set(skipped) == set(grid.BASELINES)
    monkeypatch.setattr(grid, "BASELINES", ("torch.linalg.no_such_function",))
    assert grid.available_baselines() == ((), {"torch.linalg.no_such_function":
                                               f"torch {torch.__version__} has no torch.linalg.no_such_function"})


def test_tiny_run_measures_each_function_route_and_setting(tiny_run):  # noqa: F811
    rows = read_rows(tiny_run / runner.RESULTS)
    by = {row_key(r): r for r in rows}
    assert not [r for r in rows if r["error"]]
    # log against its own 50-digit reference at n = 16; float64 exact of log is the reference at n = 64
    r = by[("method", "log", "exact", "", "float64", 16, 8, "logspaced", 0)]
    assert r["reference"] == cells.REF_MPMATH and float(r["grad_err"]) < 1e-6
    assert by[("method", "log", "exact", "", "float64", 64, 8, "logspaced", 0)]["reference"] == cells.REF_SELF
    assert not any(k[1] == "log" and k[7] == "rank_deficient" for k in by)  # log(0) is infinite
    # the features route: mpmath at n = 16, float64 gram_sqrtm is the reference at n = 64
    r = by[("gram", "sqrt", cells.GRAM_ROUTE, "", "float64", 16, 8, "logspaced", 0)]
    assert r["reference"] == cells.REF_MPMATH and float(r["grad_err"]) < 1e-8
    assert by[("gram", "sqrt", cells.GRAM_ROUTE, "", "float64", 64, 8, "logspaced", 0)]["reference"] == cells.REF_SELF
    # float32 at κ(X Xᵀ) = 1e8: forming Σ loses what the SVD of X keeps
    route = float(by[("gram", "sqrt", cells.GRAM_ROUTE, "", "float32", 16, 8, "logspaced", 0)]["grad_err"])
    sigma = float(by[("gram", "sqrt", cells.GRAM_VIA_SIGMA, "", "float32", 16, 8, "logspaced", 0)]["grad_err"])
    assert route < sigma
    # the options study: Newton–Schulz settings of the grid (only methods the grid lists)
    opts = {r["method"] for r in rows if r["study"] == "option"}
    assert "newton_schulz:iterations=3" in opts and "newton_schulz:backward=lyapunov" in opts
    assert all(o.partition(":")[0] in ("exact", "ordinary", "newton_schulz") for o in opts)


def test_report_has_a_section_per_function_and_the_accuracy_cost_figure(tiny_run):  # noqa: F811
    text = (tiny_run / "REPORT.md").read_text()
    assert "`logm`" in text and "`inv_sqrtm`" not in text.split("## Grid")[1].split("## How")[0]
    assert "features route" in text and "Method settings" in text
    assert "Baselines outside svdgrad" in text
    if not grid.available_baselines()[0]:
        assert "Skipped: `torch.linalg.matrix_sqrth`" in text
    for name in ("log_grad_error_n16.png", "log_grad_error_n64.png", "gram.png", "accuracy_cost_n16.png",
                 "accuracy_cost_n64.png"):
        assert (tiny_run / name).stat().st_size > 0, name
    pts = tables.accuracy_cost(tables.load(tiny_run), 64)
    assert {p["dtype"] for p in pts} == {"float32", "float64"}
    assert all(p["time"] > 0 for p in pts)
