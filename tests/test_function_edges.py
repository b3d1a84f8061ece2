"""Edges of the function family found by the session-16 review: each test failed before its fix.

- ``matrix_function``'s fallback divided difference took f′ at the midpoint 0.5·(λi + λj), which
  overflows above max/2: the gradient was 0 there (now λi + 0.5·(λj − λi)).
- ``matrix_function`` with a compute dtype narrower than A cast A unscaled (a user's f has no scale
  law): 1e-50 flushed to 0 and came back as 3.3e-10, silently.  Now refused, naming the range.
- a narrower compute dtype whose spectrum leaves its range (powm(A, -30) of a float64 A computed in
  float32): inf/NaN came back silently.  Now refused.
- ``power_iteration`` under ``matrix_function`` (no rescaling) took norms of unscaled vectors, whose
  squares overflow or underflow outside 1e±19 (float32): zeros came back.
- (session 17) what a user's f, df, dd return: a complex result reached the kernels (RuntimeError "expected
  m1 and m2 to have the same dtype"), as did a float64 f for a float32 A; a bool f failed in the fallback
  divided difference, a result on another device in a kernel.  Complex and another device are refused,
  naming f/df/dd and the dtype or device; a real result of another dtype is cast to the eigenvalues'.
"""

import math

import pytest
import torch

import svdgrad
from svdgrad import SvdgradError
from svdgrad import testing as T

from .helpers import EPS

SQRT, DSQRT = torch.sqrt, (lambda x: 0.5 * x.rsqrt())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fallback_divided_difference_is_finite_near_the_top_of_the_range(dtype):
    top = torch.finfo(dtype).max
    X = torch.diag(torch.tensor([0.6, 0.9], dtype=dtype) * top).requires_grad_(True)
    svdgrad.matrix_function(X, SQRT, DSQRT).trace().backward()
    Y = X.detach().clone().requires_grad_(True)
    svdgrad.sqrtm(Y).trace().backward()
    assert torch.isfinite(X.grad).all() and float(X.grad.abs().max()) > 0
    assert torch.allclose(X.grad, Y.grad, rtol=100 * EPS[dtype], atol=0)


@pytest.mark.parametrize("scale", [1e-50, 1e40])
def test_matrix_function_refuses_a_narrower_compute_dtype_that_cannot_hold_A(scale):
    A = torch.tensor([[2.0, 1.0], [1.0, 3.0]], dtype=torch.float64) * scale
    with pytest.raises(SvdgradError, match=r"matrix_function does not rescale A.*compute_dtype=torch.float32"):
        svdgrad.matrix_function(A, SQRT, DSQRT, compute_dtype=torch.float32)
    # in range, the narrow computation is accurate to float32
    B = A / scale
    ref = svdgrad.sqrtm(B)
    got = svdgrad.matrix_function(B, SQRT, DSQRT, compute_dtype=torch.float32)
    assert float((got - ref).norm() / ref.norm()) <= 10 * EPS[torch.float32]


@pytest.mark.parametrize("A_diag, p", [((1.28, 128.0), -30.0), ((1.5, 3.0), 100.0), ((1.0, 100.0), -25.0)])
def test_narrow_compute_dtype_never_returns_a_silent_inf_or_nan(A_diag, p):
    A = torch.diag(torch.tensor(A_diag, dtype=torch.float64))
    ref = svdgrad.powm(A, p)
    try:
        got = svdgrad.powm(A, p, compute_dtype=torch.float32)
    except SvdgradError as exc:
        assert "compute_dtype" in str(exc) and "float64" in str(exc)
        return
    assert torch.isfinite(got).all()
    assert torch.allclose(got, ref, rtol=100 * EPS[torch.float32], atol=0)


def test_a_power_beyond_the_compute_dtype_is_refused_naming_p():
    """powm's own refusal names p and λ^p (the generic one of a non-finite f(A) does not)."""
    A = torch.diag(torch.tensor((1.28, 128.0), dtype=torch.float64))
    with pytest.raises(SvdgradError, match=r"finite A\^p.*p=-30\.0.*λ\^p leaves the range.*torch\.float32"):
        svdgrad.powm(A, -30.0, compute_dtype=torch.float32)


