"""How `pade` gets its coefficients, the degeneracy of [M/N] Padé for 1/(1-x), and its pole."""

import mpmath
import numpy as np
import pytest
import scipy.interpolate
import torch
from hypothesis import given
from hypothesis import strategies as st

import svdgrad
from svdgrad import _kernels
from svdgrad._pade import geometric_series, pade_coefficients, reduced_degrees
from svdgrad import testing as T


def test_full_system_is_singular_in_scipy_and_mpmath():
    """GGT 2013: the exact series of 1/(1-x) leaves the [M/N] system singular, M, N >= 1."""
    series = [1.0] * 101
    with pytest.raises(np.linalg.LinAlgError):
        scipy.interpolate.pade(series, 50, 50)
    with mpmath.workdps(60), pytest.raises(ZeroDivisionError, match="singular"):
        mpmath.pade([mpmath.mpf(1)] * 101, 50, 50)


@pytest.mark.parametrize("m,n", [(50, 50), (1, 1), (9, 3), (0, 1), (100, 100)])
def test_reduces_to_one_over_one_minus_x(m, n):
    assert reduced_degrees(geometric_series(m + n), m, n)[1] == min(n, 1)  # rank of the Toeplitz block is 1
    assert pade_coefficients(m, n) == ((1.0,), (1.0, -1.0))


@pytest.mark.parametrize("m", range(0, 9))
@pytest.mark.parametrize("n", range(0, 9))
def test_coefficients_are_in_reduced_form(m, n):
    """No trailing zero coefficient in p or q, as documented: [0/N] for N >= 2 has a full-rank Toeplitz
    block (no degree reduction) and mpmath returns q = (1, -1, 0, ..., 0), which must be trimmed."""
    p, q = pade_coefficients(m, n)
    assert (len(p) == 1 or p[-1] != 0.0) and (len(q) == 1 or q[-1] != 0.0)
    assert (p, q) == (((1.0,) * (m + 1), (1.0,)) if n == 0 else ((1.0,), (1.0, -1.0)))


def test_denominator_degree_zero_is_the_taylor_polynomial():
    p, q = pade_coefficients(5, 0)
    assert p == (1.0,) * 6 and q == (1.0,)


def test_coefficients_match_series_to_order_m_plus_n():
    """Padé defect Q·f - P = O(x^{M+N+1}), checked in exact arithmetic on the reduced form."""
    for m, n in [(50, 50), (3, 2)]:
        p, q = pade_coefficients(m, n)
        c = [1] * (m + n + 1)
        prod = [sum(q[j] * c[k - j] for j in range(len(q)) if 0 <= k - j) for k in range(m + n + 1)]
        defect = [prod[k] - (p[k] if k < len(p) else 0.0) for k in range(m + n + 1)]
        assert all(d == 0 for d in defect)


def test_coefficients_are_cached():
    pade_coefficients.cache_clear()
    svdgrad.Pade().coefficients
    svdgrad.Pade().coefficients
    info = pade_coefficients.cache_info()
    assert info.misses == 1 and info.hits == 1


