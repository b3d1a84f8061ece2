"""Public entry points: sqrtm and eigh."""

from __future__ import annotations

import math

import torch

from ._errors import SvdgradError
from ._functions import Eigh
from ._guard import guard
from ._kernels import sym
from ._methods import Method, NewtonSchulz, get_k_rule, get_method
from ._validate import HALF_DTYPES, check_matrix, check_psd, check_values, is_traced


def _compute_dtype(A: torch.Tensor, method: Method) -> torch.dtype:
    if method.compute_dtype is not None:
        return method.compute_dtype
    return torch.float32 if A.dtype in HALF_DTYPES else A.dtype


def _psd_tol(method: Method, in_dtype, cdtype) -> float:
    if method.psd_tol is not None:
        return method.psd_tol
    return math.sqrt(max(torch.finfo(in_dtype).eps, torch.finfo(cdtype).eps))


def _prepare(A, m: Method) -> tuple[torch.Tensor, torch.dtype, torch.dtype]:
    """Checks, then A symmetrized in the compute dtype; returns (Ac, input dtype, compute dtype)."""
    check_matrix(A)
    if m.check:
        check_values(A, symmetry_tol=m.symmetry_tol)
    cdtype = _compute_dtype(A, m)
    return sym(A.to(cdtype)), A.dtype, cdtype


def sqrtm(A: torch.Tensor, method="exact", **options) -> torch.Tensor:
    """Principal square root Z = A^{1/2} of symmetric PSD ``A`` of shape (*, n, n).

    ``method`` is a registered name (see ``svdgrad.methods()``) or a method
    object such as ``svdgrad.Taylor(degree=100)``; ``options`` override its
    settings (``svdgrad.sqrtm(A, "taylor", degree=9)``).  The forward and
    backward are the method's.  Z has A's dtype and device.

    Raises SvdgradError for non-square, non-floating, non-finite, asymmetric
    or indefinite input.  Tiny negative eigenvalues from rounding are
    clamped to the floor, not rejected.
    """
    m = get_method(method, **options)
    Ac, in_dtype, cdtype = _prepare(A, m)
    if Ac.numel() == 0:
        return Ac.to(in_dtype)
    tol = _psd_tol(m, in_dtype, cdtype)
    if m.check and isinstance(m, NewtonSchulz) and not is_traced(Ac):
        bad = m.indefinite(Ac, tol)
        if bool(bad.any()):
            idx = tuple(torch.nonzero(bad)[0].tolist()) if bad.dim() else ()
            L = torch.linalg.eigvalsh(Ac[idx].detach())
            check_psd(L, psd_tol=tol, A=A, batch_index=idx)
    if not m.double_differentiable:
        Ac = guard(Ac, m.name)
    Z, L = m.apply(Ac)
    if m.check and L is not None:
        check_psd(L, psd_tol=tol, A=A)
    return Z.to(in_dtype)


def eigh(A: torch.Tensor, backward="ordinary", **options) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigenvalues (ascending) and eigenvectors of symmetric ``A`` (*, n, n), as torch.linalg.eigh.

    The backward of (L, U) uses the chosen K-rule: ``"ordinary"``
    (K = 1/(λi-λj), NaN at exact ties like torch.linalg.eigh), ``"truncated"``,
    ``"taylor"`` or ``"pade"``, or such a method object; ``options`` set its
    parameters (``threshold``, ``degree``, ...).  ``taylor`` and ``pade``
    expand 1/(λi-λj) in the ratio λmin/λmax and therefore need a PSD ``A``;
    ``ordinary`` and ``truncated`` accept any symmetric matrix.
    """
    rule = get_k_rule(backward, **options)
    Ac, in_dtype, cdtype = _prepare(A, rule)
    L, U = Eigh.apply(Ac, rule)
    if rule.check and rule.needs_positive:
        check_psd(L.detach(), psd_tol=_psd_tol(rule, in_dtype, cdtype), A=A)
    return L.to(in_dtype), U.to(in_dtype)