@pytest.mark.parametrize("dtype, scales", [(torch.float32, (1e-24, 1e20, 1e30)), (torch.float64, (1e-200, 1e200))])
def test_power_iteration_under_matrix_function_at_extreme_scales(dtype, scales):
    base = torch.tensor([[2.0, 0.5], [0.5, 1.0]], dtype=dtype)
    for c in scales:
        A = base * c
        ref = svdgrad.matrix_function(A, SQRT, DSQRT, "exact")
        got = svdgrad.matrix_function(A, SQRT, DSQRT, "power_iteration")
        assert torch.isfinite(got).all(), c
        assert float((got - ref).norm() / ref.norm()) <= 1e3 * EPS[dtype], c


@pytest.mark.parametrize("which", ["f", "df", "dd"])
def test_a_user_function_of_the_wrong_shape_is_refused(which):
    """f = lambda x: x[..., :1] broadcast one value over every eigenvalue: a silently wrong matrix."""
    A = torch.tensor([[2.0, 0.5], [0.5, 1.0]], dtype=torch.float64, requires_grad=True)
    f, df, dd = torch.exp, torch.exp, None
    if which == "f":
        f = lambda x: x[..., :1].exp()  # noqa: E731
    elif which == "df":
        df = lambda x: x.exp().sum(-1, keepdim=True)  # noqa: E731
    else:
        dd = lambda a, b: (a * b)[..., :1, :]  # noqa: E731
    with pytest.raises(SvdgradError, match=rf"Expected {which}\(.*shape"):
        svdgrad.matrix_function(A, f, df, dd=dd).sum().backward()


def test_unsupported_pair_names_the_function_and_the_root_only_methods():
    with pytest.raises(SvdgradError, match="'mpa' does not compute 'log'.*newton_schulz, mpa, mtp compute only"):
        svdgrad.logm(torch.eye(3), "mpa")
    with pytest.raises(SvdgradError, match="does not compute a user's function"):
        svdgrad.matrix_function(torch.eye(3), torch.exp, torch.exp, "newton_schulz")


# --- gram_sqrtm / gram_inv_sqrtm: the vjp and the jvp at order one (review finding) -------------------------------

def _gram_vjp(entry, X, G, **options):
    X = X.detach().clone().requires_grad_(True)
    return torch.autograd.grad(getattr(svdgrad, entry)(X, **options), X, G)[0]


GRAM_LAW = {"gram_sqrtm": 1, "gram_inv_sqrtm": -1}  # F(cX) = c^deg·F(X)


@pytest.mark.parametrize("entry", sorted(GRAM_LAW))
@pytest.mark.parametrize("dtype, cs", [(torch.float32, (1e-12, 1e12, 1e19)), (torch.float64, (1e-150, 1e150))])
def test_gram_gradient_of_half_the_squared_output_at_extreme_scales(entry, dtype, cs):
    """G = F (the gradient of ½‖F‖²) into X at c·X: the cotangent was scaled by 4^k before the rule and
    overflowed (NaN at 1e20 in float32) or underflowed (0 at 1e-30)."""
    X = torch.randn(3, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0)).to(dtype)
    deg = GRAM_LAW[entry]
    F1 = getattr(svdgrad, entry)(X)
    g1 = _gram_vjp(entry, X, F1)
    for c in cs:
        Fc = getattr(svdgrad, entry)(X * c)
        gc = _gram_vjp(entry, X * c, Fc)
        info = torch.finfo(dtype)
        log_law = (2 * deg - 1) * math.log10(c)  # ∇_X ½‖F(cX)‖² = c^(2deg−1)·(∇ ½‖F‖²)(X)
        if not (math.log10(1e3 * info.tiny) <= log_law + math.log10(float(g1.abs().max())) <= math.log10(info.max / 1e3)):
            continue  # (the gradient itself is not a number of the dtype there)
        law = 10.0 ** log_law if abs(log_law) < 300 else c ** (2 * deg - 1)
        assert torch.isfinite(gc).all(), c
        assert float(((gc.double() / law - g1.double()).norm() / g1.double().norm())) <= 1e3 * EPS[dtype], c


