"""Second derivatives: correct where documented, a clear RuntimeError everywhere else, never a silent number.

Every way of taking one is covered: reverse over reverse (``create_graph=True``),
forward over reverse (``torch.func.jvp`` of ``torch.func.grad``, ``torch.func.hessian``,
``torch.autograd.forward_ad`` over ``torch.autograd.grad``), reverse over forward
(``torch.func.grad`` of ``torch.func.jvp``, a backward through a forward_ad tangent), for every (function, method)
pair, ``gram_sqrtm``/``gram_inv_sqrtm``, ``eigh``, powm's p, and a compute dtype narrower
than the input.  First-order forward mode on an input that also requires grad, and
torch.func transforms with a narrower compute dtype, keep working.  Where a second
derivative is supported its value is checked against a central difference of the gradient.
"""

import pytest
import torch
import torch.autograd.forward_ad as fwAD

import svdgrad
import svdgrad.testing as T
from svdgrad import SvdgradError

from .test_functions import PAIRS, call

#: The message of every refusal names what is not supported.
UNSUPPORTED = "is not supported"

EPS64 = torch.finfo(torch.float64).eps


def _twice(function, method) -> bool:
    return svdgrad.get_method(method).differentiable_twice(function)


def _case(n=4, seed=1, dtype=torch.float64):
    A = T.spd(n, 10.0, seed=seed, dtype=dtype)
    return A, T.gradients(A.shape, seed=seed + 1, dtype=dtype), T.gradients(A.shape, seed=seed + 2, dtype=dtype,
                                                                            symmetric=True)


def _rev_over_rev(f, A, G, H):
    A = A.detach().clone().requires_grad_(True)
    (g,) = torch.autograd.grad((f(A) * G).sum(), A, create_graph=True)
    (h,) = torch.autograd.grad((g * H).sum(), A)
    return h


def _fwd_over_rev(f, A, G, H):
    return torch.func.jvp(torch.func.grad(lambda X: (f(X) * G).sum()), (A,), (H,))[1]


def _fwAD_over_rev(f, A, G, H):
    """torch.autograd.forward_ad over torch.autograd.grad (no create_graph needed)."""
    with fwAD.dual_level():
        Ad = fwAD.make_dual(A.detach().clone().requires_grad_(True), H)
        (g,) = torch.autograd.grad((f(Ad) * G).sum(), Ad)
        return fwAD.unpack_dual(g).tangent


def _fd_hvp(f, A, G, H, h=1e-5):
    def grad(X):
        X = X.detach().clone().requires_grad_(True)
        return torch.autograd.grad((f(X) * G).sum(), X)[0]

    return (grad(A + h * H) - grad(A - h * H)) / (2 * h)


def _rev_over_fwd(f, A, G, H):
    """torch.func.grad of a torch.func.jvp (as jacrev of jacfwd): d/dA ⟨Df(A)[H], G⟩, which is the hvp's
    value by the symmetry of the second derivative."""
    return torch.func.grad(lambda X: (torch.func.jvp(f, (X,), (H,))[1] * G).sum())(A)


def _rev_over_fwAD(f, A, G, H):
    """torch.autograd.grad through a torch.autograd.forward_ad tangent, of an input that requires grad."""
    Ar = A.detach().clone().requires_grad_(True)
    with fwAD.dual_level():
        tangent = fwAD.unpack_dual(f(fwAD.make_dual(Ar, H))).tangent
    (h,) = torch.autograd.grad((tangent * G).sum(), Ar)
    return h


SECOND_ORDER = {"reverse-over-reverse": _rev_over_rev, "forward-over-reverse": _fwd_over_rev,
                "forward_ad-over-reverse": _fwAD_over_rev, "reverse-over-forward": _rev_over_fwd,
                "reverse-over-forward_ad": _rev_over_fwAD}

def _mode_pairs():
    """(function, method, mode) for every pair and every way of taking a second derivative."""
    return [(f, m, mode) for mode in SECOND_ORDER for f, m in PAIRS]


@pytest.mark.parametrize("function,method,mode", _mode_pairs())
def test_second_derivative_of_every_pair_is_right_or_raises(function, method, mode):
    A, G, H = _case()
    f = lambda X: call(function, X, method)  # noqa: E731
    if _twice(function, method):
        assert T.rel_error(SECOND_ORDER[mode](f, A, G, H), _fd_hvp(f, A, G, H)) <= 1e-7
    else:
        with pytest.raises(RuntimeError, match=UNSUPPORTED):
            SECOND_ORDER[mode](f, A, G, H)


def test_hessian_raises_for_a_once_differentiable_pair():
    A, G, _ = _case()
    with pytest.raises(RuntimeError, match="double backward through method='exact' is not supported"):
        torch.func.hessian(lambda X: (svdgrad.logm(X) * G).sum())(A)


