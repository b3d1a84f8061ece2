"""svdgrad.nn: covariance pooling, GAP, the small ResNet."""

import math
import subprocess
import sys

import pytest
import torch

import svdgrad
import svdgrad.nn as snn
from svdgrad import SvdgradError


def _dense_covariance(X):
    """Reference: Σ = X Ī Xᵀ with the dense N×N centering matrix Ī = (I - 11ᵀ/N)/N (fast-MPN-COV)."""
    N = X.shape[-1]
    Ibar = (torch.eye(N, dtype=X.dtype) - torch.ones(N, N, dtype=X.dtype) / N) / N
    return X @ Ibar @ X.mT


def test_import_svdgrad_does_not_import_nn_or_train():
    code = "import svdgrad, sys; bad = [m for m in ('svdgrad.nn', 'svdgrad.train') if m in sys.modules]; print(bad)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_covariance_matches_dense_reference():
    torch.manual_seed(0)
    X = torch.randn(3, 5, 40, dtype=torch.float64) * 3 + 7  # a large mean, so centring matters
    torch.testing.assert_close(snn.covariance(X), _dense_covariance(X), rtol=1e-12, atol=1e-12)


def test_layer_covariance_matches_dense_reference_of_reduced_features():
    torch.manual_seed(1)
    layer = snn.CovariancePooling(6, 4, method="exact").double()
    x = torch.randn(2, 6, 5, 7, dtype=torch.float64)
    S = layer.covariance(x)
    X = layer.reduce(x).flatten(2)
    torch.testing.assert_close(S, _dense_covariance(X), rtol=1e-12, atol=1e-12)
    # The output is the upper triangle of sqrtm(Σ + floor·I).
    Z = svdgrad.sqrtm(S + layer.floor * torch.eye(4, dtype=S.dtype), "exact")
    i, j = torch.triu_indices(4, 4)
    torch.testing.assert_close(layer(x), Z[:, i, j], rtol=1e-10, atol=1e-12)


def test_covariance_needs_no_dense_centering_matrix():
    # N = 65536 positions: a dense N×N centering matrix would take 16 GiB.
    X = torch.randn(1, 3, 256 * 256)
    S = snn.covariance(X)
    assert S.shape == (1, 3, 3) and torch.isfinite(S).all()


def test_triu_vector_layout_and_sqrt2_isometry():
    Z = torch.arange(16.0).reshape(4, 4)
    Z = Z + Z.T
    v = snn.triu_vector(Z)
    assert v.shape == (10,)
    assert v[:4].tolist() == Z[0].tolist()
    w = snn.triu_vector(Z, offdiag_scale=math.sqrt(2))
    torch.testing.assert_close(w.norm(), torch.linalg.matrix_norm(Z))


def test_out_features_and_dtypes():
    layer = snn.CovariancePooling(8, 5)
    assert layer.out_features == 15
    assert layer.method.name == "newton_schulz" and layer.method.iterations == 5
    assert layer.method.compute_dtype is None  # NS in the input dtype
    layer.method = "pade"
    assert layer.method.compute_dtype == torch.float64  # eigen methods in float64 by default
    y = layer(torch.randn(2, 8, 4, 4))
    assert y.dtype == torch.float32 and y.shape == (2, 15)
    layer32 = snn.CovariancePooling(8, 5, method="exact", compute_dtype=None)
    assert layer32.method.compute_dtype is None
    opts = snn.CovariancePooling(8, 5, method="newton_schulz", iterations=3)
    assert opts.method.iterations == 3


def test_method_switch_takes_effect_in_forward():
    torch.manual_seed(2)
    layer = snn.CovariancePooling(6, 4, method="exact").double()
    x = torch.randn(3, 6, 6, 6, dtype=torch.float64)
    y_exact = layer(x)
    layer.method = svdgrad.NewtonSchulz(iterations=1)
    y_ns = layer(x)
    assert not torch.allclose(y_exact, y_ns, rtol=1e-3)
    S = layer.covariance(x) + layer.floor * torch.eye(4, dtype=torch.float64)
    i, j = torch.triu_indices(4, 4)
    torch.testing.assert_close(y_ns, svdgrad.sqrtm(S, "newton_schulz", iterations=1)[:, i, j])


