"""Double backward of ``sqrtm(A, "exact")``: the second-order Daleckii–Krein formula, tie-stable.

The Hessian-vector product of L = ⟨G, sqrtm(A)⟩ is checked against a 50-digit
mpmath central difference of the Daleckii–Krein gradient
(``testing.reference_sqrtm_grad_derivative``, no second divided differences in
it), at ties (the identity, repeated eigenvalues) too, where eigh's autograd
double backward is not finite.  Tolerances are the first-order ones,
10·(κ + n)·eps (``helpers.accurate_tol``): measured 0.3–5·κ·eps.
"""

import math

import pytest
import torch
from hypothesis import given, settings

import svdgrad
import svdgrad.testing as T

from .helpers import EPS, accurate_tol, finite


def hvp(A, G, H, dtype=torch.float64, **options):
    """d/dt ∇⟨G, sqrtm(A + tH)⟩ by reverse over reverse (the Hessian is symmetric)."""
    A = A.to(dtype).detach().clone().requires_grad_(True)
    (g,) = torch.autograd.grad(svdgrad.sqrtm(A, "exact", **options), A, G.to(dtype), create_graph=True)
    (h,) = torch.autograd.grad(g, A, H.to(dtype))
    return h


def _case(n, kappa, spectrum, seed):
    A = T.spd(n, kappa, spectrum, seed=seed)
    return A, T.gradients(A.shape, seed=seed + 1), T.gradients(A.shape, seed=seed + 2, symmetric=True)


@settings(max_examples=20, deadline=None)
@given(T.spd_matrices(n=(1, 7), log10_kappa=(0, 8), spectra=("logspaced", "clustered", "repeated")))
def test_exact_hessian_vector_product_matches_mpmath(case):
    A, info = case
    G, H = T.gradients(A.shape, seed=info["seed"] + 1), T.gradients(A.shape, seed=info["seed"] + 2, symmetric=True)
    ref = T.reference_sqrtm_grad_derivative(A, G, H)
    h = hvp(A, G, H)
    kappa = max(float(T.condition_number(A)) if info["n"] > 1 else 1.0, info["kappa"])
    assert T.rel_error(h, ref) <= accurate_tol(torch.float64, kappa, info["n"]), info


@pytest.mark.parametrize("kappa", [1.0, 1e2, 1e4])
@pytest.mark.parametrize("spectrum", ["logspaced", "repeated"])
def test_exact_hessian_vector_product_in_float32(kappa, spectrum):
    A, G, H = _case(6, kappa, spectrum, seed=5)
    ref = T.reference_sqrtm_grad_derivative(A, G, H)
    h = hvp(A, G, H, torch.float32)
    assert h.dtype == torch.float32 and finite(h)
    assert T.rel_error(h.double(), ref) <= accurate_tol(torch.float32, kappa, 6)


@pytest.mark.parametrize("A", [torch.eye(4, dtype=torch.float64),
                               torch.diag(torch.tensor([1.0, 1.0, 4.0, 4.0], dtype=torch.float64)),
                               T.spd(5, 1e3, "repeated", seed=9)], ids=["identity", "two-ties", "repeated"])
def test_exact_double_backward_is_exact_at_ties(A):
    """At the identity every eigenvalue ties: f[λ, λ, λ] = f″(λ)/2 = −1/8 there, in closed form."""
    G, H = T.gradients(A.shape, seed=3), T.gradients(A.shape, seed=4, symmetric=True)
    h = hvp(A, G, H)
    assert finite(h)
    assert T.rel_error(h, T.reference_sqrtm_grad_derivative(A, G, H)) <= accurate_tol(torch.float64, 1e3, 5)
    if A.shape[-1] == 4 and bool((A == torch.eye(4, dtype=A.dtype)).all()):  # D²√(I)[X, Y] = −(XY + YX)/8
        Gs = T.sym_part(G)
        assert torch.allclose(h, -(H @ Gs + Gs @ H) / 8, rtol=1e-13, atol=1e-15)