@pytest.mark.parametrize("mode", SECOND_ORDER)
def test_newton_schulz_autograd_second_derivative_in_every_mode(mode):
    A, G, H = _case()
    f = lambda X: svdgrad.sqrtm(X, "newton_schulz", backward="autograd")  # noqa: E731
    assert T.rel_error(SECOND_ORDER[mode](f, A, G, H), _fd_hvp(f, A, G, H)) <= 1e-6


#: Newton–Schulz with backward='autograd' at 4^j·A, |j| above ``_api.PAIR_FROM_K``: the scaling pair goes around it
#: (extreme first-order cotangents), and must switch to the plain chain wherever a second derivative may follow.
NS_AUTOGRAD = {"sqrtm": (svdgrad.sqrtm, 0.5), "inv_sqrtm": (svdgrad.inv_sqrtm, -0.5)}


@pytest.mark.parametrize("j", [-12, 12])
@pytest.mark.parametrize("entry", sorted(NS_AUTOGRAD))
@pytest.mark.parametrize("mode", SECOND_ORDER)
def test_newton_schulz_autograd_second_derivative_far_from_order_one(mode, entry, j):
    """h(4^j·A) = 4^(j(p−2))·h(A) for A^p: every mode, through the pair (the same bits up to rounding)."""
    from svdgrad import _api

    assert abs(j) > _api.PAIR_FROM_K
    fn, p = NS_AUTOGRAD[entry]
    A, G, H = _case()
    f = lambda X: fn(X, "newton_schulz", backward="autograd")  # noqa: E731
    h1 = SECOND_ORDER[mode](f, A, G, H)
    hj = SECOND_ORDER[mode](f, A * 4.0 ** j, G, H)
    assert T.rel_error(hj * 4.0 ** (-j * (p - 2)), h1) <= 8 * EPS64


@pytest.mark.parametrize("entry", sorted(NS_AUTOGRAD))
def test_newton_schulz_autograd_gradient_penalty_far_from_order_one(entry):
    """A loss of F and of its own gradient (create_graph=True), after a first-order backward of the same graph:
    the pair's first pass is scaled, every later one plain; the sum follows the law term by term."""
    fn, p = NS_AUTOGRAD[entry]
    A, G, H = _case()
    j = 12

    def penalized(A, Hj, first_order_first):
        A = A.detach().clone().requires_grad_(True)
        F = fn(A, "newton_schulz", backward="autograd")
        if first_order_first:
            torch.autograd.grad((F * G).sum(), A, retain_graph=True)
        (g,) = torch.autograd.grad((F * G).sum(), A, create_graph=True)
        return torch.autograd.grad((F * G).sum() + (g * Hj).sum(), A)[0]

    law_g, law_h = 4.0 ** (-j * (1 - p)), 4.0 ** (-j * (2 - p))
    # H scaled so that both terms have the same size at 4^j·A
    ref = penalized(A, H, False)
    g1 = penalized(A, H * 0, False)
    h1 = ref - g1
    for first in (False, True):
        total = penalized(A * 4.0 ** j, H * (law_g / law_h), first)
        assert T.rel_error(total, law_g * (g1 + h1)) <= 16 * EPS64, first


