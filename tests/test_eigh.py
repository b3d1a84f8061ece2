"""svdgrad.eigh: torch.linalg.eigh's forward with a choice of K-rule in the backward.

Only gauge-invariant quantities are compared: eigenvalues, and losses that
depend on eigenvectors through U diag(f) U^T or |U_ij|².
"""

import math

import pytest
import torch
from hypothesis import given

import svdgrad
from svdgrad import testing as T

RULES = ("ordinary", "truncated", "taylor", "pade")


def _loss(L, U, W):
    # gauge invariant: sign flips of columns cancel in U diag(g(L)) U^T
    return (W * (U * torch.log1p(L)[..., None, :]) @ U.mT).sum() + (L ** 2).sum()


@pytest.mark.parametrize("rule", RULES)
def test_forward_matches_torch(rule):
    A = T.spd(7, 1e3, batch=(2,), seed=1)
    L, U = svdgrad.eigh(A, backward=rule)
    L0, U0 = torch.linalg.eigh(A)
    assert torch.equal(L, L0)
    assert torch.allclose(U @ torch.diag_embed(L) @ U.mT, A, atol=1e-12)


@given(T.spd_matrices(n=(2, 16), log10_kappa=(1, 8), spectra=("logspaced",)))
def test_ordinary_backward_equals_torch_autograd(case):
    A, info = case
    W = T.gradients(A.shape, seed=info["seed"] % 1009)
    A1 = A.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(_loss(*svdgrad.eigh(A1), W), A1)
    A2 = A.clone().requires_grad_(True)
    (g0,) = torch.autograd.grad(_loss(*torch.linalg.eigh(0.5 * (A2 + A2.mT)), W), A2)
    assert torch.allclose(g, g0, rtol=1e-9, atol=1e-9 * float(g0.abs().max())), info


@pytest.mark.parametrize("rule", RULES)
def test_eigh_gradcheck(rule):
    A = T.spd(5, 50.0, seed=2).requires_grad_(True)
    W = T.gradients(A.shape, seed=3)
    assert torch.autograd.gradcheck(lambda X: _loss(*svdgrad.eigh(X, backward=rule, check=False), W), (A,))


def test_remedies_are_finite_at_ties_where_ordinary_is_not():
    A = torch.diag(torch.tensor([1.0, 2.0, 2.0, 5.0], dtype=torch.float64))
    W = T.gradients(A.shape, seed=4)
    for rule in RULES:
        A1 = A.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(_loss(*svdgrad.eigh(A1, backward=rule), W), A1)
        assert bool(torch.isfinite(g).all()) == (rule != "ordinary"), rule


def test_options_reach_the_rule():
    A = T.spd(6, 1e4, "clustered", seed=5)
    W = T.gradients(A.shape, seed=6)
    grads = []
    for degree in (1, 50):
        A1 = A.clone().requires_grad_(True)
        grads.append(torch.autograd.grad(_loss(*svdgrad.eigh(A1, backward="taylor", degree=degree), W), A1)[0])
    assert not torch.allclose(grads[0], grads[1])


def test_eigh_compute_dtype_and_vmap():
    A = T.spd(5, 1e2, batch=(3,), seed=7).float()
    L, U = svdgrad.eigh(A, compute_dtype=torch.float64)
    assert L.dtype == torch.float32 and U.dtype == torch.float32
    Lv, _ = torch.func.vmap(lambda X: svdgrad.eigh(X))(A)
    assert torch.allclose(Lv, torch.linalg.eigvalsh(A))


@pytest.mark.parametrize("rule", ["ordinary", "truncated", "taylor", "pade"])
def test_eigh_jvp_matches_torch_forward_mode_and_the_vjp(rule):
    """(dL, dU) = (diag(UᵀdAU), U(Kᵀ ∘ UᵀdAU)): torch's own forward-mode eigh on distinct eigenvalues,
    and the adjoint of our backward: ⟨jvp(t), c⟩ = ⟨t, vjp(c)⟩."""
    import torch.func as tf

    A = T.spd(6, 1e2, batch=(2,), seed=21)
    t = T.random_symmetric(A.shape, seed=22)
    (L, U), (dL, dU) = tf.jvp(lambda X: svdgrad.eigh(X, backward=rule), (A,), (t,))
    (L0, U0), (dL0, dU0) = tf.jvp(torch.linalg.eigh, (A,), (t,))
    assert torch.allclose(dL, dL0, rtol=1e-10, atol=1e-12)
    assert torch.allclose(dU, dU0, rtol=1e-8, atol=1e-10)
    cL, cU = T.gradients(L.shape, seed=23), T.gradients(U.shape, seed=24)
    _, vjp = tf.vjp(lambda X: svdgrad.eigh(X, backward=rule), A)
    (gA,) = vjp((cL, cU))
    lhs = float((dL * cL).sum() + (dU * cU).sum())
    assert abs(lhs - float((gA * t).sum())) <= 1e-10 * max(1.0, abs(lhs))


