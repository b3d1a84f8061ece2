"""Issue 9: the function × method matrix (sqrt, inverse sqrt, log, power), each cell verified.

Parametrized over ``svdgrad.functions()`` × ``svdgrad.methods(function)``: a new
method is covered automatically; a new function fails
``test_every_function_has_a_test_entry`` until it gets its row in the tables
below (how to call it, its scaling law, its condition numbers).

Bounds (tests/helpers.py): an accurate eigen method is within C·(κ_f + n)·eps
of the 50-digit mpmath reference, where κ_f is the condition number of the
quantity compared, derived per function below (``kappa_forward``,
``kappa_grad``); finite differences within ``fd_tol``.  The constants C come
from helpers.py and are never widened to pass.
"""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import svdgrad
from svdgrad import testing as T

from .helpers import C_ACCURATE, EPS, accurate_tol, fd_tol, finite

FUNCTIONS = svdgrad.functions()
PAIRS = [(f, m) for f in FUNCTIONS for m in svdgrad.methods(f)]
EIGEN = tuple(m for m in svdgrad.methods() if svdgrad.get_method(m).has_eigenvalues)
EIGEN_PAIRS = [(f, m) for f, m in PAIRS if m in EIGEN]
#: Methods that must stay finite on every PSD input (``ordinary`` divides by λi − λj).
STABLE_PAIRS = [(f, m) for f, m in PAIRS if m != "ordinary"]
#: Methods that compute f(A) to working precision (topn and newton_schulz compute other functions by design).
ACCURATE_METHODS = ("exact", "ordinary", "truncated", "taylor", "pade")


def _backward_is_derivative(method) -> bool:
    """The method's own declaration; False for backward rules that are by design the derivative of
    something else (e.g. a Lyapunov backward: the exact root's gradient at the computed value)."""
    return getattr(svdgrad.get_method(method), "backward_is_derivative", True)


#: Pairs whose backward is the derivative of their forward: finite differences and gradcheck apply.
DERIVATIVE_PAIRS = [(f, m) for f, m in PAIRS if _backward_is_derivative(m)]

#: Failures of the core reported to the core developer (test name -> {(function, method): reason}).
#: Each is a strict xfail: it must be removed when the core is fixed.
_PI_FORWARD = ("core: power_iteration's forward is not eigh's to rounding: inv_sqrtm(A)·sqrtm(A) departs from I "
               "by 3e-9 (float64, κ = 1e6, n = 10; bound 2e-12) and 1e-4 (float32, κ = 1e3; bound 5e-5)")
_PI_LOG_SCALE = ("core: power_iteration's logm gradient is not scale-equivariant: c·gA(cA) differs from gA(A) "
                 "by 1e-7 to 6e-7 relative for c = 1e-7, 7.3, 3e5 (float64, n = 6, κ = 1e3; bound 9e-12); "
                 "sqrt/inv_sqrt/power are")
CORE_BUGS = {
    "inv_times_sqrt": {("inv_sqrt", "power_iteration"): _PI_FORWARD},
    "scaling": {("log", "power_iteration"): _PI_LOG_SCALE},
    "log_scales": {("log", "power_iteration", torch.float64): _PI_LOG_SCALE},
}


def pairs_for(test, pairs):
    """``pairs`` as pytest params, with the reported core bugs of ``test`` marked xfail(strict)."""
    bugs = CORE_BUGS.get(test, {})
    return [pytest.param(f, m, marks=pytest.mark.xfail(strict=True, reason=bugs[f, m])) if (f, m) in bugs
            else (f, m) for f, m in pairs]


def methods_for(test, function, methods):
    """``methods`` of one function as pytest params, reported core bugs marked as in ``pairs_for``."""
    bugs = CORE_BUGS.get(test, {})
    return [pytest.param(m, marks=pytest.mark.xfail(strict=True, reason=bugs[function, m]))
            if (function, m) in bugs else m for m in methods]


def method_dtypes_for(test, function, methods, dtypes):
    """(method, dtype) params; a bug keyed (function, method) or (function, method, dtype) is marked."""
    bugs = CORE_BUGS.get(test, {})
    out = []
    for m in methods:
        for dt in dtypes:
            reason = bugs.get((function, m), bugs.get((function, m, dt)))
            marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
            out.append(pytest.param(m, dt, marks=marks, id=f"{m}-{str(dt).split('.')[-1]}"))
    return out

#: The power used where one p stands for all: negative and not ±½, so it is neither sqrt nor inv_sqrt.
P = -1.3
#: Powers hypothesis draws from: both signs, fractional, integer, > 2 (f'' changes monotonicity at 1 and 2).
POWERS = (-1.5, -0.5, 0.3, 0.5, 1.0, 1.5, 2.5)


def call(function, A, method="exact", p=P, **options):
    """The public entry point of ``function`` (p is used by the power only)."""
    if function == "power":
        return svdgrad.powm(A, p, method, **options)
    return CALLS[function](A, method, **options)


CALLS = {"sqrt": svdgrad.sqrtm, "inv_sqrt": svdgrad.inv_sqrtm, "log": svdgrad.logm, "power": None}

#: f(c·A) from f(A): (F, c, p, n) -> F(cA).  Exact laws of the principal functions.
SCALING = {
    "sqrt": lambda F, c, p: math.sqrt(c) * F,
    "inv_sqrt": lambda F, c, p: F / math.sqrt(c),
    "log": lambda F, c, p: F + math.log(c) * torch.eye(F.shape[-1], dtype=F.dtype),
    "power": lambda F, c, p: c ** p * F,
}
#: The gradient's law: gA(cA) = GRAD_SCALING·gA(A), the derivative's degree p − 1 (log: −1).
GRAD_SCALING = {
    "sqrt": lambda c, p: c ** -0.5,
    "inv_sqrt": lambda c, p: c ** -1.5,
    "log": lambda c, p: 1 / c,
    "power": lambda c, p: c ** (p - 1),
}
#: The same functions as exponents, for the mpmath reference ("power" with p).
EXPONENT = {"sqrt": 0.5, "inv_sqrt": -0.5}


