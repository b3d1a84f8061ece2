"""svdgrad.nn.Whitening: ZCA decorrelated batch norm (DBN), IterNorm with newton_schulz."""

import math

import pytest
import torch

import svdgrad
import svdgrad.nn as snn
from svdgrad import SvdgradError

from .helpers import EPS

#: Every method that computes inv_sqrt: a new one is tested here automatically.
INV_SQRT = svdgrad.methods("inv_sqrt")
#: those that compute Σ^{-1/2} to working precision in the forward (each method declares it;
#: topn, newton_schulz, mpa and mtp approximate by design).
ACCURATE = tuple(m for m in INV_SQRT if svdgrad.get_method(m).forward_is_exact)
#: ordinary's K = 1/(λi - λj) is infinite at the tied eigenvalues of Σ = eps·I
#: by design (faithfully unstable), as documented.
TIE_STABLE = tuple(m for m in INV_SQRT if m != "ordinary")


def _data(B=64, C=6, HW=None, dtype=torch.float64, seed=0, kappa=10.0):
    """x with a known, correlated channel covariance (κ about ``kappa``) and a nonzero mean."""
    g = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(C, C, generator=g, dtype=torch.float64))
    s = torch.logspace(0, 0.5 * math.log10(kappa), C, dtype=torch.float64)
    mix = Q @ torch.diag(s) @ Q.T  # (C, C)
    shape = (B, C) if HW is None else (B, C, *HW)
    z = torch.randn(shape, generator=g, dtype=torch.float64)
    offset = torch.arange(C, dtype=torch.float64).view(C, *([1] * (len(shape) - 2)))
    x = torch.einsum("ij,bj...->bi...", mix, z) + offset
    return x.to(dtype)


def _channels(y):
    """(B, C, *) -> (C, m)."""
    return y.transpose(0, 1).reshape(y.shape[1], -1)


def _group_covariances(y, g):
    Y = _channels(y).double()
    Y = Y - Y.mean(-1, keepdim=True)
    S = Y @ Y.T / Y.shape[-1]  # (C, C)
    C = S.shape[0]
    return torch.stack([S[i:i + g, i:i + g] for i in range(0, C, g)]), S


def _kappa(S):
    L = torch.linalg.eigvalsh(S.double())
    return float(L[..., -1].max() / L[..., 0].min())


# ---------------------------------------------------------------------------
# What the layer computes.
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("method", ACCURATE)
def test_training_output_is_white_per_group(method, dtype):
    """With eps=0 the whitened output has covariance I in each group, to C·κ·eps of the dtype."""
    g = 3
    layer = snn.Whitening(6, group_size=g, method=method, eps=0.0, affine=False).to(dtype)
    x = _data(B=200, C=6, dtype=dtype, kappa=100.0)
    y = layer(x)
    assert y.dtype == dtype and y.shape == x.shape
    Sg, S = _group_covariances(y, g)
    Sx, _ = _group_covariances(x, g)
    tol = 10 * (_kappa(Sx) + g) * EPS[dtype]
    eye = torch.eye(g, dtype=torch.float64).expand_as(Sg)
    torch.testing.assert_close(Sg, eye, rtol=0, atol=tol)
    # Groups are whitened separately: the cross-group block is not zero.
    assert S[:g, g:].abs().max() > 1e-2
    # and the output is centred.
    assert _channels(y).double().mean(-1).abs().max() < tol


def test_eps_is_a_ridge_on_the_covariance():
    """out = (Σ + eps·I)^{-1/2}(x - μ), so cov(out) = I - eps·(Σ + eps·I)^{-1} exactly."""
    eps = 0.3
    layer = snn.Whitening(4, method="exact", eps=eps, affine=False).double()
    x = _data(B=100, C=4)
    y = layer(x)
    S, _ = _group_covariances(y, 4)
    Sx, _ = _group_covariances(x, 4)
    R = Sx[0] + eps * torch.eye(4, dtype=torch.float64)
    torch.testing.assert_close(S[0], torch.eye(4, dtype=torch.float64) - eps * torch.linalg.inv(R),
                               rtol=0, atol=1e-12)