def test_method_switch_takes_effect_in_backward():
    # exact and taylor(degree=0) share the eigh forward but not the backward.
    torch.manual_seed(3)
    layer = snn.CovariancePooling(6, 4, method="exact").double()
    x = torch.randn(3, 6, 6, 6, dtype=torch.float64, requires_grad=True)
    w = torch.randn(10, dtype=torch.float64)

    def run():
        x.grad = None
        y = layer(x)
        (y @ w).sum().backward()
        return y.detach(), x.grad.clone()

    y1, g1 = run()
    layer.method = svdgrad.Taylor(degree=0)
    y2, g2 = run()
    torch.testing.assert_close(y1, y2)
    assert not torch.allclose(g1, g2, rtol=1e-3)
    layer.method = "exact"
    y3, g3 = run()
    torch.testing.assert_close(g1, g3)


@pytest.mark.parametrize("method", svdgrad.methods())
def test_constant_feature_map_is_finite_for_every_method(method):
    layer = snn.CovariancePooling(4, 3, method=method)
    x = torch.ones(3, 4, 5, 5)
    x[2] = torch.randn(4, 5, 5)
    x.requires_grad_()
    y = layer(x)
    y.sum().backward()
    assert torch.isfinite(y).all() and torch.isfinite(x.grad).all()
    # Samples 0 and 1 are constant: Z = sqrt(floor)·I.
    d = 3
    i, j = torch.triu_indices(d, d)
    expect = (math.sqrt(layer.floor) * torch.eye(d))[i, j]
    torch.testing.assert_close(y[0], expect)


def test_zero_trace_without_floor_raises():
    layer = snn.CovariancePooling(4, 3, method="exact", floor=0)
    with pytest.raises(SvdgradError, match="tr\\(Σ\\) = 0.*floor"):
        layer(torch.zeros(2, 4, 3, 3))


def test_bad_arguments_give_clear_errors():
    with pytest.raises(SvdgradError, match="in_channels"):
        snn.CovariancePooling(0, 4)
    with pytest.raises(SvdgradError, match="Unknown method 'svd'.*exact"):
        snn.CovariancePooling(4, 4, method="svd")
    with pytest.raises(SvdgradError, match="floor"):
        snn.CovariancePooling(4, 4, floor=-1)
    layer = snn.CovariancePooling(4, 2)
    with pytest.raises(SvdgradError, match="\\(B, C, H, W\\)"):
        layer(torch.randn(4, 9))
    with pytest.raises(SvdgradError, match="4 channels"):
        layer(torch.randn(2, 3, 4, 4))
    with pytest.raises(SvdgradError, match="Unknown method"):
        layer.method = "nope"
    with pytest.raises(SvdgradError, match="last_stride"):
        snn.SmallResNet(3, 1, last_stride=3)
    with pytest.raises(SvdgradError, match="pool"):
        snn.SmallResNet(3, 1, pool="max")


def test_global_average_pooling():
    gap = snn.GlobalAveragePooling(5)
    x = torch.randn(2, 5, 3, 4)
    torch.testing.assert_close(gap(x), x.mean(dim=(2, 3)))
    assert snn.GlobalAveragePooling(5, 3)(x).shape == (2, 3)