def test_eighs_own_double_backward_is_not_finite_at_the_identity():
    """What the closed form avoids: torch.linalg.eigh's autograd divides by λi − λj."""
    A = torch.eye(3, dtype=torch.float64).requires_grad_(True)
    L, U = torch.linalg.eigh(A)
    F = (U * L.sqrt()[..., None, :]) @ U.mT
    (g,) = torch.autograd.grad(F, A, T.gradients(A.shape, seed=1), create_graph=True)
    (h,) = torch.autograd.grad(g, A, T.gradients(A.shape, seed=2, symmetric=True))
    assert not finite(g) or not finite(h)


def test_gradgradcheck_batched():
    A = T.spd(4, 10.0, batch=(2,), seed=12).requires_grad_(True)
    assert torch.autograd.gradgradcheck(lambda X: svdgrad.sqrtm(X, "exact", check=False), (A,))


def test_forward_over_reverse_and_vmap_agree_with_reverse_over_reverse():
    A, G, H = _case(5, 1e2, "logspaced", seed=21)

    def grad(X):
        return torch.func.grad(lambda Y: (svdgrad.sqrtm(Y, "exact") * G).sum())(X)

    fwd = torch.func.jvp(grad, (A,), (H,))[1]
    rev = hvp(A, G, H)
    assert torch.allclose(fwd, rev, rtol=1e-12, atol=1e-14)
    As = torch.stack([A, T.spd(5, 10.0, seed=22)])
    Hs = torch.stack([H, H.mT])
    batched = torch.func.vmap(lambda X, V: torch.func.jvp(grad, (X,), (V,))[1])(As, Hs)
    assert torch.allclose(batched[0], rev, rtol=1e-12, atol=1e-14)
    hess = torch.func.hessian(lambda Y: (svdgrad.sqrtm(Y, "exact") * G).sum())(A)  # (n, n, n, n)
    assert torch.allclose(torch.einsum("ijkl,kl->ij", hess, H), rev, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("dtype, cs", [(torch.float64, (1e-100, 1e100, 1e200)), (torch.float32, (1e-15, 1e15))])
def test_exact_second_derivative_scales_as_c_to_the_minus_three_halves(dtype, cs):
    """√ is homogeneous of degree ½, so its second derivative is of degree −3/2: at every scale."""
    A, G, H = _case(4, 1e2, "logspaced", seed=31)
    h1 = hvp(A, G, H, dtype).double()
    for c in cs:
        hc = hvp(A * c, G, H, dtype).double()
        assert finite(hc) and hc.abs().max() > 0, c
        assert T.rel_error(hc * c ** 1.5, h1) <= 1e3 * EPS[dtype], c


def test_third_derivative_raises_clearly():
    A = T.spd(3, 10.0, seed=41).requires_grad_(True)
    (g,) = torch.autograd.grad(svdgrad.sqrtm(A, "exact").sum(), A, create_graph=True)
    (h,) = torch.autograd.grad((g * g).sum(), A, create_graph=True)
    with pytest.raises(RuntimeError, match="third derivative through method='exact' is not supported"):
        torch.autograd.grad(h.sum(), A)


def test_only_the_square_root_is_differentiable_twice_under_exact():
    m = svdgrad.get_method("exact")
    assert m.differentiable_twice("sqrt") and not m.differentiable_twice("log")
    A = T.spd(3, 10.0, seed=42).requires_grad_(True)
    (g,) = torch.autograd.grad(svdgrad.logm(A, "exact").sum(), A, create_graph=True)
    with pytest.raises(RuntimeError, match="double backward through method='exact'"):
        torch.autograd.grad(g.sum(), A)
    assert math.isfinite(float(hvp(A.detach(), torch.eye(3, dtype=A.dtype), torch.eye(3, dtype=A.dtype)).sum()))


@pytest.mark.parametrize("check", [True, False])
def test_newton_schulz_autograd_double_backward_with_and_without_the_checks(check):
    """newton_schulz(backward="autograd") is twice differentiable; with the checks its A = T + Tᵀ is the
    ``Symmetrized`` node (S's value, sym2's derivatives), without them sym2 itself: both pass gradgradcheck."""
    A = T.spd(4, 1e2, seed=1).requires_grad_(True)
    m = svdgrad.get_method("newton_schulz", backward="autograd", check=check)
    f = lambda X: svdgrad.sqrtm((X + X.mT) / 2, m)  # noqa: E731 (a symmetric input for every perturbation)
    assert torch.autograd.gradcheck(f, (A,))
    assert torch.autograd.gradgradcheck(f, (A,))