def kappa_forward(function, kappa, p=P):
    """The κ of the forward bound, C·(κ_f + n)·eps relative.

    The eigensolver returns the exact f of A + E with ‖E‖ ≲ eps·λmax, so the
    error is ‖Df(A)‖·eps·λmax with ‖Df(A)‖ = max |f[λi, λj]| (Daleckii–Krein;
    f′ is monotone for all four, so the maximum is f′ at an end of the
    spectrum), relative to ‖f(A)‖ >= max |f(λ)|.  Scaled so that sqrt gets
    test_accuracy's √κ (the exact ratio is √κ/2, hence the factor 2 below):
      sqrt      λmax·f′(λmin)/f(λmax)   = √κ/2          -> √κ
      inv_sqrt  λmax·|f′(λmin)|/f(λmin) = κ/2           -> κ
      log       absolute error λmax/λmin = κ            -> 2κ, relative to max(‖log A‖, 1)
                (log A = 0 at A = I; log is additive under scaling, so the absolute error is the scale-free one)
      power     p < 0: |p|·κ;  0 <= p < 1: p·κ^(1−p);  p >= 1: p  -> 2|p|·κ^clip(1−p, 0, 1)
    (p = ±½ gives sqrt's and inv_sqrt's rows back.)
    """
    if function == "sqrt":
        return math.sqrt(kappa)
    if function == "inv_sqrt":
        return kappa
    if function == "log":
        return 2 * kappa
    return 2 * abs(p) * kappa ** min(max(1 - p, 0.0), 1.0)


def kappa_grad(function, kappa, p=P):
    """The κ of the gradient bound, C·(κ_g + n)·eps relative to the reference gradient's norm.

    The gradient U[(UᵀGU) ∘ D]Uᵀ is a smooth function of A; E ~ eps·λmax moves
    D by about max|f″|·eps·λmax (second divided differences), relative to
    max|D| = max|f′|.  For sqrt that ratio is λmax·|f″/f′|(λmin) = κ/2, which
    test_accuracy measured as C·(κ + n)·eps; scaled alike (factor 2):
      sqrt      κ/2    -> κ
      inv_sqrt  3κ/2   -> 3κ      (f′ ~ λ^(−3/2), so the gradient itself grows like λmin^(−3/2):
                                   the bound is relative to the reference's norm)
      log       κ      -> 2κ
      power     |p − 1|·κ^e with e = 1 for p < 1 (both f′ and f″ peak at λmin),
                e = 2 − p for 1 <= p < 2 (f′ peaks at λmax, f″ at λmin), e = 0 for p >= 2
                -> 2|p − 1|·κ^clip(2 − p, 0, 1)
    """
    if function == "sqrt":
        return kappa
    if function == "inv_sqrt":
        return 3 * kappa
    if function == "log":
        return 2 * kappa
    return 2 * abs(p - 1) * kappa ** min(max(2 - p, 0.0), 1.0)


def forward_error(function, F, Fr) -> float:
    """Relative error, except log: ‖F − Fr‖ / max(‖Fr‖, 1) (see kappa_forward)."""
    if function != "log":
        return T.rel_error(F, Fr)
    if not finite(F):
        return math.inf
    return float(torch.linalg.vector_norm((F - Fr).double())) / max(float(torch.linalg.vector_norm(Fr.double())), 1.0)


def fgrad(function, A, G, method="exact", p=P, **options):
    """(F, sym part of dL/dA) for L = ⟨G, f(A)⟩."""
    A1 = A.detach().clone().requires_grad_(True)
    F = call(function, A1, method, p, **options)
    (gA,) = torch.autograd.grad(F, A1, G.to(F.dtype))
    return F.detach(), T.sym_part(gA)


def reference(function, A, G, p=P):
    return T.reference_function_grad(A, G, function, p=p if function == "power" else None)


def kappa_of(A, info) -> float:
    """The κ the bound uses: the float64 matrix's own.  (The larger of it and the drawn one made the bound 2e-3 at
    n = 2 on the clustered and repeated spectra, where spd returns κ ≈ 1 whatever was drawn: session 22.)"""
    if A.shape[-1] == 1:
        return 1.0
    return float(T.condition_number(A))


def test_every_function_has_a_test_entry():
    """A new function must get its row here (entry point, scaling law, condition numbers, mpmath form)."""
    assert set(FUNCTIONS) == set(CALLS) == set(SCALING) == set(GRAD_SCALING)
    assert set(FUNCTIONS) <= set(T._MP_FUNCTIONS)


def test_method_table():
    """Every eigen method computes every function; newton_schulz only the two roots."""
    assert {"exact", "ordinary", "truncated", "topn", "taylor", "pade"} <= set(EIGEN)
    for f in FUNCTIONS:
        assert set(EIGEN) <= set(svdgrad.methods(f)), f
        assert ("newton_schulz" in svdgrad.methods(f)) == (f in ("sqrt", "inv_sqrt")), f
    with pytest.raises(svdgrad.SvdgradError, match="sqrt"):
        svdgrad.methods("exp")


# ---------------------------------------------------------------------------
# The reference itself
# ---------------------------------------------------------------------------

