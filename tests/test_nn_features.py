"""CovariancePooling(route="features"): Σ^{1/2} by gram_sqrtm of the centred features, never forming Σ in its dtype."""

import math

import pytest
import torch

import svdgrad
import svdgrad.nn as snn
from svdgrad import SvdgradError

from .helpers import EPS


def _triu(Z):
    d = Z.shape[-1]
    i, j = torch.triu_indices(d, d)
    return Z[..., i, j]


def _untriu(v, d):
    i, j = torch.triu_indices(d, d)
    Z = v.new_zeros(*v.shape[:-1], d, d)
    Z[..., i, j] = v
    return Z + Z.mT - torch.diag_embed(Z.diagonal(dim1=-2, dim2=-1))


def feature_map(B, d, hw, kappa, seed=0, mean=3.0):
    """x (B, d, h, w) in float64 whose centred covariance has eigenvalues from 1 down to 1/kappa.

    X̄ = √N·Q diag(√λ) Vᵀ with V orthonormal and orthogonal to the all-ones
    vector, so centring removes only the added mean and κ(Σ) = kappa exactly.
    """
    h, w = hw
    N = h * w
    g = torch.Generator().manual_seed(seed)
    xs = []
    for _ in range(B):
        Q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
        P = torch.randn(N, d, generator=g, dtype=torch.float64)
        P = P - P.mean(0, keepdim=True)  # columns orthogonal to 1
        V, _ = torch.linalg.qr(P)  # (N, d)
        lam = torch.logspace(0, -math.log10(kappa), d, dtype=torch.float64)
        X = math.sqrt(N) * Q @ torch.diag(lam.sqrt()) @ V.T + mean * torch.randn(d, 1, generator=g,
                                                                                  dtype=torch.float64)
        xs.append(X.reshape(d, h, w))
    return torch.stack(xs)


def _reference(x64, floor):
    """(Σ + floor·I)^{1/2} in float64 from float64 features x (B, d, h, w)."""
    S = snn.covariance(x64.flatten(2))
    d = S.shape[-1]
    return svdgrad.sqrtm(S + floor * torch.eye(d, dtype=S.dtype), "exact")


def test_features_route_equals_covariance_route_in_float64():
    torch.manual_seed(0)
    layer = snn.CovariancePooling(6, 4, method="exact", route="features").double()
    x = torch.randn(3, 6, 5, 4, dtype=torch.float64) + 2
    y_features = layer(x)
    layer.route = "covariance"
    y_cov = layer(x)
    torch.testing.assert_close(y_features, y_cov, rtol=1e-10, atol=1e-12)


def test_floor_columns_give_sigma_plus_floor_exactly():
    """N < d: Σ is singular and the appended √floor·I columns must give Σ + floor·I, not Σ."""
    torch.manual_seed(1)
    for floor in (0.01, 1e-10):
        layer = snn.CovariancePooling(5, None, route="features", floor=floor).double()
        x = torch.randn(2, 5, 1, 3, dtype=torch.float64)  # N = 3 < d = 5: rank 2 after centring
        Z = _untriu(layer(x), 5)
        torch.testing.assert_close(Z, _reference(x, floor), rtol=1e-9, atol=1e-12)


def test_float32_is_closer_to_float64_than_the_covariance_route():
    """At κ(Σ) = 1e8 in float32 gram_sqrtm keeps κ(X) = 1e4; forming Σ in float32 loses it to κ(Σ)·eps32."""
    floor = 1e-10
    x64 = feature_map(4, 8, (8, 8), kappa=1e8, seed=2)
    x32 = x64.float()
    ref = _reference(x32.double(), floor)  # the same (rounded) input, exact arithmetic
    errs = {}
    for route in snn.ROUTES:
        layer = snn.CovariancePooling(8, None, method="exact", route=route, compute_dtype=None, floor=floor)
        assert layer.method.compute_dtype is None
        Z = _untriu(layer(x32).double(), 8)
        errs[route] = float(torch.linalg.matrix_norm(Z - ref).max() / torch.linalg.matrix_norm(ref).min())
    # features: a few eps32 relative (it never sees κ(Σ)); covariance: about κ(Σ)·eps32 in the small
    # eigenvalues, whose square roots carry √λ relative weight.
    assert errs["features"] < 100 * EPS[torch.float32], errs
    assert errs["features"] * 10 < errs["covariance"], errs


