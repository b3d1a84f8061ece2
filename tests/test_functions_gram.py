"""The features route: gram_sqrtm(X) = (X Xᵀ)^{1/2} and gram_inv_sqrtm(X) = (X Xᵀ)^{-1/2} without Σ = X Xᵀ
rounded in X's dtype: from the SVD of X (algorithm="svd"), or in float32 from X Xᵀ formed and decomposed in
float64 (algorithm="gram64", the float32 default).  ROUTES runs both wherever float32 applies.

Condition numbers, in κ = κ(X) = σmax/σmin (κ(X Xᵀ) = κ²), for the bound
C·(κ_f + n)·eps of tests/helpers.py, n = max(d, N):
  forward  sqrt: 1.  X -> X + E moves F by U[(UᵀEVS + SVᵀEᵀU) ∘ D]Uᵀ with
           D_ij = 1/(σi + σj), whose entries are at most 2|E'_ij|: ‖δF‖ <= 2‖E‖,
           and ‖E‖ ~ eps·σmax <= eps·‖F‖.  Independent of κ.
           inverse: κ.  1/σmin moves by eps·σmax/σmin² (relative κ·eps).
  gradient sqrt: κ.  gX = 2U[(M ∘ D)S]Vᵀ has entries M_ij·σj/(σi + σj), which a
           relative change eps·σmax/σmin of σmin moves by κ·eps.
           inverse: 3κ.  Entries M_ij/(σi(σi + σj)): both factors move (2κ), as
           for inv_sqrt's 3κ in test_functions.kappa_grad.
Through Σ = X Xᵀ the same quantities carry κ(Σ) = κ² instead (test_functions' bounds).
"""

import functools
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import svdgrad
from svdgrad import testing as T

from .helpers import EPS, accurate_tol, fd_tol, finite

GRAM = {False: svdgrad.gram_sqrtm, True: svdgrad.gram_inv_sqrtm}
#: (dtype, algorithm) pairs: "gram64" (float64 Gram matrix) applies to float32 only; "auto" picks it there.
ROUTES = [(torch.float64, "svd"), (torch.float32, "svd"), (torch.float32, "gram64")]
THROUGH_SIGMA = {False: svdgrad.sqrtm, True: svdgrad.inv_sqrtm}


def kappa_forward(inverse, kappa_x):
    return kappa_x if inverse else 1.0


def kappa_grad(inverse, kappa_x):
    return 3 * kappa_x if inverse else kappa_x


def gram(inverse, algorithm="auto"):
    return functools.partial(GRAM[inverse], algorithm=algorithm)


def grad_x(f, X, G):
    X1 = X.detach().clone().requires_grad_(True)
    F = f(X1)
    (gX,) = torch.autograd.grad(F, X1, G.to(F.dtype))
    return F.detach(), gX


def kappa_x(X):
    s = torch.linalg.svdvals(X.double())
    return float(s[..., 0].max() / s[..., -1].min())


def test_features_generator_hits_kappa_and_rank():
    for d, N, kappa in [(4, 9, 1e6), (6, 6, 1e3), (7, 3, 1e2)]:
        X, sig = T.features(d, N, kappa, batch=(2,), seed=1, return_singular_values=True)
        assert X.shape == (2, d, N)
        s = torch.linalg.svdvals(X)
        assert torch.allclose(s, sig.expand_as(s), rtol=1e-9, atol=0)
        assert kappa_x(X) == pytest.approx(kappa, rel=1e-8)
    s = torch.linalg.svdvals(T.features(6, 5, 1e4, rank=2, seed=2))
    assert (s[2:] <= 1e-14).all() and float(s[0] / s[1]) == pytest.approx(1e4, rel=1e-9)
    with pytest.raises(svdgrad.SvdgradError, match="rank"):
        T.features(3, 5, 10.0, rank=4)