def test_reference_matches_closed_forms_on_a_diagonal_matrix():
    lam = torch.tensor([0.25, 4.0], dtype=torch.float64)
    A = torch.diag(lam)
    G = torch.tensor([[1.0, 2.0], [0.0, 1.0]], dtype=torch.float64)
    Gs = T.sym_part(G)
    for function, f, dd in [
        ("sqrt", lambda x: x.sqrt(), 1 / (0.5 + 2.0)),
        ("inv_sqrt", lambda x: x.rsqrt(), (0.5 - 2.0) / (4.0 - 0.25)),
        ("log", lambda x: x.log(), (math.log(4.0) - math.log(0.25)) / 3.75),
    ]:
        F, g, gp = T.reference_function_grad(A, G, function)
        assert gp is None
        assert torch.allclose(F, torch.diag(f(lam)), rtol=1e-15, atol=0)
        fp = {"sqrt": 0.5 / lam.sqrt(), "inv_sqrt": -0.5 / lam ** 1.5, "log": 1 / lam}[function]
        D = torch.tensor([[fp[0], dd], [dd, fp[1]]], dtype=torch.float64)
        assert torch.allclose(g, Gs * D, rtol=1e-14, atol=0), function
    F, g, gp = T.reference_function_grad(A, G, "power", p=3.0)
    assert torch.allclose(F, torch.diag(lam ** 3), rtol=1e-15)
    assert float(gp) == pytest.approx(1 * 0.25 ** 3 * math.log(0.25) + 1 * 64 * math.log(4.0), rel=1e-14)
    _, g, _ = T.reference_function_grad(torch.eye(2, dtype=torch.float64), G, "log")  # exact tie: f′
    assert torch.allclose(g, Gs, rtol=1e-15)


def test_reference_refuses_bad_arguments():
    A = torch.diag(torch.tensor([0.0, 1.0], dtype=torch.float64))
    G = torch.eye(2, dtype=torch.float64)
    with pytest.raises(svdgrad.SvdgradError, match="infinite"):
        T.reference_function_grad(A, G, "log")
    assert finite(T.reference_function_grad(A, G, "log", floor=1e-16)[1])
    with pytest.raises(svdgrad.SvdgradError, match="p is needed"):
        T.reference_function_grad(G, G, "power")
    with pytest.raises(svdgrad.SvdgradError, match="expected one of"):
        T.reference_function_grad(G, G, "exp")


def test_jvp_check_detects_a_wrong_tangent():
    A = T.spd(5, 10.0, seed=2)
    good = T.jvp_fd_error(lambda X: svdgrad.sqrtm(X, "exact"), A)
    wrong = T.jvp_fd_error(lambda X: 1.01 * svdgrad.sqrtm(X, "exact") - 0.01 * svdgrad.sqrtm(X, "exact").detach(), A)
    assert good <= fd_tol(torch.float64, 10.0) and wrong > 1e-3


# ---------------------------------------------------------------------------
# exact against the 50-digit reference
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("function", FUNCTIONS)
@settings(max_examples=30)
@given(case=T.spd_matrices(n=(1, 10), log10_kappa=(0, 12), spectra=("logspaced", "clustered", "repeated")),
       p=st.sampled_from(POWERS))
def test_exact_matches_mpmath(function, case, p):
    A, info = case
    G = T.gradients(A.shape, seed=info["seed"] % 997)
    F, gA = fgrad(function, A, G, "exact", p)
    Fr, gr, _ = reference(function, A, G, p)
    kappa, n = kappa_of(A, info), info["n"]
    assert forward_error(function, F, Fr) <= accurate_tol(torch.float64, kappa_forward(function, kappa, p), n), info
    assert T.rel_error(gA, gr) <= accurate_tol(torch.float64, kappa_grad(function, kappa, p), n), info


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@settings(max_examples=40)
@given(log_l=st.lists(st.floats(-30.0, 4.0), min_size=1, max_size=12), repeat=st.integers(0, 3),
       p=st.sampled_from(POWERS + (-7.0, 7.0, 0.0)), sort=st.booleans())
def test_power_loewner_is_dd_on_every_pair(dtype, log_l, repeat, p, sort):
    """Power.loewner takes the powers once per eigenvalue and picks lo^p and hi^p per pair: dd on the broadcast
    pairs (ties, repeated values and any order of L included) within 4 eps per entry.  Not the same bits:
    torch's pow differs by an ulp between its vectorized and scalar paths (float32 0.25^0.3, the tail of a
    length-4 vector against a 4 × 4 matrix).  One ulp in lo^p, hi^p or p·lo^(p−1) is one in the expm1 form
    and the tie, and at most e/(e − 1)·2 ulps in hi^p − lo^p, where (hi/lo)^p >= e."""
    from svdgrad._spectral import Power

    L = torch.tensor(log_l, dtype=torch.float64).exp2().to(dtype)
    L = torch.cat([L, L[:repeat]])  # exact ties
    L = torch.sort(L).values if sort else L
    fn = Power()
    D = fn.loewner(L[None], p)
    ref = fn.dd(L[None, :, None], L[None, None, :], p)
    # (the same inf or NaN where dd itself leaves the range, (2^-30)^-7 in float32: spectral_shift keeps the
    # methods' eigenvalues away from there)
    assert bool(torch.isclose(D, ref, rtol=4 * torch.finfo(dtype).eps, atol=0.0, equal_nan=True).all()), (D, ref)


@pytest.mark.parametrize("function", FUNCTIONS)
@pytest.mark.parametrize("spectrum", ["logspaced", "repeated"])
def test_exact_matches_mpmath_at_n12_kappa_1e12(function, spectrum):
    A = T.spd(12, 1e12, spectrum, seed=3)
    G = T.gradients(A.shape, seed=4)
    F, gA = fgrad(function, A, G)
    Fr, gr, _ = reference(function, A, G)
    kappa = max(float(T.condition_number(A)), 1e12)
    assert forward_error(function, F, Fr) <= accurate_tol(torch.float64, kappa_forward(function, kappa), 12)
    assert T.rel_error(gA, gr) <= accurate_tol(torch.float64, kappa_grad(function, kappa), 12)


