"""CovariancePooling at κ(Σ) = 1e8 in float32: the features route (both gram_sqrtm algorithms) against
the covariance route, pooled matrix and input gradient, against float64 references.

The same matrices as tests/test_nn_features.py (which asserts the margins); this prints the numbers the
README quotes.  Run from the repository root: ``python studies/features_route_pooling.py``.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import svdgrad.nn as snn  # noqa: E402
from tests.test_nn_features import _reference, _untriu, feature_map  # noqa: E402

FLOOR = 1e-10


def forward_error(route: str) -> float:
    x32 = feature_map(4, 8, (8, 8), kappa=1e8, seed=2).float()
    ref = _reference(x32.double(), FLOOR)  # the same rounded input, exact arithmetic
    layer = snn.CovariancePooling(8, None, method="exact", route=route, compute_dtype=None, floor=FLOOR)
    Z = _untriu(layer(x32).double(), 8)
    return float(torch.linalg.matrix_norm(Z - ref).max() / torch.linalg.matrix_norm(ref).min())


def gradient_error(route: str) -> float:
    x32 = feature_map(2, 6, (6, 6), kappa=1e8, seed=3).float()
    g = torch.randn(2, 21, generator=torch.Generator().manual_seed(0), dtype=torch.float64)

    def grad(dtype):
        layer = snn.CovariancePooling(6, None, method="exact", route=route, compute_dtype=None).to(dtype)
        xi = x32.to(dtype).detach().clone().requires_grad_(True)
        (layer(xi) * g.to(dtype)).sum().backward()
        return xi.grad.double()

    ref = snn.CovariancePooling(6, None, method="exact", route="covariance", compute_dtype=None).double()
    xr = x32.double().requires_grad_(True)
    (ref(xr) * g).sum().backward()
    return float((grad(torch.float32) - xr.grad).norm() / xr.grad.norm())


def main() -> None:
    gram = snn.gram_sqrtm
    print("route                    pooled-matrix error   input-gradient error   (float32, κ(Σ) = 1e8)")
    try:
        for algorithm in ("auto", "svd", "gram64"):
            snn.gram_sqrtm = functools.partial(gram, algorithm=algorithm)
            print(f"features, {algorithm:<14} {forward_error('features'):>19.2g} {gradient_error('features'):>22.2g}")
    finally:
        snn.gram_sqrtm = gram
    print(f"{'covariance':<24} {forward_error('covariance'):>19.2g} {gradient_error('covariance'):>22.2g}")


if __name__ == "__main__":
    main()
