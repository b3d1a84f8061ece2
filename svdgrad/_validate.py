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

#: The dtypes every entry point accepts (float8 dtypes are floating but have no decompositions).
FLOAT_DTYPES = HALF_DTYPES + (torch.float32, torch.float64)


def default_tol(dtype: torch.dtype) -> float:
    """Default relative tolerance for the symmetry and PSD checks: sqrt(eps)."""
    return math.sqrt(torch.finfo(dtype).eps)


def is_traced(A: torch.Tensor) -> bool:
    """True while ``A`` is a functorch wrapper or we are inside torch.compile."""
    if torch.compiler.is_compiling():
        return True
    return bool(torch._C._functorch.is_functorch_wrapped_tensor(A))


def check_matrix(A, *, name: str = "A") -> None:
    """Shape, layout and dtype: a dense real floating tensor of shape (*, n, n)."""
    if not isinstance(A, torch.Tensor):
        raise SvdgradError(
            f"Expected {name} to be a torch.Tensor of shape (*, n, n); received "
            f"{describe(A)}. Convert it with torch.as_tensor(...) first."
        )
    check_has_data(A, name=name)
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
    check_dense_float(A, name=name)


def check_has_data(A: torch.Tensor, *, name: str = "A", entry: str | None = None) -> None:
    """A tensor with a shape and values: not nested, not on the meta device.

    A nested tensor has no shape (``A.shape`` raises) and a meta tensor no
    values (the scale and value checks read them): both failed deep inside
    with a RuntimeError.  Two attribute reads, no tensor operation.
    """
    if A.is_nested:
        what = f"{name} in {entry}" if entry else name
        raise SvdgradError(
            f"Expected a dense tensor of shape (*, n, n) for {what}; received {describe(A)}. svdgrad works on "
            f"batches of equal-size matrices: pass a padded tensor or a list, that is torch.stack({name}.unbind()) "
            f"where every entry has the same size (pad a smaller matrix block-diagonally with an identity block), "
            f"or one call per entry: [... for M in {name}.unbind()]."
        )
    if A.is_meta:
        what = f"{name} in {entry}" if entry else name
        raise SvdgradError(
            f"Expected a tensor with values for {what}; received one on the meta device ({describe(A)}), which "
            f"has no data: svdgrad reads the values (to scale and check them, and to decompose). Pass a tensor "
            f"with values on the CPU or an accelerator (module.to_empty(device=...) then load the weights, for a "
            f"module built on meta)."
        )


def check_dense_float(A: torch.Tensor, *, name: str = "A", entry: str | None = None) -> None:
    """Layout and dtype: a dense (strided) tensor of one of ``FLOAT_DTYPES``.

    float8 dtypes pass ``is_floating_point`` but have no reductions or
    decompositions; sparse tensors have no dense kernels: both would fail
    deep inside with a NotImplementedError.
    """
    what = f"{name} in {entry}" if entry else name
    if A.layout != torch.strided:
        raise SvdgradError(
            f"Expected a dense (torch.strided) tensor for {what}; received layout={A.layout} "
            f"({describe(A)}). Convert it with {name}.to_dense() first."
        )
    if A.dtype not in FLOAT_DTYPES:
        raise SvdgradError(
            f"Expected a real floating dtype (float16, bfloat16, float32 or float64) for "
            f"{what}; received {describe(A)}. Cast with {name}.to(torch.float32) or torch.float64"
            + ("; complex Hermitian input is not supported." if A.dtype.is_complex else ".")
        )


def max_abs(A: torch.Tensor) -> torch.Tensor:
    """Largest |entry| of each matrix (*, n, n) -> (*); NaN if the matrix has a NaN."""
    return A.abs().amax(dim=(-2, -1))


