"""The kernels' fast paths against their plain forms.

``sqrtm_vjp_exact`` is the exact square root's vjp on the hot path: it takes
the cotangent G as it comes and symmetrizes it in the eigenbasis, writing
into two buffers.  It must be the map of G + Gᵀ (``sqrtm_backward_exact``)
to rounding, on every route: the out= one and the out-of-place one that
torch.func, a recording autograd and forward mode take.  The contract suite
checks the gradient itself against mpmath and finite differences.
"""

import numpy as np
import pytest
import torch

import svdgrad
from svdgrad import _kernels
from svdgrad import testing as T

from .helpers import EPS


def _eig(batch, n, dtype, seed=0):
    A = T.spd(n, 1e3, batch=batch, dtype=torch.float64, seed=seed)
    L, U = torch.linalg.eigh(A)
    return L.sqrt().to(dtype), U.to(dtype)


def _plain(s, U, G):
    return _kernels.sqrtm_backward_exact(s, U, G + G.mT)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("batch", [(), (3,), (2, 3)])
def test_exact_vjp_is_the_map_of_the_symmetrized_cotangent(dtype, batch):
    s, U = _eig(batch, 9, dtype, seed=len(batch))
    G = torch.randn(batch + (9, 9), dtype=torch.float64, generator=torch.Generator().manual_seed(1)).to(dtype)
    G0 = G.clone()
    got, ref = _kernels.sqrtm_vjp_exact(s, U, G), _plain(s, U, G)
    assert torch.equal(G, G0)  # G is not written
    assert got.shape == ref.shape and got.dtype == dtype
    scale = float(ref.abs().max())
    assert float((got - ref).abs().max()) <= 50 * EPS[dtype] * scale
    # and not the map of G alone, or of 2G: the asymmetric part of G counts
    assert float((_kernels.sqrtm_backward_exact(s, U, 2 * G) - ref).abs().max()) > 0.01 * scale


def test_exact_vjp_takes_an_expanded_cotangent():
    """y.sum().backward() hands the backward an expanded tensor with zero strides."""
    s, U = _eig((4,), 6, torch.float64)
    G = torch.ones((), dtype=torch.float64).expand(4, 6, 6)
    torch.testing.assert_close(_kernels.sqrtm_vjp_exact(s, U, G), _plain(s, U, G.clone()))


def test_exact_vjp_out_of_place_routes_match():
    s, U = _eig((3,), 7, torch.float64, seed=2)
    G = torch.randn(3, 7, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    ref = _plain(s, U, G)
    # a recording autograd: the map itself is differentiated in G (linear: its vjp is itself, on sym)
    Gr = G.clone().requires_grad_()
    out = _kernels.sqrtm_vjp_exact(s, U, Gr)
    torch.testing.assert_close(out.detach(), ref)
    V = torch.randn(3, 7, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    (gG,) = torch.autograd.grad(out, Gr, V)
    torch.testing.assert_close(gG, _plain(s, U, V))
    # torch.func.vmap over the batch
    got = torch.func.vmap(_kernels.sqrtm_vjp_exact)(s, U, G)
    torch.testing.assert_close(got, ref)
    # a forward_ad dual level
    import torch.autograd.forward_ad as fwAD

    with fwAD.dual_level():
        Gd = fwAD.make_dual(G, V)
        primal, tangent = fwAD.unpack_dual(_kernels.sqrtm_vjp_exact(s, U, Gd))
    torch.testing.assert_close(primal, ref)
    torch.testing.assert_close(tangent, _plain(s, U, V))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_exact_backward_of_an_asymmetric_cotangent_is_the_symmetric_gradient(dtype):
    """Through sqrtm: the gradient is the map of G + Gᵀ (then halved by A = (T + Tᵀ)), symmetric to rounding."""
    A = T.spd(8, 1e2, batch=(5,), dtype=dtype, seed=5)
    G = torch.from_numpy(np.random.default_rng(6).standard_normal((5, 8, 8))).to(dtype)
    A1 = A.clone().requires_grad_()
    svdgrad.sqrtm(A1).backward(G)
    L, U = torch.linalg.eigh(A.double())
    ref = _plain(L.clamp_min(0).sqrt(), U, G.double()) / 2
    tol = 50 * 1e2 * EPS[dtype] * float(ref.abs().max())
    assert float((A1.grad.double() - ref).abs().max()) <= tol
    assert float((A1.grad - A1.grad.mT).abs().max()) <= tol