def test_float32_gradient_is_closer_to_float64_than_the_covariance_route():
    x64 = feature_map(2, 6, (6, 6), kappa=1e8, seed=3)
    x32 = x64.float()
    g = torch.randn(2, 21, generator=torch.Generator().manual_seed(0), dtype=torch.float64)

    def grad(route, dtype, cdtype):
        layer = snn.CovariancePooling(6, None, method="exact", route=route, compute_dtype=cdtype)
        xi = x32.to(dtype).detach().clone().requires_grad_(True)
        (layer.to(dtype)(xi) * g.to(dtype)).sum().backward()
        return xi.grad.double()

    ref = grad("covariance", torch.float64, None)
    torch.testing.assert_close(grad("features", torch.float64, None), ref, rtol=1e-6, atol=1e-8)
    err = {r: float((grad(r, torch.float32, None) - ref).norm() / ref.norm()) for r in snn.ROUTES}
    # features: below κ(X)·eps32 = √κ(Σ)·eps32 (measured 0.13 of it); covariance: about κ(Σ)·eps32.
    assert err["features"] < math.sqrt(1e8) * EPS[torch.float32], err
    assert err["features"] * 10 < err["covariance"], err


def test_auto_compute_dtype_is_the_input_dtype_on_the_features_route():
    layer = snn.CovariancePooling(6, 4, route="features")
    assert layer.method.name == "exact" and layer.method.compute_dtype is None
    y = layer(torch.randn(2, 6, 4, 4))
    assert y.dtype == torch.float32 and y.shape == (2, 10)
    layer.route = "covariance"
    assert layer.method.compute_dtype == torch.float64  # eigen methods of Σ in float64, as before
    layer.route = "features"
    assert layer.method.compute_dtype is None
    pinned = snn.CovariancePooling(6, 4, route="features", compute_dtype=torch.float64)
    assert pinned.method.compute_dtype == torch.float64
    assert snn.CovariancePooling(6, 4).method.name == "newton_schulz"  # default unchanged


def test_route_and_method_validation():
    with pytest.raises(SvdgradError, match="route.*'covariance', 'features'.*'gram'"):
        snn.CovariancePooling(4, 2, route="gram")
    with pytest.raises(SvdgradError, match="method 'exact' for route='features'.*'newton_schulz'"):
        snn.CovariancePooling(4, 2, method="newton_schulz", route="features")
    layer = snn.CovariancePooling(4, 2, route="features")
    with pytest.raises(SvdgradError, match="route='features'.*'pade'.*route='covariance'"):
        layer.method = "pade"
    assert layer.method.name == "exact"
    ns = snn.CovariancePooling(4, 2)
    with pytest.raises(SvdgradError, match="route='features'"):
        ns.route = "features"
    assert ns.route == "covariance"
    with pytest.raises(SvdgradError, match="route"):
        ns.route = "svd"
    assert "route='features'" in repr(layer)