def test_gram_reference_agrees_with_the_function_reference():
    """reference_gram_grad (Σ formed at 50 digits) = 2·gΣ·X with gΣ from reference_function_grad on Σ."""
    X = T.features(4, 7, 10.0, seed=3)
    G = T.gradients((4, 4), seed=4)
    F, gX = T.reference_gram_grad(X, G)
    Fs, gS, _ = T.reference_function_grad(X @ X.mT, G, "sqrt")
    assert T.rel_error(F, Fs) <= 1e-14 and T.rel_error(gX, 2 * gS @ X) <= 1e-14


# ---------------------------------------------------------------------------
# Accuracy
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("inverse", [False, True])
@settings(max_examples=15)
@given(d=st.integers(1, 6), extra=st.integers(0, 5), log10_kappa=st.floats(0, 6), seed=st.integers(0, 2**31 - 1))
def test_gram_matches_mpmath_float64(inverse, d, extra, log10_kappa, seed):
    N = d + extra
    X = T.features(d, N, 10.0 ** log10_kappa, seed=seed)
    G = T.gradients((d, d), seed=seed % 997)
    F, gX = grad_x(GRAM[inverse], X, G)
    Fr, gr = T.reference_gram_grad(X, G, inverse=inverse)
    kx, n = kappa_x(X), max(d, N)
    assert T.rel_error(F, Fr) <= accurate_tol(torch.float64, kappa_forward(inverse, kx), n)
    assert T.rel_error(gX, gr) <= accurate_tol(torch.float64, kappa_grad(inverse, kx), n)


@pytest.mark.parametrize("algorithm", ["svd", "gram64"])
@pytest.mark.parametrize("inverse", [False, True])
@pytest.mark.parametrize("kappa_sigma", [1e8, 1e10, 1e12])
def test_gram_float32_where_sigma_is_ill_conditioned(inverse, kappa_sigma, algorithm):
    """κ(X Xᵀ) = 1e8..1e12 in float32, against the 50-digit reference: the κ(X) bounds above hold.

    For the square root the route through Σ (sqrtm(X @ X.mT)) is also measured: its float32
    gradient error is 3–100·κ(X)·eps32 here (κ(Σ) > 1/eps32, so Σ's small eigenvalues are
    rounding noise), the features route's about 0.02·κ(X)·eps32; the test asks for 10× better.
    """
    d, N = 8, 16
    kx = math.sqrt(kappa_sigma)
    X = T.features(d, N, kx, seed=5, dtype=torch.float32)
    G = T.gradients((d, d), seed=6)
    F, gX = grad_x(gram(inverse, algorithm), X, G)
    Fr, gr = T.reference_gram_grad(X, G, inverse=inverse)
    kx = kappa_x(X)
    assert T.rel_error(F, Fr) <= accurate_tol(torch.float32, kappa_forward(inverse, kx), N)
    err = T.rel_error(gX, gr)
    assert err <= accurate_tol(torch.float32, kappa_grad(inverse, kx), d)
    if not inverse:
        _, g_sigma = grad_x(lambda Y: svdgrad.sqrtm(Y @ Y.mT), X, G)
        assert err <= 0.1 * T.rel_error(g_sigma, gr), (err, T.rel_error(g_sigma, gr))


@pytest.mark.parametrize("inverse", [False, True])
@settings(max_examples=15, deadline=None)
@given(d=st.integers(1, 6), extra=st.integers(0, 5), log10_kappa=st.floats(0, 6), seed=st.integers(0, 2**31 - 1))
def test_gram64_matches_mpmath_float32(inverse, d, extra, log10_kappa, seed):
    """algorithm="gram64" (the float32 default) within the float32 κ(X) bounds (d > N: the
    reference needs full row rank; test_gram_rank_deficient_is_finite_and_bounded covers it)."""
    N = d + extra
    X = T.features(d, N, 10.0 ** log10_kappa, seed=seed, dtype=torch.float32)
    G = T.gradients((d, d), seed=seed % 997)
    F, gX = grad_x(gram(inverse, "gram64"), X, G)
    Fr, gr = T.reference_gram_grad(X, G, inverse=inverse)
    kx, n = kappa_x(X), max(d, N)
    assert T.rel_error(F, Fr) <= accurate_tol(torch.float32, kappa_forward(inverse, kx), n)
    assert T.rel_error(gX, gr) <= accurate_tol(torch.float32, kappa_grad(inverse, kx), n)


