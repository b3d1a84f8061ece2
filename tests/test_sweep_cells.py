"""What the sweep's cells measure: each row's numbers mean what the report says they mean.

Found by mutation: the end-to-end sweep tests check that rows exist and are finite, and six plausible
changes to ``svdgrad/sweep/cells.py`` that misstate a measurement passed them.  Each test here runs one
small matrix through ``run_cell`` (well under a second) and pins one meaning.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from svdgrad.sweep.cells import (GRAM_ROUTE, REF_EXACT64, REF_GRAM64, REF_LIMIT64, REF_MPMATH, REF_SELF, CellTask,
                                 _eig_row, _with_floor, run_cell)
from svdgrad.sweep.grid import reference_floor

EPS32 = torch.finfo(torch.float32).eps


def _key(study, method, dtype, n, k, spectrum, function="sqrt"):
    return (study, function, method, "", dtype, n, k, spectrum, 0)


def _rows(n, k, spectrum, *keys, mpmath_max_n=4):
    """The rows of one matrix; n > mpmath_max_n makes float64 exact (or the float64 features route) the reference."""
    task = CellTask(n=n, log10_kappa=k, spectrum=spectrum, seed=0, pending=tuple(keys), mpmath_max_n=mpmath_max_n)
    rows = run_cell(task)
    assert all(not r["error"] for r in rows), [r["error"] for r in rows]
    return rows


def test_a_rank_deficient_matrix_is_judged_on_its_defined_block_and_its_own_kappa():
    """The gradient of √A on the null space × null space block is not defined (the K of two zero
    eigenvalues); the error is taken on the rest, where float32 exact is within √(eps·κ) (the zero
    eigenvalues come back as ±eps·λmax, and their roots as √eps·√λmax).  κ reached is λmax over the
    smallest *positive* eigenvalue."""
    n, k = 8, 2
    (row,) = _rows(n, k, "rank_deficient", _key("method", "exact", "float32", n, k, "rank_deficient"))
    assert row["reference"] == REF_LIMIT64
    assert float(row["grad_err"]) <= 10 * math.sqrt(EPS32 * 10.0 ** k)
    assert float(row["kappa_reached"]) == pytest.approx(10.0 ** k, rel=1e-5)


@pytest.mark.parametrize("function,p", [("sqrt", 0.5), ("power", 0.25)])
def test_rank_deficient_rows_are_measured_against_the_limit_at_zero_eigenvalues(function, p):
    """The reference is the finite part's limit as the zero eigenvalues go to 0, the same from mpmath and
    from float64 (``float64-limit``), and float64 ``exact`` is measured against it above the mpmath
    size, not taken as the reference.  Its floor eps64·λmax then shows: the cross terms f[λi, floor]
    against f[λi, 0] are (eps64·κ)^p off.  (The reference floored at eps64·λmax had exact at its own
    floor, and moved by √(eps64·κ) with A's rounding.)"""
    n, k = 8, 8
    keys = [_key("method", "exact", d, n, k, "rank_deficient", function) for d in ("float32", "float64")]
    mp = {r["dtype"]: r for r in _rows(n, k, "rank_deficient", *keys, mpmath_max_n=16)}
    f64 = {r["dtype"]: r for r in _rows(n, k, "rank_deficient", *keys, mpmath_max_n=4)}
    assert {r["reference"] for r in mp.values()} == {REF_MPMATH}
    assert {r["reference"] for r in f64.values()} == {REF_LIMIT64}
    for d in mp:
        assert float(f64[d]["grad_err"]) == pytest.approx(float(mp[d]["grad_err"]), rel=1e-3)
    assert {float(r["ref_floor"]) for r in f64.values()} == {reference_floor(10.0 ** k, n)}
    floor_effect = (2.0 ** -52 * 10.0 ** k) ** p
    assert 0.1 * floor_effect <= float(f64["float64"]["grad_err"]) <= 10 * floor_effect
    # full-rank matrices above the mpmath size keep float64 exact as their reference
    (row,) = _rows(n, k, "logspaced", _key("method", "exact", "float64", n, k, "logspaced", function))
    assert row["reference"] == REF_SELF


def test_the_features_route_reports_kappa_of_the_gram_matrix_and_the_floor_of_kappa_x():
    """κ reached is κ(X Xᵀ) = κ(X)², the sweep's axis; the float64 route's own error (its floor) scales with κ(X)."""
    n, k = 8, 6
    rows = _rows(n, k, "logspaced", _key("gram", GRAM_ROUTE, "float32", n, k, "logspaced"))
    (row,) = rows
    assert row["reference"] == REF_GRAM64
    assert float(row["kappa_reached"]) == pytest.approx(10.0 ** k, rel=1e-3)
    assert float(row["ref_floor"]) == pytest.approx(reference_floor(10.0 ** (k / 2), n))


def test_at_floor_flags_judge_the_gradient_and_the_forward_separately():
    out = _with_floor({"grad_err": 1e-3, "fwd_err": 1e-16}, 1e-14)
    assert (out["at_floor"], out["fwd_at_floor"], out["ref_floor"]) == (0, 1, 1e-14)
    out = _with_floor({"grad_err": 1e-15, "fwd_err": 1e-3}, 1e-14)
    assert (out["at_floor"], out["fwd_at_floor"]) == (1, 0)


def test_an_eigenvalue_ten_times_off_is_wrong_in_magnitude():
    """frac_wrong_magnitude counts computed eigenvalues a factor 10 or more from the true ones (or ≤ 0)."""
    true = torch.tensor([1e-3, 1e-2, 1e-1, 1.0], dtype=torch.float64)
    computed = torch.tensor([2e-5, 2e-3, 0.09, 1.0], dtype=torch.float64)  # 50x, 5x, 1.1x, exact
    m = SimpleNamespace(A=torch.diag(computed), n=4, rank=4, lam=true, kappa_reached=lambda dtype: 1e3)
    row = _eig_row(m, _key("eig", "eigvalsh", "float64", 4, 3, "logspaced", function=""), torch.float64)
    assert row["frac_wrong_magnitude"] == pytest.approx(0.25) and row["frac_nonpositive"] == 0.0


def test_float32_exact_is_measured_against_the_float64_reference():
    """Only float64 exact is the reference (is-reference, no error); float32 exact gets its error measured."""
    n, k = 8, 4
    r32, r64 = _rows(n, k, "logspaced", _key("method", "exact", "float32", n, k, "logspaced"),
                     _key("method", "exact", "float64", n, k, "logspaced"))
    assert r32["reference"] == REF_EXACT64 and 0 < float(r32["grad_err"]) < 1e-2
    assert r64["reference"] == "is-reference" and r64["grad_err"] == ""