@given(st.floats(0.0, 0.999))
def test_pade_K_equals_ordinary_K_below_ratio_0999(x):
    """The degeneracy, entrywise: P/Q ≡ 1/(1-x), so K_pade = K_ordinary to round-off."""
    L = torch.tensor([max(x, 1e-300), 1.0], dtype=torch.float64)
    Kp = svdgrad.Pade().K(L)
    Ko = _kernels.ordinary_K(L)
    assert torch.allclose(Kp, Ko, rtol=1e-12, atol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_pole_at_exact_ties_is_finite_and_bounded(dtype):
    L = torch.tensor([0.5, 2.0, 2.0, 2.0], dtype=dtype)
    eps = torch.finfo(dtype).eps
    K = svdgrad.Pade().K(L)
    assert bool(torch.isfinite(K).all())
    assert float(K.abs().max()) <= 1.0 / (eps * 2.0) * (1 + 1e-6)
    K_gap = svdgrad.Pade(pole_gap=1e-3).K(L.double())
    assert float(K_gap.abs().max()) == pytest.approx(1.0 / (1e-3 * 2.0))
    # antisymmetric, zero diagonal
    assert torch.equal(K, -K.mT)


def test_pade_gradient_finite_on_repeated_spectrum_where_ordinary_is_not():
    A = torch.diag(torch.tensor([1.0, 2.0, 2.0, 3.0], dtype=torch.float64)).requires_grad_(True)
    G = T.gradients(A.shape, seed=1)
    (g,) = torch.autograd.grad(svdgrad.sqrtm(A, "pade"), A, G)
    assert bool(torch.isfinite(g).all())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@given(base=st.floats(1e-3, 1e3), ulps=st.lists(st.integers(0, 64), min_size=2, max_size=6), gap_ulps=st.integers(1, 8))
def test_pade_K_is_ordinary_K_bit_for_bit_outside_the_pole_gap(dtype, base, ulps, gap_ulps):
    """K_pade = K_ordinary exactly (same bits) for every pair at least pole_gap·λmax apart, however close.

    The degenerate [M/N] Padé is 1/(1 − x): written as 1/max(λi − λj, gap·λmax) it needs no rounded ratio
    x = λmin/λmax, whose 1 − x loses digits at near ties (it was 42% off ordinary's K at 1 − x of a few
    ulps, where the runs of ``svd-pade`` and ``svd-ordinary`` parted without a skipped step).  Inside the gap
    the entry is sign/(gap·λmax).
    """
    eps = torch.finfo(dtype).eps
    L = torch.tensor(base, dtype=dtype) + torch.tensor(sorted(ulps), dtype=dtype) * (eps * base)
    L = torch.cat([L, torch.tensor([2.5 * base], dtype=dtype)])  # and one eigenvalue well apart
    gap = gap_ulps * eps
    Kp = svdgrad.Pade(pole_gap=gap).K(L)
    Ko = _kernels.ordinary_K(L)
    diff = L[:, None] - L[None, :]
    lmax = torch.maximum(L[:, None], L[None, :])
    outside = diff.abs() >= gap * lmax
    outside.fill_diagonal_(False)
    assert torch.equal(Kp[outside], Ko[outside])
    inside = ~outside
    inside.fill_diagonal_(False)
    sign = torch.sign(torch.arange(len(L))[:, None] - torch.arange(len(L))[None, :]).to(dtype)
    assert torch.equal(Kp[inside], (sign / (gap * lmax))[inside])
    assert bool((Kp.diagonal() == 0).all())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@given(data=T.spd_matrices(n=(2, 12), log10_kappa=(0.0, 12.0), spectra=("logspaced", "clustered")))
def test_pade_gradient_is_ordinary_gradient_bit_for_bit_where_no_pair_is_inside_the_gap(dtype, data):
    """Through the public API: with every computed eigenvalue pair at least eps·λmax apart, `pade` and `ordinary`
    return the same gradient, bit for bit (the K-rules share everything but K).  ``clustered`` puts pairs 1e-9
    apart: near ties inside float64's range of distinct eigenvalues and at or inside float32's gap."""
    A, info = data
    A = A.to(dtype)
    L = torch.linalg.eigvalsh(svdgrad.testing.sym_part(A))  # (only to decide whether the case applies)
    eps = torch.finfo(dtype).eps
    gaps = L[1:] - L[:-1]
    floor = eps * float(L[-1])
    if float(L[0]) <= floor or float(gaps.min()) < 2 * eps * float(L[-1]):
        return  # a pair (or the floor) inside the gap: there the two differ by design
    G = T.gradients(A.shape, seed=info["seed"] % 1000, dtype=dtype)
    grads = {}
    for m in ("pade", "ordinary"):
        X = A.clone().requires_grad_(True)
        (grads[m],) = torch.autograd.grad(svdgrad.sqrtm(X, m), X, G)
    assert torch.equal(grads["pade"], grads["ordinary"])