@pytest.mark.parametrize("pool", ["cov", "gap"])
def test_small_resnet_shapes_and_last_stride(pool):
    torch.manual_seed(0)
    net = snn.SmallResNet(7, 1, (4, 8, 8), pool=pool, reduced_channels=6)
    x = torch.randn(2, 1, 32, 32)
    assert net(x).shape == (2, 7)
    assert net.features(net.stem(x)).shape[-1] == 16  # one stride-2 stage; the last stride is dropped
    strided = snn.SmallResNet(7, 1, (4, 8, 8), pool=pool, reduced_channels=6, last_stride=2)
    assert strided.features(strided.stem(x)).shape[-1] == 8
    net(x).sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in net.parameters() if p.grad is not None)


def test_parametric_covariance_pooling():
    torch.manual_seed(4)
    layer = snn.ParametricCovariancePooling(6, 4, method="exact", projected_channels=3).double()
    x = torch.randn(2, 6, 5, 5, dtype=torch.float64, requires_grad=True)
    PX = layer.project(layer.reduce(x)).flatten(2)
    torch.testing.assert_close(layer.covariance(x), PX @ PX.mT / 25)
    y = layer(x)
    assert y.shape == (2, 6) and layer.out_features == 6
    y.sum().backward()
    assert torch.isfinite(layer.project.weight.grad).all()


@pytest.mark.parametrize("route,method", [("covariance", "exact"), ("covariance", "newton_schulz"),
                                          ("features", "exact")])
def test_low_variance_features_keep_their_gradient(route, method):
    """Features that vary but whose tr Σ is below the floor were pooled as a constant map: Z = √floor·I, a zero
    gradient (the gradient of (Σ + floor·I)^{1/2} there is about 0.04 at features of 1e-6) and, for a batch of
    such samples, an output with no grad_fn.  Only an exactly constant map (Σ = 0, dΣ/dX = 0) is constant now."""
    layer = snn.CovariancePooling(4, None, method, route=route).double()
    x = torch.randn(2, 4, 3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    x[0] *= 1e-6
    x.requires_grad_(True)
    (g,) = torch.autograd.grad(layer(x).sum(), x)
    S = snn.covariance(x[:1].detach().flatten(2)) + layer.floor * torch.eye(4, dtype=torch.float64)
    x0 = x[:1].detach().clone().requires_grad_(True)
    Sx = snn.covariance(x0.flatten(2)) + layer.floor * torch.eye(4, dtype=torch.float64)
    i, j = torch.triu_indices(4, 4)
    (want,) = torch.autograd.grad(svdgrad.sqrtm(Sx, "exact")[..., i, j].sum(), x0)
    assert float(want.abs().max()) > 1e-2  # (a gradient that matters)
    tol = 1e-6 if method == "exact" else 1e-2  # (newton_schulz: 5 iterations at κ(Σ + floor·I) ≈ 1)
    torch.testing.assert_close(g[:1], want, rtol=tol, atol=tol * float(want.abs().max()))
    assert S.shape == (1, 4, 4)
    # a batch of such samples alone still has a graph
    assert layer(x[:1]).grad_fn is not None


@pytest.mark.parametrize("route", ["covariance", "features"])
@pytest.mark.parametrize("value", [0.1, 1e-3, 3.7, -2.2e5])
def test_a_constant_map_is_exactly_constant_after_centring(route, value):
    """x − mean(x) of a constant row is not exactly 0 in floating point (sum then divide); the layer's centring
    (x − x₀ − mean(x − x₀)) is, so a constant map is recognized exactly and gets Z = √floor·I, zero gradient."""
    layer = snn.CovariancePooling(3, None, "ordinary" if route == "covariance" else "exact", route=route)
    x = torch.full((2, 3, 7, 7), value)
    x[1] = torch.randn(3, 7, 7)
    x.requires_grad_(True)
    y = layer(x)
    (g,) = torch.autograd.grad(y.sum(), x)
    i, j = torch.triu_indices(3, 3)
    torch.testing.assert_close(y[0], (math.sqrt(layer.floor) * torch.eye(3))[i, j], rtol=0, atol=0)
    assert torch.equal(g[0], torch.zeros_like(g[0])) and torch.isfinite(g).all()