@pytest.mark.parametrize("inverse", [False, True])
@pytest.mark.parametrize("kx", [1.0, 1e2, 1e4, 1e6])
def test_gram64_is_at_least_as_accurate_as_the_float32_svd(inverse, kx):
    """The reason "auto" picks gram64 for float32: σ errors √eps64·σmax < eps32·σmax.

    Measured (d = 8, N = 16, against mpmath): gradient errors 3–1000× below the SVD route's;
    the test asks for no worse.  At κ(X) near 1/eps32 both sit at the floor and agree.
    """
    d, N = 8, 16
    X = T.features(d, N, kx, seed=22, dtype=torch.float32)
    G = T.gradients((d, d), seed=23)
    Fr, gr = T.reference_gram_grad(X, G, inverse=inverse)
    (F64, g64), (Fs, gs) = (grad_x(gram(inverse, a), X, G) for a in ("gram64", "svd"))
    assert T.rel_error(g64, gr) <= T.rel_error(gs, gr) and T.rel_error(F64, Fr) <= T.rel_error(Fs, Fr)


@pytest.mark.parametrize("inverse", [False, True])
@pytest.mark.parametrize("kx", [1.0, 30.0, 1e3])
def test_gram_equals_the_route_through_sigma_where_both_are_accurate(inverse, kx):
    """float64, κ(X) <= 1e3: both routes within their bounds of the truth, so of each other
    (the Σ route's: test_functions' κ_f and κ_g at κ(Σ) = κ(X)², plus forming Σ)."""
    d, N = 5, 9
    X = T.features(d, N, kx, seed=7)
    G = T.gradients((d, d), seed=8)
    F, gX = grad_x(GRAM[inverse], X, G)
    Fs, gS = grad_x(lambda Y: THROUGH_SIGMA[inverse](Y @ Y.mT), X, G)
    ks = kx ** 2
    fwd = ks if inverse else kx  # test_functions.kappa_forward at κ(Σ)
    grd = 3 * ks if inverse else ks  # test_functions.kappa_grad at κ(Σ)
    assert T.rel_error(F, Fs) <= 2 * accurate_tol(torch.float64, fwd, N)
    assert T.rel_error(gX, gS) <= 2 * accurate_tol(torch.float64, grd, N)


# ---------------------------------------------------------------------------
# Derivatives: finite differences, adjoint, gradcheck
# ---------------------------------------------------------------------------

def fd_errors(f, X, *, directions=2, seed=0):
    """(vjp error, jvp error) against central differences in random unit directions of X (*, d, N).

    h = eps^(1/3)·σmin(X); errors relative to the Cauchy–Schwarz scale (vjp) and to ‖J t‖ (jvp),
    as ``testing.vjp_fd_error`` and ``testing.jvp_fd_error``.
    """
    X = X.detach()
    h = EPS[X.dtype] ** (1 / 3) * float(torch.linalg.svdvals(X.double())[..., -1].min())
    ev = ej = 0.0
    for k in range(directions):
        t = T.gradients(X.shape, seed=seed + 3 * k, dtype=X.dtype)
        t = t / torch.linalg.vector_norm(t)
        with torch.no_grad():
            fd = (f(X + h * t).double() - f(X - h * t).double()) / (2 * h)
        out, Jt = torch.func.jvp(f, (X,), (t,))
        c = T.gradients(out.shape, seed=seed + 3 * k + 1, dtype=X.dtype)
        _, vjp = torch.func.vjp(f, X)
        (JTc,) = vjp(c)
        lhs, rhs = float((JTc.double() * t.double()).sum()), float((fd * c.double()).sum())
        scale = max(float(torch.linalg.vector_norm(JTc.double())), abs(lhs), abs(rhs), 1e-300)
        ev = max(ev, abs(lhs - rhs) / scale)
        ej = max(ej, float(torch.linalg.vector_norm(Jt.double() - fd)) / max(
            float(torch.linalg.vector_norm(Jt.double())), 1e-300))
    return ev, ej


