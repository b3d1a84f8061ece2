"""Accuracy of each method against the mpmath reference, finite differences and each other.

Bounds (see helpers.py): accurate eigen methods within C·(κ + n)·eps of the
50-digit reference; finite differences within 1e3·eps^(2/3)·κ.
"""

import math

import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st

import svdgrad
from svdgrad import _kernels
from svdgrad import testing as T

from .helpers import EPS, accurate_tol, fd_tol, finite, grad_of


def _ref(A, G):
    return T.reference_sqrtm_grad(A, G, dps=40)


# ---------------------------------------------------------------------------
# exact
# ---------------------------------------------------------------------------

@given(T.spd_matrices(n=(1, 12), log10_kappa=(0, 12), spectra=("logspaced", "clustered", "repeated")))
def test_exact_matches_mpmath_within_kappa_eps(case):
    A, info = case
    G = T.gradients(A.shape, seed=info["seed"] % 997)
    Z, gA = grad_of(A, G, "exact")
    Zr, gr = _ref(A, G)
    # The matrix's own κ, not the drawn one: at n = 1, and at n = 2 on the clustered and repeated spectra (one
    # pair), spd returns κ ≈ 1 whatever was drawn, and the drawn κ (up to 1e12) made the bound 2e-3 (session 22).
    kappa = float(T.condition_number(A)) if info["n"] > 1 else 1.0
    assert T.rel_error(Z, Zr) <= accurate_tol(torch.float64, math.sqrt(kappa), info["n"]), info
    assert T.rel_error(gA, gr) <= accurate_tol(torch.float64, kappa, info["n"]), info


def test_exact_matches_mpmath_at_n32_kappa_1e12():
    A = T.spd(32, 1e12, seed=3)
    G = T.gradients(A.shape, seed=4)
    _, gA = grad_of(A, G, "exact")
    _, gr = _ref(A, G)
    assert T.rel_error(gA, gr) <= accurate_tol(torch.float64, 1e12, 32)


@given(T.spd_matrices(n=(2, 10), log10_kappa=(0, 4)))
def test_exact_agrees_with_finite_differences(case):
    A, info = case
    if info["spectrum"] == "rank_deficient":
        A = A + 1e-2 * torch.eye(info["n"], dtype=A.dtype)  # FD needs a PD matrix
    kappa = float(T.condition_number(A))
    err = T.vjp_fd_error(lambda X: svdgrad.sqrtm(X, "exact"), A, seed=info["seed"] % 1000)
    assert err <= fd_tol(torch.float64, kappa), (info, err)


def test_exact_is_accurate_on_repeated_spectrum_n32():
    A = T.spd(32, 1e4, "repeated", seed=5)
    G = T.gradients(A.shape, seed=6)
    _, gA = grad_of(A, G, "exact")
    _, gr = _ref(A, G)
    assert T.rel_error(gA, gr) <= accurate_tol(torch.float64, 1e4, 32)


# ---------------------------------------------------------------------------
# ordinary and its remedies
# ---------------------------------------------------------------------------

@given(T.spd_matrices(n=(2, 12), log10_kappa=(1, 12), spectra=("logspaced",)))
def test_ordinary_matches_mpmath_when_gaps_are_large(case):
    A, info = case
    lam = T.eigenvalues(info["n"], info["kappa"], "logspaced")
    # every adjacent ratio is kappa^(1/(n-1)) >= 10^(1/11); gap/λ >= 0.2
    assert (lam[1:] / lam[:-1]).min() >= 1.2
    G = T.gradients(A.shape, seed=info["seed"] % 991)
    _, gA = grad_of(A, G, "ordinary")
    _, gr = _ref(A, G)
    assert T.rel_error(gA, gr) <= accurate_tol(torch.float64, info["kappa"], info["n"]), info


def _pairwise_ratio_max(A):
    L = torch.linalg.eigvalsh(A)
    x = (L[:-1] / L[1:]).max()
    return float(x)


@given(T.spd_matrices(n=(2, 32), log10_kappa=(0, 12), spectra=("logspaced",)))
def test_pade_equals_ordinary_when_ratios_below_0999(case):
    """The degeneracy: the [50/50] Padé of 1/(1-x) IS 1/(1-x) (see test_pade.py)."""
    A, info = case
    if info["n"] > 1 and _pairwise_ratio_max(A) > 0.999:
        A = T.spd(info["n"], max(info["kappa"], 10.0 ** (0.01 * (info["n"] - 1) + 0.1)), seed=info["seed"])
    if info["n"] > 1:
        assert _pairwise_ratio_max(A) <= 0.999
    G = T.gradients(A.shape, seed=info["seed"] % 983)
    _, g_ord = grad_of(A, G, "ordinary")
    _, g_pade = grad_of(A, G, "pade")
    assert T.rel_error(g_pade, g_ord) <= 1e-10, info