@pytest.mark.parametrize("function,method", PAIRS)
def test_first_order_forward_ad_on_an_input_that_requires_grad(function, method):
    """forward_ad's tangent is the same whether or not the dual input also requires grad."""
    A, G, H = _case()
    ref = torch.func.jvp(lambda X: call(function, X, method), (A,), (H,))[1]
    with fwAD.dual_level():
        Ad = fwAD.make_dual(A.clone().requires_grad_(True), H)
        F = call(function, Ad, method)
        assert torch.allclose(fwAD.unpack_dual(F).tangent, ref, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("function,method", [(f, m) for f, m in PAIRS if m in ("exact", "pade", "newton_schulz")])
def test_mixed_derivative_in_the_cotangent_is_not_refused(function, method):
    """d/dW ∇_A⟨f(A), W⟩ is the (linear) vjp itself: forward mode in W over reverse in A is exact."""
    A, G, H = _case()

    def grad_A(W):
        return torch.func.grad(lambda X: (call(function, X, method) * W).sum())(A)

    assert torch.allclose(torch.func.jvp(grad_A, (G,), (H,))[1], grad_A(H), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("function,method", PAIRS)
def test_forward_ad_cotangent_over_reverse_is_the_vjp_of_its_tangent(function, method):
    """torch.autograd.forward_ad in the cotangent G over autograd.grad in A: the vjp is linear in G, so the
    gradient's tangent is the vjp of G's tangent (not a crash in the rules' out= products, not None)."""
    A, G, H = _case()
    A.requires_grad_(True)
    with fwAD.dual_level():
        (g,) = torch.autograd.grad(call(function, A, method), A, fwAD.make_dual(G, H))
        tangent = fwAD.unpack_dual(g).tangent
    (ref,) = torch.autograd.grad(call(function, A, method), A, H)
    assert tangent is not None
    assert torch.allclose(tangent, ref, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("entry", ["gram_sqrtm", "gram_inv_sqrtm"])
def test_forward_ad_cotangent_over_reverse_gram(entry):
    X = T.features(4, 7, seed=3).requires_grad_(True)
    G, H = T.gradients((4, 4), seed=4), T.gradients((4, 4), seed=6)
    f = getattr(svdgrad, entry)
    with fwAD.dual_level():
        (g,) = torch.autograd.grad(f(X), X, fwAD.make_dual(G, H))
        tangent = fwAD.unpack_dual(g).tangent
    (ref,) = torch.autograd.grad(f(X), X, H)
    assert tangent is not None and torch.allclose(tangent, ref, rtol=1e-10, atol=1e-12)


# --- a compute dtype narrower than the input ------------------------------------------------------------

NARROW = {"exact": {}, "newton_schulz:autograd": {"backward": "autograd"}}


@pytest.mark.parametrize("scale", [1.0, 1e6])
@pytest.mark.parametrize("method", NARROW)
def test_narrow_compute_dtype_double_backward_raises(method, scale):
    """float64 input computed in float32: the first-order gradient keeps its scale, a second derivative
    (whose cotangent would cross the cast at another scale) is refused instead of off by a power of two."""
    A, G, H = _case()
    f = lambda X: svdgrad.sqrtm(X, method.partition(":")[0], compute_dtype=torch.float32,  # noqa: E731
                                **NARROW[method])
    Ar = A.clone().requires_grad_(True)
    (g,) = torch.autograd.grad((f(Ar) * G * scale).sum(), Ar, create_graph=True)
    assert g.dtype == torch.float64
    with pytest.raises(RuntimeError, match="compute_dtype"):
        torch.autograd.grad((g * H).sum(), Ar)
    with pytest.raises(RuntimeError, match="compute_dtype"):
        _fwAD_over_rev(f, A, G * scale, H)


@pytest.mark.parametrize("method", NARROW)
def test_narrow_compute_dtype_under_torch_func(method):
    """Under vmap (torch.func.hessian) the narrow cast is the plain chain: the Hessian is the float64 one to
    float32's accuracy.  jvp of grad, without a vmap, keeps the scale pairing and so refuses."""
    A, G, H = _case()
    f = lambda X, **o: svdgrad.sqrtm(X, method.partition(":")[0], **NARROW[method], **o)  # noqa: E731

    def hvp(**o):
        return torch.einsum("ijkl,kl->ij", torch.func.hessian(lambda X: (f(X, **o) * G).sum())(A), H)

    h = hvp(compute_dtype=torch.float32)
    assert h.dtype == torch.float64
    assert T.rel_error(h, hvp()) <= 1e-4
    with pytest.raises(RuntimeError, match="compute_dtype"):
        _fwd_over_rev(lambda X: f(X, compute_dtype=torch.float32), A, G, H)


TRANSFORMS = {
    "jacfwd": lambda f, L, A, W: torch.func.jacfwd(f)(A[0]),
    "jacrev": lambda f, L, A, W: torch.func.jacrev(f)(A[0]),
    "vmap(grad)": lambda f, L, A, W: torch.func.vmap(torch.func.grad(L))(A),
    "vmap(jvp)": lambda f, L, A, W: torch.func.vmap(lambda a: torch.func.jvp(f, (a,), (W,))[1])(A),
    "jacrev(vmap)": lambda f, L, A, W: torch.func.jacrev(torch.func.vmap(f))(A),
}


@pytest.mark.parametrize("transform", TRANSFORMS)
@pytest.mark.parametrize("function,method", [(f, m) for f, m in PAIRS if m in ("exact", "newton_schulz")])
def test_torch_func_with_a_narrower_compute_dtype(function, method, transform):
    A = T.spd(3, 10.0, batch=(2,), seed=1)
    W = T.gradients(A.shape[1:], seed=2, symmetric=True)

    def run(**o):
        f = lambda X: call(function, X, method, **o)  # noqa: E731
        return TRANSFORMS[transform](f, lambda X: (f(X) * W).sum(), A, W)

    out = run(compute_dtype=torch.float32)
    assert out.dtype == torch.float64
    assert T.rel_error(out, run()) <= 1e-4


#: Scales of A whose derivatives, of order λ^(p−1), float64 holds: to 1e±300 for the square root (λ^-0.5)
#: and the log (1/λ), 1e±200 for the inverse square root (λ^-1.5), 1e±100 for the power (P = −1.3: λ^-2.3).
FAR_SCALES = {"sqrt": (1e-300, 1e-50, 1e50, 1e300), "log": (1e-300, 1e-50, 1e50, 1e300),
              "inv_sqrt": (1e-200, 1e-50, 1e50, 1e200), "power": (1e-100, 1e-50, 1e50, 1e100)}


@pytest.mark.parametrize("transform", TRANSFORMS)
@pytest.mark.parametrize("function,method,scale", [(f, m, c) for f, m in PAIRS if m in ("exact", "newton_schulz")
                                                   for c in FAR_SCALES[f]])
def test_torch_func_with_a_narrower_compute_dtype_far_from_order_one(function, method, scale, transform):
    """First derivatives under vmap keep their scale across a narrower cast (``NarrowCast``): the plain chain
    carried the law's factor on the tangent or cotangent before the cast (jacfwd at 1e50 gave 0, at 1e-50 NaN;
    vmap(grad) at 1e200 NaN)."""
    A = T.spd(3, 10.0, batch=(2,), seed=1) * scale
    W = T.gradients(A.shape[1:], seed=2, symmetric=True)

    def run(**o):
        f = lambda X: call(function, X, method, **o)  # noqa: E731
        return TRANSFORMS[transform](f, lambda X: (f(X) * W).sum(), A, W)

    out, ref = run(compute_dtype=torch.float32), run()
    assert bool(torch.isfinite(ref).all()) and float(ref.abs().amax()) > 0  # (the scale is one float64 holds)
    assert out.dtype == torch.float64
    assert T.rel_error(out, ref) <= 1e-4


@pytest.mark.parametrize("second", ["hessian", "vmap(grad of a gradient penalty)"])
def test_narrow_cast_is_plain_where_a_second_derivative_may_follow(second):
    """Away from order one (A ≈ 1e6: the law's exponents are ±20) a second derivative under vmap with a narrower
    compute dtype is the float64 one: ``NarrowCast`` does not rescale there (a second-order tangent or
    cotangent would not carry the exponent; summed with a first-order one it could not be told apart)."""
    A = T.spd(3, 10.0, batch=(2,), seed=1) * 1e6
    W = T.gradients(A.shape[1:], seed=2, symmetric=True)
    H = T.gradients(A.shape[1:], seed=3, symmetric=True)

    def run(**o):
        f = lambda X: (svdgrad.sqrtm(X, **o) * W).sum()  # noqa: E731
        if second == "hessian":
            return torch.func.vmap(torch.func.hessian(f))(A)
        penalty = lambda X: f(X) + (torch.func.grad(f)(X) * H).sum() ** 2  # noqa: E731
        return torch.func.vmap(torch.func.grad(penalty))(A)

    out, ref = run(compute_dtype=torch.float32), run()
    assert out.dtype == torch.float64
    assert T.rel_error(out, ref) <= 1e-4


@pytest.mark.parametrize("function,method,options", [("sqrt", "exact", {}),
                                                     ("sqrt", "newton_schulz", {"backward": "autograd"}),
                                                     ("inv_sqrt", "newton_schulz", {"backward": "autograd"})])
@pytest.mark.parametrize("exponent", [-60, -40, -32, -31, -20, -10, -5, 5, 10, 20, 31, 32, 40, 60, 100])
def test_narrow_hessian_far_from_order_one_is_right_or_raises(function, method, options, exponent):
    """torch.func.hessian with a narrower compute dtype takes the plain chain; where its tangent or cotangent
    would cross the cast outside float32's range it raises, never a silent 0 (at 1e50 it was 0, at 1e100 NaN)."""
    A = T.spd(3, 10.0, seed=1) * 10.0 ** exponent
    W = T.gradients((3, 3), seed=2, symmetric=True)

    def hess(**o):
        return torch.func.hessian(lambda X: (call(function, X, method, **options, **o) * W).sum())(A)

    ref = hess()
    if not (bool(torch.isfinite(ref).all()) and float(ref.abs().amax()) > 0):
        pytest.skip("the Hessian itself lies outside float64's range at this scale")
    try:
        out = hess(compute_dtype=torch.float32)
    except SvdgradError as e:
        assert "cannot carry a second derivative" in str(e) and "compute_dtype=None" in str(e)
        assert abs(exponent) > 10  # (near order one it is computed)
        return
    assert T.rel_error(out, ref) <= 1e-4


@pytest.mark.parametrize("exponent", [30, -30, 200])
def test_narrow_cast_under_vmap_with_a_plain_autograd_graph(exponent):
    """vmap of sqrtm at an A that requires grad (the graph is torch.autograd's, outside the vmap): a first-order
    backward is the float64 gradient, or raises where its cotangent leaves float32's range (1e200: the law's
    2^332); a create_graph=True backward far from order one raises (its second derivative could not be carried)."""
    A = T.spd(3, 10.0, batch=(2,), seed=1) * 10.0 ** exponent
    W = T.gradients((3, 3), seed=2, symmetric=True)

    def grad_of(compute_dtype, create_graph=False):
        X = A.clone().requires_grad_(True)
        F = torch.vmap(lambda a: svdgrad.sqrtm(a, compute_dtype=compute_dtype))(X)
        return torch.autograd.grad((F * W).sum(), X, create_graph=create_graph)[0]

    ref = grad_of(None)
    if exponent == 200:
        with pytest.raises(SvdgradError, match="outside torch.float32's range"):
            grad_of(torch.float32)
    else:
        assert T.rel_error(grad_of(torch.float32), ref) <= 1e-4
    with pytest.raises(SvdgradError, match="cannot carry a second derivative"):
        grad_of(torch.float32, create_graph=True)


# --- powm's tensor p ------------------------------------------------------------------------------------


@pytest.mark.parametrize("compute_dtype", [None, torch.float32])
def test_powm_second_derivatives_in_p_raise(compute_dtype):
    A, G, H = _case()
    A.requires_grad_(True)
    p = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    L = (svdgrad.powm(A, p, compute_dtype=compute_dtype) * G).sum()
    gA, gp = torch.autograd.grad(L, (A, p), create_graph=True)
    with pytest.raises(RuntimeError, match=UNSUPPORTED):  # d²L/dp²
        torch.autograd.grad(gp, p, allow_unused=True)
    with pytest.raises(RuntimeError, match=UNSUPPORTED):  # d/dA (dL/dp)
        torch.autograd.grad(gp, A, allow_unused=True)
    with pytest.raises(RuntimeError, match=UNSUPPORTED):  # d/dp (dL/dA)
        torch.autograd.grad((gA * H).sum(), p, allow_unused=True)


def test_powm_forward_over_reverse_in_p_only_is_right():
    """With A constant, torch.func.hessian in p differentiates p's gradient through its own formula: correct."""
    A, G, _ = _case()
    L = lambda q: (svdgrad.powm(A, q) * G).sum()  # noqa: E731
    p0, h = 0.3, 1e-4
    fd = (L(torch.tensor(p0 + h, dtype=A.dtype)) - 2 * L(torch.tensor(p0, dtype=A.dtype))
          + L(torch.tensor(p0 - h, dtype=A.dtype))) / h ** 2
    hp = torch.func.hessian(L)(torch.tensor(p0, dtype=A.dtype))
    assert abs(float(hp) - float(fd)) <= 1e-5 * abs(float(fd))


def test_powm_forward_over_reverse_in_A_and_p_raises():
    A, G, H = _case()

    def grad_p(X):
        return torch.func.grad(lambda q: (svdgrad.powm(X, q) * G).sum())(torch.tensor(0.3, dtype=A.dtype))

    with pytest.raises(RuntimeError, match=UNSUPPORTED):
        torch.func.jvp(grad_p, (A,), (H,))


# --- gram_sqrtm, gram_inv_sqrtm, eigh --------------------------------------------------------------------

GRAMS = {"gram_sqrtm": svdgrad.gram_sqrtm, "gram_inv_sqrtm": svdgrad.gram_inv_sqrtm}


@pytest.mark.parametrize("mode", SECOND_ORDER)
@pytest.mark.parametrize("algorithm", ["svd", "gram64"])
@pytest.mark.parametrize("entry", GRAMS)
def test_gram_second_derivative_raises(entry, algorithm, mode):
    X = T.features(4, 7, seed=3)
    dtype = torch.float32 if algorithm == "gram64" else torch.float64
    X = X.to(dtype)
    G = T.gradients((4, 4), seed=4, dtype=dtype, symmetric=True)
    V = T.gradients((4, 7), seed=5, dtype=dtype)
    with pytest.raises(RuntimeError, match=f"{entry}.*{UNSUPPORTED}"):
        SECOND_ORDER[mode](lambda Y: GRAMS[entry](Y, algorithm=algorithm), X, G, V)


@pytest.mark.parametrize("entry", GRAMS)
def test_gram_first_order_forward_and_reverse_still_work(entry):
    X = T.features(4, 7, seed=3)
    V = T.gradients((4, 7), seed=5)
    f = GRAMS[entry]
    ref = torch.func.jvp(f, (X,), (V,))[1]
    with fwAD.dual_level():
        F = f(fwAD.make_dual(X.clone().requires_grad_(True), V))
        assert torch.allclose(fwAD.unpack_dual(F).tangent, ref, rtol=1e-10, atol=1e-12)
    assert torch.func.vmap(torch.func.grad(lambda Y: f(Y).sum()))(X[None]).shape == (1, 4, 7)


EIGH_RULES = ("ordinary", "truncated", "taylor", "pade")


def _eigh_loss(backward, **o):
    """⟨w, λ⟩ plus an eigenvector term, so both outputs' backward are in play."""
    def f(A):
        L, U = svdgrad.eigh(A, backward, **o)
        P = U[..., :, -1:] @ U[..., :, -1:].mT
        return P * L[..., -1:, None]

    return f


@pytest.mark.parametrize("mode", SECOND_ORDER)
@pytest.mark.parametrize("compute_dtype", [None, torch.float32])
@pytest.mark.parametrize("backward", EIGH_RULES)
def test_eigh_second_derivative_raises(backward, compute_dtype, mode):
    A, G, H = _case()
    with pytest.raises(RuntimeError, match=f"svdgrad.eigh.*{UNSUPPORTED}"):
        SECOND_ORDER[mode](_eigh_loss(backward, compute_dtype=compute_dtype), A, G, H)


def test_eigh_first_order_forward_ad_on_an_input_that_requires_grad():
    A, _, H = _case()
    f = _eigh_loss("ordinary")
    ref = torch.func.jvp(f, (A,), (H,))[1]
    with fwAD.dual_level():
        F = f(fwAD.make_dual(A.clone().requires_grad_(True), H))
        assert torch.allclose(fwAD.unpack_dual(F).tangent, ref, rtol=1e-10, atol=1e-12)


def test_powm_narrow_p_forward_ad_over_reverse_raises():
    """A compute dtype narrower than the input: p's derivative term is a constant on the wide side, so forward
    mode in p over a reverse gradient in p would silently miss d²L/dp²; it raises."""
    import torch.autograd.forward_ad as fwAD
    A, G, _ = _case()
    with fwAD.dual_level():
        p = fwAD.make_dual(torch.tensor(0.3, dtype=A.dtype), torch.tensor(1.0, dtype=A.dtype)).requires_grad_(True)
        L = (svdgrad.powm(A, p, compute_dtype=torch.float32) * G).sum()
        with pytest.raises(RuntimeError, match=UNSUPPORTED):
            (gp,) = torch.autograd.grad(L, p)
            fwAD.unpack_dual(gp).tangent.item()


# --- forward over forward, reverse in the cotangent, third derivatives under torch.func (session 16 review) --------

def _fwd_over_fwd(f, A, H, H2):
    """d/dt Df(A + t·H2)[H] by torch.func.jvp of torch.func.jvp."""
    return torch.func.jvp(lambda X: torch.func.jvp(f, (X,), (H,))[1], (A,), (H2,))[1]


def _fd_of_jvp(f, A, H, H2, h=1e-5):
    def d(X):
        return torch.func.jvp(f, (X,), (H,))[1]

    return (d(A + h * H2) - d(A - h * H2)) / (2 * h)


@pytest.mark.parametrize("function,method", PAIRS)
def test_forward_over_forward_of_every_pair_is_right_or_raises(function, method):
    """jvp of jvp (and jacfwd of jacfwd) reached A only through the rules' saved constants: silently 0."""
    A, _, H = _case()
    H2 = T.gradients(A.shape, seed=9, symmetric=True)
    f = lambda X: call(function, X, method)  # noqa: E731
    # (exact's square root too: torch 2.13's outer forward level does not see a jvp rule's saved tensors move)
    with pytest.raises(RuntimeError, match=UNSUPPORTED):
        _fwd_over_fwd(f, A, H, H2)


def test_forward_over_forward_of_newton_schulz_autograd_is_right():
    """Plain autograd through the iterations: jvp of jvp is exact there."""
    A, _, H = _case()
    H2 = T.gradients(A.shape, seed=9, symmetric=True)
    f = lambda X: svdgrad.sqrtm(X, "newton_schulz", backward="autograd")  # noqa: E731
    assert T.rel_error(_fwd_over_fwd(f, A, H, H2), _fd_of_jvp(f, A, H, H2)) <= 1e-7


def test_jacfwd_of_jacfwd_of_exact_sqrtm_raises_and_names_what_works():
    A = T.spd(3, 10.0, seed=4)
    f = lambda X: svdgrad.sqrtm(X, "exact")  # noqa: E731
    with pytest.raises(RuntimeError, match=r"forward mode over forward mode.*not supported.*jacfwd\(jacrev"):
        torch.func.jacfwd(torch.func.jacfwd(f))(A)
    fwd_rev = torch.func.jacfwd(torch.func.jacrev(f))(A)
    rev = torch.func.jacrev(torch.func.jacrev(f))(A)
    assert fwd_rev.abs().max() > 0.01 and torch.allclose(fwd_rev, rev, rtol=1e-10, atol=1e-12)


def test_torch_forward_over_forward_through_a_custom_function_is_zero():
    """Why the rules refuse it: torch's own limitation, on a toy Function whose jvp rule is plain ops."""

    class Cube(torch.autograd.Function):
        generate_vmap_rule = True

        @staticmethod
        def forward(x):
            return x ** 3

        @staticmethod
        def setup_context(ctx, inputs, output):
            ctx.save_for_forward(inputs[0])

        @staticmethod
        def jvp(ctx, dx):
            (x,) = ctx.saved_tensors
            return 3 * x * x * dx

    x, one = torch.tensor([2.0], dtype=torch.float64), torch.ones(1, dtype=torch.float64)
    second = torch.func.jvp(lambda X: torch.func.jvp(Cube.apply, (X,), (one,))[1], (x,), (one,))[1]
    assert float(second) == 0.0  # (6x = 12 is the truth; if torch fixes this, forward over forward can be allowed)


@pytest.mark.parametrize("entry", ["gram_sqrtm", "gram_inv_sqrtm"])
def test_gram_forward_over_forward_raises(entry):
    X = T.features(4, 7, seed=3)
    V, V2 = T.gradients((4, 7), seed=5), T.gradients((4, 7), seed=6)
    with pytest.raises(RuntimeError, match=f"{entry}.*{UNSUPPORTED}"):
        _fwd_over_fwd(getattr(svdgrad, entry), X, V, V2)


def test_eigh_forward_over_forward_raises():
    A, _, H = _case()
    with pytest.raises(RuntimeError, match=UNSUPPORTED):
        _fwd_over_fwd(lambda X: svdgrad.eigh(X)[0], A, H, H)


def _reverse_in_the_cotangent(f, A, W, V):
    """d/dW ⟨∇_A⟨f(A), W⟩, V⟩ by torch.func.grad over torch.func.grad: the vjp is linear in W, so this is
    the jvp Df(A)[V] (the adjoint), a first-order quantity every pair has."""
    return torch.func.grad(lambda w: (torch.func.grad(lambda X: (f(X) * w).sum())(A) * V).sum())(W)


def _reverse_in_the_cotangent_autograd(f, A, W, V):
    A = A.detach().clone().requires_grad_(True)
    W = W.detach().clone().requires_grad_(True)
    (g,) = torch.autograd.grad((f(A) * W).sum(), A, create_graph=True)
    (h,) = torch.autograd.grad((g * V).sum(), W)
    return h


@pytest.mark.parametrize("how", ["torch.func", "autograd"])
@pytest.mark.parametrize("function,method", PAIRS)
def test_reverse_mode_in_the_cotangent_is_the_jvp(function, method, how):
    """A gradient penalty differentiated in the head's weights W (not in A): was silently 0 under torch.func
    (once_differentiable cut W off) and a misleading 'not used in the graph' error under autograd."""
    A, W, V = _case()
    f = lambda X: call(function, X, method)  # noqa: E731
    run = _reverse_in_the_cotangent if how == "torch.func" else _reverse_in_the_cotangent_autograd
    ref = torch.func.jvp(f, (A,), (V,))[1]  # (what the refusal points to: exact)
    if _twice(function, method):
        assert torch.allclose(run(f, A, W, V), ref, rtol=1e-9, atol=1e-12)
    else:  # the rule is once differentiable: loudly (power_iteration's steps refuse it as a double backward)
        with pytest.raises(RuntimeError, match="through the cotangent of a gradient|double backward"):
            run(f, A, W, V)


@pytest.mark.parametrize("entry", ["gram_sqrtm", "gram_inv_sqrtm"])
def test_gram_reverse_mode_in_the_cotangent_raises(entry):
    X = T.features(4, 7, seed=3)
    W, V = T.gradients((4, 4), seed=4), T.gradients((4, 7), seed=5)
    with pytest.raises(RuntimeError, match=UNSUPPORTED):  # (the guard on X refuses it first, loudly)
        torch.func.grad(lambda w: (torch.func.grad(lambda Y: (getattr(svdgrad, entry)(Y) * w).sum())(X) * V).sum())(W)


def test_eigh_reverse_mode_in_the_cotangent_raises():
    A, W, V = _case()
    with pytest.raises(RuntimeError, match=UNSUPPORTED):
        torch.func.grad(lambda w: (torch.func.grad(lambda X: (svdgrad.eigh(X)[1] * w).sum())(A) * V).sum())(W)


def test_third_derivative_of_exact_sqrtm_raises_under_torch_func():
    """reverse³ raises (test_double_backward); the torch.func routes to a third derivative did not: silently 0."""
    A, G, H = _case()
    L = lambda X: (svdgrad.sqrtm(X, "exact") * G).sum()  # noqa: E731
    hvp = lambda X: torch.func.jvp(torch.func.grad(L), (X,), (H,))[1]  # noqa: E731
    with pytest.raises(RuntimeError, match="third derivative|forward mode over forward mode"):
        torch.func.jvp(hvp, (A,), (H,))
    with pytest.raises(RuntimeError, match="third derivative"):
        torch.func.grad(lambda X: (hvp(X) * H).sum())(A)
    with pytest.raises(RuntimeError, match="third derivative|forward mode over forward mode"):
        torch.func.jacfwd(torch.func.hessian(L))(A)
    with pytest.raises(RuntimeError, match="third derivative"):
        torch.func.jacrev(torch.func.hessian(L))(A)


def test_powm_forward_over_forward_in_p_raises():
    """jacfwd of jacfwd in a tensor p was silently wrong (−4.34 against −5.04): the rule's saved p does not move."""
    A = T.spd(3, 10.0, seed=4)
    L = lambda p: svdgrad.powm(A, p).trace()  # noqa: E731
    p = torch.tensor(1.7, dtype=torch.float64)
    with pytest.raises(RuntimeError, match=UNSUPPORTED):
        torch.func.jacfwd(torch.func.jacfwd(L))(p)
    h = torch.func.hessian(L)(p)  # forward over reverse in p alone: exact (test_powm_forward_over_reverse_in_p_only_is_right)
    d = lambda q: torch.func.grad(L)(q)  # noqa: E731
    assert abs(float(h) - float((d(p + 1e-5) - d(p - 1e-5)) / 2e-5)) <= 1e-6 * abs(float(h))


def test_vmap_with_a_tensor_p_that_requires_grad():
    """powm with a 0-dim p requiring grad, under vmap over A: torch's generated vmap rule failed with a raw
    AssertionError ('flat_bdims must not be None'), because the Function saved one more tensor for its backward
    than for its jvp (session 20 review)."""
    torch.manual_seed(0)
    X = torch.randn(4, 3, 6, dtype=torch.float64)
    As = X @ X.mT / 6 + 0.1 * torch.eye(3, dtype=torch.float64)
    p = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    svdgrad.powm(As, p).sum().backward()
    expect, p.grad = p.grad.clone(), None
    torch.func.vmap(lambda A: svdgrad.powm(A, p))(As).sum().backward()
    torch.testing.assert_close(p.grad, expect, rtol=1e-12, atol=0)
    g = torch.func.grad(lambda q: torch.func.vmap(lambda A: svdgrad.powm(A, q))(As).sum())(p.detach())
    torch.testing.assert_close(g, expect, rtol=1e-12, atol=0)


@pytest.mark.parametrize("scale, f", [
    (1.0, lambda A: svdgrad.sqrtm(A, compute_dtype=torch.float32)),
    (1.0, lambda A: svdgrad.logm(A, compute_dtype=torch.float32)),
    (1e40, lambda A: svdgrad.sqrtm(A, "newton_schulz")),
    (1e40, lambda A: svdgrad.sqrtm(A, "power_iteration")),
])
def test_batched_cotangents_through_the_scaling_pair(scale, f):
    """is_grads_batched=True (and jacobian(vectorize=True)) failed with 'Batching rule not implemented for
    aten::detach' wherever the NarrowIn/NarrowOut pair is in the graph: a narrower compute dtype, or an iterative
    method on a matrix far from order one (session 20 review).  Each batched cotangent's gradient is the one
    computed alone."""
    torch.manual_seed(0)
    X = torch.randn(2, 3, 6, dtype=torch.float64)
    A = ((X @ X.mT / 6 + 0.1 * torch.eye(3, dtype=torch.float64)) * scale).requires_grad_(True)
    Gs = torch.randn(5, 2, 3, 3, dtype=torch.float64)
    Y = f(A)
    (batched,) = torch.autograd.grad(Y, A, Gs, is_grads_batched=True, retain_graph=True)
    for i in range(len(Gs)):
        (one,) = torch.autograd.grad(Y, A, Gs[i], retain_graph=True)
        torch.testing.assert_close(batched[i], one, rtol=1e-6, atol=0)


@pytest.mark.parametrize("scale", [16.0, 256.0, 1e5])
def test_hessian_in_p_alone_with_a_narrower_compute_dtype(scale):
    """torch.func.hessian of powm in p alone (A held constant), float64 A computed in float32: it went through
    the scaled cast, which carries first derivatives only, and was 6-10 % off from max|A| = 4 (k >= 1) (session 20
    review).  It takes the plain chain now: the float64 hessian to float32's accuracy."""
    torch.manual_seed(0)
    X = torch.randn(3, 6, dtype=torch.float64)
    A = (X @ X.mT / 6 + 0.1 * torch.eye(3, dtype=torch.float64)) * scale
    W = torch.randn(3, 3, dtype=torch.float64)
    q = torch.tensor(0.4, dtype=torch.float64)
    h64 = torch.func.hessian(lambda p: (svdgrad.powm(A, p) * W).sum())(q)
    h32 = torch.func.hessian(lambda p: (svdgrad.powm(A, p, compute_dtype=torch.float32) * W).sum())(q)
    torch.testing.assert_close(h32, h64, rtol=1e-4, atol=0)


@pytest.mark.parametrize("method", ["exact", "taylor"])
def test_jvp_of_grad_in_p_alone_is_refused_clearly(method):
    """torch.func.jvp(grad) and jacfwd(grad) in p alone died in a PyTorch INTERNAL ASSERT ('Expected both tensor
    and its forward grad to be floating point'): the backward ran without the outer level's tangent of p, and the
    guard returned None for g's.  They raise svdgrad's message now; torch.func.hessian in p still works
    (session 20 review)."""
    torch.manual_seed(0)
    X = torch.randn(3, 6, dtype=torch.float64)
    A = X @ X.mT / 6 + 0.1 * torch.eye(3, dtype=torch.float64)
    q = torch.tensor(0.4, dtype=torch.float64)
    f = lambda p: svdgrad.powm(A, p, method).sum()  # noqa: E731
    with pytest.raises(RuntimeError, match=r"svdgrad: a second derivative.*torch.func.hessian in p"):
        torch.func.jvp(torch.func.grad(f), (q,), (torch.ones_like(q),))
    with pytest.raises(RuntimeError, match=r"svdgrad: a second derivative"):
        torch.func.jacfwd(torch.func.grad(f))(q)
    assert torch.isfinite(torch.func.hessian(f)(q))
