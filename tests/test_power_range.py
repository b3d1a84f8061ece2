"""powm over the whole float range and for large |p|: no silent inf, NaN or zero where A^p and its gradient
are normal numbers (an audit found all three: the divided difference, the factor 4^(kp) and the ends of the range).
"""

from __future__ import annotations

import math

import mpmath
import pytest
import torch

import svdgrad
import svdgrad.testing as T
from svdgrad._spectral import Power

from .helpers import EPS, accurate_tol, finite

POWER_METHODS = svdgrad.methods("power")


def _power_grad(A, G, p, method="exact"):
    A1 = A.detach().clone().requires_grad_(True)
    F = svdgrad.powm(A1, p, method)
    (g,) = torch.autograd.grad(F, A1, G)
    return F.detach(), T.sym_part(g)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("p", [-6.0, -3.0, 3.0, 7.0, 12.0, 25.0])
def test_power_divided_difference_matches_mpmath_far_apart_and_close(p, dtype):
    """f[lo, hi] = (hi^p − lo^p)/(hi − lo) for pairs from a tie to the floor's full spread (eps·λmax).

    The expm1 form lo^p·expm1(p·log1p(δ/lo))/δ gave 0·inf = NaN once (hi/lo)^p overflowed while lo^p
    underflowed (p = 7 at κ = 1e6 in float32).  Bound: |p|·(|p| + 1)·eps relative (the quotient's
    own conditioning in lo and hi is |p|, plus the roundings of pow and log1p).
    """
    eps = torch.finfo(dtype).eps
    hi = torch.tensor([3.5] * 7, dtype=dtype)
    lo = hi * torch.tensor([1.0, 1 - 1e-3, 0.9, 0.5, 1e-2, 1e-4, eps], dtype=dtype)
    D = Power().dd(lo[:, None], hi[None, :], p).diagonal()
    with mpmath.workdps(50):
        ref = []
        for a, b in zip(lo.tolist(), hi.tolist()):
            a, b = mpmath.mpf(a), mpmath.mpf(b)
            ref.append(float(p * mpmath.power(a, p - 1) if a == b else (mpmath.power(b, p) - mpmath.power(a, p)) / (b - a)))
    ref = torch.tensor(ref, dtype=torch.float64)
    big = math.log2(torch.finfo(dtype).max) - 1
    usable = (ref.abs() > 0) & (ref.abs().log2() < big) & (ref.abs().log2() > math.log2(torch.finfo(dtype).tiny) + 1)
    assert bool(torch.isfinite(D[usable]).all()), (D, ref)
    err = ((D.double() - ref) / ref).abs()[usable]
    assert float(err.max()) <= abs(p) * (abs(p) + 1) * 4 * eps, err


@pytest.mark.parametrize("dtype, kappa", [(torch.float32, 1e3), (torch.float32, 1e6), (torch.float64, 1e6),
                                          (torch.float64, 1e12)])
@pytest.mark.parametrize("p", [-3.0, 3.0, 7.0, 12.0])
def test_large_power_gradients_match_mpmath(p, dtype, kappa):
    """exact's gradient of ⟨G, A^p⟩ for |p| well past ±½ at ill-conditioned A, against the 50-digit reference
    at the floored spectrum (floor eps·λmax, as the method's).

    Bound: C·(κ_g + n)·eps with κ_g = 2|p − 1|·κ^clip(2 − p, 0, 1), test_functions' gradient bound.
    Before the divided difference's far branch, p = 7 and 12 at κ = 1e6 in float32 gave NaN.
    """
    n = 6
    A = T.spd(n, kappa, seed=11).to(dtype)
    G = T.gradients(A.shape, seed=12, dtype=dtype)
    F, g = _power_grad(A, G, p)
    assert finite(F) and finite(g)
    lmax = float(torch.linalg.eigvalsh(A.double())[-1])
    Fr, gr, _ = T.reference_function_grad(A.double(), G.double(), "power", p=p,
                                          floor=torch.finfo(dtype).eps * lmax)
    kg = 2 * abs(p - 1) * kappa ** min(max(2 - p, 0.0), 1.0)
    assert T.rel_error(g, gr) <= accurate_tol(dtype, kg, n)


@pytest.mark.parametrize("method", POWER_METHODS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_powm_at_the_ends_of_the_float_range(method, dtype):
    """A^1 = A and (c·I)^p at the largest and the smallest (subnormal) numbers.

    powm([[max]], 1) gave inf: log2(max) rounds up to 128 (float32), so k = 64 and exp2(2kp) = 2^128
    overflowed though A^1 = A; powm([[2^-149]], 1) gave 0 in float32 (exp2(-150) underflows).
    """
    info = torch.finfo(dtype)
    small = info.smallest_normal * info.eps  # the smallest subnormal
    for x in (info.max, info.tiny, small, info.max / 3):
        A = torch.tensor([[x]], dtype=dtype)
        assert float(svdgrad.powm(A, 1.0, method)) == x, (x, method)
    I3 = torch.eye(3, dtype=dtype)
    for c, p in ((info.max, 0.5), (info.max, 1.0), (info.tiny, 1.0), (info.tiny, -0.25), (info.max ** 0.5, 2.0 * 0.999)):
        want = c ** p
        if not info.tiny <= want <= info.max:
            continue
        F = svdgrad.powm(I3 * c, p, method)
        assert finite(F), (c, p, method)
        err = float((F.double() - want * I3.double()).abs().max() / want)
        assert err <= 4 * (1 + abs(p) * abs(math.log2(c))) * info.eps, (c, p, method, err)