@pytest.mark.parametrize("inverse", [False, True])
@pytest.mark.parametrize("d,N,kx", [(4, 7, 1.0), (4, 7, 1e2), (6, 6, 1e3), (1, 5, 1.0)])
def test_gram_vjp_and_jvp_agree_with_finite_differences(inverse, d, N, kx):
    X = T.features(d, N, kx, seed=9)
    ev, ej = fd_errors(GRAM[inverse], X, seed=1)
    assert ev <= fd_tol(torch.float64, kx) and ej <= fd_tol(torch.float64, kx), (ev, ej)


@pytest.mark.parametrize("inverse", [False, True])
@pytest.mark.parametrize("d,N,kx", [(4, 7, 1.0), (4, 7, 1e2), (1, 5, 1.0)])
def test_gram64_vjp_and_jvp_agree_with_finite_differences_in_float32(inverse, d, N, kx):
    """float32 X (gram64): differences taken of float32 evaluations, so the float32 FD bound."""
    X = T.features(d, N, kx, seed=9, dtype=torch.float32)
    ev, ej = fd_errors(gram(inverse, "gram64"), X, seed=1)
    assert ev <= fd_tol(torch.float32, kx) and ej <= fd_tol(torch.float32, kx), (ev, ej)


@pytest.mark.parametrize("inverse", [False, True])
@pytest.mark.parametrize("dtype,algorithm", ROUTES)
def test_gram_jvp_is_the_adjoint_of_vjp(inverse, dtype, algorithm):
    """⟨J t, c⟩ = ⟨t, Jᵀ c⟩ to round-off: C·(1 + n)·eps against max(‖Jt‖‖c‖, ‖t‖‖Jᵀc‖)."""
    d, N = 6, 10
    X = T.features(d, N, 1e3, seed=10, dtype=dtype)
    f = gram(inverse, algorithm)
    for seed in (0, 5):
        t = T.gradients(X.shape, seed=seed, dtype=dtype)
        out, Jt = torch.func.jvp(f, (X,), (t,))
        c = T.gradients(out.shape, seed=seed + 1, dtype=dtype)
        (JTc,) = torch.func.vjp(f, X)[1](c)
        lhs, rhs = float((Jt.double() * c.double()).sum()), float((t.double() * JTc.double()).sum())
        scale = max(float(torch.linalg.vector_norm(Jt.double()) * torch.linalg.vector_norm(c.double())),
                    float(torch.linalg.vector_norm(t.double()) * torch.linalg.vector_norm(JTc.double())))
        assert abs(lhs - rhs) / scale <= accurate_tol(dtype, 1.0, N)


@pytest.mark.parametrize("inverse", [False, True])
@pytest.mark.parametrize("d,N", [(3, 5), (4, 2)])
def test_gram_gradcheck_with_forward_ad(inverse, d, N):
    """d > N too, with the floor held fixed.

    For d > N the null space of X Xᵀ is raised to the floor eps·σmax, and the backward treats
    that floor as a constant: it drops the term −P_null/(eps·σmax²)·dσmax of the inverse (1/eps
    in size; measured: it is the whole 7% gradcheck mismatch at d = 4, N = 2).  So the
    reference differentiates F with the floor frozen at its value at X: eps = fl0/σmax(X′).
    """
    X = T.features(d, N, 10.0, seed=11).requires_grad_(True)
    if d <= N:
        f = GRAM[inverse]
    else:
        fl0 = EPS[torch.float64] * float(torch.linalg.svdvals(X.detach())[0])

        def f(Y):
            return GRAM[inverse](Y, eps=fl0 / float(torch.linalg.svdvals(Y.detach())[0]))
    assert torch.autograd.gradcheck(f, (X,), check_forward_ad=True)