@pytest.mark.parametrize("dtype, compute_dtype", [(torch.float64, None), (torch.float32, None), (torch.float16, None),
                                                   (torch.bfloat16, None), (torch.float32, torch.float64)])
def test_pade_stays_bounded_on_rank_deficient_covariances(dtype, compute_dtype):
    # A = X Xᵀ/N with N < d: the null-space eigenvalues are rounding noise, all raised to the floor eps·λmax, so
    # pade's pair-relative pole gap used to give them a gap of eps²·λmax, |K| up to 1e31 (1e15 past its documented
    # 1/(pole_gap·λmax)), and the gradient of a smooth loss came out 1e15 too large in float64, inf in float16.
    # Review, session 22.  The loss sum(C ∘ U diag(L) Uᵀ) = sum(C ∘ A) has gradient C; a remedy may lose the
    # null space's share of it (truncated's error is 0.4 here), not amplify it.  Where the input is coarser than
    # the compute dtype (float16 and bfloat16, computed in float32; float32 with compute_dtype=float64) the null
    # space is the input's rounding, eps_in·λmax, some of it negative and floored to ties: a bound from the compute
    # dtype's eps let the error grow by eps_in/eps_c (5e6 for float32 computed in float64, 1e3 for bfloat16;
    # re-review, session 22).  The bound takes the coarser eps, as the PSD tolerance does.
    opts = {} if compute_dtype is None else {"compute_dtype": compute_dtype}
    gen = torch.Generator().manual_seed(0)
    for d, N in ((6, 2), (16, 5)):
        C = torch.randn(d, d, generator=gen, dtype=torch.float64)
        C = C + C.T
        for seed in range(3):
            X = torch.randn(d, N, generator=gen, dtype=torch.float64)
            A = (X @ X.T / N).to(dtype).requires_grad_(True)
            L, U = svdgrad.eigh(A, backward="pade", **opts)
            ((U.double() * L.double()[None, :]) @ U.double().T * C).sum().backward()
            g = A.grad.double()
            assert bool(torch.isfinite(g).all()), (d, N, seed)
            assert float((g - C).norm() / C.norm()) < 1.0, (d, N, seed, float(g.abs().max()))


@given(T.spd_matrices(n=(2, 12), log10_kappa=(1, 30), spectra=("logspaced", "clustered", "repeated")))
def test_pade_K_of_the_eigh_backward_is_within_its_documented_bound(case):
    # Pade's docstring: |K_ij| <= 1/(pole_gap·λmax), λmax the matrix's largest eigenvalue (κ up to 1e30: floored ones)
    A, info = case
    rule = svdgrad.get_method("pade")
    L = torch.linalg.eigvalsh(A)
    K = rule.eigh_K(L)
    bound = 1.0 / (torch.finfo(L.dtype).eps * L[..., -1])
    assert float(K.abs().max()) <= float(bound) * (1 + 1e-12), info


@pytest.mark.parametrize("dtype, sA, g", [(torch.float32, 1e30, 1e10), (torch.float32, 1e-30, 1e-20),
                                          (torch.float64, 1e200, 1e120), (torch.float64, 1e-200, 1e-200),
                                          (torch.float64, 1e300, 1e-300)])