def test_is_zca_the_symmetric_whitening():
    """ZCA: W = Σ^{-1/2} is symmetric positive definite (not PCA or Cholesky whitening)."""
    layer = snn.Whitening(4, method="exact", eps=0.0, affine=False).double()
    x = _data(B=100, C=4)
    y = layer(x)
    Xc = _channels(x) - _channels(x).mean(-1, keepdim=True)
    # Solve Y = W Xc for W (Xc has full row rank).
    W = torch.linalg.lstsq(Xc.T, _channels(y).T).solution.T
    torch.testing.assert_close(W, W.T, rtol=0, atol=1e-10)
    assert torch.linalg.eigvalsh(W).min() > 0
    torch.testing.assert_close(W, svdgrad.inv_sqrtm(Xc @ Xc.T / Xc.shape[-1], "exact"), rtol=1e-10, atol=1e-10)


def test_newton_schulz_is_iternorm_and_converges_with_iterations():
    x = _data(B=200, C=4, kappa=10.0)
    errs = []
    for T in (1, 3, 5, 30):
        layer = snn.Whitening(4, method="newton_schulz", iterations=T, eps=0.0, affine=False).double()
        assert layer.method.iterations == T
        S, _ = _group_covariances(layer(x), 4)
        errs.append(float((S[0] - torch.eye(4, dtype=torch.float64)).abs().max()))
    assert errs == sorted(errs, reverse=True), errs
    assert errs[0] > 0.1 and errs[-1] < 1e-8, errs


