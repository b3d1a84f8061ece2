"""Newton–Schulz: the hand-written backward equals autograd through the iterations."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import svdgrad
from svdgrad import _newton_schulz as ns
from svdgrad._functions import NewtonSchulzManual
from svdgrad import testing as T


@pytest.mark.parametrize("inverse", [False, True])
@pytest.mark.parametrize("normalization", ["trace", "frobenius"])
@given(T.spd_matrices(n=(1, 24), log10_kappa=(0, 8)), st.integers(1, 8))
def test_manual_equals_autograd_for_nonsymmetric_G(normalization, inverse, case, iterations):
    """Raw Function gradient (before the API's symmetrization), G not symmetric.

    fast-MPN-COV returns the transpose here; ours keeps the transposes of eq. 10.
    With ``inverse`` the output is Z_J/√c (the inverse root of the same iteration).
    """
    A, info = case
    G = T.gradients(A.shape, seed=info["seed"] % 1013)  # not symmetric
    A1 = A.clone().requires_grad_(True)
    (g_manual,) = torch.autograd.grad(NewtonSchulzManual.apply(A1, iterations, normalization, inverse)[0], A1, G)
    A2 = A.clone().requires_grad_(True)
    (g_auto,) = torch.autograd.grad(ns.forward(A2, iterations, normalization, inverse)[0], A2, G)
    scale = float(g_auto.abs().max())
    assert torch.allclose(g_manual, g_auto, rtol=1e-10, atol=1e-10 * scale), info


@pytest.mark.parametrize("inverse", [False, True])
@pytest.mark.parametrize("normalization", ["trace", "frobenius"])
@pytest.mark.parametrize("iterations", [1, 2, 5])
def test_manual_jvp_equals_forward_mode_through_the_iterations(normalization, inverse, iterations):
    import torch.func as tf

    A = T.spd(7, 1e3, batch=(2,), seed=5)
    dA = T.random_symmetric(A.shape, seed=6) + T.gradients(A.shape, seed=7)  # not symmetric either
    _, t_manual = tf.jvp(lambda X: NewtonSchulzManual.apply(X, iterations, normalization, inverse)[0], (A,), (dA,))
    _, t_auto = tf.jvp(lambda X: ns.forward(X, iterations, normalization, inverse)[0], (A,), (dA,))
    assert torch.allclose(t_manual, t_auto, rtol=1e-10, atol=1e-10 * float(t_auto.abs().max()))


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
    out = NewtonSchulzManual.forward(A, 5, "trace", False)
    saved = sum(t.numel() for t in out[1:])
    assert saved <= (3 * 5 + 1) * A.numel() + 3 * 2  # Ys, Zs, Ts, Y_J; c, mask and post per matrix; no Z_J
    out = NewtonSchulzManual.forward(A, 5, "trace", True)
    assert sum(t.numel() for t in out[1:]) <= (3 * 5 + 2) * A.numel() + 3 * 2  # and Z_J