@pytest.mark.parametrize("rule", RULES)
def test_eigh_vjp_is_right_for_any_scale_of_A_and_the_cotangent(dtype, sA, g, rule):
    # The 4^k of the scaling law was applied to the eigenvalues' cotangent through autograd, one factor at a time:
    # at A ~ 1e30 (float32) a cotangent of 1e10 became 1e40 on the way and the gradient inf; at 1e-30 one of 1e-20
    # became 0 (review, session 22).  dλ/dA = u uᵀ, so gA = U diag(gL) Uᵀ whatever the scale; and the eigenvector
    # part scales as 1/scale.
    A0 = torch.tensor([[2.0, 1.0], [1.0, 3.0]], dtype=torch.float64)
    A = (A0 * sA).to(dtype).requires_grad_(True)
    L, U = svdgrad.eigh(A, backward=rule)
    (gA,) = torch.autograd.grad(L, A, torch.full_like(L, g), retain_graph=True)
    # g·U Uᵀ: off the diagonal, U's orthogonality to rounding
    tol = 10 * torch.finfo(dtype).eps * g
    assert torch.allclose(gA.double(), g * torch.eye(2, dtype=torch.float64), rtol=1e-5, atol=tol), (gA, g)
    # the eigenvector part: a loss |U_ij|² (gauge invariant), against float64 at order one, rescaled
    W = T.gradients((2, 2), seed=8).double()
    A1 = A0.clone().requires_grad_(True)
    (ref,) = torch.autograd.grad(((svdgrad.eigh(A1, backward=rule)[1] ** 2) * W).sum(), A1)
    (gU,) = torch.autograd.grad(((U ** 2) * W.to(dtype)).sum() * g, A)  # d/dA of g·loss: ref·g/sA
    if _normal(g / sA, dtype):
        assert torch.allclose(gU.double(), ref * (g / sA), rtol=1e-4, atol=0), (gU, ref * g / sA)


def _normal(x: float, dtype) -> bool:
    """Whether values of about x (and 100× either way) are normal numbers of ``dtype``."""
    info = torch.finfo(dtype)
    return 100 * info.tiny < abs(x) < info.max / 100


@pytest.mark.parametrize("dtype, sA, t", [(torch.float32, 1e-30, 1e9), (torch.float32, 1e30, 1e-10),
                                          (torch.float32, 1e-30, 1e-20),
                                          (torch.float64, 1e-300, 1e10), (torch.float64, 1e300, 1e-300)])
def test_eigh_jvp_is_right_for_any_scale_of_A_and_the_tangent(dtype, sA, t):
    # A tangent of 1e9 at A ~ 1e-30 (float32) gave dL = inf (the tangent of A/4^k overflowed); dL = diag(Uᵀ dA U)
    A0 = torch.tensor([[2.0, 1.0], [1.0, 3.0]], dtype=torch.float64)
    dA0 = torch.tensor([[1.0, 0.5], [0.5, -2.0]], dtype=torch.float64)
    L0, U0 = torch.linalg.eigh(A0)
    _, (dL, dU) = torch.func.jvp(lambda a: svdgrad.eigh(a), ((A0 * sA).to(dtype),), ((dA0 * t).to(dtype),))
    assert torch.allclose(dL.double(), (U0.mT @ dA0 @ U0).diagonal() * t, rtol=1e-5, atol=0), dL
    _, (dL1, dU1) = torch.func.jvp(lambda a: svdgrad.eigh(a), (A0,), (dA0,))
    if _normal(t / sA, dtype):  # dU = dU(A0, dA0)·t/sA, up to the eigenvectors' signs
        assert torch.allclose(dU.double().abs(), (dU1 * (t / sA)).abs(), rtol=1e-4, atol=0), (dU, dU1 * t / sA)


def test_eigh_vjp_with_both_cotangents_far_apart_and_zero_ones():
    # One exponent per matrix serves both cotangents: it must be the larger one's (the smaller's share may
    # underflow, the larger's must not overflow).  float32 A ~ 1e30, gL = 1e38, gU = 1e-30: gA ≈ 1e38·I.
    A0 = torch.tensor([[2.0, 1.0], [1.0, 3.0]])
    A = (A0 * 1e30).requires_grad_(True)
    L, U = svdgrad.eigh(A)
    (gA,) = torch.autograd.grad((L, U), A, (torch.full_like(L, 1e38), torch.full_like(U, 1e-30)))
    assert torch.allclose(gA.double(), 1e38 * torch.eye(2, dtype=torch.float64), rtol=1e-5, atol=1e38 * 1e-6), gA
    # an all-zero cotangent (one matrix of a batch, or all of it) gives a zero gradient, not NaN
    B = (torch.stack([A0, A0]) * 1e30).requires_grad_(True)
    L, U = svdgrad.eigh(B)
    gL = torch.tensor([[0.0, 0.0], [1.0, 2.0]])
    (gB,) = torch.autograd.grad(L, B, gL)
    assert torch.equal(gB[0], torch.zeros(2, 2)) and bool(torch.isfinite(gB).all()), gB