@pytest.mark.parametrize("function", FUNCTIONS)
@pytest.mark.parametrize("scale", [2.0 ** -60, 1e-7, 3e5])
def test_exact_matches_mpmath_at_other_scales(function, scale):
    """The internal 4^-k scaling and its undoing (log: + k·log 4·I, power: ·4^(kp))."""
    A = T.spd(6, 1e4, seed=5) * scale
    G = T.gradients(A.shape, seed=6)
    F, gA = fgrad(function, A, G)
    Fr, gr, _ = reference(function, A, G)
    assert forward_error(function, F, Fr) <= accurate_tol(torch.float64, kappa_forward(function, 1e4), 6)
    assert T.rel_error(gA, gr) <= accurate_tol(torch.float64, kappa_grad(function, 1e4), 6)


@pytest.mark.parametrize("function", FUNCTIONS)
@settings(max_examples=15)
@given(case=T.spd_matrices(n=(2, 10), log10_kappa=(1, 12), spectra=("logspaced",)))
def test_ordinary_matches_mpmath_when_gaps_are_large(function, case):
    """Adjacent ratios >= 10^(1/9): (f(λi) − f(λj))/(λi − λj) loses at most a few digits."""
    A, info = case
    G = T.gradients(A.shape, seed=info["seed"] % 991)
    _, gA = fgrad(function, A, G, "ordinary")
    _, gr, _ = reference(function, A, G)
    assert T.rel_error(gA, gr) <= accurate_tol(torch.float64, kappa_grad(function, info["kappa"]), info["n"]), info


# ---------------------------------------------------------------------------
# Finite differences: VJP and JVP
# ---------------------------------------------------------------------------

def _pd(A, info):
    """Finite differences need a PD matrix: shift a rank-deficient one."""
    if info["spectrum"] == "rank_deficient":
        A = A + 1e-2 * torch.eye(info["n"], dtype=A.dtype)
    return A


@pytest.mark.parametrize("function", FUNCTIONS)
@settings(max_examples=20)
@given(case=T.spd_matrices(n=(2, 8), log10_kappa=(0, 4)), p=st.sampled_from(POWERS))
def test_exact_vjp_and_jvp_agree_with_finite_differences(function, case, p):
    A, info = case
    A = _pd(A, info)
    kappa = float(T.condition_number(A))
    f = lambda X: call(function, X, "exact", p)  # noqa: E731
    seed = info["seed"] % 1000
    assert T.vjp_fd_error(f, A, seed=seed) <= fd_tol(torch.float64, kappa), info
    assert T.jvp_fd_error(f, A, seed=seed) <= fd_tol(torch.float64, kappa), info


@pytest.mark.parametrize("function,method", pairs_for("fd", DERIVATIVE_PAIRS))
def test_every_pair_vjp_and_jvp_agree_with_finite_differences(function, method):
    """Each method's backward is the derivative of its own forward (NS: of the iteration; topn: of f(max(λ, λk)))
    at a moderate κ, where the K-rule approximations have converged (as test_contract's gradcheck)."""
    A = T.spd(5, 30.0, seed=11)
    f = lambda X: call(function, X, method)  # noqa: E731
    assert T.vjp_fd_error(f, A, seed=1) <= fd_tol(torch.float64, 30.0)
    assert T.jvp_fd_error(f, A, seed=1) <= fd_tol(torch.float64, 30.0)


#: Round-off bound of the adjoint identity: both sides are the same sums of n² products, each
#: with O(n·eps) relative error, against the Cauchy–Schwarz scale max(‖Jt‖‖c‖, ‖t‖‖Jᵀc‖).
def adjoint_tol(dtype, n):
    return accurate_tol(dtype, 1.0, n)


def adjoint_error(f, A, seed=0):
    """|⟨J t, c⟩ − ⟨t, Jᵀ c⟩| / max(‖J t‖‖c‖, ‖t‖‖Jᵀ c‖), random symmetric t, random c."""
    t = T.random_symmetric(A.shape, dtype=A.dtype, seed=seed)
    out, Jt = torch.func.jvp(f, (A,), (t,))
    c = T.gradients(out.shape, seed=seed + 1, dtype=out.dtype)
    _, vjp = torch.func.vjp(f, A)
    (JTc,) = vjp(c)
    lhs = float((Jt.double() * c.double()).sum())
    rhs = float((t.double() * JTc.double()).sum())
    scale = max(float(torch.linalg.vector_norm(Jt.double()) * torch.linalg.vector_norm(c.double())),
                float(torch.linalg.vector_norm(t.double()) * torch.linalg.vector_norm(JTc.double())), 1e-300)
    return abs(lhs - rhs) / scale


@pytest.mark.parametrize("function,method", pairs_for("adjoint", PAIRS))
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("spectrum,kappa", [("logspaced", 1e3), ("repeated", 1e2), ("clustered", 1e4)])
def test_jvp_is_the_adjoint_of_vjp(function, method, dtype, spectrum, kappa):
    """⟨jvp(t), c⟩ = ⟨t, vjp(c)⟩ to round-off: the two are the same linear map."""
    A = T.spd(6, kappa, spectrum, dtype=dtype, seed=12)
    err = adjoint_error(lambda X: call(function, X, method), A, seed=len(spectrum))
    assert err <= adjoint_tol(dtype, 6), err


