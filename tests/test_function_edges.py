"""Edges of the function family found by the session-16 review: each test failed before its fix.

- ``matrix_function``'s fallback divided difference took f′ at the midpoint 0.5·(λi + λj), which
  overflows above max/2: the gradient was 0 there (now λi + 0.5·(λj − λi)).
- ``matrix_function`` with a compute dtype narrower than A cast A unscaled (a user's f has no scale
  law): 1e-50 flushed to 0 and came back as 3.3e-10, silently.  Now refused, naming the range.
- a narrower compute dtype whose spectrum leaves its range (powm(A, -30) of a float64 A computed in
  float32): inf/NaN came back silently.  Now refused.
- ``power_iteration`` under ``matrix_function`` (no rescaling) took norms of unscaled vectors, whose
  squares overflow or underflow outside 1e±19 (float32): zeros came back.
"""

import pytest
import torch

import svdgrad
from svdgrad import SvdgradError

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