def check_values(A: torch.Tensor, *, symmetry_tol: float | None, name: str = "A",
                 amax: torch.Tensor | None = None, scaled: torch.Tensor | None = None,
                 factor: torch.Tensor | None = None, scaled_sym2: torch.Tensor | None = None,
                 scaled_lower: float | None = None, values: torch.Tensor | None = None) -> None:
    """Finite entries and symmetry within ``symmetry_tol`` (relative, Frobenius).

    Both norms are taken of a copy of A with entries of order 1 (``scaled``,
    A times any per-matrix factor, if the caller has one; else A/max|A|),
    so they cannot overflow (entries of 1e154 and above squared overflow
    float64, 1e20 float32) or underflow, whatever the scale of A.  ``amax``
    is ``max_abs(A)`` if the caller has it.  A caller that has formed
    ``scaled_sym2`` = scaled + scaledᵀ gets the asymmetry from it without a
    second transposed read; with it (only), ``factor`` (*, 1, 1) may stand for
    scaled = factor·A, which is then not formed (the asymmetry is one fused
    pass, ‖2·factor·A − scaled_sym2‖).  One that knows a lower bound ``scaled_lower``
    of max|scaled| (so of its Frobenius norm) for every nonzero matrix skips
    the per-matrix norms when the asymmetry of the whole batch, taken as one
    norm, is below tol·scaled_lower (it bounds every matrix's; a zero matrix
    has no asymmetry, so passes too).  That one norm is also the finiteness
    check: one synchronization for a valid batch.  ``values``: the matrices
    checked, where the caller changed A's (the zero matrix's floor,
    ``_api._zero_matrix_lift``); A then names the input and its dtype.
    """
    if A.numel() == 0 or is_traced(A):
        return
    batch = A.shape[:-2]
    # The matrices below are detached (where they record a graph at all), and amax and factor are formed
    # without one (``_api._prepare``), so nothing here records one: no grad-mode switch (a few µs) is needed.
    Af = A if values is None else values
    Af = Af.float() if Af.dtype in HALF_DTYPES else Af
    Af = Af.detach() if Af.requires_grad else Af
    if scaled_sym2 is not None and scaled_sym2.requires_grad:
        scaled_sym2 = scaled_sym2.detach()
    m = amax
    # R (*, n, n) with ‖scaled − scaledᵀ‖ = c·‖R‖ per matrix
    if factor is not None and scaled_sym2 is not None:  # scaled − scaledᵀ = −(sym2 − 2·factor·A)
        R, c = torch.addcmul(scaled_sym2, Af, factor, value=-2.0), 1.0
    else:
        if scaled is None:
            m = max_abs(Af) if m is None else m
            scaled = Af / m.clamp_min(torch.finfo(Af.dtype).tiny)[..., None, None]  # entries in [-1, 1]
        scaled = scaled.detach()
        if scaled_sym2 is None:
            R, c = scaled - scaled.mT, 1.0
        else:  # scaled − scaledᵀ = 2·(scaled − sym2/2), a read without a transpose
            R, c = torch.sub(scaled, scaled_sym2, alpha=0.5), 2.0
    # One synchronization for the whole batch: the norm of all the asymmetries together bounds each
    # matrix's, and, every R being formed from A's entries scaled to order 1, it is finite exactly when A is.
    total = c * float(torch.linalg.vector_norm(R))
    if not math.isfinite(total):
        m = max_abs(Af) if m is None else m  # (*), NaN/Inf where an entry is
        bad = torch.nonzero(~torch.isfinite(m))[0].tolist() if batch else []
        raise SvdgradError(
            f"Expected finite entries in {name}; received NaN or Inf at batch index "
            f"{tuple(bad)} ({describe(A)}). Check the layer that produced {name}; a NaN "
            f"here usually comes from an earlier overflow."
        )
    tol = default_tol(A.dtype) if symmetry_tol is None else symmetry_tol
    if scaled_lower is not None and total <= tol * scaled_lower:
        return  # ‖scaled‖_F >= max|scaled| >= scaled_lower: symmetric enough everywhere
    asym = c * torch.linalg.matrix_norm(R)  # (*)
    if scaled is None:
        scaled = Af * factor
    scale = torch.linalg.matrix_norm(scaled)  # (*)
    bad_mask = asym > tol * scale
    if bool(bad_mask.any()):
        idx = torch.nonzero(bad_mask)[0].tolist() if batch else []
        rel = float((asym / scale.clamp_min(torch.finfo(scale.dtype).tiny)).max())
        raise SvdgradError(
            f"Expected a symmetric {name} (relative asymmetry ||A - A^T|| / ||A|| <= "
            f"{tol:.2g}); received relative asymmetry {rel:.3g} at batch index "
            f"{tuple(idx)} ({describe(A)}). Symmetrize with (A + A.mT) / 2, or pass "
            f"symmetry_tol=... if the asymmetry is expected."
        )