def test_affine_is_per_channel():
    torch.manual_seed(0)
    layer = snn.Whitening(4, group_size=2, method="exact").double()
    plain = snn.Whitening(4, group_size=2, method="exact", affine=False).double()
    assert layer.weight.shape == (4,) and layer.bias.shape == (4,)
    assert plain.weight is None and plain.bias is None
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([1.0, 2.0, -3.0, 0.5]))
        layer.bias.copy_(torch.tensor([0.0, 1.0, 2.0, 3.0]))
    x = _data(B=20, C=4, HW=(3, 2))
    expect = plain(x) * layer.weight.view(1, 4, 1, 1) + layer.bias.view(1, 4, 1, 1)
    torch.testing.assert_close(layer(x), expect, rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------------------
# Shapes and groups.
# ---------------------------------------------------------------------------

def test_groups_equal_separate_layers():
    x = _data(B=30, C=6, HW=(2, 2), kappa=50.0)
    whole = snn.Whitening(6, group_size=2, method="exact").double()
    y = whole(x)
    for k in range(3):
        part = snn.Whitening(2, method="exact").double()
        torch.testing.assert_close(y[:, 2 * k:2 * k + 2], part(x[:, 2 * k:2 * k + 2]), rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(whole.running_whitening[k], part.running_whitening[0], rtol=1e-12, atol=1e-14)
    assert whole.running_whitening.shape == (3, 2, 2) and whole.num_groups == 3


def test_spatial_input_equals_flattened_positions():
    """(B, C, H, W) whitens over B·H·W positions, as (B·H·W, C) does."""
    x = _data(B=5, C=4, HW=(3, 4))
    layer4 = snn.Whitening(4, group_size=2, method="exact").double()
    layer2 = snn.Whitening(4, group_size=2, method="exact").double()
    y4 = layer4(x)
    y2 = layer2(x.permute(0, 2, 3, 1).reshape(-1, 4))
    torch.testing.assert_close(y4.permute(0, 2, 3, 1).reshape(-1, 4), y2, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(layer4.running_whitening, layer2.running_whitening)
    assert y4.is_contiguous()
    # (B, C, L) too.
    assert layer4(x.flatten(2)).shape == (5, 4, 12)


def test_group_size_must_divide_channels():
    with pytest.raises(SvdgradError, match="divisible.*6.*group_size=4"):
        snn.Whitening(6, group_size=4)
    with pytest.raises(SvdgradError, match="num_features"):
        snn.Whitening(0)
    with pytest.raises(SvdgradError, match="momentum"):
        snn.Whitening(4, momentum=1.5)
    with pytest.raises(SvdgradError, match="eps"):
        snn.Whitening(4, eps=-1.0)
    layer = snn.Whitening(4, group_size=2)
    with pytest.raises(SvdgradError, match="4 channels.*shape=\\(3, 5\\)"):
        layer(torch.randn(3, 5))
    with pytest.raises(SvdgradError, match="\\(B, C\\)"):
        layer(torch.randn(4))


def test_unknown_or_unsupported_method_lists_the_valid_ones():
    with pytest.raises(SvdgradError, match="Unknown method 'svd'.*exact"):
        snn.Whitening(4, method="svd")
    layer = snn.Whitening(4)
    with pytest.raises(SvdgradError, match="Unknown method"):
        layer.method = "nope"
    assert layer.method.name == "exact"


# ---------------------------------------------------------------------------
# Running statistics and eval mode.
# ---------------------------------------------------------------------------

def test_running_statistics_follow_batchnorm_momentum():
    x1, x2 = _data(B=40, C=4, seed=1), _data(B=40, C=4, seed=2) * 2 + 1
    layer = snn.Whitening(4, group_size=2, method="exact", momentum=0.1).double()
    eye = torch.eye(2, dtype=torch.float64).expand(2, 2, 2)
    torch.testing.assert_close(layer.running_whitening, eye)
    assert float(layer.running_mean.abs().max()) == 0.0
    W = []
    for x in (x1, x2):
        one = snn.Whitening(4, group_size=2, method="exact", momentum=1.0).double()
        one(x)
        W.append((one.running_mean.clone(), one.running_whitening.clone()))
    layer(x1)
    layer(x2)
    mu = 0.9 * (0.1 * W[0][0]) + 0.1 * W[1][0]
    Wr = 0.9 * (0.9 * eye + 0.1 * W[0][1]) + 0.1 * W[1][1]
    torch.testing.assert_close(layer.running_mean, mu)
    torch.testing.assert_close(layer.running_whitening, Wr)
    assert int(layer.num_batches_tracked) == 2
    # The batch whitening matrix is (Σ + eps·I)^{-1/2} and the mean the batch mean.
    Sx, _ = _group_covariances(x1, 2)
    torch.testing.assert_close(W[0][1], svdgrad.inv_sqrtm(Sx + 1e-5 * torch.eye(2, dtype=torch.float64), "exact"))
    torch.testing.assert_close(W[0][0], _channels(x1).mean(-1))


def test_cumulative_average_with_momentum_none():
    xs = [_data(B=30, C=2, seed=s) for s in range(3)]
    layer = snn.Whitening(2, method="exact", momentum=None).double()
    singles = []
    for x in xs:
        layer(x)
        one = snn.Whitening(2, method="exact", momentum=1.0).double()
        one(x)
        singles.append(one.running_whitening)
    torch.testing.assert_close(layer.running_whitening, sum(singles) / 3)


def test_eval_uses_running_statistics():
    torch.manual_seed(0)
    x = _data(B=50, C=4, HW=(2, 2), seed=3)
    layer = snn.Whitening(4, group_size=2, method="exact", momentum=1.0).double()
    with torch.no_grad():
        layer.weight.uniform_(0.5, 2.0)
        layer.bias.uniform_(-1.0, 1.0)
    y_train = layer(x)
    layer.eval()
    before = [b.clone() for b in layer.buffers()]
    # momentum=1: the running statistics are those of x, so eval on x repeats training.
    torch.testing.assert_close(layer(x), y_train, rtol=1e-12, atol=1e-12)
    # On other data eval applies W_run (x - μ_run), not the new batch's statistics.
    x2 = x[:7] * 3 - 2
    Xc = _channels(x2) - layer.running_mean[:, None]
    Y = torch.cat([layer.running_whitening[k] @ Xc[2 * k:2 * k + 2] for k in range(2)])
    Y = Y * layer.weight[:, None] + layer.bias[:, None]
    torch.testing.assert_close(_channels(layer(x2)), Y, rtol=1e-12, atol=1e-12)
    assert all(torch.equal(a, b) for a, b in zip(before, layer.buffers()))  # eval never updates
    # A batch of one is fine in eval.
    assert layer(x2[:1]).shape == (1, 4, 2, 2)


def test_state_dict_round_trip():
    layer = snn.Whitening(6, group_size=3, method="newton_schulz", iterations=3)
    for s in range(3):
        layer(_data(B=16, C=6, HW=(2, 2), dtype=torch.float32, seed=s))
    sd = layer.state_dict()
    assert set(sd) == {"weight", "bias", "running_mean", "running_whitening", "num_batches_tracked"}
    assert sd["running_whitening"].shape == (2, 3, 3)
    fresh = snn.Whitening(6, group_size=3, method="newton_schulz", iterations=3)
    fresh.load_state_dict(sd)
    layer.eval()
    fresh.eval()
    x = _data(B=4, C=6, HW=(2, 2), dtype=torch.float32, seed=9)
    assert torch.equal(layer(x), fresh(x))
    assert int(fresh.num_batches_tracked) == 3
    with pytest.raises(RuntimeError, match="running_whitening"):
        snn.Whitening(6, group_size=2).load_state_dict(sd)


# ---------------------------------------------------------------------------
# Methods and gradients.
# ---------------------------------------------------------------------------

def test_method_switch_takes_effect_and_options_apply():
    x = _data(B=40, C=4)
    layer = snn.Whitening(4, method="exact").double()
    y_exact = layer(x)
    layer.method = svdgrad.NewtonSchulz(iterations=1)
    y_ns = layer(x)
    assert not torch.allclose(y_exact, y_ns, rtol=1e-3)
    layer.method = "exact"
    torch.testing.assert_close(layer(x), y_exact)
    assert snn.Whitening(4, method="taylor:degree=9").method.degree == 9
    assert snn.Whitening(4, method="taylor", degree=7).method.degree == 7
    assert "method=" in repr(layer) and "group_size=4" in repr(layer)


@pytest.mark.parametrize("method", ["exact", "newton_schulz"])
def test_gradcheck_float64(method):
    torch.manual_seed(0)
    layer = snn.Whitening(4, group_size=2, method=method).double()
    with torch.no_grad():
        layer.weight.uniform_(0.5, 2.0)
    x = _data(B=3, C=4, HW=(2, 2), seed=5).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: layer(x), (x,), eps=1e-6, atol=1e-8, rtol=1e-6)
    # and the affine weight, through a functional call
    w = layer.weight.detach().clone().requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda w: torch.func.functional_call(layer, {"weight": w}, (x.detach(),)), (w,), eps=1e-6, atol=1e-8)


@pytest.mark.parametrize("method", INV_SQRT)
def test_every_method_trains_finite(method):
    torch.manual_seed(1)
    layer = snn.Whitening(8, group_size=4, method=method)
    x = _data(B=16, C=8, HW=(3, 3), dtype=torch.float32).requires_grad_(True)
    y = layer(x)
    (y * torch.randn_like(y)).sum().backward()
    assert torch.isfinite(y).all() and torch.isfinite(x.grad).all()
    assert torch.isfinite(layer.weight.grad).all()


# ---------------------------------------------------------------------------
# Degenerate batches.
# ---------------------------------------------------------------------------

def test_one_value_per_channel_in_training_raises():
    layer = snn.Whitening(4)
    with pytest.raises(SvdgradError, match="more than one value per channel.*shape=\\(1, 4\\)"):
        layer(torch.randn(1, 4))
    # One sample with several positions is a batch of H·W values: fine.
    assert torch.isfinite(layer(torch.randn(1, 4, 3, 3))).all()


@pytest.mark.parametrize("method", TIE_STABLE)
def test_constant_input_gives_the_bias_and_finite_gradients(method):
    """A constant group (x - μ = 0): Σ = eps·I, output β there, finite gradients, for every tie-stable method."""
    layer = snn.Whitening(4, group_size=2, method=method)
    with torch.no_grad():
        layer.bias.copy_(torch.tensor([1.0, 2.0, 3.0, 4.0]))
    x = torch.randn(8, 4, 2, 2)
    x[:, :2] = 5.0  # group 0 constant, group 1 live
    x.requires_grad_(True)
    y = layer(x)
    (y * torch.randn_like(y)).sum().backward()
    assert torch.isfinite(y).all() and torch.isfinite(x.grad).all()
    torch.testing.assert_close(y[:, 0], torch.full_like(y[:, 0], 1.0))
    torch.testing.assert_close(y[:, 1], torch.full_like(y[:, 1], 2.0))
    # The running whitening of the dead group is (eps·I)^{-1/2} blended in.
    Wd = layer.running_whitening[0]
    expect = 0.9 + 0.1 / math.sqrt(layer.eps)
    torch.testing.assert_close(Wd, expect * torch.eye(2), rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------
# SmallResNet(norm="whiten").
# ---------------------------------------------------------------------------

def _norms(net):
    bns = [n for n, m in net.named_modules() if isinstance(m, torch.nn.BatchNorm2d)]
    whs = [m for m in net.modules() if isinstance(m, snn.Whitening)]
    return bns, whs


def test_small_resnet_default_norm_is_batchnorm():
    net = snn.SmallResNet(5, 1, (4, 8, 8))
    bns, whs = _norms(net)
    assert not whs and len(bns) == 1 + 2 * 3 + 1 + 1  # stem, 2 per block, one shortcut, the head's reduction
    assert net.pool.method.name == "newton_schulz"


@pytest.mark.parametrize("method", ["exact", "newton_schulz"])
def test_small_resnet_with_whitening_trains_and_evaluates(method):
    torch.manual_seed(0)
    net = snn.SmallResNet(5, 1, (8, 16, 16), pool="cov", reduced_channels=6, norm="whiten",
                          norm_options={"method": method, "group_size": 4})
    bns, whs = _norms(net)
    assert bns == ["pool.reduce.1"]  # only the GCP head's own reduction keeps batch norm
    assert len(whs) == 1 + 2 * 3 + 1
    assert all(w.group_size == 4 and w.method.name == method for w in whs)
    x = torch.randn(4, 1, 12, 12)
    y = net(x)
    y.sum().backward()
    assert y.shape == (4, 5) and torch.isfinite(y).all()
    assert all(torch.isfinite(p.grad).all() for p in net.parameters() if p.grad is not None)
    assert all(int(w.num_batches_tracked) == 1 for w in whs)
    net.eval()
    assert torch.isfinite(net(x[:1])).all()


def test_small_resnet_whitening_group_size_default_and_errors():
    net = snn.SmallResNet(3, 1, (8, 32), pool="gap", norm="whiten")
    assert [w.group_size for w in _norms(net)[1]][:2] == [8, 8]  # min(16, C)
    assert max(w.group_size for w in _norms(net)[1]) == 16
    with pytest.raises(SvdgradError, match="norm.*'bn', 'whiten'.*'layer'"):
        snn.SmallResNet(3, 1, norm="layer")
    with pytest.raises(SvdgradError, match="norm_options.*norm='bn'"):
        snn.SmallResNet(3, 1, norm_options={"method": "exact"})
    with pytest.raises(SvdgradError, match="divisible.*num_features=24.*group_size=16"):
        snn.SmallResNet(3, 1, (24,), pool="gap", norm="whiten")
    with pytest.raises(SvdgradError, match="Unknown method"):
        snn.SmallResNet(3, 1, norm="whiten", norm_options={"method": "svd"})


def test_small_resnet_features_route_through_pool_options():
    net = snn.SmallResNet(3, 1, (4, 8), reduced_channels=4, route="features")
    assert net.pool.route == "features" and net.pool.method.name == "exact"
    assert net(torch.randn(2, 1, 8, 8)).shape == (2, 3)


# --- Scale, empty batches and the messages of bad input (session 16 review) ---------------------------------------

@pytest.mark.parametrize("dtype, scales", [(torch.float32, (1e18, 1e25, 1e30, 1e36)),
                                           (torch.float64, (1e150, 1e200, 1e300))])
@pytest.mark.parametrize("method", ["exact", "newton_schulz"])
def test_training_whitening_is_scale_free_where_the_covariance_overflows(dtype, scales, method):
    """W(x − μ) does not depend on the scale of x once eps is negligible; (1/m)·X̄X̄ᵀ summed m products and
    overflowed float32 from |x| ≈ 4e18 at m = 65536 (about 1e17 here), though Σ^{-1/2}·X̄ is of order one."""
    torch.manual_seed(0)
    x = torch.randn(4096, 8, dtype=torch.float64) @ (torch.eye(8, dtype=torch.float64) + 0.3)
    ref_layer = snn.Whitening(8, group_size=4, method=method, eps=0.0, momentum=1.0).double()
    ref = ref_layer(x).detach()
    for c in scales:
        layer = snn.Whitening(8, group_size=4, method=method, momentum=1.0).to(dtype)
        xc = (x * c).to(dtype).requires_grad_(True)
        out = layer(xc)
        assert torch.isfinite(out).all(), c
        # eps = 1e-5 against Σ of order c²: negligible; float32 rounding of Σ's κ ≈ 3 decides the bound
        assert float((out.detach().double() - ref).norm() / ref.norm()) <= 1e3 * EPS[dtype], c
        W = layer.running_whitening.double() * c  # (momentum 1: the running W is the batch's Σ^{-1/2})
        W_ref = ref_layer.running_whitening.double()
        assert float((W - W_ref).norm() / W_ref.norm()) <= 1e3 * EPS[dtype], c
        out.square().sum().backward()
        assert torch.isfinite(xc.grad).all(), c


def test_scaled_path_is_bit_for_bit_the_plain_one_where_both_apply():
    """Powers of two are exact: forcing the scaled path at an ordinary scale changes no bit."""
    torch.manual_seed(1)
    x = torch.randn(64, 8) * 3.0
    a, b = snn.Whitening(8, group_size=4), snn.Whitening(8, group_size=4)
    plain = a(x)
    scaled = b._batch_whitened(x.transpose(0, 1).reshape(2, 4, -1), x, scaled=True)  # (the fallback, directly)
    assert torch.equal(plain, scaled.reshape(8, 64).transpose(0, 1))
    assert torch.equal(a.running_mean, b.running_mean)
    assert torch.equal(a.running_whitening, b.running_whitening)


@pytest.mark.parametrize("shape", [(0, 4), (0, 4, 3, 3), (2, 4, 0, 3)])
def test_empty_batch_gives_an_empty_output_and_keeps_the_statistics(shape):
    """As torch.nn.BatchNorm: no values, no statistics to blend in (not 'a batch of one')."""
    layer = snn.Whitening(4)
    before = {k: v.clone() for k, v in layer.state_dict().items()}
    out = layer(torch.randn(shape))
    assert out.shape == shape
    for k, v in layer.state_dict().items():
        assert torch.equal(v, before[k]), k
    layer.eval()
    assert layer(torch.randn(shape)).shape == shape


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_non_finite_input_is_named_as_the_input(bad):
    layer = snn.Whitening(4)
    x = torch.randn(8, 4)
    x[3, 2] = bad
    with pytest.raises(SvdgradError, match=r"Expected finite values in the input of Whitening.*shape=\(8, 4\)"):
        layer(x)
    assert int(layer.num_batches_tracked) == 0


@pytest.mark.parametrize("value", [0, -1, 2.5, "a"])
def test_small_resnet_names_a_bad_group_size_as_such(value):
    with pytest.raises(SvdgradError, match=r"norm_options\['group_size'\].*positive integer or None"):
        snn.SmallResNet(3, 1, norm="whiten", norm_options={"group_size": value})


def test_small_resnet_rejects_num_features_in_norm_options():
    with pytest.raises(SvdgradError, match="num_features.*set per layer"):
        snn.SmallResNet(3, 1, norm="whiten", norm_options={"num_features": 4})


# --- Session 20 review: a constant group at any offset and scale, and eval mode's bad input ----------------------

@pytest.mark.parametrize("dtype, big", [(torch.float32, 1e20), (torch.float64, 1e200)])
def test_a_constant_group_is_unchanged_when_another_group_sends_the_batch_down_the_scaled_path(dtype, big):
    """Groups are independent.  A constant group at 1e20 (Σ = eps·I, W = eps^-1/2·I) got W ≈ 280 instead of 316 in
    float32, and about 0 in float64, once another group's Σ overflowed: its ridge eps·4^-j underflowed with the
    j of its own large values, though its centred values are 0."""
    torch.manual_seed(0)
    g0, g1 = torch.randn(8, 2, dtype=dtype), torch.full((8, 2), big, dtype=dtype)
    cot = torch.randn(8, 4, dtype=dtype)
    runs = []
    for s in (1.0, big):
        layer = snn.Whitening(4, group_size=2, method="exact").to(dtype)
        x = torch.cat([g0 * s, g1], 1).requires_grad_(True)
        y = layer(x)
        (y * cot).sum().backward()
        runs.append((y[:, 2:].detach(), x.grad[:, 2:], layer.running_whitening[1].clone(), layer.running_mean[2:].clone()))
    for a, b in zip(*runs):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    expect = 0.9 + 0.1 / math.sqrt(1e-5)
    torch.testing.assert_close(runs[1][2], expect * torch.eye(2, dtype=dtype), rtol=1e-6, atol=0)


@pytest.mark.parametrize("value, batch", [(12345.7, 3), (1e5, 3), (1e10, 100), (1e30, 3), (-7.3e17, 64)])
def test_a_constant_group_gives_beta_whatever_its_mean_rounds_to(value, batch):
    """float32's mean of B copies of a constant rounds (1e5 over 3: X̄ ≠ 0), and that noise, far above eps, was
    whitened to unit scale: the output was β ± 0.7 where the README says β."""
    layer = snn.Whitening(4, group_size=2)
    with torch.no_grad():
        layer.bias.copy_(torch.tensor([1.0, 2.0, 3.0, 4.0]))
    x = torch.randn(batch, 4)
    x[:, :2] = value
    y = layer(x)
    assert torch.equal(y[:, :2], torch.tensor([1.0, 2.0]).expand(batch, 2))


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_eval_mode_refuses_non_finite_input_too(bad):
    """The README's 'a NaN or Inf in the input raises, naming the input' held in training mode only: eval mode
    returned NaN in the bad value's group (as torch's BatchNorm does), silently."""
    layer = snn.Whitening(4, group_size=2)
    layer(torch.randn(16, 4))
    layer.eval()
    x = torch.randn(8, 4)
    x[3, 1] = bad
    with pytest.raises(SvdgradError, match=r"Expected finite values in the input of Whitening.*shape=\(8, 4\)"):
        layer(x)
    assert torch.isfinite(layer(torch.randn(8, 4))).all()


def test_eval_mode_output_that_overflows_is_an_error_not_inf():
    """A finite input far outside the running statistics: W(x − μ) beyond float32's range was inf, silently."""
    layer = snn.Whitening(4, group_size=2, momentum=1.0)
    layer(torch.randn(64, 4) * 0.01)  # (running W about 100·I)
    layer.eval()
    x = torch.randn(8, 4)
    x[2, 0] = 3e37
    with pytest.raises(SvdgradError, match=r"overflows.*running statistics"):
        layer(x)


def test_running_statistics_that_do_not_fit_the_buffers_are_refused():
    """float64 input at 1e300 with the default float32 buffers: the training output was right, but the running
    mean became ±inf and the running whitening's update 0, silently; eval then blamed the input (review,
    session 23).  The step that would write them refuses, and the layer in float64 takes the input."""
    torch.manual_seed(0)
    x = 1e300 * torch.randn(16, 4, dtype=torch.float64)
    layer = snn.Whitening(4)
    with pytest.raises(SvdgradError, match=r"float32 buffers.*layer\.double\(\)"):
        layer(x)
    assert int(layer.num_batches_tracked) == 0 and torch.isfinite(layer.running_mean).all()
    layer = snn.Whitening(4).double()
    layer(x)
    assert torch.isfinite(layer.running_mean).all() and torch.isfinite(layer.running_whitening).all()
    assert float(layer.running_whitening.abs().max()) > 0
    layer.eval()
    assert torch.isfinite(layer(x)).all()
