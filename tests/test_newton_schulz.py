"""Newton–Schulz: the hand-written backward equals autograd through the iterations."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import svdgrad
from svdgrad import _newton_schulz as ns
from svdgrad._functions import NewtonSchulzManual
from svdgrad import testing as T


@pytest.mark.parametrize("normalization", ["trace", "frobenius"])
@given(T.spd_matrices(n=(1, 24), log10_kappa=(0, 8)), st.integers(1, 8))
def test_manual_equals_autograd_for_nonsymmetric_G(normalization, case, iterations):
    """Raw Function gradient (before the API's symmetrization), G not symmetric.

    fast-MPN-COV returns the transpose here; ours keeps the transposes of eq. 10.
    """
    A, info = case
    G = T.gradients(A.shape, seed=info["seed"] % 1013)  # not symmetric
    A1 = A.clone().requires_grad_(True)
    (g_manual,) = torch.autograd.grad(NewtonSchulzManual.apply(A1, iterations, normalization)[0], A1, G)
    A2 = A.clone().requires_grad_(True)
    (g_auto,) = torch.autograd.grad(ns.forward(A2, iterations, normalization)[0], A2, G)
    scale = float(g_auto.abs().max())
    assert torch.allclose(g_manual, g_auto, rtol=1e-10, atol=1e-10 * scale), info


@pytest.mark.parametrize("normalization", ["trace", "frobenius"])
def test_api_backwards_agree(normalization):
    A = T.spd(16, 1e3, batch=(2,), seed=1)
    G = T.gradients(A.shape, seed=2)
    grads = {}
    for backward in ("manual", "autograd"):
        A1 = A.clone().requires_grad_(True)
        Z = svdgrad.sqrtm(A1, "newton_schulz", backward=backward, normalization=normalization)
        grads[backward] = torch.autograd.grad(Z, A1, G)[0]
    assert torch.allclose(grads["manual"], grads["autograd"], rtol=1e-10, atol=1e-12)


def test_zero_matrix_is_finite():
    """fast-MPN-COV issue #4: tr(Σ) = 0 gave NaN."""
    for backward in ("manual", "autograd"):
        for normalization in ("trace", "frobenius"):
            A = torch.zeros(2, 4, 4, dtype=torch.float64, requires_grad=True)
            Z = svdgrad.sqrtm(A, "newton_schulz", backward=backward, normalization=normalization)
            assert torch.equal(Z, torch.zeros_like(Z))
            Z.sum().backward()
            assert bool(torch.isfinite(A.grad).all())


def test_saved_state_is_linear_in_iterations():
    A = T.spd(8, 10.0, batch=(2,), seed=3)
    out = NewtonSchulzManual.forward(A, 5, "trace")
    saved = sum(t.numel() for t in out[1:])
    assert saved <= (3 * 5 + 1) * A.numel() + 2 * 2  # Ys, Zs, Ts, Y_J; c and mask per matrix