def test_eigh_jvp_takes_a_huge_tangent_at_a_near_tie():
    # The tangent is scaled to order one before K: at a near tie (gap 1e-3, |K| ~ 1e3 at order one) a float32
    # tangent of 1e37 made K ∘ (Uᵀ dA U) overflow (1e40) where dU itself (~1e10 at A ~ 1e30) is a normal number.
    c, s = math.cos(0.5), math.sin(0.5)
    Q = torch.tensor([[c, -s], [s, c]], dtype=torch.float64)
    A0 = Q @ torch.diag(torch.tensor([1.0, 1.001], dtype=torch.float64)) @ Q.T
    dA0 = torch.tensor([[1.0, 0.5], [0.5, -2.0]], dtype=torch.float64)
    sA, t = 1e30, 1e37
    _, (dL, dU) = torch.func.jvp(lambda a: svdgrad.eigh(a), ((A0 * sA).float(),), ((dA0 * t).float(),))
    _, (dL1, dU1) = torch.func.jvp(lambda a: svdgrad.eigh(a), (A0,), (dA0,))
    assert torch.allclose(dL.double(), dL1 * t, rtol=1e-3, atol=0), (dL, dL1 * t)
    assert bool(torch.isfinite(dU).all()) and torch.allclose(dU.double().abs(), (dU1 * (t / sA)).abs(), rtol=1e-2), dU


def test_eigh_batched_gradients():
    # torch's legacy batched gradients (is_grads_batched, jacobian(vectorize=True)), which the README promises:
    # the backward's exponent took g.detach(), which that batching has no rule for (re-review, session 22)
    A = T.spd(4, 30.0, seed=11).requires_grad_(True)
    L, U = svdgrad.eigh(A)
    Gs = torch.randn(3, 4, generator=torch.Generator().manual_seed(12), dtype=torch.float64)
    (gb,) = torch.autograd.grad(L, A, Gs, is_grads_batched=True, retain_graph=True)
    for i in range(3):
        (g,) = torch.autograd.grad(L, A, Gs[i], retain_graph=True)
        assert torch.allclose(gb[i], g, rtol=1e-12, atol=1e-14), i
    J = torch.autograd.functional.jacobian(lambda X: svdgrad.eigh(X)[0], A.detach(), vectorize=True)
    assert torch.allclose(J, torch.autograd.functional.jacobian(lambda X: svdgrad.eigh(X)[0], A.detach()))


@pytest.mark.parametrize("rule", ["ordinary", "pade"])
def test_eigh_compute_dtype_wider_than_the_input_keeps_its_precision_in_the_backward(rule):
    # float32 input with compute_dtype=float64: the backward ran in the input's float32 after the session-22
    # rewrite (K ~ 1e5 at a gap of 1e-5 times a float32 Uᵀ gU): 1.4e-3 off the float64 gradient of the same
    # float32 matrix, against 2.9e-4 before, which ran it in float64 (self-review).  It runs in the wider dtype.
    gen = torch.Generator().manual_seed(0)
    Q, _ = torch.linalg.qr(torch.randn(6, 6, generator=gen, dtype=torch.float64))
    lam = torch.tensor([0.5, 1.0, 1.0 + 1e-5, 2.0, 3.0, 4.0], dtype=torch.float64)
    A = (Q @ torch.diag(lam) @ Q.T).float()
    W = T.gradients((6, 6), seed=4)

    def loss(L, U, W):  # U log(1 + Λ) Uᵀ against W: gauge invariant, and sensitive to the pair's eigenvectors
        return (((U * torch.log1p(L)[None, :]) @ U.mT) * W).sum() + (L ** 2).sum()

    A1 = A.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(loss(*svdgrad.eigh(A1, backward=rule, compute_dtype=torch.float64), W.float()), A1)
    A2 = A.double().requires_grad_(True)
    (g0,) = torch.autograd.grad(loss(*svdgrad.eigh(A2, backward=rule), W), A2)
    assert g.dtype == torch.float32
    assert float((g.double() - g0).norm() / g0.norm()) < 5e-4
