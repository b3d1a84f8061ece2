"""Correct at every scale (issue 8 §1-2): scale equivariance over the whole float range,
the relative floor, overflow-safe checks, LAPACK refusals, and one PSD rule for every method.

Every method must satisfy sqrtm(cA) = √c·sqrtm(A), with the gradient scaled by
1/√c, within 1e3·eps for well-conditioned A and c from 1e-35 to 1e35 (float32)
or 1e-300 to 1e300 (float64).
"""

import math

import pytest
import torch

import svdgrad
from svdgrad import _kernels
from svdgrad import testing as T
from svdgrad._validate import psd_violations

from .helpers import EPS, finite, grad_of

METHODS = svdgrad.methods()

#: The scale sweep: every decade step of 5 over the normal range of each dtype.
SCALES = {
    torch.float32: [10.0 ** e for e in range(-35, 36, 5)] + [3.7e-33, 2.0 ** 100, 1.7e33],
    torch.float64: [10.0 ** e for e in range(-300, 301, 25)] + [3.7e-297, 2.0 ** 900, 1.7e299],
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("method", METHODS)
def test_scale_equivariance_over_the_float_range(method, dtype):
    A64 = T.spd(6, 10.0, batch=(2,), seed=31)
    G = T.gradients(A64.shape, seed=32, dtype=dtype)
    A = A64.to(dtype)
    Z1, g1 = grad_of(A, G, method)
    worst_z = worst_g = 0.0
    for c in SCALES[dtype]:
        Ac = (A64 * c).to(dtype)  # c·A rounded once, in the dtype under test
        Zc, gc = grad_of(Ac, G, method)
        assert bool(torch.isfinite(Zc).all() and torch.isfinite(gc).all()), f"non-finite at c={c:g}"
        worst_z = max(worst_z, T.rel_error(Zc.double() / math.sqrt(c), Z1))
        worst_g = max(worst_g, T.rel_error(gc.double() * math.sqrt(c), g1))
    assert worst_z <= 1e3 * EPS[dtype], (worst_z, 1e3 * EPS[dtype])
    assert worst_g <= 1e3 * EPS[dtype], (worst_g, 1e3 * EPS[dtype])


@pytest.mark.parametrize("method", METHODS)
def test_powers_of_four_scale_without_rounding(method):
    """Scaling by 4^j only moves exponents, so the results are the same bits times 2^j."""
    A = T.spd(5, 1e2, seed=33)
    A = A * (0.7 / float(A.abs().max()))  # max|A| away from a power of two
    G = T.gradients(A.shape, seed=34)
    Z, g = grad_of(A, G, method)
    for j in (-400, -7, 9, 450):
        Zj, gj = grad_of(A * 4.0 ** j, G, method)
        assert torch.equal(Zj, Z * 2.0 ** j)
        assert torch.equal(gj, g * 2.0 ** -j)


def test_times_pow2_is_exact_over_the_exponent_range():
    for dtype, kmax in ((torch.float32, 75), (torch.float64, 537)):
        k = torch.arange(-kmax, kmax + 1, dtype=dtype)
        p = torch.exp2(k)
        m, e = torch.frexp(p)
        assert bool((m == 0.5).all()) and torch.equal(e.to(dtype) - 1, k)


@pytest.mark.parametrize("dtype, value", [(torch.float32, 1e-20), (torch.float32, 1e-36), (torch.float64, 1e-300),
                                          (torch.float32, 1e30), (torch.float64, 1e300)])
@pytest.mark.parametrize("method", METHODS)
def test_scaled_identity_has_the_true_root(method, dtype, value):
    """Issue 8: sqrtm(eye(3)·1e-20) was 3.29e-10 in float32 and sqrtm(eye·1e-300) 1.2e-77 in float64.

    Approximate forwards (Newton–Schulz: 5 iterations at Ã = I/3 are not
    exact; MPA/MTP) are held to their own value at scale 1, times √a.
    """
    A = (torch.eye(3, dtype=torch.float64) * value).to(dtype).requires_grad_(True)
    Z = svdgrad.sqrtm(A, method)
    Z.trace().backward()  # d tr(A^{1/2}) / dA = ½ A^{-1/2}
    a = float(A.detach()[0, 0])
    I1 = torch.eye(3, dtype=dtype, requires_grad=True)
    Z1 = svdgrad.sqrtm(I1, method)
    Z1.trace().backward()
    exact_forward = svdgrad.get_method(method).forward_is_exact
    if exact_forward:
        assert torch.allclose(Z1.detach().double(), torch.eye(3, dtype=torch.float64), rtol=0, atol=10 * EPS[dtype])
    assert torch.allclose(Z.detach().double(), Z1.detach().double() * math.sqrt(a), rtol=10 * EPS[dtype], atol=0)
    if method == "ordinary":  # K = 1/(λi - λj) at exact ties: non-finite by design (documented)
        return
    assert torch.allclose(A.grad.double(), I1.grad.double() / math.sqrt(a), rtol=1e3 * EPS[dtype], atol=0)
    if exact_forward:
        assert torch.allclose(I1.grad.double(), 0.5 * torch.eye(3, dtype=torch.float64), rtol=0, atol=1e3 * EPS[dtype])


def test_newton_schulz_gradient_at_1e30_float32():
    """Issue 8: all-NaN manual gradient at eye(4)·1e30, Frobenius overflow at 1e20, 1.5e-2 off at 1e20."""
    for normalization in ("trace", "frobenius"):
        for backward in ("manual", "autograd"):
            ref = None
            for c in (1.0, 1e20, 1e30):
                A = (T.spd(4, 10.0, seed=35) * c).float().requires_grad_(True)
                Z = svdgrad.sqrtm(A, "newton_schulz", normalization=normalization, backward=backward)
                (g,) = torch.autograd.grad(Z, A, T.gradients(A.shape, seed=36, dtype=torch.float32))
                g = g.double() * math.sqrt(c)
                assert bool(torch.isfinite(g).all())
                ref = g if ref is None else ref
                assert T.rel_error(g, ref) <= 1e3 * EPS[torch.float32]


def test_floor_is_relative_to_lambda_max():
    """Eigenvalues below eps·λmax are raised to eps·λmax, at every scale; only zero gets an absolute floor."""
    eps = EPS[torch.float64]
    for lmax in (4.0, 1e-200, 1e200):
        A = torch.diag(torch.tensor([0.0, lmax], dtype=torch.float64))
        Z = svdgrad.sqrtm(A, "exact")
        assert math.isclose(float(Z[0, 0]), math.sqrt(eps * lmax), rel_tol=1e-12)
        assert math.isclose(float(Z[1, 1]), math.sqrt(lmax), rel_tol=1e-15)
    A = torch.diag(torch.tensor([0.0, 4.0], dtype=torch.float64, requires_grad=True))
    Z = svdgrad.sqrtm(A, "exact", eps=1e-6).detach()
    assert math.isclose(float(Z[0, 0]), math.sqrt(4e-6), rel_tol=1e-12)
    L = torch.linalg.eigvalsh(A.detach())
    assert float(_kernels.eigenvalue_floor(L, 1e-6)) == 4e-6
    zero = torch.zeros(1, 3)
    assert float(_kernels.eigenvalue_floor(zero, 1e-6)) == torch.finfo(torch.float32).tiny ** 0.5


@pytest.mark.parametrize("method", METHODS)
def test_overflowing_entries_do_not_defeat_the_symmetry_check(method):
    """Issue 8: an upper-triangular 1e300 matrix (relative asymmetry 0.2+) passed the check."""
    for dtype, big in ((torch.float64, 1e300), (torch.float64, 1e155), (torch.float32, 1e30)):
        A = (torch.triu(torch.ones(4, 4, dtype=torch.float64)) * big).to(dtype)
        with pytest.raises(svdgrad.SvdgradError, match="symmetric"):
            svdgrad.sqrtm(A, method)


@pytest.mark.parametrize("method", METHODS)
def test_all_1e308_matrix(method):
    """Issue 8: an all-1e308 matrix raised a raw _LinAlgError.  It is PSD (rank one)."""
    A = torch.full((3, 3), 1e308, dtype=torch.float64, requires_grad=True)
    Z = svdgrad.sqrtm(A, method)
    assert bool(torch.isfinite(Z).all())
    if method in ("exact", "topn", "taylor", "pade", "truncated", "ordinary"):
        # (c·11ᵀ)^{1/2} = √(c/3)·11ᵀ, up to the floor on the two zero eigenvalues
        assert torch.allclose(Z, torch.full((3, 3), math.sqrt(1e308 / 3), dtype=torch.float64), rtol=1e-6)


def test_lapack_refusal_is_an_svdgrad_error(monkeypatch):
    def refuse(A):
        raise torch.linalg.LinAlgError("linalg.eigh: The algorithm failed to converge")

    monkeypatch.setattr(torch.linalg, "eigh", refuse)
    with pytest.raises(svdgrad.SvdgradError, match="eigendecomposition failed.*check=True"):
        svdgrad.sqrtm(torch.eye(3), "exact")
    with pytest.raises(svdgrad.SvdgradError, match="eigendecomposition failed"):
        svdgrad.eigh(torch.eye(3))


def test_eigh_is_scale_equivariant_and_reports_overflowing_eigenvalues():
    A = T.spd(5, 1e3, seed=37)
    L, U = svdgrad.eigh(A)
    for c in (1e-300, 1e300):
        Lc, Uc = svdgrad.eigh(A * c)
        assert T.rel_error(Lc / c, L) <= 1e3 * EPS[torch.float64]
    with pytest.raises(svdgrad.SvdgradError, match="overflow"):
        svdgrad.eigh(torch.full((4, 4), 1e308, dtype=torch.float64))  # λmax = 4e308


# ---------------------------------------------------------------------------
# One PSD rule for every method (issue 8 §2).
# ---------------------------------------------------------------------------

def _with_lambda_min(n, ratio, dtype, seed):
    """Q diag(λ) Qᵀ with λmax = 1 and λmin = ratio (negative for indefinite)."""
    lam = torch.linspace(0.5, 1.0, n, dtype=torch.float64)
    lam[0] = ratio
    Q = torch.from_numpy(T.haar_orthogonal(n, rng=__import__("numpy").random.default_rng(seed)))
    return ((Q * lam) @ Q.mT).to(dtype)


@pytest.mark.parametrize("n", [4, 64, 256])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_newton_schulz_rejects_what_exact_rejects(n, dtype):
    """At n=256 in float32 the trace-shifted Cholesky accepted λmin = -0.1·λmax."""
    tol = math.sqrt(EPS[dtype])
    for ratio, accepted in ((-0.1, False), (-4 * tol, False), (-0.25 * tol, True), (0.0, True), (1e-3, True)):
        A = _with_lambda_min(n, ratio, dtype, seed=n)
        for method in ("exact", "newton_schulz"):
            if accepted:
                svdgrad.sqrtm(A, method)
            else:
                with pytest.raises(svdgrad.SvdgradError, match="positive semi-definite"):
                    svdgrad.sqrtm(A, method)


@pytest.mark.parametrize("scale", [1.0, 1e-3])
def test_psd_violations_agree_with_the_eigenvalue_rule(scale):
    """The Cholesky decision equals λmin < -tol·λmax on both sides of the boundary, batched.

    The rule is scale-free, so it must hold for λmax far below 1 too (scale 1e-3), where a wrong
    lower bound of λmax (one of order 1, say) would widen the accepted band.
    """
    tol = 1e-4
    ratios = [-100, -3, -1.5, -0.7, -0.3, 0.0, 0.5]
    A = torch.stack([_with_lambda_min(32, r * tol, torch.float64, seed=i) for i, r in enumerate(ratios)]) * scale
    A[-1] *= 1e-3  # the mask is per matrix: a small matrix next to large ones
    bad = psd_violations(A, tol)
    L = torch.linalg.eigvalsh(A)
    assert torch.equal(bad, L[:, 0] < -tol * L[:, -1])
    assert bad.tolist() == [True, True, True, False, False, False, False]


def test_psd_rule_negative_dominant_matrix():
    """|λmin| > λmax: the power iteration finds λmin, and the matrix is still rejected."""
    A = torch.diag(torch.tensor([-2.0, 0.5, 1.0], dtype=torch.float64))
    assert bool(psd_violations(A, 1e-8))
    with pytest.raises(svdgrad.SvdgradError, match="λmin=-2"):
        svdgrad.sqrtm(A, "newton_schulz")


def _scaled_rel(x, y):
    """‖x − y‖/‖y‖ computed after dividing both by max|y| (the norms of 1e±300 entries would over/underflow)."""
    m = y.detach().abs().max()
    return float(((x.detach() - y.detach()) / m).norm() / (y.detach() / m).norm())


def _eigenvalues(A, **o):
    return torch.diag_embed(svdgrad.eigh(A, **o)[0])


def _eigenvectors(A, **o):
    U = svdgrad.eigh(A, **o)[1]
    return U * torch.sign(U[..., :1, :]).detach()  # one sign per vector, so float32 and float64 agree


FUNCTIONS_P = [("sqrtm", svdgrad.sqrtm), ("inv_sqrtm", svdgrad.inv_sqrtm), ("logm", svdgrad.logm),
               ("powm", lambda A, **o: svdgrad.powm(A, 0.7, **o)),
               ("eigh values", _eigenvalues), ("eigh vectors", _eigenvectors)]


@pytest.mark.parametrize("name, f", FUNCTIONS_P)
@pytest.mark.parametrize("c", [1e300, 1e100, 1.0, 1e-100, 1e-290])
def test_float64_input_computed_in_float32_keeps_its_gradient_at_every_scale(name, f, c):
    """compute_dtype=float32 for float64 input: the scaling law's factor on the gradient (up to 2^511 for
    the square root at 1e300) is applied on the float64 side of the cast (NarrowIn/NarrowOut). Through
    the plain cast it overflowed float32 and the gradient was NaN (or underflowed to 0 below 1e-39)."""
    B = torch.tensor([[2.0, 0.5, 0.1], [0.5, 1.0, 0.2], [0.1, 0.2, 0.7]], dtype=torch.float64)
    G = torch.tensor([[1.0, 0.3, -0.2], [0.2, -0.5, 0.4], [0.1, 0.0, 0.9]], dtype=torch.float64)
    A32 = (B * c).requires_grad_()
    (g32,) = torch.autograd.grad(f(A32, compute_dtype=torch.float32), A32, G)
    A64 = (B * c).requires_grad_()
    F64 = f(A64)
    (g64,) = torch.autograd.grad(F64, A64, G)
    if not bool(torch.isfinite(g64).all()) or g64.abs().max() == 0:
        pytest.skip("the float64 gradient itself over/underflows here")
    assert bool(torch.isfinite(g32).all())
    assert _scaled_rel(g32, g64) <= 1e3 * torch.finfo(torch.float32).eps  # κ(B) ≈ 5: float32 rounding only


@pytest.mark.parametrize("name, f", FUNCTIONS_P)
@pytest.mark.parametrize("c", [1e300, 1e-290])
@pytest.mark.parametrize("t", [1.0, 1e-300, 1e300])
def test_float64_input_computed_in_float32_jvp_and_extreme_cotangents(name, f, c, t):
    """Forward mode there too (the tangent dA/4^k of a 1e300 matrix underflowed float32), and tangents or
    cotangents of any size: each crosses the cast scaled to order one (NarrowScales)."""
    B = torch.tensor([[2.0, 0.5], [0.5, 1.0]], dtype=torch.float64) * c
    D = torch.tensor([[1.0, 0.3], [0.3, -0.5]], dtype=torch.float64) * t
    j32 = torch.func.jvp(lambda a: f(a, compute_dtype=torch.float32), (B,), (D,))[1]
    j64 = torch.func.jvp(f, (B,), (D,))[1]
    A32, A64 = B.clone().requires_grad_(), B.clone().requires_grad_()
    (g32,) = torch.autograd.grad(f(A32, compute_dtype=torch.float32), A32, D)
    (g64,) = torch.autograd.grad(f(A64), A64, D)
    for x32, x64 in ((j32, j64), (g32, g64)):
        if not bool(torch.isfinite(x64).all()) or x64.abs().max() == 0:
            continue  # the float64 result itself over/underflows here
        assert bool(torch.isfinite(x32).all())
        assert _scaled_rel(x32, x64) <= 1e3 * torch.finfo(torch.float32).eps


@pytest.mark.parametrize("method", ["exact", "topn", "power_iteration"])
@pytest.mark.parametrize("c", [1e300, 1e40, 1.0, 1e-40, 1e-290])
@pytest.mark.parametrize("t", [1.0, 1e-300, 1e300])
def test_float64_input_computed_in_float32_powm_with_a_tensor_p(method, c, t):
    """powm(A, p) with p a tensor that requires grad, float64 computed in float32: the derivative in p (a
    sum over the batch) is taken on the wide side (_api._narrow_dp), the one in A crosses the cast
    scaled; both, and the jvp in p, agree with the float64 computation at every scale and for
    cotangents of any size.  (Through the plain cast they were NaN above about 1e38 and 0 below.)"""
    B = torch.tensor([[[2.0, 0.5, 0.1], [0.5, 1.0, 0.2], [0.1, 0.2, 0.7]],
                      [[1.0, 0.1, 0.0], [0.1, 3.0, 0.4], [0.0, 0.4, 0.5]]], dtype=torch.float64)
    B = B * torch.tensor([c, c * 1e3 if c < 1e300 else c], dtype=torch.float64)[:, None, None]  # two scales
    G = torch.tensor([[1.0, 0.3, -0.2], [0.2, -0.5, 0.4], [0.1, 0.0, 0.9]], dtype=torch.float64) * t
    p0 = torch.tensor(0.3, dtype=torch.float64)
    out = {}
    for cd in (torch.float32, None):
        A, p = B.clone().requires_grad_(), p0.clone().requires_grad_()
        F = svdgrad.powm(A, p, method=method, compute_dtype=cd)
        gA, gp = torch.autograd.grad(F, (A, p), G.expand_as(F))
        jp = torch.func.jvp(lambda q: svdgrad.powm(B, q, method=method, compute_dtype=cd), (p0,),
                            (torch.tensor(t, dtype=torch.float64),))[1]
        out[cd] = (F, gA, gp, jp)
    tol = 1e3 * torch.finfo(torch.float32).eps
    for x32, x64 in zip(out[torch.float32], out[None]):
        if not bool(torch.isfinite(x64).all()) or x64.abs().max() == 0:
            continue  # the float64 result itself over/underflows here
        assert bool(torch.isfinite(x32).all())
        assert _scaled_rel(x32, x64) <= tol


# ---------------------------------------------------------------------------
# The eigen methods take A itself with its scale 2^e (``_api._prepare``'s fold) instead of T = A/(2·4^k).
# It must change no bit of the value, the vjp, the jvp or the second derivative, whichever way S is formed.
# ---------------------------------------------------------------------------

EIGEN_METHODS = [m for m in METHODS if svdgrad.get_method(m).folds_input_scale]
FOLD_FUNCTIONS = {
    "sqrtm": svdgrad.sqrtm,
    "inv_sqrtm": svdgrad.inv_sqrtm,
    "logm": svdgrad.logm,
    "powm": lambda A, m: svdgrad.powm(A, -0.3, m),
    # a positive power too: its 4^(kp) was a separate factor exp2(2kp) on F, so a cotangent of 1e300 at a
    # 1e300 float64 matrix met 2^(2kp) before it was brought to order one (NaN, where -0.3's factor shrank it)
    "powm+": lambda A, m: svdgrad.powm(A, 0.3, m),
}

#: Far out, yet where every function's derivative (up to c^(-3/2), the inverse root's) is a normal number.
FOLD_SCALES = {torch.float32: (1e-20, 1.0, 1e20), torch.float64: (1e-200, 1.0, 1e200)}


def _unfolded(mp):
    """Every eigen method forms T = A/(2·4^k) with its graph, as before the fold."""
    import svdgrad._methods as M

    mp.setattr(M._EigenMethod, "folds_input_scale", False)


def _s_from_t(mp):
    """The fold, with S formed as T + Tᵀ from a T without a graph (the path above max/4 and under torch.func)."""
    from svdgrad import _api

    mp.setattr(_api, "_foldable", lambda *a: False)


def _value_vjp_jvp(f, A, G, dA, method):
    A1 = A.detach().clone().requires_grad_(True)
    Z = f(A1, method)
    (gA,) = torch.autograd.grad(Z, A1, G)
    with torch.autograd.forward_ad.dual_level():
        dZ = torch.autograd.forward_ad.unpack_dual(f(torch.autograd.forward_ad.make_dual(A, dA), method)).tangent
    fjvp = torch.func.jvp(lambda a: f(a, method), (A,), (dA,))[1]  # (under the transform: S from T)
    return Z.detach(), gA, dZ, fjvp


@pytest.mark.parametrize("other", [_unfolded, _s_from_t])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("fname", sorted(FOLD_FUNCTIONS))
@pytest.mark.parametrize("method", EIGEN_METHODS)
def test_folded_input_scale_changes_no_bit(method, fname, dtype, other, monkeypatch):
    """The same bits with the fold (S in one pass) as with T formed, or S formed from T, far out in the range."""
    from svdgrad import _api

    f = FOLD_FUNCTIONS[fname]
    A0 = T.spd(6, 1e3, batch=(3,), seed=41)
    G = T.gradients(A0.shape, seed=42, dtype=dtype)
    dA = T.gradients(A0.shape, seed=43, dtype=dtype)
    for c in FOLD_SCALES[dtype]:
        A = (A0 * c).to(dtype)
        assert _api._foldable(_kernels.scale_exponent(A.abs().amax((-2, -1))), dtype)
        folded = _value_vjp_jvp(f, A, G, dA, method)
        with monkeypatch.context() as mp:
            other(mp)
            formed = _value_vjp_jvp(f, A, G, dA, method)
        for x, y, what in zip(folded, formed, ("value", "vjp", "jvp", "torch.func.jvp")):
            assert torch.equal(x, y), (what, c)


@pytest.mark.parametrize("other", [_unfolded, _s_from_t])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_folded_second_derivative_changes_no_bit(dtype, other, monkeypatch):
    """exact's sqrt: the Hessian-vector product through the fold is that through T, bit for bit."""
    A0 = T.spd(5, 1e2, batch=(2,), seed=44)
    G = T.gradients(A0.shape, seed=45, dtype=dtype)
    H = T.gradients(A0.shape, seed=46, dtype=dtype)

    def hvp(A):
        A1 = A.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(svdgrad.sqrtm(A1), A1, G, create_graph=True)
        (h,) = torch.autograd.grad(g, A1, H)
        return g.detach(), h

    for c in (SCALES[dtype][0], 1.0, SCALES[dtype][-4]):  # (sqrt's second derivative: c^(-3/2))
        A = (A0 * c).to(dtype)
        folded = hvp(A)
        with monkeypatch.context() as mp:
            other(mp)
            formed = hvp(A)
        assert torch.equal(folded[0], formed[0]) and torch.equal(folded[1], formed[1]), c


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("method", EIGEN_METHODS)
def test_powers_of_four_across_the_fold_limit(method, dtype):
    """Near the top, 2^-(2k+1) is not normal (and A + Aᵀ may overflow), so S is formed from T there:
    the bits still follow 4^j exactly."""
    from svdgrad import _api

    A = T.spd(5, 1e2, seed=47).to(dtype)
    A = A * (3.0 / float(A.abs().max()))  # max|A| = 3 (on the diagonal, A being PSD)
    G = T.gradients(A.shape, seed=48, dtype=dtype)
    maxexp = math.frexp(torch.finfo(dtype).max)[1]  # max < 2^maxexp
    j = (maxexp - 2) // 2  # 3·4^j = 3·2^(maxexp-2): 3/4 of 2^maxexp, so A + Aᵀ overflows on the diagonal
    Aj = A * 4.0 ** j
    assert bool(torch.isfinite(Aj).all()) and not bool(torch.isfinite(Aj + Aj.mT).all())
    assert not _api._foldable(_kernels.scale_exponent(Aj.abs().amax((-2, -1))), dtype)
    Z, g = grad_of(A, G, method)
    Zj, gj = grad_of(Aj, G, method)
    assert torch.equal(Zj, Z * 2.0 ** j)
    assert torch.equal(gj, g * 2.0 ** -j)


#: Powers of two (matrix scale 4^j, cotangent 2^i) far out in each dtype's range.
#: (|j| = 7: below ``_api.PAIR_FROM_K``, where the iterative methods take the law's factors one by one.)
EXTREME = {torch.float32: ((-30, -15, -7, 7, 15, 30), (-120, -60, 60, 120)),
           torch.float64: ((-240, -120, -7, 7, 120, 240), (-990, -500, 500, 990))}
EXPONENT = {"sqrtm": 0.5, "inv_sqrtm": -0.5, "logm": 0.0, "powm": -0.3, "powm+": 0.3}


FUNCTION_OF = {"sqrtm": "sqrt", "inv_sqrtm": "inv_sqrt", "logm": "log", "powm": "power", "powm+": "power"}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("fname", sorted(FOLD_FUNCTIONS))
@pytest.mark.parametrize("method", METHODS + ("newton_schulz:backward=autograd",))
def test_extreme_cotangents_follow_the_scale_law(method, fname, dtype):
    """vjp and jvp at (4^j·A, 2^i·G) are 2^i·4^(j(p−1)) times those at (A, G) wherever that is a normal number.

    A cotangent of 1e300 into the square root of a 1e300 float64 matrix gave NaN, and one of 1e-300 at
    1e-290 gave 0, under every eigen method but exact (2^pow2 was applied to D before the cotangent met it);
    under the iterative methods and power_iteration, a float32 cotangent of 2^-120 at 4^-30·A (true gradient
    about 2^-90) gave 0 or lost half its digits (the law's factors were applied one by one outside the rule).
    """
    if svdgrad.get_method(method).name not in svdgrad.methods(FUNCTION_OF[fname]):
        pytest.skip(f"{method} does not compute {fname}")
    f, p = FOLD_FUNCTIONS[fname], EXPONENT[fname]
    A = T.spd(5, 1e2, seed=49).to(dtype)
    G = T.gradients(A.shape, seed=50, dtype=dtype)
    g1, j1 = _value_vjp_jvp(f, A, G, G, method)[1:3]
    lo, hi = math.log2(torch.finfo(dtype).tiny) + 30, math.log2(torch.finfo(dtype).max) - 30

    def tol(j):
        # Every factor is an exact power of two, but powm's 4^(kp) = exp2(2kp) is not: rounding its
        # argument 2kp (k grows by j) costs about |2jp|·ln2 ulps, in the value as in the derivatives.
        return 8 + (2 * abs(2 * j * p) if fname.startswith("powm") else 0)

    checked = 0
    for j in EXTREME[dtype][0]:
        for i in EXTREME[dtype][1]:
            law = i + 2 * j * (p - 1)  # log2 of the factor
            if not lo < law + math.log2(float(g1.abs().max())) < hi:
                continue  # the result itself is not a normal number of the dtype
            g, jv = _value_vjp_jvp(f, A * 4.0 ** j, G * 2.0 ** i, G * 2.0 ** i, method)[1:3]
            for x, x1, what in ((g, g1, "vjp"), (jv, j1, "jvp")):
                assert finite(x), (what, j, i)
                # (2^-law in two factors: i + 2j(p − 1) rounded as one float64 loses ulp(i)·ln2, 355 eps at i = -990)
                back = x.double() * 2.0 ** -i * 2.0 ** (-2 * j * (p - 1))
                err = float((back - x1.double()).abs().max() / x1.double().abs().max())
                assert err <= tol(j) * EPS[dtype], (what, j, i, err)
            checked += 1
    assert checked >= 8