@pytest.mark.parametrize("function,method", pairs_for("jacfwd_vmap", PAIRS))
def test_jacfwd_equals_jacrev_and_vmap(function, method):
    """torch.func.jacfwd (jvp), jacrev (vjp) and vmap all work and agree."""
    A = T.spd(3, 10.0, seed=13)
    f = lambda X: call(function, X, method)  # noqa: E731
    Jf = torch.func.jacfwd(f)(A)
    Jr = torch.func.jacrev(f)(A)
    assert Jf.shape == (3, 3, 3, 3) and finite(Jf)
    # jacrev returns the symmetrized gradient; compare on symmetric perturbations: J·sym
    Jf_s = 0.5 * (Jf + Jf.transpose(-1, -2))
    Jr_s = 0.5 * (Jr + Jr.transpose(-1, -2))
    assert T.rel_error(Jf_s, Jr_s) <= adjoint_tol(torch.float64, 3)
    B = T.spd(3, 10.0, batch=(4,), seed=14)
    Fv = torch.func.vmap(f)(B)
    assert T.rel_error(Fv, f(B)) <= adjoint_tol(torch.float64, 3)
    t = T.random_symmetric(B.shape, seed=15)
    _, Jt_v = torch.func.vmap(lambda X, dX: torch.func.jvp(f, (X,), (dX,)))(B, t)
    _, Jt = torch.func.jvp(f, (B,), (t,))
    assert T.rel_error(Jt_v, Jt) <= adjoint_tol(torch.float64, 3)


# ---------------------------------------------------------------------------
# Invariants
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("function,method", pairs_for("equivariance", PAIRS))
def test_orthogonal_equivariance_with_gradient(function, method):
    """f(QAQᵀ) = Q f(A) Qᵀ, and with cotangent QGQᵀ the gradient is Q gA Qᵀ."""
    n, kappa = 7, 1e2
    A = T.spd(n, kappa, seed=5)
    Q = torch.from_numpy(T.haar_orthogonal(n, rng=np.random.default_rng(9)))
    G = T.gradients(A.shape, seed=6)
    F, gA = fgrad(function, A, G, method)
    FQ, gAQ = fgrad(function, Q @ A @ Q.T, Q @ G @ Q.T, method)
    # Two computations, each within its bound of the truth (triangle inequality: factor 2).
    fwd = 2 * accurate_tol(torch.float64, kappa_forward(function, kappa), n)
    assert forward_error(function, FQ, Q @ F @ Q.T) <= fwd
    assert T.rel_error(gAQ, Q @ gA @ Q.T) <= 2 * accurate_tol(torch.float64, kappa_grad(function, kappa), n)


@pytest.mark.parametrize("function,method", pairs_for("scaling", PAIRS))
def test_scaling_law_with_gradient(function, method):
    """f(cA) by the function's law (sqrt: √c·F, log: F + log c·I, power: c^p·F), gA(cA) = c^(p−1)·gA(A)."""
    n, kappa = 6, 1e3
    A = T.spd(n, kappa, seed=7)
    G = T.gradients(A.shape, seed=8)
    F, gA = fgrad(function, A, G, method)
    for c in (2.0 ** -30, 1e-7, 7.3, 3e5):
        Fc, gAc = fgrad(function, c * A, G, method)
        assert forward_error(function, Fc, SCALING[function](F, c, P)) <= 2 * accurate_tol(
            torch.float64, kappa_forward(function, kappa), n), c
        assert T.rel_error(gAc, GRAD_SCALING[function](c, P) * gA) <= 2 * accurate_tol(
            torch.float64, kappa_grad(function, kappa), n), c


LOG_SCALES = {torch.float64: (1e-300, 1e-150, 1e-20, 1e20, 1e150, 1e300), torch.float32: (1e-30, 1e-10, 1e10, 1e30)}


@pytest.mark.parametrize("method,dtype", method_dtypes_for("log_scales", "log", svdgrad.methods("log"),
                                                            [torch.float64, torch.float32]))
def test_logm_of_scaled_matrix(method, dtype):
    """logm(cA) = logm(A) + log(c)·I over the whole float range, and c·gA(cA) = gA(A).

    Bound: c·A rounds each entry (eps relative, κ·eps absolute in log A), log c·I is
    rounded to eps·|log c|; relative to max(‖logm(cA)‖, 1) that is within C·(2κ + n)·eps.
    """
    n, kappa = 5, 1e3
    A = T.spd(n, kappa, seed=9, dtype=dtype)
    G = T.gradients(A.shape, seed=10, dtype=dtype)
    F, gA = fgrad("log", A, G, method)
    for c in LOG_SCALES[dtype]:
        Ac = (A.double() * c).to(dtype)
        assert finite(Ac) and bool((Ac != 0).all())
        Fc, gAc = fgrad("log", Ac, G, method)
        expect = F.double() + math.log(c) * torch.eye(n, dtype=torch.float64)
        assert forward_error("log", Fc, expect) <= 2 * accurate_tol(dtype, kappa_forward("log", kappa), n), c
        assert T.rel_error(gAc.double() * c, gA) <= 2 * accurate_tol(dtype, kappa_grad("log", kappa), n), c


@pytest.mark.parametrize("method", methods_for(
    "power_is_root", "power", [m for m in svdgrad.methods("power") if m in svdgrad.methods("sqrt")]))
@pytest.mark.parametrize("root", ["sqrt", "inv_sqrt"])
def test_power_of_one_half_is_the_root(method, root):
    n, kappa = 8, 1e4
    A = T.spd(n, kappa, seed=11)
    G = T.gradients(A.shape, seed=12)
    F, gA = fgrad(root, A, G, method)
    Fp, gAp = fgrad("power", A, G, method, p=EXPONENT[root])
    assert T.rel_error(Fp, F) <= 2 * accurate_tol(torch.float64, kappa_forward(root, kappa), n)
    assert T.rel_error(gAp, gA) <= 2 * accurate_tol(torch.float64, kappa_grad(root, kappa), n)


