"""Input checks shared by every entry point.

Shape and dtype checks always run. Value checks (NaN/Inf, symmetry,
definiteness) need data-dependent control flow, so they are skipped while
the tensor is being traced by ``torch.func`` transforms (vmap, grad) or by
``torch.compile``; the caller can also switch them off with ``check=False``.
"""

from __future__ import annotations

import math

import torch

from ._errors import SvdgradError, describe

#: dtypes that are computed in float32 and cast back.
HALF_DTYPES = (torch.float16, torch.bfloat16)


def default_tol(dtype: torch.dtype) -> float:
    """Default relative tolerance for the symmetry and PSD checks: sqrt(eps)."""
    return math.sqrt(torch.finfo(dtype).eps)


def is_traced(A: torch.Tensor) -> bool:
    """True while ``A`` is a functorch wrapper or we are inside torch.compile."""
    if torch.compiler.is_compiling():
        return True
    return bool(torch._C._functorch.is_functorch_wrapped_tensor(A))


def check_matrix(A, *, name: str = "A") -> None:
    """Shape and dtype: a real floating tensor of shape (*, n, n)."""
    if not isinstance(A, torch.Tensor):
        raise SvdgradError(
            f"Expected {name} to be a torch.Tensor of shape (*, n, n); received "
            f"{describe(A)}. Convert it with torch.as_tensor(...) first."
        )
    if A.dim() < 2:
        raise SvdgradError(
            f"Expected {name} of shape (*, n, n) with at least 2 dimensions; received "
            f"{describe(A)}. For a single matrix pass a 2-D tensor; for a scalar use A.reshape(1, 1)."
        )
    if A.shape[-1] != A.shape[-2]:
        raise SvdgradError(
            f"Expected square matrices in the last two dimensions of {name}; received "
            f"{describe(A)}. If you have features X of shape (*, n, N), pass the "
            f"covariance X @ X.mT / N instead."
        )
    if A.dtype.is_complex or not A.dtype.is_floating_point:
        raise SvdgradError(
            f"Expected a real floating dtype (float16, bfloat16, float32 or float64) for "
            f"{name}; received {describe(A)}. Cast with {name}.to(torch.float32) or "
            f"torch.float64; complex Hermitian input is not supported."
        )


def check_values(A: torch.Tensor, *, symmetry_tol: float | None, name: str = "A") -> None:
    """Finite entries and symmetry within ``symmetry_tol`` (relative, Frobenius)."""
    if A.numel() == 0 or is_traced(A):
        return
    batch = A.shape[:-2]
    with torch.no_grad():
        Af = A.float() if A.dtype in HALF_DTYPES else A
        # Two norms cover both checks: a NaN or Inf entry makes them non-finite.
        scale = torch.linalg.matrix_norm(Af)  # (*)
        asym = torch.linalg.matrix_norm(Af - Af.mT)
        if not bool((torch.isfinite(scale) & torch.isfinite(asym)).all()):
            finite = torch.isfinite(A).flatten(-2).all(-1)  # (*)
            if not bool(finite.all()):
                bad = torch.nonzero(~finite)[0].tolist() if batch else []
                raise SvdgradError(
                    f"Expected finite entries in {name}; received NaN or Inf at batch index "
                    f"{tuple(bad)} ({describe(A)}). Check the layer that produced {name}; a NaN "
                    f"here usually comes from an earlier overflow."
                )
            # finite entries whose squares overflow: measure in float64
            Ad = Af.double()
            scale = torch.linalg.matrix_norm(Ad)
            asym = torch.linalg.matrix_norm(Ad - Ad.mT)
    tol = default_tol(A.dtype) if symmetry_tol is None else symmetry_tol
    bad_mask = asym > tol * scale
    if bool(bad_mask.any()):
        idx = torch.nonzero(bad_mask)[0].tolist() if batch else []
        rel = float((asym / scale.clamp_min(torch.finfo(Af.dtype).tiny)).max())
        raise SvdgradError(
            f"Expected a symmetric {name} (relative asymmetry ||A - A^T|| / ||A|| <= "
            f"{tol:.2g}); received relative asymmetry {rel:.3g} at batch index "
            f"{tuple(idx)} ({describe(A)}). Symmetrize with (A + A.mT) / 2, or pass "
            f"symmetry_tol=... if the asymmetry is expected."
        )


def check_psd(L: torch.Tensor, *, psd_tol: float, A: torch.Tensor, name: str = "A",
              batch_index: tuple | None = None) -> None:
    """Reject λmin < -psd_tol·λmax; ``L`` is ascending eigenvalues (*, n).

    ``batch_index`` names the matrix when ``L`` belongs to one matrix of a batch.
    """
    if L.numel() == 0 or is_traced(L):
        return
    lmax = L[..., -1].abs()
    bad_mask = L[..., 0] < -psd_tol * lmax
    if bool(bad_mask.any()):
        idx = torch.nonzero(bad_mask)[0].tolist() if L.dim() > 1 else []
        i = tuple(idx)
        if batch_index is not None:
            i, idx = tuple(batch_index), []
        lmin = float(L[i][0]) if idx else float(L[0])
        lmx = float(L[i][-1]) if idx else float(L[-1])
        raise SvdgradError(
            f"Expected a positive semi-definite {name} (λmin >= -{psd_tol:.2g}·λmax); "
            f"received λmin={lmin:.3g}, λmax={lmx:.3g} at batch index {i} ({describe(A)}). "
            f"The square root of an indefinite matrix is not real. If {name} is a "
            f"covariance, compute it as X @ X.mT / N; tiny negative eigenvalues from "
            f"rounding are clamped, larger ones need psd_tol=... or a fix upstream."
        )
