"""Tests that pin meanings by value, not only finiteness (issue 8 §8).

Each test here was written against a mutant that the earlier suite let
through: the floor taken relative to λmin, TopN keeping int(keep·n), eigh's
Taylor/Padé without their positive floor, psd_tol from the finer dtype, a dead
sample changing a live one in CovariancePooling, and a symmetry tolerance
100× looser.  ``tools/mutate.py`` re-runs those mutants (and more).
"""

import math

import numpy as np
import pytest
import torch

import svdgrad
from svdgrad import testing as T

from .helpers import EPS

EPS64 = EPS[torch.float64]


def _rotate(lam, seed=0, dtype=torch.float64):
    Q = torch.from_numpy(T.haar_orthogonal(len(lam), rng=np.random.default_rng(seed)))
    return ((Q * torch.tensor(lam, dtype=torch.float64)) @ Q.mT).to(dtype), Q


def test_floor_value_and_gradient_on_a_singular_matrix():
    """Floor eps·λmax: Z's zero eigenvalue becomes √(eps·λmax) and the gradient there 1/(2√(eps·λmax))."""
    A, Q = _rotate([0.0, 1.0, 4.0], seed=1)
    A.requires_grad_(True)
    Z = svdgrad.sqrtm(A, "exact")
    q0 = Q[:, 0]
    # the eigenvalue of Z on A's null vector
    assert math.isclose(float(q0 @ Z.detach() @ q0), math.sqrt(EPS64 * 4.0), rel_tol=1e-6)
    G = torch.outer(q0, q0)
    (gA,) = torch.autograd.grad(Z, A, G)
    assert math.isclose(float(q0 @ gA @ q0), 1 / (2 * math.sqrt(EPS64 * 4.0)), rel_tol=1e-6)
    # the floor is not taken from λmin: a much smaller λmin changes nothing
    A2, _ = _rotate([1e-30, 1.0, 4.0], seed=1)
    Z2 = svdgrad.sqrtm(A2, "exact")
    assert math.isclose(float(q0 @ Z2 @ q0), math.sqrt(EPS64 * 4.0), rel_tol=1e-6)


def test_topn_keeps_ceil_of_keep_times_n():
    """keep=0.75, n=10: ceil(7.5) = 8 kept, the 2 smallest raised to the 3rd smallest."""
    lam = [float(i) for i in range(1, 11)]
    A, _ = _rotate(lam, seed=2)
    Z = svdgrad.sqrtm(A, "topn", keep=0.75)
    got = torch.linalg.eigvalsh(Z @ Z)
    want = torch.tensor([3.0, 3.0, 3.0] + lam[3:], dtype=torch.float64)
    assert torch.allclose(got, want, rtol=1e-12, atol=1e-12)
    assert svdgrad.get_method("topn", keep=0.75).kept(10) == 8
    assert svdgrad.get_method("topn", keep=0.7).kept(10) == 7  # exact products are not rounded up
    assert svdgrad.get_method("topn", keep_count=3).kept(10) == 3


