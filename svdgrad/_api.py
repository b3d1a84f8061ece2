"""Public entry points: sqrtm and eigh.

Both scale A by an exact power of two to entries of order 1 before any
decomposition or iteration and undo it afterwards (``_prepare``), so every
method is scale-equivariant over the whole float range: the scaling itself
costs no rounding, so sqrtm(c·A) = √c·sqrtm(A) within the rounding of c·A.
"""

from __future__ import annotations

import math

import torch

from ._errors import SvdgradError, describe
from ._functions import Eigh
from ._guard import guard
from ._kernels import scale_exponent, sym, times_pow2
from ._methods import Method, get_k_rule, get_method
from ._validate import HALF_DTYPES, check_matrix, check_psd, check_values, is_traced, max_abs, psd_violations


def _work_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype A is scaled in and results are scaled back in: float32 for half input."""
    return torch.float32 if dtype in HALF_DTYPES else dtype


def _compute_dtype(A: torch.Tensor, method: Method) -> torch.dtype:
    if method.compute_dtype is not None:
        return method.compute_dtype
    return torch.float32 if A.dtype in HALF_DTYPES else A.dtype


def _psd_tol(method: Method, in_dtype, cdtype) -> float:
    """Default sqrt(eps) of the *coarser* of input and compute dtype.

    A float32 (or bfloat16) covariance computed in float64 still carries the
    rounding of its own dtype: its tiny negative eigenvalues are of order
    eps(input)·λmax, so the finer dtype's tolerance would reject it.
    """
    if method.psd_tol is not None:
        return method.psd_tol
    return math.sqrt(max(torch.finfo(in_dtype).eps, torch.finfo(cdtype).eps))


def _prepare(A, m: Method) -> tuple[torch.Tensor, torch.Tensor, torch.dtype, torch.dtype]:
    """Checks, then A/4^k symmetrized in the compute dtype.

    Returns (Ac, k, input dtype, compute dtype); k (*) is the per-matrix
    power-of-two exponent (``_kernels.scale_exponent``).
    """
    check_matrix(A)
    work = A.to(_work_dtype(A.dtype))  # scale before any cast that could overflow
    with torch.no_grad():
        amax = max_abs(work.detach())  # (*)
    if m.check:
        check_values(A, symmetry_tol=m.symmetry_tol, amax=amax)
    k = scale_exponent(amax)
    scaled = times_pow2(times_pow2(work, -k), -k)  # two factors 2^-k: 4^-k itself may not be representable
    cdtype = _compute_dtype(A, m)
    return sym(scaled.to(cdtype)), k, A.dtype, cdtype


def sqrtm(A: torch.Tensor, method="exact", **options) -> torch.Tensor:
    """Principal square root Z = A^{1/2} of symmetric PSD ``A`` of shape (*, n, n).

    ``method`` is a registered name (see ``svdgrad.methods()``), a spec
    string such as ``"taylor:degree=9"``, or a method object such as
    ``svdgrad.Taylor(degree=100)``; ``options`` override its settings
    (``svdgrad.sqrtm(A, "taylor", degree=9)``).  The forward and backward
    are the method's.  Z has A's dtype and device.

    Every method is scale-equivariant: A is scaled by a power of two to
    entries of order 1 first, which is exact, so any finite A works, from
    subnormal to the largest float.

    Raises SvdgradError for non-square, non-floating, non-finite, asymmetric
    or indefinite input (λmin < -psd_tol·λmax, the same rule for every
    method).  Tiny negative eigenvalues from rounding are clamped to the
    floor, not rejected.
    """
    m = get_method(method, **options)
    Ac, k, in_dtype, cdtype = _prepare(A, m)
    if Ac.numel() == 0:
        return Ac.to(in_dtype)
    tol = _psd_tol(m, in_dtype, cdtype)
    if m.check and not m.has_eigenvalues and not is_traced(Ac):
        bad = psd_violations(Ac.detach(), tol)
        if bool(bad.any()):
            idx = tuple(torch.nonzero(bad)[0].tolist()) if bad.dim() else ()
            L = torch.linalg.eigvalsh(Ac[idx].detach())
            check_psd(L, psd_tol=tol, A=A, batch_index=idx, scale_exponent=k)
    if not m.double_differentiable:
        Ac = guard(Ac, m.name)
    Z, L = m.apply(Ac)
    if m.check and L is not None:
        check_psd(L, psd_tol=tol, A=A, scale_exponent=k)
    return times_pow2(Z.to(_work_dtype(in_dtype)), k).to(in_dtype)


def eigh(A: torch.Tensor, backward="ordinary", **options) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigenvalues (ascending) and eigenvectors of symmetric ``A`` (*, n, n), as torch.linalg.eigh.

    The backward of (L, U) uses the chosen K-rule: ``"ordinary"``
    (K = 1/(λi-λj), NaN at exact ties like torch.linalg.eigh), ``"truncated"``,
    ``"taylor"`` or ``"pade"``, or such a method object or spec string;
    ``options`` set its parameters (``threshold``, ``degree``, ...).
    ``taylor`` and ``pade`` expand 1/(λi-λj) in the ratio λmin/λmax and
    therefore need a PSD ``A``; ``ordinary`` and ``truncated`` accept any
    symmetric matrix.  A is scaled by a power of two to entries of order 1
    and L scaled back, so any finite A works.  Eigenvalues that overflow
    the dtype (|λ| up to n·max|A|) raise SvdgradError.
    """
    rule = get_k_rule(backward, **options)
    Ac, k, in_dtype, cdtype = _prepare(A, rule)
    L, U = Eigh.apply(Ac, rule)
    if rule.check and rule.needs_positive:
        check_psd(L.detach(), psd_tol=_psd_tol(rule, in_dtype, cdtype), A=A, scale_exponent=k,
                  why=f"The {rule.name!r} K-rule expands 1/(λi-λj) in the ratio λmin/λmax, which needs "
                      f"λ >= 0; use backward='ordinary' or 'truncated' for an indefinite matrix.")
    L = L.to(_work_dtype(in_dtype))
    pow2 = torch.exp2(k.to(L.dtype))[..., None]  # (*, 1)
    L = ((L * pow2) * pow2).to(in_dtype)  # undo the 4^-k scaling, one exact factor at a time
    if rule.check and not is_traced(L) and L.numel() and not bool(torch.isfinite(L).all()):
        raise SvdgradError(
            f"The eigenvalues of A overflow {in_dtype} (|λ| can reach n·max|A|; received max|A| = "
            f"{float(max_abs(A.detach().double()).max()):.3g}, {describe(A)}). Compute in torch.float64 "
            f"or scale A down first."
        )
    return L, U.to(in_dtype)
