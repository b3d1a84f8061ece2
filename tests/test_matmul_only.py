"""The matmul-only family (issue 10): MPA/MTP forwards, the Lyapunov backward, Newton–Schulz with it.

Targets: the Lyapunov residual ‖Z X + X Z − sym(G)‖/‖sym(G)‖ <= 1e-8 in float64
at the default tol for κ <= 1e4, at the method's own output Z; for the
inverse root, the same at Z = Y⁻¹ with right-hand side −sym(Y G Y).
"""

import warnings

import pytest
import torch

import svdgrad
from svdgrad import _matmul_only
from svdgrad import testing as T

LYAPUNOV = ("mpa", "mtp", "newton_schulz:backward=lyapunov")


@pytest.mark.parametrize("method", LYAPUNOV)
@pytest.mark.parametrize("inverse", [False, True])
@pytest.mark.parametrize("kappa", [1e1, 1e2, 1e3, 1e4])
def test_lyapunov_residual_at_the_computed_output(method, inverse, kappa):
    A = T.spd(16, kappa, batch=(2,), seed=int(kappa) % 97).requires_grad_(True)
    G = T.gradients(A.shape, seed=3)
    f = svdgrad.inv_sqrtm if inverse else svdgrad.sqrtm
    with warnings.catch_warnings():
        warnings.simplefilter("error", svdgrad.ConvergenceWarning)  # converged at the default cap
        F = f(A, method)
        (X,) = torch.autograd.grad(F, A, G)
    F = F.detach()
    Gs = T.sym_part(G)
    if inverse:
        Z = torch.linalg.inv(F)
        C = -T.sym_part(F @ G @ F)
    else:
        Z, C = F, Gs
    res = T.rel_error(Z @ X + X @ Z, C)
    assert res <= 1e-8, res


def test_per_matrix_convergence_is_not_slowed_by_a_batch_neighbour():
    """FDMS normalized the inverse backward by the whole batch's norm; here each matrix has its own."""
    small = T.spd(8, 1e2, seed=4) * 1e-6
    big = T.spd(8, 1e2, seed=5) * 1e6
    C = T.random_symmetric((2, 8, 8), seed=6)
    Z = torch.stack([svdgrad.sqrtm(small), svdgrad.sqrtm(big)])
    X = _matmul_only.lyapunov_solve(Z, C)
    for i in range(2):
        Xi = _matmul_only.lyapunov_solve(Z[i], C[i])
        assert torch.allclose(X[i], Xi, rtol=1e-12, atol=0)
        assert T.rel_error(Z[i] @ X[i] + X[i] @ Z[i], C[i]) <= 1e-10


def test_sign_iteration_buffers_are_row_major_for_a_column_major_z():
    """bmm/baddbmm with out= write a whole batch at once (MKL) only into a contiguous buffer; into a
    column-major one, the layout of Z from a Cholesky solve, they loop matrix by matrix (12 % of mpa's
    forward and backward at n = 256, measured).  The solution does not depend on Z's layout."""
    Z = torch.stack([svdgrad.sqrtm(T.spd(8, 1e2, seed=s)) for s in (4, 5)]).mT.contiguous().mT  # column-major
    assert not Z.is_contiguous()
    bufs = _matmul_only._Buffers(Z)
    assert all(b.is_contiguous() for b in (bufs.b2, *bufs.pairs[0], *bufs.pairs[1], *bufs.tmp))
    C = T.random_symmetric((2, 8, 8), seed=6)
    X = _matmul_only.lyapunov_solve(Z, C)
    assert T.rel_error(Z @ X + X @ Z, C) <= 1e-10
    # The same solve up to rounding (the products round differently in either layout): measured 27 eps,
    # bound 50·κ(Z)·eps with κ(Z) = √100
    eps = torch.finfo(Z.dtype).eps
    assert T.rel_error(X, _matmul_only.lyapunov_solve(Z.contiguous(), C)) <= 50 * 10 * eps


def test_non_convergence_is_reported():
    A = T.spd(8, 1e8, seed=7).requires_grad_(True)
    with pytest.warns(svdgrad.ConvergenceWarning, match="max_iterations=3"):
        torch.autograd.grad(svdgrad.sqrtm(A, "mpa", max_iterations=3), A, T.gradients(A.shape, seed=8))


@pytest.mark.parametrize("method", ["mpa", "mtp"])
def test_float64_input_is_computed_in_float64_and_no_input_is_mutated(method):
    """FDMS summed float64 input in float32 (torch.eye's default dtype) and its MTP overwrote its identity."""
    A = T.spd(6, 10.0, seed=9)
    A0 = A.clone()
    Z1 = svdgrad.sqrtm(A, method)
    Z2 = svdgrad.sqrtm(A, method)
    assert Z1.dtype == torch.float64 and torch.equal(Z1, Z2) and torch.equal(A, A0)
    m = svdgrad.get_method(method)
    Zr, _ = m.root(A, False)
    ref = svdgrad.sqrtm(A)
    # a float32 sum would leave ~1e-7; the approximation error at κ = 10 is what remains
    assert T.rel_error(Zr, ref) < 0.05


@pytest.mark.parametrize("degrees", [(3, 3), (5, 5), (8, 8), (4, 5), (6, 4)])
def test_pade_roots_reproduce_the_coefficients(degrees):
    p, q = _matmul_only.pade_coefficients(*degrees)
    rp, rq = _matmul_only.pade_roots(*degrees)
    z = torch.linspace(0, 1, 101, dtype=torch.float64)
    for coeffs, roots in ((p, rp), (q, rq)):
        mono = sum(c * z ** k for k, c in enumerate(coeffs))
        fact = torch.ones_like(z)
        for r in roots:
            fact = fact * (1 - z / r)
        assert torch.allclose(mono, fact, rtol=1e-9, atol=1e-12)
    approx = sum(c * z ** k for k, c in enumerate(p)) / sum(c * z ** k for k, c in enumerate(q))
    assert float((approx[:50] - (1 - z[:50]).sqrt()).abs().max()) < 1e-3  # a Padé approximant of √(1 − z)


def test_large_n_needs_no_lu():
    """FDMS's batched lu_solve failed for n >= ~192 with 2 threads (pytorch #142815); ours uses Cholesky."""
    A = T.spd(200, 10.0, batch=(2,), seed=10).float().requires_grad_(True)
    Y = svdgrad.inv_sqrtm(A, "mpa")
    (g,) = torch.autograd.grad(Y, A, T.gradients(A.shape, seed=11, dtype=torch.float32))
    assert bool(torch.isfinite(Y).all() and torch.isfinite(g).all())


def test_a_too_small_scale_is_caught_and_solved_again(monkeypatch):
    """If the λmax estimate is too low (Z/s has an eigenvalue above √3, which the iteration sends to −1),
    tr(B) = n catches it and the matrix is solved again with the safe ‖Z‖_F."""
    Z = svdgrad.sqrtm(T.spd(8, 1e2, batch=(3,), seed=12))
    C = T.random_symmetric(Z.shape, seed=13)
    _, wrong, _ = _matmul_only._sign_iteration(Z, C, torch.linalg.matrix_norm(Z)[:, None, None] / 10, 1e-12, 100)
    assert bool(wrong.all())
    monkeypatch.setattr(_matmul_only, "_tight_scale", lambda Zf: torch.linalg.matrix_norm(Zf)[:, None, None] / 10)
    X = _matmul_only.lyapunov_solve(Z, C)
    assert T.rel_error(Z @ X + X @ Z, C) <= 1e-12