def test_topn_keep_count_above_n_keeps_all():
    """keep_count is clipped to n (documented): keep_count = n + 5 is topn keeping everything, the same
    value and gradient as keep_count = n, and then as exact (nothing is raised to a kept eigenvalue)."""
    A, _ = _rotate([0.5, 1.0, 2.0, 3.0], seed=5)
    G = T.gradients(A.shape, seed=6)
    assert svdgrad.get_method("topn", keep_count=9).kept(4) == 4

    def value_and_grad(method, **options):
        a = A.clone().requires_grad_(True)
        Z = svdgrad.sqrtm(a, method, **options)
        (g,) = torch.autograd.grad((Z * G).sum(), a)
        return Z.detach(), g

    Zc, gc = value_and_grad("topn", keep_count=9)
    Zn, gn = value_and_grad("topn", keep_count=4)
    Ze, ge = value_and_grad("exact")
    assert torch.equal(Zc, Zn) and torch.equal(gc, gn)
    assert torch.allclose(Zc, Ze, rtol=1e-13, atol=0) and torch.allclose(gc, ge, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("rule", ["taylor", "pade"])
def test_eigh_ratio_rules_floor_singular_psd_input(rule):
    """Taylor/Padé expand in λmin/λmax: exact zeros must be floored, or K is NaN."""
    A, _ = _rotate([0.0, 0.0, 1.0, 2.0], seed=3)
    A.requires_grad_(True)
    L, U = svdgrad.eigh(A, backward=rule)
    G = T.gradients(U.shape, seed=4)
    (gA,) = torch.autograd.grad((U * G).sum() + L.sum(), A)
    assert bool(torch.isfinite(gA).all())


def test_default_psd_tol_comes_from_the_coarser_dtype():
    """A float32 covariance with λmin = -1e-6·λmax is rounding noise of float32 (√eps32 = 3.5e-4).

    Computing it in float64 must not make it 'indefinite' by float64's √eps (1.5e-8).
    """
    A, _ = _rotate([-1e-6, 0.5, 1.0], seed=5)
    A32 = A.float()
    svdgrad.sqrtm(A32, "exact", compute_dtype=torch.float64)
    svdgrad.sqrtm(A32, "newton_schulz", compute_dtype=torch.float64)
    with pytest.raises(svdgrad.SvdgradError, match="positive semi-definite"):
        svdgrad.sqrtm(A, "exact")  # the same matrix as float64 input is indefinite at 1.5e-8
    B, _ = _rotate([-1e-3, 0.5, 1.0], seed=6)
    svdgrad.sqrtm(B.to(torch.bfloat16), "exact")  # √eps(bfloat16) = 0.088, computed in float32
    with pytest.raises(svdgrad.SvdgradError, match="positive semi-definite"):
        svdgrad.sqrtm(B.float(), "exact")


@pytest.mark.parametrize("method", ["exact", "newton_schulz"])  # the check on the fold's S, and on T
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_symmetry_tolerance_boundary(dtype, method):
    """Default symmetry_tol = √eps of the input dtype: just inside is accepted, just outside rejected."""
    tol = math.sqrt(EPS[dtype])
    A = T.spd(4, 10.0, seed=7)
    E = torch.zeros(4, 4, dtype=torch.float64)
    E[0, 1] = 1.0  # ‖A - Aᵀ‖ = δ·√2 for A + δ·E
    for factor, ok in ((0.8, True), (1.25, False)):
        delta = factor * tol * float(torch.linalg.matrix_norm(A)) / math.sqrt(2)
        B = (A + delta * E).to(dtype)
        rel = float(torch.linalg.matrix_norm((B - B.mT).double()) / torch.linalg.matrix_norm(B.double()))
        assert (rel <= tol) == ok
        if ok:
            svdgrad.sqrtm(B, method)
        else:
            with pytest.raises(svdgrad.SvdgradError, match="symmetric"):
                svdgrad.sqrtm(B, method)


@pytest.mark.parametrize("method", ["exact", "newton_schulz"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_symmetry_tolerance_is_per_matrix_in_a_large_batch(dtype, method):
    """The quick accept takes one norm of the whole batch's asymmetry; past it, every matrix is judged alone.

    64 matrices each at 0.05·tol or 0.8·tol are accepted, although their asymmetries together are 8 times
    as large (0.05: each one inside the quick accept's bound, the batch's norm past it); one of them at
    1.25·tol is rejected and named.
    """
    tol = math.sqrt(EPS[dtype])
    A = T.spd(4, 10.0, batch=(64,), seed=8)
    E = torch.zeros(4, 4, dtype=torch.float64)
    E[0, 1] = 1.0
    delta = tol * torch.linalg.matrix_norm(A) / math.sqrt(2)  # (64,)
    for factor in (0.05, 0.8):
        B = (A + factor * delta[:, None, None] * E).to(dtype)
        rel = torch.linalg.matrix_norm((B - B.mT).double()) / torch.linalg.matrix_norm(B.double())
        assert bool((rel <= tol).all()) and float(torch.linalg.vector_norm(rel)) > 0.3 * tol
        svdgrad.sqrtm(B, method)
    B[37] = (A[37] + 1.25 * delta[37] * E).to(dtype)
    with pytest.raises(svdgrad.SvdgradError, match=r"symmetric.*batch index \(37,\)"):
        svdgrad.sqrtm(B, method)


@pytest.mark.parametrize("method", svdgrad.methods())
def test_dead_sample_does_not_change_a_live_one(method):
    """CovariancePooling: a constant (dead) feature map in the batch leaves the other samples' output and gradient alone."""
    import svdgrad.nn as snn

    torch.manual_seed(0)
    layer = snn.CovariancePooling(3, reduced_channels=None, method=method).double()
    live = torch.randn(1, 3, 4, 4, dtype=torch.float64)
    dead = torch.full((1, 3, 4, 4), 0.7, dtype=torch.float64)
    x1 = live.clone().requires_grad_(True)
    y1 = layer(x1)
    (g1,) = torch.autograd.grad(y1.sum(), x1)
    x2 = torch.cat([live, dead]).requires_grad_(True)
    y2 = layer(x2)
    (g2,) = torch.autograd.grad(y2.sum(), x2)
    assert torch.allclose(y2[:1], y1, rtol=1e-12, atol=1e-14)
    assert torch.allclose(g2[:1], g1, rtol=1e-10, atol=1e-14)
    # the dead sample itself: Z = √floor·I, zero gradient
    d = 3
    i, j = torch.triu_indices(d, d)
    want = (i == j).to(torch.float64) * math.sqrt(layer.floor)
    assert torch.allclose(y2[1], want, rtol=1e-12, atol=0)
    assert bool((g2[1] == 0).all())


def test_k_rule_values_at_ties_and_apart():
    """Every K-rule by value on L = (1, 1, 2): a tie (x = 1) and a ratio x = 1/2."""
    from svdgrad import _kernels

    L = torch.tensor([1.0, 1.0, 2.0], dtype=torch.float64)
    d = 9
    K = _kernels.taylor_K(L, d)
    assert float(K[1, 0]) == d + 1 and float(K[0, 1]) == -(d + 1)  # T_d(1) = d + 1, over λmax = 1
    assert math.isclose(float(K[2, 0]), (1 - 0.5 ** (d + 1)) / 0.5 / 2.0, rel_tol=1e-14)  # T_9(1/2)/λmax
    assert float(K[0, 2]) == -float(K[2, 0]) and bool((K.diagonal() == 0).all())
    K = _kernels.truncated_K(L, 1e3)
    assert float(K[1, 0]) == 1e3 and float(K[0, 1]) == -1e3 and float(K[2, 0]) == 1.0
    gap = 1e-6
    K = _kernels.pade_K(L, (1.0,), (1.0, -1.0), gap)
    assert math.isclose(float(K[1, 0]), 1 / gap, rel_tol=1e-9) and math.isclose(float(K[2, 0]), 1.0, rel_tol=1e-15)
    K = _kernels.ordinary_K(L)
    assert float(K[2, 0]) == 1.0 and float(K[0, 2]) == -1.0 and math.isinf(float(K[1, 0]))
