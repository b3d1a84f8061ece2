"""The contract every registered method keeps, parametrized over svdgrad.methods().

A new method added to the registry is tested here automatically.
"""

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import svdgrad
from svdgrad import testing as T

from .helpers import ACCURATE, EPS, finite, grad_of

METHODS = svdgrad.methods()
#: Methods that must give finite gradients on every finite PSD input.
STABLE = tuple(m for m in METHODS if m != "ordinary")


def test_registry_names():
    assert set(METHODS) == {"exact", "ordinary", "truncated", "topn", "taylor", "pade", "newton_schulz", "mpa", "mtp",
                            "power_iteration"}
    for name in METHODS:
        m = svdgrad.get_method(name)
        assert m.name == name
        assert svdgrad.get_method(m) == m


def test_a_spec_string_is_resolved_once_and_a_bad_one_every_time():
    """Each sqrtm(A) resolves its method: a spec string alone gives the same (frozen) object every call; options
    still make a new one, and a spec that raises raises again (it is not cached)."""
    assert svdgrad.get_method("exact") is svdgrad.get_method("exact")
    assert svdgrad.get_method("taylor:degree=9") is svdgrad.get_method("taylor:degree=9")
    assert svdgrad.get_method("taylor:degree=9") == svdgrad.get_method("taylor", degree=9)
    assert svdgrad.get_method("exact", check=False).check is False
    assert svdgrad.get_method("exact").check is True
    for _ in range(2):
        with pytest.raises(svdgrad.SvdgradError, match="Unknown method 'nope'"):
            svdgrad.get_method("nope")
        with pytest.raises(svdgrad.SvdgradError, match="Unknown option"):
            svdgrad.get_method("exact:nope=1")


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_shape_dtype_and_symmetry(method, dtype):
    A = T.spd(6, 1e2, batch=(2, 3), dtype=dtype, seed=1)
    Z = svdgrad.sqrtm(A, method)
    assert Z.shape == A.shape and Z.dtype == dtype and Z.device == A.device
    assert torch.equal(Z, Z.mT) or float((Z - Z.mT).abs().max()) <= 10 * torch.finfo(dtype).eps * float(Z.abs().max())


@pytest.mark.parametrize("method", ACCURATE)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_square_of_root(method, dtype):
    A = T.spd(12, 1e3, batch=(4,), dtype=dtype, seed=2)
    Z = svdgrad.sqrtm(A, method)
    err = T.rel_error(Z @ Z, A)
    assert err <= 100 * 12 * torch.finfo(dtype).eps


@pytest.mark.parametrize("method", METHODS)
def test_n_equals_one_and_empty_batch(method):
    A = torch.tensor([[[4.0]], [[9.0]]], dtype=torch.float64, requires_grad=True)
    Z = svdgrad.sqrtm(A, method)
    if method != "newton_schulz":
        assert torch.allclose(Z, torch.tensor([[[2.0]], [[3.0]]], dtype=torch.float64))
    else:  # 1x1 trace-normalized NS is exact: Ã = 1 is a fixed point
        assert torch.allclose(Z, torch.tensor([[[2.0]], [[3.0]]], dtype=torch.float64))
    Z.sum().backward()
    assert finite(A.grad)
    if method in ACCURATE:
        assert torch.allclose(A.grad.flatten(), torch.tensor([1 / 4, 1 / 6], dtype=torch.float64))
    E = torch.zeros(0, 5, 5, dtype=torch.float32, requires_grad=True)
    ZE = svdgrad.sqrtm(E, method)
    assert ZE.shape == (0, 5, 5)
    ZE.sum().backward()
    assert E.grad.shape == (0, 5, 5)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_is_computed_in_float32(method, dtype):
    A64 = T.spd(5, 10.0, seed=3)
    Z = svdgrad.sqrtm(A64.to(dtype), method)
    assert Z.dtype == dtype
    Z32 = svdgrad.sqrtm(A64.to(dtype).float(), method)
    assert torch.equal(Z, Z32.to(dtype))