@pytest.mark.parametrize("inverse", [False, True])
def test_gram_vmap_and_jacfwd(inverse):
    f = GRAM[inverse]
    X = T.features(3, 5, 10.0, batch=(4,), seed=12)
    assert T.rel_error(torch.func.vmap(f)(X), f(X)) <= accurate_tol(torch.float64, 1.0, 5)
    Jf = torch.func.jacfwd(f)(X[0])
    Jr = torch.func.jacrev(f)(X[0])
    assert Jf.shape == (3, 3, 3, 5) and T.rel_error(Jf, Jr) <= accurate_tol(torch.float64, 10.0, 5)


@pytest.mark.parametrize("inverse", [False, True])
def test_gram64_vmap_and_jacfwd(inverse):
    f = gram(inverse, "gram64")
    X = T.features(3, 5, 10.0, batch=(4,), seed=12, dtype=torch.float32)
    assert T.rel_error(torch.func.vmap(f)(X), f(X)) <= accurate_tol(torch.float32, 1.0, 5)
    Jf = torch.func.jacfwd(f)(X[0])
    Jr = torch.func.jacrev(f)(X[0])
    assert Jf.shape == (3, 3, 3, 5) and T.rel_error(Jf, Jr) <= accurate_tol(torch.float32, 10.0, 5)


# ---------------------------------------------------------------------------
# Invariants and edge cases
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("inverse", [False, True])
@pytest.mark.parametrize("dtype,algorithm", ROUTES)
def test_gram_orthogonal_invariance(inverse, dtype, algorithm):
    """(X W)(X W)ᵀ = X Xᵀ for orthogonal W (N, N); (Q X) gives Q F Qᵀ; gradients transform alike."""
    d, N, kx = 5, 8, 1e2
    X = T.features(d, N, kx, seed=13, dtype=dtype)
    rng = np.random.default_rng(14)
    W = torch.from_numpy(T.haar_orthogonal(N, rng=rng)).to(dtype)
    Q = torch.from_numpy(T.haar_orthogonal(d, rng=rng)).to(dtype)
    G = T.gradients((d, d), seed=15, dtype=dtype)
    f = gram(inverse, algorithm)
    F, gX = grad_x(f, X, G)
    FW, gXW = grad_x(f, X @ W, G)
    FQ, gXQ = grad_x(f, Q @ X, Q @ G @ Q.T)
    fwd = 2 * accurate_tol(dtype, kappa_forward(inverse, kx), N)
    grd = 2 * accurate_tol(dtype, kappa_grad(inverse, kx), N)
    assert T.rel_error(FW, F) <= fwd and T.rel_error(gXW, gX @ W) <= grd
    assert T.rel_error(FQ, Q @ F @ Q.T) <= fwd and T.rel_error(gXQ, Q @ gX) <= grd


#: Scales per (inverse, dtype).  The square root's gradient does not scale, so c can go where X Xᵀ
#: under- or overflows (1e±200 in float64, 1e±25 in float32); the inverse's gradient scales as c^(-2).
SCALES = {(False, torch.float64): (1e-200, 1e-20, 1e20, 1e200), (False, torch.float32): (1e-25, 1e-5, 1e5, 1e25),
          (True, torch.float64): (1e-100, 1e-20, 1e20, 1e100), (True, torch.float32): (1e-12, 1e-5, 1e5, 1e12)}


@pytest.mark.parametrize("inverse", [False, True])
@pytest.mark.parametrize("dtype,algorithm", ROUTES)
def test_gram_scaling_beyond_where_sigma_overflows(inverse, dtype, algorithm):
    """gram(cX) = |c|^(±1)·gram(X), gX(cX) = sign(c)·|c|^(0 or −2)·gX(X), over the scales above."""
    scales = SCALES[inverse, dtype]
    d, N, kx = 4, 6, 1e2
    X = T.features(d, N, kx, seed=16, dtype=dtype)
    G = T.gradients((d, d), seed=17, dtype=dtype)
    f = gram(inverse, algorithm)
    F, gX = grad_x(f, X, G)
    for c in scales:
        for sign in (1.0, -1.0):
            Xc = (X.double() * (sign * c)).to(dtype)
            Fc, gXc = grad_x(f, Xc, G)
            law = c ** (-1 if inverse else 1)
            # d F / d X scales as |c|^(∓1)/|c|·sign: gX(cX) = sign·|c|^(±1 − 1)·gX(X)
            glaw = sign * c ** (-2 if inverse else 0)
            assert T.rel_error(Fc.double() / law, F) <= 2 * accurate_tol(dtype, kappa_forward(inverse, kx), N), c
            assert T.rel_error(gXc.double() / glaw, gX) <= 2 * accurate_tol(dtype, kappa_grad(inverse, kx), N), c