@pytest.mark.parametrize("method,dtype", method_dtypes_for(
    "inv_times_sqrt", "inv_sqrt", [m for m in svdgrad.methods("inv_sqrt") if m in svdgrad.methods("sqrt")],
    [torch.float64, torch.float32]))
def test_inv_sqrtm_times_sqrtm_is_identity(method, dtype):
    """Eigen methods (topn too: f and 1/f of the same raised spectrum) share U: the product is
    U Λ^(−½)(UᵀU)Λ^(½)Uᵀ, whose departure from I is UᵀU − I (~n·eps) weighted by up to √κ.
    Newton–Schulz: the stated bound of test_accuracy (30 iterations, κ <= 1e2: 1e-8, float64)."""
    n = 10
    if method == "newton_schulz":
        if dtype != torch.float64:
            pytest.skip("the NS convergence bound is stated for float64")
        A = T.spd(n, 1e2, seed=13)
        X = svdgrad.inv_sqrtm(A, method, iterations=30) @ svdgrad.sqrtm(A, method, iterations=30)
        assert T.rel_error(X, torch.eye(n, dtype=dtype)) <= 1e-8
        return
    kappa = 1e6 if dtype == torch.float64 else 1e3
    A = T.spd(n, kappa, seed=13, dtype=dtype)
    X = svdgrad.inv_sqrtm(A, method) @ svdgrad.sqrtm(A, method)
    assert T.rel_error(X, torch.eye(n, dtype=dtype)) <= accurate_tol(dtype, math.sqrt(kappa), n)


@pytest.mark.parametrize("normalization", ["trace", "frobenius"])
def test_newton_schulz_inv_sqrt_converges_to_exact(normalization):
    """The coupled iteration's Z_k -> A^(-1/2): at 30 iterations, κ <= 1e2, within the sqrt bound (1e-8)."""
    A = T.spd(12, 1e2, seed=14)
    G = T.gradients(A.shape, seed=15)
    Fe, ge = fgrad("inv_sqrt", A, G, "exact")
    F, g = fgrad("inv_sqrt", A, G, "newton_schulz", iterations=30, normalization=normalization)
    assert T.rel_error(F, Fe) <= 1e-8 and T.rel_error(g, ge) <= 1e-8


# ---------------------------------------------------------------------------
# The power's gradient with respect to p
# ---------------------------------------------------------------------------

def grad_p(A, G, p, method="exact", **options):
    """(F, gA sym, gp) for L = ⟨G, powm(A, p)⟩ with p a 0-dim tensor that requires grad."""
    A1 = A.detach().clone().requires_grad_(True)
    pt = torch.tensor(float(p), dtype=A.dtype, requires_grad=True)
    F = svdgrad.powm(A1, pt, method, **options)
    gA, gp = torch.autograd.grad(F, (A1, pt), G.to(F.dtype))
    return F.detach(), T.sym_part(gA), gp


def gp_scale(A, G, p):
    """S = Σ_i |(UᵀGU)_ii|·λi^p·(1 + |p·log λi|): the condition-free scale of gp.

    gp = Σ_i (UᵀGU)_ii·λi^p·log λi.

    gp can cancel to ~0, so its error is stated against S: a relative eigenvalue error of
    κ·eps (λmin's) moves λ^p·log λ by (|p·log λ| + 1)·λ^p·κ·eps.
    """
    L, U = torch.linalg.eigh(A.double())
    M = torch.diagonal(U.mT @ T.sym_part(G.double()) @ U)
    return float((M.abs() * L.pow(p) * (1 + (p * L.log()).abs())).sum())


@settings(max_examples=30)
@given(case=T.spd_matrices(n=(1, 10), log10_kappa=(0, 12), spectra=("logspaced", "clustered", "repeated")),
       p=st.sampled_from(POWERS), scale=st.sampled_from([1.0, 2.0 ** -20, 1e-5, 3e7]))
def test_power_gradient_in_p_matches_mpmath(case, p, scale):
    """gp against the reference at any scale (the undoing of 4^-k contributes k·log 4·⟨G, F⟩)."""
    A, info = case
    A = A * scale
    G = T.gradients(A.shape, seed=info["seed"] % 997)
    F, gA, gp = grad_p(A, G, p)
    Fr, gr, gpr = T.reference_function_grad(A, G, "power", p=p)
    kappa = kappa_of(A, info)
    assert abs(float(gp) - float(gpr)) <= accurate_tol(torch.float64, kappa, info["n"]) * gp_scale(A, G, p), info
    assert T.rel_error(gA, gr) <= accurate_tol(torch.float64, kappa_grad("power", kappa, p), info["n"]), info


@pytest.mark.parametrize("method", methods_for("p_fd", "power", svdgrad.methods("power")))
@pytest.mark.parametrize("p", [-1.5, 0.3, 2.5])
@pytest.mark.parametrize("kappa", [1e2, 1e8])
def test_power_gradient_in_p_agrees_with_finite_differences(method, p, kappa):
    """Central difference in p with h = eps^(1/3): truncation h²/6·Σ|M_ii|λ^p|log λ|³ and rounding
    eps·Σ|M_ii|λ^p/h, both eps^(2/3)·(1 + ln κ)²·S; the fd_tol constant 1e3 in front."""
    A = T.spd(6, kappa, seed=16) * 5.0
    G = T.gradients(A.shape, seed=17)
    _, _, gp = grad_p(A, G, p, method)
    h = EPS[torch.float64] ** (1 / 3)
    with torch.no_grad():
        fd = float(((svdgrad.powm(A, p + h, method) - svdgrad.powm(A, p - h, method)) * G).sum()) / (2 * h)
    tol = fd_tol(torch.float64, 1.0) * (1 + math.log(kappa * 5.0)) ** 2
    assert abs(float(gp) - fd) <= tol * gp_scale(A, G, p)