@given(T.spd_matrices(n=(2, 16), log10_kappa=(0, 12), spectra=("logspaced", "clustered", "repeated")),
       st.sampled_from([0, 1, 9, 100]))
def test_taylor_K_within_truncation_bound(case, degree):
    """1/(1-x) - Σ_{k<=d} x^k = x^{d+1}/(1-x): |K_taylor - K_ordinary| = x^{d+1}·|K_ordinary| entrywise."""
    A, info = case
    L = torch.linalg.eigvalsh(A).clamp_min(EPS[torch.float64] * float(torch.linalg.eigvalsh(A)[-1]))
    K_t = svdgrad.Taylor(degree=degree).K(L)
    K_o = _kernels.ordinary_K(L)
    x = (torch.minimum(L[:, None], L[None, :]) / torch.maximum(L[:, None], L[None, :]))
    off = ~torch.eye(len(L), dtype=torch.bool)
    ok = off & torch.isfinite(K_o) & (x < 1 - 1e-6)
    bound = x.pow(degree + 1) * K_o.abs()
    slack = 1e-12 * K_o.abs() * (degree + 1)
    assert bool(((K_t - K_o).abs() <= bound + slack)[ok].all()), info
    # ties and near-ties: the series is finite, ≤ (d+1)/λmax
    assert finite(K_t)
    inv_lmax = 1 / torch.maximum(L[:, None], L[None, :])
    assert bool((K_t.abs() <= (degree + 1) * inv_lmax * (1 + 1e-12)).all())


def test_taylor_converges_to_ordinary_as_degree_grows():
    A = T.spd(16, 1e3, seed=7)
    G = T.gradients(A.shape, seed=8)
    _, g_ord = grad_of(A, G, "ordinary")
    errs = [T.rel_error(grad_of(A, G, "taylor", degree=d)[1], g_ord) for d in (1, 10, 100, 1000, 10000)]
    assert all(b < a for a, b in zip(errs, errs[1:]) if a > 1e-13), errs
    assert errs[-1] <= 1e-12


def test_truncated_identical_to_ordinary_below_threshold():
    A = T.spd(16, 1e6, seed=9)
    L = torch.linalg.eigvalsh(A)
    kmax = float(_kernels.ordinary_K(L).abs().max())
    G = T.gradients(A.shape, seed=10)
    _, g_ord = grad_of(A, G, "ordinary")
    _, g_tr = grad_of(A, G, "truncated", threshold=2 * kmax)
    assert torch.equal(g_tr, g_ord)
    # And it does bite once the threshold is below max|K|.
    _, g_cut = grad_of(A, G, "truncated", threshold=kmax / 10)
    assert not torch.equal(g_cut, g_ord)


@given(T.spd_matrices(n=(2, 16), log10_kappa=(0, 12), spectra=("logspaced",)))
def test_truncated_equals_ordinary_property(case):
    A, info = case
    L = torch.linalg.eigvalsh(A)
    L = L.clamp_min(EPS[torch.float64] * L[-1])
    kmax = float(_kernels.ordinary_K(L).abs().max())
    G = T.gradients(A.shape, seed=info["seed"] % 977)
    if kmax < 1e10:
        assert torch.equal(grad_of(A, G, "truncated")[1], grad_of(A, G, "ordinary")[1])


# ---------------------------------------------------------------------------
# Newton–Schulz
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("normalization", ["trace", "frobenius"])
@given(T.spd_matrices(n=(1, 32), log10_kappa=(0, 2), spectra=("logspaced", "clustered", "repeated")))
def test_newton_schulz_converges_to_exact(normalization, case):
    """Stated bound: 30 iterations at κ <= 1e2, n <= 32 give <= 1e-8 relative error, forward and gradient."""
    A, info = case
    G = T.gradients(A.shape, seed=info["seed"] % 971)
    Ze, ge = grad_of(A, G, "exact")
    Z, g = grad_of(A, G, "newton_schulz", iterations=30, normalization=normalization)
    assert T.rel_error(Z, Ze) <= 1e-8 and T.rel_error(g, ge) <= 1e-8, info