@pytest.mark.parametrize("dtype,algorithm", ROUTES)
@pytest.mark.parametrize("d,N,rank", [(6, 3, 3), (6, 6, 2), (5, 8, 1), (4, 1, 1)])
def test_gram_rank_deficient_is_finite_and_bounded(dtype, algorithm, d, N, rank):
    """sqrt: ‖gX‖_F <= 2‖sym G‖_F, since (M∘D)S has entries M_ij·σj/(σi + σj), |·| <= |M_ij|.

    For gram64, P = UᵀX is formed in float64: in float32 its rows for small σj would carry
    eps32·σmax against D_ij up to 1/(σi + σj) (test_gram64_is_at_least_as_accurate_as_the_float32_svd
    notices that at κ(X) >= 1e4).  In the null-null block the gradient has no limit as the floor
    goes to 0 (√(σ²) = |σ| is not differentiable at 0), so only the bound is asserted there.
    """
    X = T.features(d, N, 1e3, rank=rank, seed=18, dtype=dtype)
    G = T.gradients((d, d), seed=19, dtype=dtype)
    for inverse in (False, True):
        F, gX = grad_x(gram(inverse, algorithm), X, G)
        assert finite(F) and finite(gX), inverse
    _, gX = grad_x(gram(False, algorithm), X, G)
    bound = 2 * float(torch.linalg.vector_norm(T.sym_part(G.double())))
    assert float(torch.linalg.vector_norm(gX.double())) <= bound * (1 + accurate_tol(dtype, 1.0, max(d, N)))


@pytest.mark.parametrize("inverse", [False, True])
@pytest.mark.parametrize("dtype,algorithm", ROUTES)
def test_gram_zero_features_are_finite(inverse, dtype, algorithm):
    X = torch.zeros(3, 5, dtype=dtype, requires_grad=True)
    F = gram(inverse, algorithm)(X)
    (g,) = torch.autograd.grad(F, X, torch.ones(3, 3, dtype=dtype))
    assert finite(F) and finite(g)