@pytest.mark.parametrize("entry", sorted(GRAM_LAW))
def test_gram_jvp_with_a_tangent_far_from_the_input_scale(entry):
    X = torch.randn(3, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    V = torch.randn(3, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    f = getattr(svdgrad, entry)
    d1 = torch.func.jvp(f, (X,), (V,))[1]
    deg = GRAM_LAW[entry]
    for c, t in ((1e-200, 1e200), (1e200, 1e-200), (1e-150, 1e-150)):
        log_law = math.log10(t) + (deg - 1) * math.log10(c)  # DF(cX)[tV] = t·c^(deg−1)·DF(X)[V]
        if abs(log_law) > 290:
            continue  # (not a float64 number)
        d = torch.func.jvp(f, (X * c,), (V * t,))[1]
        law = 10.0 ** log_law
        assert torch.isfinite(d).all(), (c, t)
        assert float(((d / law - d1).norm() / d1.norm())) <= 1e3 * EPS[torch.float64], (c, t)


@pytest.mark.parametrize("g", [1e-50, 1e50])
def test_gram_narrow_compute_dtype_carries_any_cotangent(g):
    X = torch.randn(3, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    G = torch.ones(3, 3, dtype=torch.float64)
    ref = _gram_vjp("gram_sqrtm", X, G, compute_dtype=torch.float32)
    got = _gram_vjp("gram_sqrtm", X, G * g, compute_dtype=torch.float32)
    assert torch.isfinite(got).all() and float(got.abs().max()) > 0
    assert float((got / g - ref).norm() / ref.norm()) <= 10 * EPS[torch.float32]  # (G·1e∓50 rounds to float32)


# --- session 17: what a user's f, df, dd return ---------------------------------------------------------------------

_A2 = [[2.0, 0.5], [0.5, 1.0]]


@pytest.mark.parametrize("which", ["f", "df", "dd"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("cdtype", [torch.complex64, torch.complex128])
def test_a_user_function_with_a_complex_result_is_refused(which, dtype, cdtype):
    """Before: RuntimeError "expected m1 and m2 to have the same dtype, but got: c10::complex<double> != double"
    (f) or "result type ComplexDouble can't be cast to the desired output type Double" (df, dd), from a kernel."""
    A = torch.tensor(_A2, dtype=dtype, requires_grad=True)
    f, df, dd = torch.exp, torch.exp, None
    if which == "f":
        f = lambda x: torch.sqrt(x.to(cdtype))  # noqa: E731
    elif which == "df":
        df = lambda x: x.to(cdtype)  # noqa: E731
    else:
        dd = lambda a, b: (a * b).to(cdtype)  # noqa: E731
    with pytest.raises(SvdgradError, match=rf"Expected {which}\(.*real tensor.*received dtype={cdtype}.*"
                                           rf"eigenvalues of dtype {dtype}"):
        svdgrad.matrix_function(A, f, df, dd=dd).sum().backward()


def _wide_exp_divided_difference(a, b):
    a, b = a.double(), b.double()
    gap = b - a
    return torch.where(gap == 0, a.exp(), (b.exp() - a.exp()) / torch.where(gap == 0, 1.0, gap))


@pytest.mark.parametrize("which", ["f", "df", "dd"])
def test_a_user_function_in_another_real_dtype_is_taken_in_the_eigenvalues_dtype(which):
    """f computed in float64 for a float32 A: before, RuntimeError "expected m1 and m2 to have the same dtype,
    but got: double != float" (f); the result is f rounded to float32, gradients included."""
    A = torch.tensor(_A2, dtype=torch.float32, requires_grad=True)
    wide = lambda x: x.double().exp()  # noqa: E731
    f, df, dd = torch.exp, torch.exp, None
    if which == "f":
        f = wide
    elif which == "df":
        df = wide
    else:
        dd = _wide_exp_divided_difference
    F = svdgrad.matrix_function(A, f, df, dd=dd)
    (g,) = torch.autograd.grad(F.sum(), A)
    B = A.detach().clone().requires_grad_(True)
    ref = torch.linalg.matrix_exp(B)
    (gref,) = torch.autograd.grad(ref.sum(), B)
    assert F.dtype == g.dtype == torch.float32
    assert torch.allclose(F, ref, rtol=10 * EPS[torch.float32], atol=0)
    assert torch.allclose(g, gref, rtol=100 * EPS[torch.float32], atol=0)


def test_a_user_function_of_bools_is_a_spectral_projector():
    """f = (λ > 1) is the projector onto the eigenvectors with λ > 1; before: RuntimeError "Subtraction, the `-`
    operator, with two bool tensors is not supported" (the fallback divided difference)."""
    Q = torch.linalg.qr(torch.randn(3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0)))[0]
    A = (Q * torch.tensor([0.5, 2.0, 3.0], dtype=torch.float64)) @ Q.mT
    A = ((A + A.mT) / 2).requires_grad_(True)
    P = svdgrad.matrix_function(A, lambda x: x > 1, torch.zeros_like)
    ref = Q[:, 1:] @ Q[:, 1:].mT
    assert P.dtype == torch.float64 and torch.allclose(P, ref, atol=1e-12)
    P.sum().backward()
    assert torch.isfinite(A.grad).all()


def test_a_user_function_on_another_device_is_refused():
    """Before: RuntimeError "Tensor on device meta is not on the expected device cpu!"."""
    A = torch.tensor(_A2, dtype=torch.float64)
    with pytest.raises(SvdgradError, match=r"Expected f\(.*on the eigenvalues' device \(cpu\); received meta"):
        svdgrad.matrix_function(A, lambda x: torch.empty_like(x, device="meta"), torch.exp)


@pytest.mark.parametrize("which", ["f", "df", "dd"])
def test_a_user_function_with_parameters_that_require_grad_is_refused(which):
    """f = lambda x: w * x with w.requires_grad: f runs inside the autograd Function, so w's gradient was
    silently None.  It is refused; under no_grad (no gradient wanted), or with w detached, it is computed."""
    A = torch.diag(torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64))
    w = torch.tensor(2.0, dtype=torch.float64, requires_grad=True)
    fns = {"f": lambda x: x.exp(), "df": lambda x: x.exp(), "dd": None}
    fns[which] = (lambda x, y: w * 0 + (x.exp() - y.exp()) / torch.where(x == y, 1.0, x - y)) if which == "dd" \
        else (lambda x: w * x.exp())
    call = lambda: svdgrad.matrix_function(A.requires_grad_(True), fns["f"], fns["df"], dd=fns["dd"])  # noqa: E731
    with pytest.raises(SvdgradError, match="requires grad"):
        call()
    with torch.no_grad():
        F = call()
    assert torch.allclose(F.diagonal(), (2.0 if which == "f" else 1.0) * torch.tensor([1.0, 2.0, 3.0]).double().exp())


def test_a_user_function_with_parameters_is_refused_under_vmap_and_forward_mode_too():
    """The refusal above was skipped when A was traced (vmap over A), and blind to forward mode: there w's
    derivative was silently dropped (vmap: dL/dw 2.0 for 6.303; torch.func.jvp and a forward_ad dual w: 1.0 for
    3.151).  Each is refused now; a constant w still works under vmap (session 20 review)."""
    import torch.autograd.forward_ad as fwAD

    A = torch.diag(torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64))
    As = A[None].expand(2, 3, 3)

    def L(w, A_):
        return svdgrad.matrix_function(A_, lambda x: w * x, lambda x: w * torch.ones_like(x)).sum() + w

    w = torch.tensor(2.0, dtype=torch.float64, requires_grad=True)
    with pytest.raises(SvdgradError, match="requires grad|derivative"):
        torch.func.vmap(lambda A_: L(w, A_))(As)
    w0 = torch.tensor(2.0, dtype=torch.float64)
    with pytest.raises(SvdgradError, match="requires grad|derivative"):
        torch.func.jvp(lambda w_: L(w_, A), (w0,), (torch.ones((), dtype=torch.float64),))
    with pytest.raises(SvdgradError, match="requires grad|derivative"):
        torch.func.grad(lambda w_: L(w_, A))(w0)
    with fwAD.dual_level():
        with pytest.raises(SvdgradError, match="requires grad|derivative"):
            L(fwAD.make_dual(w0, torch.ones((), dtype=torch.float64)), A)
    out = torch.func.vmap(lambda A_: L(w0, A_))(As)  # (a constant w: nothing to refuse)
    torch.testing.assert_close(out, torch.full((2,), 2.0 * 6.0 + 2.0, dtype=torch.float64))


# ---------------------------------------------------------------------------
# (session 23) A result computed in a wider dtype that does not fit the input's came back inf, silently.
# ---------------------------------------------------------------------------

def _half_rank_deficient_covariance():
    """A float16 covariance of 2 samples in 4 channels with λmax ≈ 1e-4: its null space gets the floor
    eps32·λmax (float16 is computed in float32), whose inverse root 1/√(1.2e-11) = 2.9e5 exceeds 65504."""
    g = torch.Generator().manual_seed(0)
    X = torch.randn(4, 2, generator=g) * 0.005
    return X, (X @ X.mT).half()


def _beyond_the_input_dtype():
    X, S = _half_rank_deficient_covariance()
    return [
        ("inv_sqrtm of a float16 rank-deficient covariance", lambda **o: svdgrad.inv_sqrtm(S, **o)),
        ("powm(-1/2) of it", lambda **o: svdgrad.powm(S, -0.5, **o)),
        ("powm(2) of a float16 300·I", lambda **o: svdgrad.powm(300.0 * torch.eye(3, dtype=torch.float16), 2.0, **o)),
        ("inv_sqrtm of the float16 zero matrix", lambda **o: svdgrad.inv_sqrtm(torch.zeros(3, 3, dtype=torch.float16), **o)),
        ("a user's f of float16", lambda **o: svdgrad.matrix_function(
            torch.diag(torch.tensor([12.0, 1.0], dtype=torch.float16)), torch.exp, torch.exp, **o)),
        ("gram_inv_sqrtm of a float16 rank-deficient X", lambda **o: svdgrad.gram_inv_sqrtm(X.half(), **o)),
        ("gram_inv_sqrtm of a float32 X at 1e-39", lambda **o: svdgrad.gram_inv_sqrtm(1e-39 * torch.eye(3), **o)),
    ]


@pytest.mark.parametrize("case", range(len(_beyond_the_input_dtype())),
                         ids=[c[0] for c in _beyond_the_input_dtype()])
def test_a_result_beyond_the_input_dtype_is_refused(case):
    """Finite in the compute dtype, inf once cast back to the input's: inv_sqrtm and powm of float16 input
    (computed in float32) returned inf silently, and so did gram_inv_sqrtm (its 1/σ of a subnormal float32 X
    too).  Now refused with SvdgradError naming the dtype and the remedies; check=False returns the inf."""
    _, f = _beyond_the_input_dtype()[case]
    with pytest.raises(SvdgradError, match="does not fit torch.float"):
        f()
    assert torch.isinf(f(check=False)).any()


def test_the_remedies_the_refusal_names_work():
    X, S = _half_rank_deficient_covariance()
    with pytest.raises(SvdgradError, match=r"eps=\.\.\..*check=False") as info:
        svdgrad.inv_sqrtm(S)
    assert "float16" in str(info.value) and "float()" in str(info.value)
    assert torch.isfinite(svdgrad.inv_sqrtm(S.float())).all()
    assert torch.isfinite(svdgrad.inv_sqrtm(S, eps=1e-3)).all()
    assert torch.isfinite(svdgrad.gram_inv_sqrtm(X.half(), eps=1e-2)).all()
    # a power p > 0 is largest at λmax: no floor to raise there, so no eps in the remedies
    with pytest.raises(SvdgradError, match=r"A\.float\(\)\); or pass check=False") as info:
        svdgrad.powm(300.0 * torch.eye(3, dtype=torch.float16), 2.0)
    assert "eps" not in str(info.value)
    with pytest.raises(SvdgradError, match=r"eps=\.\.\."):
        svdgrad.powm(S, torch.tensor(-0.5))
    # where the result fits, nothing changes (the same covariance at λmax ≈ 4e-3)
    assert torch.isfinite(svdgrad.inv_sqrtm((X @ X.mT * 40).half())).all()


@pytest.mark.parametrize("f,says,never", [
    # the all-zero float16 matrix: its floor is absolute (√tiny), a larger eps does not move it
    (lambda **o: svdgrad.inv_sqrtm(torch.zeros(3, 3, dtype=torch.float16), **o),
     ["does not fit torch.float16", "A.float()"], ["eps="]),
    # nonsingular: A^-2 is 1e8 itself, no floor involved (a larger eps would change the answer silently)
    (lambda **o: svdgrad.powm(torch.diag(torch.tensor([1.0, 1e-4], dtype=torch.float16)), -2.0, **o),
     ["does not fit torch.float16", "A.float()"], ["eps=", "singular"]),
    # full-rank float32 X at 1e-39: nothing floored, and X is float32 already
    (lambda **o: svdgrad.gram_inv_sqrtm(1e-39 * torch.eye(3), **o),
     ["does not fit torch.float32", "X.double()"], ["eps=", "X.float()"]),
    (lambda **o: svdgrad.gram_inv_sqrtm(_half_rank_deficient_covariance()[0].half(), **o),
     ["does not fit torch.float16", "X.float()", "eps=..."], []),
    # all-zero float16 features (d > N too): the floor is absolute, a larger eps does not move it; the
    # message read "σmin/σmax = nan"
    (lambda **o: svdgrad.gram_inv_sqrtm(torch.zeros(5, 3, dtype=torch.float16), **o),
     ["does not fit torch.float16", "X.float()", "all-zero X"], ["eps=", "nan"]),
    (lambda **o: svdgrad.gram_inv_sqrtm(torch.zeros(3, 5, dtype=torch.float16), **o),
     ["does not fit torch.float16", "X.float()", "all-zero X"], ["eps=", "nan"]),
    # float32 computed in float64, singular: the floor eps64·λmax is finer than float32's, so leaving
    # compute_dtype unset helps (the all-zero matrix, whose floor is float32's either way, now fits)
    (lambda **o: svdgrad.powm(torch.diag(torch.tensor([1e-5, 0.0])), -2.0, compute_dtype=torch.float64, **o),
     ["does not fit torch.float32", "leave compute_dtype unset", "A.double()", "eps=..."], ["leaves the range"]),
])
def test_the_refusal_names_only_remedies_that_apply(f, says, never):
    """The review of the refusal above: the dtype it suggested could be the one in use, and a larger eps was
    offered where no eigenvalue was floored (the all-zero matrix's floor is absolute; a nonsingular A's result
    is itself too large)."""
    with pytest.raises(SvdgradError) as info:
        f()
    msg = str(info.value)
    for s in says:
        assert s in msg, (s, msg)
    for s in never:
        assert s not in msg, (s, msg)


@pytest.mark.parametrize("method,dtype,scale", [("pade", torch.float32, 1e-33), ("taylor", torch.float32, 1e-37),
                                                ("pade", torch.float64, 1e-295), ("taylor", torch.float64, 1e-307)])
def test_ratio_rules_under_matrix_function_near_the_bottom_of_the_range(method, dtype, scale):
    """A user's f gets A unscaled, so pade's 1/max(|λi − λj|, pole_gap·λmax) and taylor's (d+1)/λmax overflowed
    at eigenvalues near the smallest normal number, and a tie's (f(λi) − f(λj))·K was 0·inf: a NaN gradient with a
    finite forward (review, session 23).  K is held within the dtype: the gradient is finite, with f′ on the
    diagonal as every method has."""
    A = (scale * torch.diag(torch.tensor([1.0, 1.0, 2.0, 3.0], dtype=dtype))).requires_grad_(True)
    F = svdgrad.matrix_function(A, SQRT, DSQRT, method)
    (g,) = torch.autograd.grad(F.sum(), A)
    assert torch.isfinite(g).all()
    expect = DSQRT(A.detach().diagonal())
    assert torch.allclose(g.diagonal(), expect, rtol=10 * EPS[dtype], atol=0)


def test_a_float64_overflow_is_not_told_to_compute_in_float64():
    """The review: float64 input whose eigenvalues (svdgrad.eigh) or A^p overflow was told to "compute in
    torch.float64", the dtype in use."""
    with pytest.raises(SvdgradError, match="overflow") as info:
        svdgrad.eigh(torch.full((2, 2), 1.7e308, dtype=torch.float64))
    assert "float64 or" not in str(info.value) and "scale A down" in str(info.value)
    with pytest.raises(SvdgradError, match="smaller |p|") as info:
        svdgrad.powm(torch.diag(torch.tensor([1e300, 1.0], dtype=torch.float64)), 2.0)
    assert "compute in torch.float64" not in str(info.value)
    # float32 input still gets the wider dtype as a remedy
    with pytest.raises(SvdgradError, match="torch.float64"):
        svdgrad.eigh(torch.full((2, 2), 3e38))


def _dk_gradient(A, f, dd_exact, G):
    """⟨G, f(A)⟩'s gradient by Daleckii–Krein in float64 with an analytic divided difference."""
    L, U = torch.linalg.eigh(A.double())
    D = dd_exact(L[:, None], L[None, :])
    Gs = U.mT @ ((G + G.mT) / 2).double() @ U
    return U @ (Gs * D) @ U.mT


def _sin_dd(a, b):
    d = b - a
    return torch.where(d == 0, torch.cos(a), 2 * torch.cos(a + d / 2) * torch.sin(d / 2) / torch.where(d == 0, 1, d))


def _exp_dd(a, b):
    lo, d = torch.minimum(a, b), (b - a).abs()
    return torch.exp(lo) * torch.where(d == 0, 1, torch.expm1(d) / torch.where(d == 0, 1, d))


@pytest.mark.parametrize("dtype,lam,f,df,dd", [
    (torch.float64, [1e6, 1e6 + 3, 1e6 + 5], torch.sin, torch.cos, _sin_dd),
    (torch.float32, [40.0, 40.15, 40.3], torch.exp, torch.exp, _exp_dd),
    (torch.float64, [1.0, 1.0 + 1e-9, 3.0], torch.exp, torch.exp, _exp_dd),
    (torch.float64, [40.0, 40.0 + 1e-9, 42.0], torch.exp, torch.exp, _exp_dd),  # (|f| large: 2e17)
    (torch.float32, [2.0, 2.0 + 1e-4, 5.0], torch.sin, torch.cos, _sin_dd),
])
def test_matrix_function_fallback_divided_difference_follows_f_not_the_size_of_lambda(dtype, lam, f, df, dd):
    """The fallback took f′ at the midpoint wherever δ < eps^(1/3)·max|λ|, a gap relative to λ: for an f that is
    not scale-free that is a gap of 6 for sin at 1e6 (gradient 8 % off) and of 0.2 for exp at 40 in float32
    (6.5e-4, where the plain quotient gives 3.4e-6).  It now takes the quotient or Simpson's rule on f′, whichever
    has the smaller estimated error.  The bound: the same input's quotient (``ordinary``, accurate on these
    separated pairs) to a factor 4, and near ties (the last two cases, where the quotient loses digits), the
    float64 eigendecomposition's own error, 8·eps·max|λ|·max|f″/f′| relative."""
    Q, _ = torch.linalg.qr(torch.randn(3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0)))
    A = Q @ torch.diag(torch.tensor(lam, dtype=torch.float64)) @ Q.mT
    A = ((A + A.mT) / 2).to(dtype)
    G = T.gradients(A.shape, seed=1, dtype=dtype)
    ref = _dk_gradient(A, f, dd, G)

    def err(method):
        X = A.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(svdgrad.matrix_function(X, f, df, method), X, G)
        return float(torch.linalg.matrix_norm(g.double() - ref) / torch.linalg.matrix_norm(ref))

    eps = torch.finfo(dtype).eps
    assert err("exact") <= max(4 * err("ordinary") if lam[1] - lam[0] > 1e-2 else 0.0, 8 * eps * max(lam))