@pytest.mark.parametrize("normalization", ["trace", "frobenius"])
def test_newton_schulz_error_decreases_with_iterations(normalization):
    A = T.spd(32, 1e2, seed=11)
    G = T.gradients(A.shape, seed=12)
    Ze, ge = grad_of(A, G, "exact")
    errs = []
    for it in (1, 3, 5, 10, 20):
        Z, g = grad_of(A, G, "newton_schulz", iterations=it, normalization=normalization)
        errs.append((T.rel_error(Z, Ze), T.rel_error(g, ge)))
    for (fa, ga), (fb, gb) in zip(errs, errs[1:]):
        assert fb < fa and gb < ga, errs


def test_frobenius_normalization_has_smaller_forward_error_at_5_iterations():
    A = T.spd(64, 1e2, seed=13)
    Ze = svdgrad.sqrtm(A, "exact")
    e_tr = T.rel_error(svdgrad.sqrtm(A, "newton_schulz"), Ze)
    e_fr = T.rel_error(svdgrad.sqrtm(A, "newton_schulz", normalization="frobenius"), Ze)
    assert e_fr < e_tr


# ---------------------------------------------------------------------------
# float32
# ---------------------------------------------------------------------------

METHODS = svdgrad.methods()


@pytest.mark.parametrize("method", METHODS)
@given(T.spd_matrices(n=(2, 16), log10_kappa=(0, 5), spectra=("logspaced",)))
def test_float32_error_within_kappa_scaled_bound(method, case):
    """float32 against the method's own float64 result: the precision effect alone, C·(κ + n)·eps32.

    κ up to 1e5, where the bound is at most 0.12: from κ ≈ 8e5 it exceeds 1, and a zero gradient (error 1)
    passed (review, session 22)."""
    A64, info = case
    if method not in ("exact", "newton_schulz"):
        # κ = 1 means (near-)ties.  There the K-rules and topn are not functions of A: the
        # result depends on the arbitrary eigenbasis eigh returns (ordinary: NaN), so float32
        # and float64 legitimately differ by O(1).  Their float32 bound is for distinct spectra.
        assume(info["kappa"] >= 10)
    G = T.gradients(A64.shape, seed=info["seed"] % 967)
    Z64, g64 = grad_of(A64, G, method)
    Z32, g32 = grad_of(A64.float(), G.float(), method)
    kappa = info["kappa"]
    assert T.rel_error(Z32, Z64) <= accurate_tol(torch.float32, math.sqrt(kappa), info["n"]), info
    # The gradient's sensitivity is the eigen backward's: κ·eps.
    assert T.rel_error(g32, g64) <= accurate_tol(torch.float32, kappa, info["n"]), info


@pytest.mark.parametrize("method", ["exact", "ordinary", "truncated", "taylor", "pade"])
@given(T.spd_matrices(n=(2, 12), log10_kappa=(0, 6), spectra=("logspaced",)))
def test_compute_dtype_float64_brings_float32_to_roundoff(method, case):
    """With compute_dtype=float64 the only float32 error left is the final cast: C·n·eps32, no κ."""
    A64, info = case
    assume(info["kappa"] >= 10)  # distinct eigenvalues; see test_float32_error_within_kappa_scaled_bound
    A32 = A64.float()
    G = T.gradients(A64.shape, seed=info["seed"] % 961).float()
    _, gr = _ref(A32.double(), G.double())  # reference at the float32 input itself
    _, g = grad_of(A32, G, method, compute_dtype=torch.float64)
    assert g.dtype == torch.float32
    bound = accurate_tol(torch.float32, 1.0, info["n"]) + accurate_tol(torch.float64, info["kappa"], info["n"])
    assert T.rel_error(g, gr) <= bound, info


@given(T.spd_matrices(n=(1, 16), log10_kappa=(0, 8), spectra=("logspaced", "clustered", "repeated")))
def test_exact_gradient_solves_the_lyapunov_equation(case):
    """Higham 2008, Thm 3.11 / Lyapunov form: the Daleckii–Krein gradient X is the solution of Z X + X Z = sym(G)."""
    A, info = case
    G = T.gradients(A.shape, seed=info["seed"] % 953)
    Z, X = grad_of(A, G, "exact")
    residual = Z @ X + X @ Z - T.sym_part(G)
    kappa = info["kappa"]
    assert T.rel_error(residual + T.sym_part(G), T.sym_part(G)) <= accurate_tol(torch.float64, math.sqrt(kappa), info["n"]), info
