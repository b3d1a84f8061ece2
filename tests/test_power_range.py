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


def _large_power_cases(dtype):
    """(A, p) whose A^p is a normal number while λ^p at A/4^k's eigenvalues is not (float32: 7.8^50 = 2^148)."""
    g = torch.Generator().manual_seed(0)
    X = torch.randn(8, 64, generator=g, dtype=torch.float64).abs()
    S = X @ X.T / 64 * 0.2  # an uncentred covariance, λmax about 1
    cases = [(torch.full((2, 2), 0.975, dtype=torch.float64), 50.0), (S, 28.0), (S, 40.0),
             (T.spd(5, 1e3, seed=21), -12.0)]
    if dtype == torch.float64:
        cases += [(torch.diag(torch.tensor([1000.0, 1e-7], dtype=torch.float64)), -40.0), (S, 300.0),
                  (T.spd(5, 1e6, seed=22), -40.0)]
    return [(A.to(dtype), p) for A, p in cases]


@pytest.mark.parametrize("method", POWER_METHODS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_large_powers_stay_in_range(method, dtype):
    """A^p and its gradients (in A and in a tensor p) where λ^p at the scaled eigenvalues overflows: float32
    powm(0.975·ones(2, 2), 50) gave inf (A^50 = 1.6e14), float64 powm(diag(1000, 1e-7), -40) gave [nan, inf].
    power_iteration, which did not fold the output's scale into its spectrum, was refused there, told to
    compute in float64 (float32) or that the result exceeds float64 (it is 1e280).

    Every method: finite wherever the reference is a normal number.  Against the 50-digit reference
    (normwise): the value for every method whose forward is f(A) to working precision (topn's is not), the
    gradients for exact (the K-rules' backwards are approximations by design).  Bound: 4·C·(|p| + n)·eps·κ_p,
    κ_p = κ(A) for p < 0 (the dominant λmin^p moves by |p|·eps·λmax/λmin) and 1 for p > 0; the gradients: the
    same times |p − 1| + 1.
    """
    m = svdgrad.get_method(method)
    top = math.log2(torch.finfo(dtype).max) - 4
    for A, p in _large_power_cases(dtype):
        n = A.shape[-1]
        G = T.gradients(A.shape, seed=5, dtype=dtype)
        A1 = A.clone().requires_grad_(True)
        pt = torch.tensor(p, dtype=dtype, requires_grad=True)
        F = svdgrad.powm(A1, pt, method)
        gA, gp = torch.autograd.grad(F, (A1, pt), G)
        lam = torch.linalg.eigvalsh(A.double())
        floor = torch.finfo(dtype).eps * float(lam[-1])
        Fr, gr, gpr = T.reference_function_grad(A.double(), G.double(), "power", p=p, floor=floor)
        kp = float(lam[-1] / lam[0].clamp_min(floor)) if p < 0 else 1.0
        tol = 4 * accurate_tol(dtype, (abs(p) + n) * kp, n)
        grads_fit = max(float(gr.abs().max()), abs(float(gpr))) < 2.0 ** top
        assert finite(F), (p, method)
        assert finite(gA) and finite(gp) or not grads_fit, (p, method)
        if m.forward_is_exact:
            assert T.rel_error(F, Fr) <= tol, (p, method, T.rel_error(F, Fr))
        if method == "exact" and grads_fit:
            assert T.rel_error(T.sym_part(gA), gr) <= tol * (abs(p - 1) + 1), (p, method)
            assert abs(float(gp) - float(gpr)) <= tol * (abs(p - 1) + 1) * abs(float(gpr)), (p, float(gp), float(gpr))


def test_large_power_under_vmap_over_p():
    """The shift decides per p without a synchronization: vmap over p agrees with the loop."""
    A = T.spd(4, 1e2, seed=3).to(torch.float32)
    ps = torch.tensor([0.5, -12.0, 50.0], dtype=torch.float32)
    Fv = torch.func.vmap(lambda q: svdgrad.powm(A, q))(ps)
    for i, q in enumerate(ps):
        assert torch.allclose(Fv[i], svdgrad.powm(A, float(q)), rtol=1e-5, atol=0), float(q)


def test_power_iteration_gradient_in_p_at_a_shifted_power():
    """power_iteration folds a large power's shift 2^(a·p) into its spectrum as a constant exponent; the factor's
    derivative a·ln2·λ^p in p is carried separately.  Against exact: power_iteration's forward accuracy,
    κ·eps·n (its deflation's rounding; κ = 1e10 here), times 10."""
    Q, _ = torch.linalg.qr(torch.randn(3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(3)))
    A = Q @ torch.diag(torch.tensor([1000.0, 3.0, 1e-7], dtype=torch.float64)) @ Q.mT
    A = (A + A.mT) / 2
    G = T.gradients(A.shape, seed=2, dtype=torch.float64)
    gps = {}
    for method in ("exact", "power_iteration"):
        p = torch.tensor(-40.0, dtype=torch.float64, requires_grad=True)
        (gps[method],) = torch.autograd.grad(svdgrad.powm(A, p, method), p, G)
    tol = 10 * 1e10 * torch.finfo(torch.float64).eps * 3
    assert abs(float(gps["power_iteration"] / gps["exact"]) - 1) <= tol, gps