def test_gradcheck_float64():
    torch.manual_seed(4)
    layer = snn.CovariancePooling(5, 3, route="features").double()
    x = torch.randn(2, 5, 2, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(layer, (x,), eps=1e-6, atol=1e-8, rtol=1e-6)
    # rank-deficient Σ (N = 2 < d = 4): the floor columns keep the SVD well posed
    plain = snn.CovariancePooling(4, None, route="features", floor=1e-2).double()
    x2 = torch.randn(2, 4, 1, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(plain, (x2,), eps=1e-6, atol=1e-8, rtol=1e-6)


def test_dead_sample_does_not_touch_a_live_one():
    torch.manual_seed(5)
    layer = snn.CovariancePooling(4, None, route="features").double()
    live = torch.randn(1, 4, 3, 3, dtype=torch.float64)
    x = torch.cat([torch.full((1, 4, 3, 3), 2.0, dtype=torch.float64), live]).requires_grad_(True)
    y = layer(x)
    w = torch.randn(10, dtype=torch.float64)
    (y @ w).sum().backward()
    xl = live.clone().requires_grad_(True)
    yl = layer(xl)
    (yl @ w).sum().backward()
    torch.testing.assert_close(y[1:], yl, rtol=0, atol=0)
    torch.testing.assert_close(x.grad[1:], xl.grad, rtol=0, atol=0)
    # The dead sample: Z = sqrt(floor)·I, zero gradient.
    torch.testing.assert_close(y[0], _triu(math.sqrt(layer.floor) * torch.eye(4, dtype=torch.float64)))
    assert float(x.grad[0].abs().max()) == 0.0


def test_zero_trace_without_floor_raises():
    layer = snn.CovariancePooling(4, None, route="features", floor=0)
    with pytest.raises(SvdgradError, match="tr\\(Σ\\) = 0.*floor"):
        layer(torch.zeros(2, 4, 3, 3))
    # With floor=0 a live sample takes gram_sqrtm(Y) itself.
    x = torch.randn(2, 4, 3, 3, dtype=torch.float64)
    Z = _untriu(layer.double()(x), 4)
    torch.testing.assert_close(Z, _reference(x, 0.0), rtol=1e-9, atol=1e-12)


def test_last_covariance_is_sigma_before_the_floor():
    torch.manual_seed(6)
    layer = snn.CovariancePooling(6, 4, route="features", keep_covariance=True).double()
    x = torch.randn(3, 6, 4, 4, dtype=torch.float64)
    layer(x)
    S = layer.last_covariance
    torch.testing.assert_close(S, layer.covariance(x), rtol=1e-12, atol=1e-14)
    assert not S.requires_grad and torch.equal(S, S.mT)


def test_parametric_features_route_equals_its_covariance_route():
    torch.manual_seed(7)
    layer = snn.ParametricCovariancePooling(6, 4, method="exact", projected_channels=3).double()
    x = torch.randn(2, 6, 4, 4, dtype=torch.float64)
    y_cov = layer(x)
    layer.route = "features"
    torch.testing.assert_close(layer(x), y_cov, rtol=1e-10, atol=1e-12)


# --- Empty maps, non-finite input and Σ's overflow: the messages name the cause (session 16 review) -------------

@pytest.mark.parametrize("route", ["covariance", "features"])
def test_a_map_without_positions_raises_on_both_routes(route):
    layer = snn.CovariancePooling(4, None, "exact", route=route)
    with pytest.raises(SvdgradError, match=r"at least one position.*shape=\(2, 4, 0, 3\)"):
        layer(torch.randn(2, 4, 0, 3))


@pytest.mark.parametrize("route", ["covariance", "features"])
@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_non_finite_input_is_named_with_the_users_shape(route, bad):
    layer = snn.CovariancePooling(4, None, "exact", route=route)
    x = torch.randn(2, 4, 3, 3)
    x[1, 2, 0, 1] = bad
    with pytest.raises(SvdgradError, match=r"finite values in the input of CovariancePooling.*shape=\(2, 4, 3, 3\)"):
        layer(x)


def test_covariance_overflowing_float32_points_to_the_features_route():
    """Σ at |x| = 1e25 is 1e50: not a float32 number; the features route never forms it and is exact there."""
    x = torch.randn(2, 4, 3, 3) * 1e25
    with pytest.raises(SvdgradError, match=r"overflows torch.float32.*route='features'"):
        snn.CovariancePooling(4, None, "newton_schulz")(x)
    z = snn.CovariancePooling(4, None, "exact", route="features")(x)
    z1 = snn.CovariancePooling(4, None, "exact", route="features")(x / 1e25)
    assert torch.isfinite(z).all() and float(((z / 1e25 - z1).norm() / z1.norm())) <= 10 * EPS[torch.float32]


@pytest.mark.parametrize("dtype, s", [(torch.float64, 1e-200), (torch.float32, 1e-30)])
def test_features_route_with_floor_0_takes_tiny_features(dtype, s):
    """With floor=0 the features route refused tiny random features as 'tr(Σ) = 0 (a constant or all-zero feature
    map)': its test ‖Y‖² underflowed, though the route never forms Σ and gram_sqrtm handles the scale."""
    torch.manual_seed(0)
    x = torch.randn(2, 4, 3, 3, dtype=torch.float64)
    layer = snn.CovariancePooling(4, None, route="features", floor=0.0).to(dtype)
    ref = layer(x.to(dtype)).double()
    out = layer((x * s).to(dtype)).double()
    torch.testing.assert_close(out / s, ref, rtol=1e3 * torch.finfo(dtype).eps, atol=0)
    with pytest.raises(SvdgradError, match=r"sample 1 .*constant or all-zero"):
        layer(torch.cat([x[:1], torch.full_like(x[:1], 3.0)]).to(dtype))  # (a constant map: still refused)


def test_covariance_route_names_an_underflowing_covariance_as_such():
    """At 1e-30 in float32 the covariance route's Σ underflows to 0: the message said 'a constant or all-zero
    feature map' of random features; it now says that Σ underflows and names the features route."""
    torch.manual_seed(0)
    x = torch.randn(2, 4, 3, 3) * 1e-30
    with pytest.raises(SvdgradError, match=r"underflows.*route='features'"):
        snn.CovariancePooling(4, None, floor=0.0)(x)


def test_float16_features_of_small_size_are_not_taken_for_a_dead_sample():
    # tr(Σ) = ‖Y‖² was summed in float16, where each Y² of features about 1e-4 underflows to 0: a live sample
    # (tr(Σ) = 8e-8, far above floor = 1e-10) was pooled as sqrt(floor)·I, 90 % off (review, session 22).
    gen = torch.Generator().manual_seed(0)
    x = (1e-4 * torch.randn(2, 8, 8, 8, generator=gen)).half()
    ref = snn.CovariancePooling(8, None, method="exact", route="covariance")(x.double())
    for route in ("features", "covariance"):
        y = snn.CovariancePooling(8, None, method="exact", route=route)(x)
        # float16's rounding of the input and of the result: a few eps16 (9.8e-4)
        assert float((y.double() - ref).norm() / ref.norm()) < 10 * torch.finfo(torch.float16).eps, route


def test_features_route_overflow_does_not_point_to_itself():
    # Centring features near float32's largest number overflows; the error told the user to "Use route='features'",
    # the route in use (review, session 22).  It now names what helps there: a float64 input or smaller features.
    x = torch.tensor([[3e38, -3e38, -3e38], [-3e38, 1e38, 2e38], [-3e38, -3e38, 3e38]]).reshape(1, 3, 3, 1)
    with pytest.raises(SvdgradError, match="float64") as info:
        snn.CovariancePooling(3, None, route="features")(x)
    assert "route='features'" not in str(info.value)


def test_floor_0_diagnosis_neither_fails_in_batch_norm_nor_updates_its_statistics():
    # With floor=0 a zero trace raises SvdgradError; to tell an underflowed Σ from a constant map the layer re-ran
    # its reduction (conv + BatchNorm) on one sample in train mode: on a 1x1 map BatchNorm raised its own ValueError
    # ("Expected more than 1 value per channel"), and on larger maps it updated the running statistics a second
    # time (review, session 22).
    torch.manual_seed(0)
    layer = snn.CovariancePooling(4, 3, method="exact", route="covariance", floor=0.0)
    with pytest.raises(SvdgradError, match="positive trace"):
        layer(torch.randn(2, 4, 1, 1))
    layer = snn.CovariancePooling(4, 3, method="exact", route="covariance", floor=0.0)
    x = torch.randn(2, 4, 1, 1).expand(2, 4, 3, 3).contiguous()  # constant maps: tr Σ = 0
    with pytest.raises(SvdgradError, match="positive trace"):
        layer(x)
    assert int(layer.reduce[1].num_batches_tracked) == 1 and layer.training


@pytest.mark.parametrize("options", [{}, {"method": "exact", "compute_dtype": None}])
def test_covariance_route_forms_the_sigma_of_half_input_in_float32(options):
    """Σ of float16 features was formed in float16 where the compute dtype was unset (the default
    newton_schulz under compute_dtype='auto', or compute_dtype=None): X Xᵀ/N of features of 1e-4 underflowed,
    and the live sample was taken for a dead one, √floor·I, detached (89 % off; review, session 23).  Σ is
    formed in float32 at least: the output is the float32 input's, rounded to float16."""
    torch.manual_seed(0)
    x = (1e-4 * torch.randn(2, 4, 8, 8)).half()
    layer = snn.CovariancePooling(4, reduced_channels=None, **options)
    y = layer(x.clone().requires_grad_(True))
    assert y.requires_grad and y.dtype == torch.float16
    with torch.no_grad():
        ref = layer(x.float())
        assert float((y.float() - ref).norm() / ref.norm()) <= torch.finfo(torch.float16).eps