def psd_violations(A: torch.Tensor, psd_tol: float) -> torch.Tensor:
    """Batch mask (*) of matrices with λmin < -psd_tol·λmax, without an eigendecomposition for most.

    The same rule ``check_psd`` applies to computed eigenvalues, decided by
    Cholesky factorizations of A + psd_tol·μ·I:

    - μ = a lower bound of λmax: the largest of max_i a_ii and the Rayleigh
      quotients of v1 = A·e_m and v2 = A·v1, e_m the unit vector of the
      largest diagonal entry (two power steps from a good start; every
      Rayleigh quotient lies in [λmin, λmax], for any symmetric A).
      Success means λmin > -psd_tol·μ >= -psd_tol·λmax: accepted.
    - μ = min(‖A‖_∞, ‖A‖_F), an upper bound of |λ|max.  Failure means
      λmin < -psd_tol·μ <= -psd_tol·λmax: rejected.
    - Only a matrix in between (λmin within the gap of the two bounds)
      gets its eigenvalues computed.

    A valid PSD matrix costs about four elementwise passes and one
    Cholesky (n³/3 flops, a small fraction of an eigendecomposition).  The
    shift is proportional to λmax, not to the trace (which grows with n
    and accepted λmin = -0.1·λmax at n = 256).  ``A`` should be scaled to
    O(1) entries.
    """
    with torch.no_grad():
        tiny = torch.finfo(A.dtype).tiny
        diag = A.diagonal(dim1=-2, dim2=-1)  # (*, n)
        m = diag.argmax(-1)  # (*)
        v1 = torch.gather(A, -1, m[..., None, None].expand(A.shape[:-1] + (1,)))[..., 0]  # A e_m, (*, n)
        v2 = (A * v1[..., None, :]).sum(-1)  # A v1 as a broadcast sum (a batched gemv costs a matmul)
        v3 = (A * v2[..., None, :]).sum(-1)

        def rayleigh(v, Av):
            return (v * Av).sum(-1) / (v * v).sum(-1).clamp_min(tiny)

        lower = torch.maximum(diag.amax(-1), torch.maximum(rayleigh(v1, v2), rayleigh(v2, v3)))  # <= λmax

        def factorizes(mu: torch.Tensor) -> torch.Tensor:
            M = A.clone()
            M.diagonal(dim1=-2, dim2=-1).add_((psd_tol * mu)[..., None])
            return torch.linalg.cholesky_ex(M)[1] == 0

        ok = factorizes(lower.clamp_min(0))
        if bool(ok.all()):
            return ~ok
        upper = torch.minimum(A.abs().sum(-1).amax(-1), torch.linalg.matrix_norm(A))  # >= |λ|max
        bad = ~ok & ~factorizes(upper)
        unsure = ~ok & ~bad
        if bool(unsure.any()):
            L = torch.linalg.eigvalsh(A[unsure])
            bad[unsure] = L[..., 0] < L[..., -1] * -psd_tol  # (check_psd's rule)
        return bad


def _ldexp(x: float, e: int) -> float:
    try:
        return math.ldexp(x, e)
    except OverflowError:
        return math.copysign(math.inf, x)


def check_psd(L: torch.Tensor, *, psd_tol: float, A: torch.Tensor, name: str = "A",
              batch_index: tuple | None = None, why: str | None = None,
              scale_exponent: torch.Tensor | None = None) -> None:
    """Reject λmin < -psd_tol·λmax; ``L`` is ascending eigenvalues (*, n).

    ``batch_index`` names the matrix when ``L`` belongs to one matrix of a batch;
    ``why`` says why PSD input is needed (default: the square root).
    ``scale_exponent`` k (*) says that L are the eigenvalues of A/4^k; the
    message then reports those of A.
    """
    if L.numel() == 0 or is_traced(L):
        return
    # The rule as written, with λmax itself: for psd_tol < 1 the same as with |λmax| (λmax < 0 means
    # λmin <= λmax < psd_tol·λmax), one op fewer on every call
    bad_mask = L[..., 0] < L[..., -1] * -psd_tol
    if bool(bad_mask.any()):
        idx = torch.nonzero(bad_mask)[0].tolist() if L.dim() > 1 else []
        i = tuple(idx)
        if batch_index is not None:
            i, idx = tuple(batch_index), []
        lmin = float(L[i][0]) if idx else float(L[0])
        lmx = float(L[i][-1]) if idx else float(L[-1])
        if scale_exponent is not None:
            e = 2 * int(scale_exponent[i]) if scale_exponent.dim() else 2 * int(scale_exponent)
            lmin, lmx = _ldexp(lmin, e), _ldexp(lmx, e)
        raise SvdgradError(
            f"Expected a positive semi-definite {name} (λmin >= -{psd_tol:.2g}·λmax); "
            f"received λmin={lmin:.3g}, λmax={lmx:.3g} at batch index {i} ({describe(A)}). "
            f"{why or 'The square root of an indefinite matrix is not real.'} If {name} is a "
            f"covariance, compute it as X @ X.mT / N; tiny negative eigenvalues from "
            f"rounding are clamped, larger ones need psd_tol=... or a fix upstream."
        )