def test_power_gradient_in_p_sums_over_the_batch_and_matches_float_p():
    B = T.spd(5, 1e3, batch=(2, 3), seed=18)
    G = T.gradients(B.shape, seed=19)
    F, _, gp = grad_p(B, G, 0.7)
    assert torch.equal(F, svdgrad.powm(B, 0.7))
    parts = [float(grad_p(B[i, j], G[i, j], 0.7)[2]) for i in range(2) for j in range(3)]
    assert float(gp) == pytest.approx(sum(parts), rel=1e-12, abs=1e-14 * sum(map(abs, parts)))


def test_power_jvp_in_p_is_the_gradient_in_p():
    """Forward mode in p: ⟨∂F/∂p, G⟩ = gp."""
    A = T.spd(6, 1e3, seed=20) * 3.0
    G = T.gradients(A.shape, seed=21)
    _, _, gp = grad_p(A, G, -0.8)
    p = torch.tensor(-0.8, dtype=torch.float64)
    _, dF = torch.func.jvp(lambda q: svdgrad.powm(A, q), (p,), (torch.ones_like(p),))
    assert float((dF * G).sum()) == pytest.approx(float(gp), rel=1e-12)


def test_power_gradient_in_p_needs_an_eigen_method_or_is_refused():
    A = T.spd(4, 10.0, seed=22)
    p = torch.tensor(0.5, dtype=torch.float64, requires_grad=True)
    with pytest.raises(svdgrad.SvdgradError):
        svdgrad.powm(A, p, "newton_schulz")


# ---------------------------------------------------------------------------
# matrix_function
# ---------------------------------------------------------------------------

def test_matrix_function_exp_closed_form_2x2():
    """exp([[a, b], [b, a]]) = e^a·[[cosh b, sinh b], [sinh b, cosh b]]."""
    a, b = 1.3, 0.4
    A = torch.tensor([[a, b], [b, a]], dtype=torch.float64)
    E = svdgrad.matrix_function(A, torch.exp, torch.exp)
    expect = math.exp(a) * torch.tensor([[math.cosh(b), math.sinh(b)], [math.sinh(b), math.cosh(b)]],
                                        dtype=torch.float64)
    assert T.rel_error(E, expect) <= accurate_tol(torch.float64, 1.0, 2)


@pytest.mark.parametrize("method", [m for m in EIGEN if m in ACCURATE_METHODS])
def test_matrix_function_exp_known_result_and_gradient(method):
    """A = Q diag(λ) Qᵀ: exp(A) = Q diag(e^λ) Qᵀ, gradient against mpmath and torch.linalg.matrix_exp.

    exp on [1/κ, 1]·3 has bounded f′ and f″, so the bound is C·(κ_f + n)·eps with κ_f = e³ (f′/f <= 1,
    λmax = 3: the absolute perturbation 3·eps is amplified by at most λmax·max f′/min f = 3·e³).
    """
    n = 6
    A, lam = T.spd(n, 1e2, seed=23, return_eigenvalues=True)
    A, lam = 3.0 * A, 3.0 * lam
    Q = torch.from_numpy(T.haar_orthogonal(n, rng=np.random.default_rng(23)))
    G = T.gradients(A.shape, seed=24)
    A1 = A.clone().requires_grad_(True)
    E = svdgrad.matrix_function(A1, torch.exp, torch.exp, method)
    (gA,) = torch.autograd.grad(E, A1, G)
    kf = 3 * math.exp(3.0)
    assert T.rel_error(E, (Q * lam.exp()) @ Q.T) <= accurate_tol(torch.float64, kf, n)
    import mpmath
    _, gr, _ = T.reference_function_grad(A, G, (mpmath.exp, mpmath.exp))
    assert T.rel_error(T.sym_part(gA), gr) <= accurate_tol(torch.float64, kf, n)
    A2 = A.clone().requires_grad_(True)
    (gt,) = torch.autograd.grad(torch.linalg.matrix_exp(A2), A2, G)
    assert T.rel_error(T.sym_part(gA), T.sym_part(gt)) <= 2 * accurate_tol(torch.float64, kf, n)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_matrix_function_fallback_divided_difference(dtype):
    """dd=None: within ~eps^(2/3) of f[λi, λj] at every gap, f′ exactly at a tie, never NaN.

    A diagonal A has exact eigenvalues and U = I, so gA = sym(G) ∘ D shows D itself; the
    reference divides at 50 digits.  Quotient rounding eps·|f|/δ and midpoint truncation
    |f‴|·δ²/24 meet at δ = eps^(1/3)·λ, both eps^(2/3) relative for exp near 1 (|f|, |f‴| ~ f′):
    bound C·eps^(2/3) with C from helpers.py.
    """
    import mpmath

    G = T.gradients((3, 3), seed=25)
    worst = 0.0
    for delta in [0.0] + [10.0 ** -k for k in range(1, 17)]:
        lam = torch.tensor([0.7, 1.0, 1.0 + delta], dtype=torch.float64).to(dtype)
        A = torch.diag(lam).requires_grad_(True)
        E = svdgrad.matrix_function(A, torch.exp, torch.exp)
        (gA,) = torch.autograd.grad(E, A, G.to(dtype))
        assert finite(E) and finite(gA), delta
        _, gr, _ = T.reference_function_grad(torch.diag(lam.double()), G, (mpmath.exp, mpmath.exp))
        err = T.rel_error(T.sym_part(gA), gr)
        worst = max(worst, err)
        assert err <= C_ACCURATE * EPS[dtype] ** (2 / 3), (delta, err)
        if delta == 0.0:  # exact tie: f′ = e^λ, the same entry as the diagonal's
            assert float(gA[1, 2] + gA[2, 1]) == pytest.approx(float((G[1, 2] + G[2, 1]) * math.exp(1.0)),
                                                               rel=10 * EPS[dtype])


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("lo", [0.3, 1.0, 3.0])
def test_matrix_function_fallback_is_within_eps_two_thirds_at_every_relative_gap(dtype, lo):
    """The fallback f[λi, λj] itself, entry by entry, at every relative gap δ/λ = 2^-j (j = 1 … mantissa):
    within C·eps^(2/3) of the 50-digit quotient of the same rounded λ (f = exp, |f| = |f‴| = f′).

    The switch at δ = eps^(1/3)·λ is what balances the quotient's rounding, eps/(δ/λ), against the
    midpoint's truncation, (δ/λ)²/24: a switch at √eps would leave the quotient √eps wrong just above it.
    (The matrix test above sees each entry diluted by the others and only at δ = 10^-k.)
    """
    import mpmath

    from svdgrad._spectral import UserFunction

    fn = UserFunction(fn=torch.exp, dfn=torch.exp)
    bits = round(-math.log2(torch.finfo(dtype).eps)) + 1  # 53 or 24: down to a gap of one ulp
    lam_lo = torch.full((bits,), lo, dtype=dtype)
    lam_hi = lam_lo * (1.0 + torch.tensor([2.0 ** -j for j in range(1, bits + 1)], dtype=dtype))
    got = fn.dd(lam_lo, lam_hi)
    with mpmath.workdps(50):
        ref = []
        for a, b in zip(lam_lo.double().tolist(), lam_hi.double().tolist()):
            a, b = mpmath.mpf(a), mpmath.mpf(b)
            ref.append(float(mpmath.exp(a) if a == b else (mpmath.exp(b) - mpmath.exp(a)) / (b - a)))
    ref = torch.tensor(ref, dtype=torch.float64)
    rel = ((got.double() - ref).abs() / ref.abs()).max()
    assert float(rel) <= C_ACCURATE * EPS[dtype] ** (2 / 3), float(rel)


