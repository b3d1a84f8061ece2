"""What the layers' outputs mean, on tiny inputs with hand-worked answers.

Each test pins a meaning that the other layer tests leave open (found by mutation
testing): the vectorization's off-diagonal weight on CovariancePooling's
``floor=0`` path, and where SmallResNet's stages stride when a stage has several
blocks (which sets N, the positions per covariance).
"""

from __future__ import annotations

import math

import pytest
import torch

from svdgrad.nn import CovariancePooling, SmallResNet

EPS64 = torch.finfo(torch.float64).eps


def _feature_map() -> torch.Tensor:
    """(1, 2, 2, 2) float64 map whose 4 positions are u, -u, w, -w with u = (3, 3), w = (1, -1).

    The mean is 0 and Σ = (1/4)(2uuᵀ + 2wwᵀ) = [[5, 4], [4, 5]], eigenvalues 9 and 1,
    so Σ^{1/2} = [[2, 1], [1, 2]] (its square is [[5, 4], [4, 5]]), κ(Σ) = 9.
    """
    X = torch.tensor([[3.0, -3.0, 1.0, -1.0],
                      [3.0, -3.0, -1.0, 1.0]], dtype=torch.float64)  # (d, N)
    return X.reshape(1, 2, 2, 2)


@pytest.mark.parametrize("floor", [0.0, 1e-10])
@pytest.mark.parametrize("offdiag_scale", [1.0, 2.0, 0.5, math.sqrt(2)])
def test_pooling_output_is_weighted_upper_triangle_of_hand_worked_root(floor, offdiag_scale):
    layer = CovariancePooling(2, reduced_channels=None, method="exact", floor=floor, offdiag_scale=offdiag_scale)
    v = layer(_feature_map())
    # Z = (Σ + floor·I)^{1/2}: eigenvalues sqrt(9 + floor), sqrt(1 + floor) on the eigenvectors (1, ±1)/√2.
    p, q = math.sqrt(9.0 + floor), math.sqrt(1.0 + floor)
    diag, off = (p + q) / 2, (p - q) / 2  # 2 and 1 at floor = 0
    expected = torch.tensor([[diag, offdiag_scale * off, diag]], dtype=torch.float64)
    kappa = 9.0
    torch.testing.assert_close(v, expected, rtol=0, atol=32 * EPS64 * kappa * 2)
    if floor == 0.0:
        assert expected.tolist() == [[2.0, offdiag_scale * 1.0, 2.0]]


def test_pooling_offdiag_scale_sqrt2_is_an_isometry_in_float64():
    """offdiag_scale = √2 is documented as the isometry ‖v‖₂ = ‖Z‖_F: here ‖Z‖_F² = 4 + 1 + 1 + 4 = 10.
    (triu_vector built its weights in float32: √2 rounded there was a 1.7e-8 relative error in float64.)"""
    layer = CovariancePooling(2, reduced_channels=None, method="exact", floor=0, offdiag_scale=math.sqrt(2))
    v = layer(_feature_map())
    torch.testing.assert_close(v.square().sum(), torch.tensor(10.0, dtype=torch.float64),
                               rtol=0, atol=64 * EPS64 * 9.0 * 10.0)


@pytest.mark.parametrize("last_stride, side", [(1, 8), (2, 4)])
def test_resnet_only_first_block_of_a_stage_strides(last_stride, side):
    """widths (4, 8, 8), 2 blocks per stage, 16x16 input: stage strides 1, 2, last_stride, each applied
    once (by the stage's first block), so the head sees (16/2/last_stride)² positions."""
    torch.manual_seed(0)
    model = SmallResNet(2, widths=(4, 8, 8), blocks=2, reduced_channels=3, last_stride=last_stride)
    strides = [blk.conv1.stride for blk in model.features]
    assert strides == [(1, 1), (1, 1), (2, 2), (1, 1), (last_stride, last_stride), (1, 1)]
    seen = []
    model.pool.register_forward_hook(lambda mod, inp, out: seen.append(tuple(inp[0].shape)))
    model.eval()
    with torch.no_grad():
        y = model(torch.randn(2, 3, 16, 16))
    assert y.shape == (2, 2)
    assert seen == [(2, 8, side, side)]