@pytest.mark.parametrize("method", METHODS)
def test_scaling(method):
    A = T.spd(8, 1e3, seed=4)
    c = 7.3
    assert torch.allclose(svdgrad.sqrtm(c * A, method), math.sqrt(c) * svdgrad.sqrtm(A, method), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("method", METHODS)
def test_orthogonal_equivariance_with_gradient(method):
    A = T.spd(7, 1e2, seed=5)
    Q = torch.from_numpy(T.haar_orthogonal(7, rng=__import__("numpy").random.default_rng(9)))
    G = T.gradients(A.shape, seed=6)
    Z, gA = grad_of(A, G, method)
    ZQ, gAQ = grad_of(Q @ A @ Q.T, Q @ G @ Q.T, method)
    assert torch.allclose(ZQ, Q @ Z @ Q.T, rtol=1e-9, atol=1e-11)
    # L(QAQ^T) with cotangent QGQ^T: gradient transforms as Q gA Q^T.
    assert torch.allclose(gAQ, Q @ gA @ Q.T, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("method", METHODS)
def test_batched_equals_looped(method):
    A = T.spd(6, 1e3, batch=(3,), seed=7)
    G = T.gradients(A.shape, seed=8)
    Z, gA = grad_of(A, G, method)
    for i in range(3):
        Zi, gi = grad_of(A[i], G[i], method)
        assert torch.allclose(Z[i], Zi, rtol=1e-12, atol=1e-14)
        assert torch.allclose(gA[i], gi, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("method", METHODS)
def test_gradient_is_symmetric(method):
    A = T.spd(9, 1e4, seed=9).requires_grad_(True)
    G = T.gradients(A.shape, seed=10)  # not symmetric
    (gA,) = torch.autograd.grad(svdgrad.sqrtm(A, method), A, G)
    assert torch.allclose(gA, gA.mT, rtol=0, atol=1e-12 * float(gA.abs().max()))


@pytest.mark.parametrize("method", METHODS)
def test_the_checks_do_not_change_the_answer(method):
    """sqrtm takes sym(A) with or without the checks, in value, vjp and forward-mode jvp.

    With the checks on, A's symmetric part is formed once (for them) and reused by the method as its
    input's value (its derivative then taken by a graph node, ``_functions.Symmetrized``); without them,
    it is formed with the graph.  A carries an asymmetry inside the tolerance, and the cotangent and the
    tangent are not symmetric, so a node that took 2A, 2G or 2dA for A + Aᵀ, G + Gᵀ or dA + dAᵀ differs.
    """
    from torch.autograd import forward_ad

    A0 = T.spd(6, 1e2, batch=(2,), seed=31)
    A = A0 + 1e-11 * T.gradients(A0.shape, seed=32)  # asymmetric, within the float64 symmetry tolerance
    G, dA = T.gradients(A.shape, seed=33), T.gradients(A.shape, seed=34)
    out = {}
    for check in (True, False):
        m = svdgrad.get_method(method, check=check)
        a = A.clone().requires_grad_(True)
        Z = svdgrad.sqrtm(a, m)
        (g,) = torch.autograd.grad(Z, a, G)
        with forward_ad.dual_level():
            t = forward_ad.unpack_dual(svdgrad.sqrtm(forward_ad.make_dual(A, dA), m)).tangent
        out[check] = (Z.detach(), g, t)
    for x, y in zip(out[True], out[False]):
        assert torch.equal(x, y)
    # and sym(A)'s own answer, to rounding: the same S up to a power of two, but its scale k comes from max|sym(A)|,
    # not max|A|, and a differently scaled eigh or iteration need not give the same bits
    Zs, gs = grad_of((A + A.mT) / 2, G, method)
    assert torch.allclose(out[True][0], Zs, rtol=1e-12, atol=0)
    assert torch.allclose(out[True][1], gs, rtol=1e-9, atol=1e-12 * float(gs.abs().max()))


@pytest.mark.parametrize("method", STABLE)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@given(st.data())
def test_finite_gradients_on_every_spectrum(method, dtype, data):
    """Every method except `ordinary` is finite on every finite PSD input: the remedies' purpose."""
    A, info = data.draw(T.spd_matrices(n=(1, 24), log10_kappa=(0, 12), dtype=dtype))
    G = T.gradients(A.shape, seed=info["seed"] % 1000, dtype=dtype)
    Z, gA = grad_of(A, G, method)
    assert finite(Z) and finite(gA), info


@pytest.mark.parametrize("method", STABLE)
def test_finite_on_exact_ties_zero_and_rank_one(method):
    n = 6
    for A in (torch.eye(n, dtype=torch.float64), torch.zeros(n, n, dtype=torch.float64),
              torch.ones(n, n, dtype=torch.float64), T.spd(n, 1e12, "repeated", seed=1),
              T.spd(n, 1e8, "rank_deficient", seed=2, dtype=torch.float32)):
        G = T.gradients(A.shape, seed=3, dtype=A.dtype)
        Z, gA = grad_of(A, G, method)
        assert finite(Z) and finite(gA), (method, A)


def test_ordinary_is_non_finite_at_exact_ties():
    """Documented: like torch.linalg.eigh's autograd, `ordinary` divides by λi - λj = 0."""
    A = torch.diag(torch.tensor([1.0, 2.0, 2.0, 3.0], dtype=torch.float64))
    G = T.gradients(A.shape, seed=1)
    Z, gA = grad_of(A, G, "ordinary")
    assert finite(Z)
    assert not finite(gA)


@pytest.mark.parametrize("method", METHODS)
def test_gradcheck_float64(method):
    """The backward is the derivative of the forward, or the method says it is not and why."""
    A = T.spd(5, 30.0, seed=11).requires_grad_(True)
    m = svdgrad.get_method(method)
    if m.backward_is_derivative:
        assert torch.autograd.gradcheck(lambda X: svdgrad.sqrtm(X, method, check=False), (A,))
    elif isinstance(m, svdgrad.PowerIteration):  # a truncated series of the eigen backward: converges to it
        G = T.gradients(A.shape, seed=11)
        _, g_pi = grad_of(A, G, m, iterations=400)
        _, g_exact = grad_of(A, G, "exact")
        assert T.rel_error(g_pi, g_exact) <= 1e-8
    else:  # the Lyapunov backward: the exact gradient of the root at the computed value
        G = T.gradients(A.shape, seed=11)
        Z, gA = grad_of(A, G, method)
        res = T.rel_error(Z @ gA + gA @ Z, T.sym_part(G))
        assert res <= 1e3 * EPS[torch.float64], res


@pytest.mark.parametrize("method", METHODS)
def test_double_backward_is_correct_or_raises(method):
    A = T.spd(4, 10.0, seed=12).requires_grad_(True)
    f = lambda X: svdgrad.sqrtm(X, method, check=False)  # noqa: E731
    if svdgrad.get_method(method).differentiable_twice("sqrt"):
        assert torch.autograd.gradgradcheck(f, (A,))
    else:
        G = T.gradients(A.shape, seed=13)  # constant cotangent: the case once_differentiable misses
        (gA,) = torch.autograd.grad(f(A), A, G, create_graph=True)
        with pytest.raises(RuntimeError, match="double backward"):
            torch.autograd.grad(gA.sum(), A)


def test_exact_under_vmap_and_grad():
    A = T.spd(5, 1e3, batch=(4,), seed=14)
    G = T.gradients(A.shape, seed=15)
    Zv = torch.func.vmap(lambda X: svdgrad.sqrtm(X, "exact"))(A)
    assert torch.allclose(Zv, svdgrad.sqrtm(A, "exact"), rtol=1e-12, atol=1e-14)
    gv = torch.func.vmap(torch.func.grad(lambda X, g: (svdgrad.sqrtm(X, "exact") * g).sum()))(A, G)
    _, gA = grad_of(A, G, "exact")
    assert torch.allclose(gv, gA, rtol=1e-10, atol=1e-12)


def test_exact_under_torch_compile():
    A = T.spd(5, 1e3, batch=(2,), seed=16).requires_grad_(True)
    G = T.gradients(A.shape, seed=17)
    f = torch.compile(lambda X: svdgrad.sqrtm(X, "exact"))  # default (inductor) backend
    Z = f(A)
    (gA,) = torch.autograd.grad(Z, A, G)
    _, ref = grad_of(A, G, "exact")
    assert torch.allclose(Z, svdgrad.sqrtm(A.detach(), "exact"))
    assert torch.allclose(0.5 * (gA + gA.mT), ref, rtol=1e-10, atol=1e-12)


def test_method_objects_and_overrides():
    A = T.spd(6, 1e6, "clustered", seed=18)
    G = T.gradients(A.shape, seed=19)
    _, g1 = grad_of(A, G, svdgrad.Taylor(degree=9))
    _, g2 = grad_of(A, G, "taylor", degree=9)
    _, g3 = grad_of(A, G, svdgrad.Taylor(), degree=9)
    assert torch.equal(g1, g2) and torch.equal(g2, g3)


def test_compute_dtype_float64_for_float32_input():
    A = T.spd(8, 1e3, seed=20).float().requires_grad_(True)
    Z = svdgrad.sqrtm(A, "exact", compute_dtype=torch.float64)
    assert Z.dtype == torch.float32
    Z.sum().backward()
    assert A.grad.dtype == torch.float32