def test_matrix_function_uses_dd_and_agrees_with_sqrtm():
    """With the closed form dd for √ it is sqrtm('exact') to round-off; without, within eps^(2/3)."""
    A = T.spd(8, 1e6, "clustered", seed=26)
    G = T.gradients(A.shape, seed=27)
    _, g = fgrad("sqrt", A, G)

    def mf(**kw):
        A1 = A.clone().requires_grad_(True)
        F = svdgrad.matrix_function(A1, torch.sqrt, lambda x: 0.5 / x.sqrt(), **kw)
        (gA,) = torch.autograd.grad(F, A1, G)
        return F.detach(), T.sym_part(gA)

    F, g_dd = mf(dd=lambda Li, Lj: (Li.sqrt() + Lj.sqrt()).reciprocal())
    assert T.rel_error(F, svdgrad.sqrtm(A)) <= accurate_tol(torch.float64, 1.0, 8)
    assert T.rel_error(g_dd, g) <= accurate_tol(torch.float64, 1.0, 8)
    _, g_fb = mf()
    # the fallback's relative error in each D entry is eps^(2/3) (see above), so also in gA
    assert T.rel_error(g_fb, g) <= C_ACCURATE * EPS[torch.float64] ** (2 / 3)


@pytest.mark.parametrize("method", methods_for("matrix_function", "sqrt", EIGEN))
def test_matrix_function_is_the_method_applied_to_f(method):
    """matrix_function(A, √, d√, method) computes sqrtm(A, method): same forward, same D-rule.

    (matrix_function does not rescale A; a matrix with λmax ~ 1 needs no rescaling.)
    """
    A = T.spd(7, 1e3, seed=28)
    G = T.gradients(A.shape, seed=29)
    F, g = fgrad("sqrt", A, G, method)
    A1 = A.clone().requires_grad_(True)
    Fm = svdgrad.matrix_function(A1, torch.sqrt, lambda x: 0.5 / x.sqrt(), method,
                                 dd=lambda Li, Lj: (Li.sqrt() + Lj.sqrt()).reciprocal())
    (gm,) = torch.autograd.grad(Fm, A1, G)
    assert T.rel_error(Fm, F) <= accurate_tol(torch.float64, math.sqrt(1e3), 7)
    assert T.rel_error(T.sym_part(gm), g) <= accurate_tol(torch.float64, 1e3, 7)


@pytest.mark.parametrize("dtype, scale, opts", [(torch.float64, 1e300, {"compute_dtype": torch.float32}),
                                                (torch.float64, 1e100, {"compute_dtype": torch.float32}),
                                                (torch.float32, 1e36, {})])
def test_a_tensor_p_is_as_accurate_as_a_float_p_at_any_scale(dtype, scale, opts):
    """A float64 tensor p was rounded to the compute dtype before the scale law 4^(k·p): 7e-6 off at 1e300 in
    float32 (2k·|Δp| in the exponent), where the same p as a Python float kept float32's 1.3e-7 (session 20
    review)."""
    torch.manual_seed(0)
    X = torch.randn(3, 6, dtype=torch.float64)
    A = ((X @ X.mT / 6 + 0.1 * torch.eye(3, dtype=torch.float64)) * scale).to(dtype)
    ref = svdgrad.powm(A.double(), 1 / 3)
    for p in (1 / 3, torch.tensor(1 / 3, dtype=torch.float64)):
        out = svdgrad.powm(A, p, **opts).double()
        assert float((out - ref).abs().max() / ref.abs().max()) <= 8 * torch.finfo(torch.float32).eps, p