@pytest.mark.parametrize("inverse", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("shape", [(3, 5), (5, 3), (2, 3, 5)])
def test_gram_zero_features_computed_in_float64_are_the_work_dtypes(inverse, dtype, shape):
    """Zero features computed in float64 give what the work dtype (float32) gives: σ floored at tiny32^(1/4).

    It was float64's tiny^(1/4): gram_sqrtm read 0 (float32: 3.3e-10·I) and gram_inv_sqrtm was refused
    as not fitting float32 (float32 gives 3.0e9·I).  The SVD route, the one that takes float64.
    """
    X = torch.zeros(shape, dtype=dtype)
    try:
        want = gram(inverse, "svd")(X)
    except svdgrad.SvdgradError as exc:  # (float16: 1/tiny32^(1/4) does not fit; the same refusal either way)
        with pytest.raises(svdgrad.SvdgradError, match="does not fit"):
            gram(inverse, "svd")(X, compute_dtype=torch.float64)
        assert "does not fit" in str(exc)
        return
    got = gram(inverse, "svd")(X, compute_dtype=torch.float64)
    assert float(want.abs().max()) > 0 or dtype == torch.float16  # (float16: 3.3e-10 rounds to 0)
    torch.testing.assert_close(got, want, rtol=2 * torch.finfo(torch.float32).eps, atol=0)


@pytest.mark.parametrize("inverse", [False, True])
def test_gram_shapes_batch_empty_and_no_samples(inverse):
    f = GRAM[inverse]
    X = T.features(3, 5, 10.0, batch=(2, 3), seed=20)
    F = f(X)
    assert F.shape == (2, 3, 3, 3) and F.dtype == torch.float64
    assert torch.allclose(F[1, 2], f(X[1, 2]), rtol=1e-12, atol=0)
    x = torch.tensor([[[3.0, 4.0]]], dtype=torch.float64, requires_grad=True)  # d = 1: (x xᵀ)^(±½) = ‖x‖^(±1)
    F1 = f(x)
    assert float(F1.detach()) == pytest.approx(0.2 if inverse else 5.0, rel=1e-14)
    (g,) = torch.autograd.grad(F1.sum(), x)
    expect = -x.detach() / 125 if inverse else x.detach() / 5  # ∂‖x‖^(±1)/∂x
    assert torch.allclose(g, expect, rtol=1e-13)
    E = torch.zeros(0, 4, 6, dtype=torch.float32, requires_grad=True)
    FE = f(E)
    assert FE.shape == (0, 4, 4)
    FE.sum().backward()
    assert E.grad.shape == (0, 4, 6)
    Z = torch.zeros(2, 4, 0, dtype=torch.float64, requires_grad=True)  # no samples: X Xᵀ = 0
    FZ = f(Z)
    assert FZ.shape == (2, 4, 4) and finite(FZ)


@pytest.mark.parametrize("inverse", [False, True])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_gram_half_precision_is_computed_in_float32(inverse, dtype):
    X = T.features(4, 7, 10.0, seed=21).to(dtype)
    F = GRAM[inverse](X)
    assert F.dtype == dtype and torch.equal(F, GRAM[inverse](X.float()).to(dtype))


@pytest.mark.parametrize("bad", [torch.ones(5), torch.ones(3, 4, dtype=torch.int64),
                                 torch.tensor([[1.0, float("nan")], [0.0, 1.0]])])
def test_gram_refuses_bad_input(bad):
    with pytest.raises(svdgrad.SvdgradError):
        svdgrad.gram_sqrtm(bad)


@pytest.mark.parametrize("dtype,kwargs,match", [
    (torch.float32, {"algorithm": "qr"}, "one of 'auto', 'svd', 'gram64'"),
    (torch.float64, {"algorithm": "gram64"}, "wider than the compute dtype"),
    (torch.float32, {"algorithm": "gram64", "compute_dtype": torch.float64}, "wider than the compute dtype"),
])
def test_gram_refuses_an_algorithm_that_does_not_apply(dtype, kwargs, match):
    X = T.features(3, 5, 10.0, seed=24, dtype=dtype)
    for inverse in (False, True):
        with pytest.raises(svdgrad.SvdgradError, match=match):
            GRAM[inverse](X, **kwargs)


@pytest.mark.parametrize("dtype,expect", [(torch.float32, "gram64"), (torch.bfloat16, "gram64"),
                                          (torch.float64, "svd")])
def test_gram_auto_picks_gram64_below_float64(dtype, expect):
    X = T.features(4, 7, 1e3, seed=25).to(dtype)
    for inverse in (False, True):
        assert torch.equal(GRAM[inverse](X), GRAM[inverse](X, algorithm=expect))
    assert torch.equal(svdgrad.gram_sqrtm(X.float(), compute_dtype=torch.float64),
                       svdgrad.gram_sqrtm(X.float(), compute_dtype=torch.float64, algorithm="svd"))


@pytest.mark.parametrize("X", [torch.full((1, 5000), 1000.0, dtype=torch.float16),  # σ = 70711 > 65504
                               torch.full((2, 4), 3e38)])  # entries of √(X Xᵀ): 4.2e38 > 3.4e38
def test_gram_sqrtm_refuses_a_result_beyond_its_dtype(X):
    # It returned inf silently (review, session 22), where the docstring says any finite X works.
    with pytest.raises(svdgrad.SvdgradError, match="does not fit"):
        svdgrad.gram_sqrtm(X)
    assert torch.isinf(svdgrad.gram_sqrtm(X, check=False)).any()  # check=False skips it, as the other checks


@pytest.mark.parametrize("inverse", [False, True])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_gram_svd_route_gradient_at_an_exactly_rank_deficient_X(inverse, dtype):
    # X with a zero row (a dead channel), N >= d: the SVD gives the null direction a singular value of rounding
    # noise (about eps·σmax) where it is 0, and P = S Vᵀ carried that noise into the backward, times D at the floor
    # (1/floor³ for the inverse root): gram_inv_sqrtm's gradient was 1e13 too large (float64, |g| 1e27-1e28 against
    # 3.75e14) and changed 60x with the order of X's columns, which leaves F unchanged; gram_sqrtm's was 0.4-2 %
    # off (review, session 22).  Rows of P whose σ is below the floor are zero, as they are for d > N.
    gen = torch.Generator().manual_seed(0)
    X0 = torch.randn(4, 6, generator=gen, dtype=torch.float64)
    X0[1] = 0
    X0 = X0.to(dtype).double()
    G = torch.randn(4, 4, generator=gen, dtype=torch.float64)
    eps = torch.finfo(dtype).eps
    U, S, Vh = torch.linalg.svd(X0, full_matrices=False)
    S = S.clone()
    S[-1] = 0  # the null direction exactly
    Sf = S.clamp_min(eps * S[0])
    D = 1 / (Sf[:, None] + Sf[None, :])
    D = -D / (Sf[:, None] * Sf[None, :]) if inverse else D
    ref = 2 * U @ ((U.T @ ((G + G.T) / 2) @ U) * D) @ (S[:, None] * Vh)
    f = svdgrad.gram_inv_sqrtm if inverse else svdgrad.gram_sqrtm
    perm = torch.randperm(6, generator=gen)
    for cols in (torch.arange(6), perm):
        X = X0[:, cols].to(dtype).requires_grad_(True)
        (g,) = torch.autograd.grad(f(X, algorithm="svd"), X, G.to(dtype))
        err = float((g.double() - ref[:, cols]).norm() / ref.norm())
        assert err <= 100 * eps, (err, cols)  # measured 1.3e-15 to 2.4e-15 (float64), 3.6e-7 to 6.4e-7 (float32)


@pytest.mark.parametrize("inverse", [False, True])
def test_gram64_gradient_where_a_singular_value_is_below_the_floor(inverse):
    """A σ of X below the floor eps·σmax is held at the floor in the forward, so X's part along it gets no
    gradient: the svd route takes its row of P as zero (session 22).  gram64, the default for float32 X (and for
    float64 X computed in float32), kept P = UᵀX there, and D at the floor (−1/(2·floor³) for the inverse) made
    the gradient of gram_inv_sqrtm 4.6e5× too large (review, session 23)."""
    X = torch.zeros(4, 8, dtype=torch.float64)
    for i, s in enumerate([1.0, 0.5, 0.25, 2.0 ** -24]):  # σ4 = 6e-8 below eps32·σmax = 1.2e-7
        X[i, 2 * i] = s
    grads = {}
    for name, Xin, o in [("auto", X.float(), {}), ("svd", X.float(), {"algorithm": "svd"}),
                         ("float64 in float32", X, {"compute_dtype": torch.float32})]:
        Xr = Xin.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(GRAM[inverse](Xr).sum() if not o else GRAM[inverse](Xr, **o).sum(), Xr)
        grads[name] = g.double()
        _, jvp = torch.func.jvp(lambda Y: GRAM[inverse](Y, **o), (Xin,), (torch.ones_like(Xin),))
        grads[name + " jvp"] = jvp.double()
    g = grads["svd"]
    assert float(g[3, 6].abs()) <= 1e-6 * float(g.abs().max())  # the floored direction's own entry
    for name in ("auto", "float64 in float32"):
        assert T.rel_error(grads[name], g) < 1e-5, name
        assert T.rel_error(grads[name + " jvp"], grads["svd jvp"]) < 1e-5, name
