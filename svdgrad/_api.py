"""Public entry points: sqrtm and eigh.

Both scale A by an exact power of two to entries of order 1 before any
decomposition or iteration and undo it afterwards (``_prepare``), so every
method is scale-equivariant over the whole float range: the scaling itself
costs no rounding, so sqrtm(c·A) = √c·sqrtm(A) within the rounding of c·A.
"""

from __future__ import annotations

import functools
import math
import numbers

import torch

from ._errors import SvdgradError, describe
from ._functions import (Eigh, GramOp, NarrowCast, NarrowCastBack, NarrowDp, NarrowIn, NarrowOut,
                         NarrowScales, apply, narrow_pair_applies, plain_narrow_refusal)
from ._guard import first_derivatives_only, guard, unsupported_message
from . import _kernels
from ._kernels import cast, scale_exponent, sym2, times_pow2
from ._methods import Exact, Method, _option_names, get_k_rule, get_method, methods
from ._spectral import InvSqrt, Log, Power, SpectralFunction, Sqrt, UserFunction, functions
from ._validate import (FLOAT_DTYPES, HALF_DTYPES, check_dense_float, check_has_data, check_matrix, check_psd,
                        check_values, is_traced, max_abs, psd_violations)


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


def _half_scaled(work: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """work·2^(-2k-1): A/4^k halved, so that T + Tᵀ = sym(A)/4^k exactly (a power of two costs no rounding).

    One multiplication when every 2^(-2k-1) is a normal number of the dtype, else two
    factors 2^-k and 2^(-k-1) (float32 with max|A| below 2^-62, or float64 below 2^-1020).
    """
    if not is_traced(work) and k.numel():
        k_low, k_high = _one_factor_range(work.dtype)
        kmin, kmax = k.aminmax()
        if k_low <= float(kmin) and float(kmax) <= k_high:
            return times_pow2(work, -2.0 * k - 1.0)
    return times_pow2(times_pow2(work, -k), -k - 1)


@functools.lru_cache(maxsize=None)
def _one_factor_range(dtype: torch.dtype) -> tuple[float, float]:
    """The k for which 2^(-2k-1) is a normal number of ``dtype``: log2(tiny) <= -2k-1 < log2(max)."""
    info = torch.finfo(dtype)
    return (-1.0 - math.log2(info.max)) / 2 + 0.5, (-1.0 - math.log2(info.tiny)) / 2


#: |k| above which the scaling pair goes around a method without ``scales_cotangent`` (``_scaled_pair``).  At
#: |k| <= 8 the law's factors, applied one by one, move an intermediate by at most 2^17 from the result, so
#: gradients stay exact wherever the result lies 2^17 inside the range (1e±33 in float32, 1e±303 in float64).
PAIR_FROM_K = 8.0


def _prepare(A, m: Method, *, scale: bool = True, fold: bool | str = False):
    """The value checks, then the method's input: T = A/(2·4^k) in the working dtype, T + Tᵀ = sym(A)/4^k.

    The caller casts T, and has run ``check_matrix(A)`` (before its shortcut for empty input).

    Returns (X, e, S, k, input dtype, compute dtype); k (*) is the per-matrix
    power-of-two exponent (``_kernels.scale_exponent``); k = 0 without
    ``scale``.  Usually X = T and e = None: the methods take T and
    symmetrize it themselves (``Method.apply``); S = T + Tᵀ without a graph
    when the checks formed it (they take the asymmetry from it), else None.

    With ``fold`` and ``scale`` (a method with ``folds_input_scale``, or
    ``fold="extreme"``: the scaling pair where some |k| > ``PAIR_FROM_K``), T is
    not formed: X is A in the working dtype, e (*) = −2k−1 and S = 2^e·(X + Xᵀ) = T + Tᵀ without a
    graph.  The method applies the factor 2^e to its vjp and jvp, which
    saves a pass and a graph node each way (under torch.func.jvp, four: the
    tangent of T is never formed).  S is one pass over A where that is
    exact (``_foldable``), else T + Tᵀ of a T without a graph (2^e not a
    normal number: max|A| near either end of the range; or under torch.func
    transforms, where nothing may be synchronized).
    """
    work = cast(A, _work_dtype(A.dtype))  # scale before any cast that could overflow
    cdtype = _compute_dtype(A, m)
    folded = bool(fold) and scale and work.numel() > 0
    lift = None
    with torch.no_grad():
        w = work.detach()
        amax = max_abs(w)  # (*)
        if torch.finfo(cdtype).bits > torch.finfo(w.dtype).bits and w.numel():
            lift, amax = _zero_matrix_lift(w, amax)
            w = w + lift
        k = scale_exponent(amax) if scale else torch.zeros_like(amax)
        if folded and fold == "extreme":  # (the scaling pair, only for a matrix far from order one)
            folded = not is_traced(work) and bool(k.abs().amax() > PAIR_FROM_K)
        if folded:
            e = torch.rsub(k, -1.0, alpha=2.0)  # −2k−1 (rsub: other − alpha·input, one op)
            T0 = factor = None
            symmetric = False
            if not is_traced(work) and _foldable(k, work.dtype):
                factor = torch.exp2(e).view(e.shape + (1, 1))  # (*, 1, 1)
                # A symmetric bit for bit (a covariance X Xᵀ from a CPU matmul is): S = 2^e·(A + A) is the same
                # S from contiguous reads, and the checks reduce to finiteness (max|A| finite), which saves
                # the transposed read of the sum, and the asymmetry's pass and norm.
                symmetric = m.check and torch.equal(w, w.mT) and math.isfinite(float(amax.amax()))
                S = (w + w if symmetric else w + w.mT).mul_(factor)
            else:
                T0 = _half_scaled(w, k)
                S = sym2(T0)
    values = None
    if lift is not None:  # (a constant: the gradient passes as it is, at the floor)
        work, values = work + lift, w
    if folded:
        if m.check and not symmetric:
            # max|T| = max|A|·2^(-2k-1) lies in [1/8, 2] for every nonzero A (scale_exponent)
            check_values(A, symmetry_tol=m.symmetry_tol, amax=amax, scaled=T0, factor=factor, scaled_sym2=S,
                         scaled_lower=0.125, values=values)
        return work, e, cast(S, cdtype), k, A.dtype, cdtype
    T = _half_scaled(work, k) if scale else work * 0.5
    S = None
    if m.check and scale and T.numel() and not is_traced(T):
        # The symmetry check's norms are taken of the scaled matrix (no overflow), its asymmetry from
        # S = T + Tᵀ, which the eigen methods then use as their input (one transposed pass, not three).
        with torch.no_grad():
            S = sym2(T.detach())
        # max|T| = max|A|·2^(-2k-1) lies in [1/8, 2] for every nonzero A (scale_exponent)
        check_values(A, symmetry_tol=m.symmetry_tol, amax=amax, scaled=T, scaled_sym2=S, scaled_lower=0.125,
                     values=values)
    elif m.check:
        check_values(A, symmetry_tol=m.symmetry_tol, amax=amax, scaled=T if scale else None, values=values)
    return T, None, (None if S is None else cast(S, cdtype)), k, A.dtype, cdtype


def _zero_matrix_lift(w: torch.Tensor, amax: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(√tiny·I where a matrix of w is all zero, else 0; max|w + that|): the zero matrix's floor in w's dtype.

    The zero matrix has no scale, so its eigenvalues get an absolute floor, √tiny of the dtype they are
    computed in (``_kernels.eigenvalue_floor``).  Computed in a dtype wider than the input's work dtype
    (float32 computed in float64), that was float64's: f′ there (4e76 for the square root) came back inf in
    float32, ``inv_sqrtm`` was refused, and ``logm`` read −354 where float32 reads −43.7.  Lifting the zero
    matrix to √tiny·I of the work dtype gives every method (eigen and iterative) what it computes in that
    dtype: f and f′ at √tiny, within the range.  No synchronization (a mask), so the same under vmap.
    """
    zero = amax == 0  # (*)
    n = w.shape[-1]
    c = torch.finfo(w.dtype).tiny ** 0.5
    lift = zero.to(w.dtype)[..., None, None] * torch.eye(n, dtype=w.dtype, device=w.device).mul_(c)
    return lift, amax.masked_fill(zero, c)


def _foldable(k: torch.Tensor, dtype: torch.dtype) -> bool:
    """Whether 2^(-2k-1)·(A + Aᵀ) is exactly T + Tᵀ for every matrix: 2^(-2k-1) a normal number.

    That also keeps A + Aᵀ finite: -2k-1 >= log2(tiny) bounds k, and max|A| < 4^(k+1)
    (``scale_exponent``) is then below a quarter of the largest number (2^126 in
    float32, 2^1022 in float64).  A NaN or Inf in A gives k = 0 and a non-finite S,
    which the checks report.  Synchronizes (two scalars): not under torch.func transforms.
    """
    k_low, k_high = _one_factor_range(dtype)
    kmin, kmax = k.aminmax()
    return k_low <= float(kmin) and float(kmax) <= k_high


def _unsupported(fn: SpectralFunction, m: Method, entry: str) -> SvdgradError:
    valid = methods(fn.name) if fn.name in functions() else tuple(
        name for name in methods() if get_method(name).supports(fn))
    what = "a user's function" if isinstance(fn, UserFunction) else repr(fn.name)
    roots = [name for name in methods() if name not in valid and getattr(get_method(name), "functions", None)]
    return SvdgradError(
        f"Method {m.name!r} does not compute {what} ({entry}). Expected one of {', '.join(valid)}"
        + (f"; {', '.join(roots)} compute only the square root and the inverse square root." if roots else ".")
    )


def _spectral(A, fn: SpectralFunction, method, entry: str, p=None, **options) -> torch.Tensor:
    """F = f(A) for symmetric PSD A with an eigen or iterative method; shared by every entry point."""
    m = get_method(method, **options)
    if p is not None and not isinstance(fn, Power):  # (sqrtm(A, p=2.0) would otherwise ignore it)
        raise SvdgradError(
            f"Unknown option 'p' for svdgrad.{entry}: p is the exponent of svdgrad.powm(A, p) only; received "
            f"p={p!r}. Use svdgrad.powm(A, p) for A^p. Valid options for method {m.name!r}: "
            f"{', '.join(_option_names(type(m)))}."
        )
    if not m.supports(fn):
        raise _unsupported(fn, m, entry)
    if isinstance(p, torch.Tensor) and not m.has_eigenvalues and p.requires_grad:
        raise SvdgradError(f"The gradient with respect to p needs an eigen method; received {m.name!r}.")
    check_matrix(A)
    if A.numel() == 0:  # an empty batch or n = 0
        return _empty_result(A, p)
    # A method whose backward does not take its cotangent at order one (the iterative ones, power_iteration)
    # gets the cast pair below in its own dtype too, for a matrix far from order one (``_scaled_pair``,
    # ``PAIR_FROM_K``); T is then formed inside it (the fold).
    pair = _scaled_pair(A, m, fn, p)
    # T + Tᵀ = S = sym(A)/4^k; or (eigen methods) T = A and S = 2^e·(A + Aᵀ), the same S
    T, e, S, k, in_dtype, cdtype = _prepare(A, m, scale=fn.scalable,
                                            fold=m.folds_input_scale or ("extreme" if pair else False))
    pair = pair and e is not None
    # A compute dtype narrower than the input's (float64 computed in float32): the scaling law's factor on
    # every derivative is applied on the wide side of the cast (NarrowIn/NarrowOut), where it fits.
    wide = _work_dtype(in_dtype)
    narrower = torch.finfo(cdtype).bits < torch.finfo(wide).bits
    if narrower and not fn.scalable and m.check and not is_traced(T):
        _check_fits(T, cdtype, entry)
    narrow_e = carrier = None
    if (narrower or pair) and fn.scalable and narrow_pair_applies():  # (else, under vmap or compile: the plain chain)
        narrow_e = fn.gradient_pow2(k, p)  # (not under vmap: NarrowOut's closure would capture a batch)
    p_wide = None
    if narrow_e is not None:
        p_wide = p if narrower and isinstance(p, torch.Tensor) and _varies(p) else None
        twice = pair and m.differentiable_twice(fn)
        scales = NarrowScales(p_wide, twice=twice, plain=twice and _twice_plain(A))
        T_wide = T
        # (with the fold, NarrowIn forms T and carries its factor 2^e too: one exponent on the wide side)
        T = apply(NarrowIn, T, narrow_e.to(wide), e, cdtype, scales)
        e = None
        if p_wide is not None:
            # p's derivative cannot cross the cast per matrix: it is added on the wide side (_narrow_dp)
            p = p.detach()
    elif narrower:  # (under vmap or torch.compile, or a user's f: the cast without the pair's shared state)
        # (else the plain chain: a second derivative may follow, in A or in a tensor p: torch.func.hessian in p
        # alone went through the scaled cast, which carries first derivatives only, 6-10 % off from max|A| = 4)
        scaled = first_derivatives_only(T) and not (isinstance(p, torch.Tensor) and not first_derivatives_only(p))
        refusal = plain_narrow_refusal(k, fn, p, cdtype) if not scaled and fn.scalable else None
        T, carrier = apply(NarrowCast, T, e, cdtype, scaled, refusal)
        e = None
    else:
        T = cast(T, cdtype)
    # The scale law 4^(k·p) takes p as given: p rounded to a narrower compute dtype was off by up to 2k·|Δp|
    # in its exponent (7e-6 at 1e300, float64 p computed in float32), where a Python float p kept float32's
    # accuracy.  The method's spectrum takes p in the compute dtype, as it takes the eigenvalues.
    p_law = p
    if isinstance(p, torch.Tensor):
        p = p.to(cdtype)
    tol = _psd_tol(m, in_dtype, cdtype)
    if m.check and not m.has_eigenvalues and not is_traced(T):
        Ac = sym2(T.detach()) if S is None else S
        bad = psd_violations(Ac, tol)
        if bool(bad.any()):
            idx = tuple(torch.nonzero(bad)[0].tolist()) if bad.dim() else ()
            L = torch.linalg.eigvalsh(Ac[idx])
            check_psd(L, psd_tol=tol, A=A, batch_index=idx, scale_exponent=k)
    if not m.differentiable_twice(fn):
        T = guard(T, m.name)
    # The output's scale law as a factor 2^pow2 folded into the spectrum, where the method and the function allow.
    # (Not when the compute dtype is narrower than the input's: 2^k of a float64 input may overflow float32.)
    # (Nor with the pair, whose NarrowOut applies the law.)
    pow2 = fn.output_pow2(k, p_law) if (fn.scalable and m.folds_output_scale and not narrower
                                        and narrow_e is None) else None
    F, L = m.apply(T, fn, p, pow2, S) if e is None else m.apply(T, fn, p, pow2, S, in_pow2=e)
    Fc = F  # (in the compute dtype: where a non-finite result arose, if it did)
    if m.check and L is not None:
        check_psd(L, psd_tol=tol, A=A, scale_exponent=k, why=fn.psd_reason)
    if narrow_e is not None:
        F = apply(NarrowOut, F, wide, lambda X: fn.rescale(X, k, p_law), scales)
        if p_wide is not None:
            F = F + _narrow_dp(T_wide, S, k, p_wide, m, fn, cdtype)
        out = F.to(in_dtype)
        if m.check and not fn.result_fits_input:
            _check_result_fits(out, Fc, L, fn, p, m, cdtype, narrower, entry)
        return out
    F = cast(F, wide) if carrier is None else apply(NarrowCastBack, F, carrier, wide, scaled, refusal)
    if fn.scalable and pow2 is None:
        F = fn.rescale(F, k, p_law.to(F.dtype) if isinstance(p_law, torch.Tensor) else p_law)
    elif pow2 is not None:
        F = fn.rescale_remainder(F, k, p_law, pow2)
    out = cast(F, in_dtype)
    if m.check and not fn.result_fits_input:
        _check_result_fits(out, Fc, L, fn, p, m, cdtype, narrower, entry)
    return out


def _check_fits(A: torch.Tensor, cdtype: torch.dtype, entry: str) -> None:
    """A user's f has no scale law, so A is cast to a narrower compute dtype as it is: refuse an A whose
    largest entries that cast would overflow (with room for n·max|A| eigenvalues) or push below the normal
    range, where it came back silently wrong (1e-50 flushed to 0 gave 3.3e-10)."""
    info = torch.finfo(cdtype)
    n = A.shape[-1]
    amax = max_abs(A.detach())
    lo, hi = info.tiny / info.eps, info.max / (4 * max(n, 1))
    bad = (amax > 0) & ((amax < lo) | (amax > hi) | ~torch.isfinite(amax))
    if bool(bad.any()):
        worst = float(amax[bad].flatten()[0])
        raise SvdgradError(
            f"svdgrad.{entry} does not rescale A (your f has no scale law that would undo it), so A must fit "
            f"compute_dtype={cdtype}: expected max|A| in [{lo:.3g}, {hi:.3g}] per matrix; received {worst:.3g} "
            f"({describe(A)}). Leave compute_dtype unset to compute in A's dtype, or rescale A yourself."
        )


def _check_result_fits(out: torch.Tensor, Fc: torch.Tensor, L, fn: SpectralFunction, p, m: Method,
                       cdtype: torch.dtype, narrower: bool, entry: str) -> None:
    """Refuse a non-finite f(A) of a finite PSD A: ``out`` in A's dtype, ``Fc`` as the method returned it in the
    compute dtype, ``L`` its eigenvalues (None for the iterative methods).

    Either f(λ) left the compute dtype's range on the way (a power, a user's f), or the result, finite in
    a wider compute dtype, does not fit A's: inv_sqrtm and powm of float16 input (computed in float32)
    returned inf silently where the floor eps·λmax of a singular A, or a power, went past 65504.  The
    message offers only the remedies that apply: a wider dtype for A (none past float64); where a decreasing
    f met eigenvalues floored relative to λmax, a larger eps, and leaving a compute dtype wider than A's
    unset (its finer eps floors lower).  Not for the all-zero matrix: its floor is absolute, √tiny of A's
    work dtype whatever the compute dtype (``_zero_matrix_lift``).
    """
    if out.numel() == 0 or is_traced(out) or bool(torch.isfinite(out).all()):
        return
    if not bool(torch.isfinite(Fc).all()):
        if isinstance(fn, Power):
            _check_power_finite(Fc, p, cdtype, narrower, out)
        raise SvdgradError(
            f"Expected a finite f(A) from svdgrad.{entry}; received NaN or Inf entries ({describe(out)}): f(λ) "
            f"leaves the range of the compute dtype {cdtype} for this A. "
            + ("Leave compute_dtype unset (compute in A's own dtype)." if narrower else
               "Compute in a wider dtype (compute_dtype=torch.float64)." if cdtype != torch.float64 else
               "The result does not fit float64; check f on the eigenvalues' range."))
    dt = out.dtype
    decreasing = isinstance(fn, InvSqrt) or (isinstance(fn, Power) and not bool(torch.as_tensor(p).gt(0).all()))
    floored = decreasing and L is not None and bool(
        ((L[..., 0] < L[..., -1] * m.floor_eps(cdtype)) & (L[..., -1] > 0)).any())
    remedies = []
    wider = _wider_cast(dt, "A")
    if wider:
        remedies.append(f"pass A in a wider dtype ({wider})")
    if floored and torch.finfo(cdtype).bits > torch.finfo(_work_dtype(dt)).bits:
        remedies.append("leave compute_dtype unset (the floor eps·λmax of a singular A takes the compute dtype's "
                        "eps)")
    if floored:
        remedies.append("pass a larger eps=... (the floor of the null space)")
    raise SvdgradError(
        f"The result of svdgrad.{entry} does not fit {dt}: finite in the compute dtype {cdtype}, it exceeds "
        f"{dt}'s largest number {torch.finfo(dt).max:.3g} once cast back ({describe(out)})."
        + (" On this singular A the null space gets f at the floor eps·λmax." if floored else "")
        + (" To compute it: " + ", ".join(remedies) + "; or pass" if remedies else " Pass")
        + " check=False to get the inf entries.")


def _wider_cast(dtype: torch.dtype, name: str) -> str | None:
    """The cast a refusal suggests for a result beyond ``dtype`` (``name.float()``), None past float64."""
    wider = {torch.float16: "float", torch.bfloat16: "float", torch.float32: "double"}.get(dtype)
    return None if wider is None else f"{name}.{wider}()"


def _check_power_finite(F: torch.Tensor, p, cdtype: torch.dtype, narrower: bool, out: torch.Tensor) -> None:
    """A^p non-finite for a finite PSD A: its spectrum λ^p left the range on the way (for a narrower compute
    dtype, the narrow one's: powm(A, -30) computed in float32 gave inf/NaN silently).  ``F`` in the compute
    dtype, ``out`` the result as returned (which the message describes)."""
    if F.numel() == 0 or is_traced(F) or bool(torch.isfinite(F).all()):
        return
    pv = float(p) if not isinstance(p, torch.Tensor) or p.numel() == 1 else "a tensor"
    raise SvdgradError(
        f"Expected a finite A^p; received NaN or Inf entries (p={pv}, {describe(out)}): λ^p leaves the range of the "
        f"compute dtype {cdtype} for this A. "
        + ("Compute in A's own dtype (leave compute_dtype unset)." if narrower else
           "The result does not fit the dtype: compute in torch.float64, or use a smaller |p|."
           if cdtype != torch.float64 else "The result exceeds float64's range: use a smaller |p|.")
    )


def _empty_result(A: torch.Tensor, p=None) -> torch.Tensor:
    """f(A) of an empty batch (0, n, n) or of n = 0 matrices (*, 0, 0): empty, in A's dtype, as
    torch.linalg.eigh gives empty results.

    Formed from A (and a tensor p) so that gradients flow, as empty (and zero) tensors: p's gradient is then
    zero, not None, as torch gives for an empty sum that depends on p.
    """
    return A + 0 * p if isinstance(p, torch.Tensor) else A.clone()


def _varies(p: torch.Tensor) -> bool:
    """Whether a derivative with respect to p may be asked for (reverse or forward mode, or a transform)."""
    return p.requires_grad or is_traced(p) or torch.autograd.forward_ad.unpack_dual(p).tangent is not None


def _scaled_pair(A, m: Method, fn: SpectralFunction, p) -> bool:
    """Whether ``NarrowIn``/``NarrowOut`` carry the scaling law's derivative factor in A's own dtype.

    The eigen methods take every cotangent and tangent at order one inside their rules (``_functions._at_order_one``).
    The others (Newton–Schulz, MPA, MTP, power iteration) differentiate the matrix A/4^k: with the law's factor
    applied outside, in turn, a tiny cotangent at a tiny matrix underflowed to a zero gradient on the way
    (float32: 2^-120 at 4^-30·A, whose gradient is 2^-90) and a huge one overflowed.  The pair scales the
    cotangent to order one before the method's rule and applies every factor after it, in one exponent.
    It costs about 5 % of a (32, 64, 64) newton_schulz or mpa forward and backward, so it is taken only for a
    batch with a matrix far from order one (|k| > ``PAIR_FROM_K``, decided in ``_prepare``).
    Around a method differentiated twice (newton_schulz with backward='autograd') the pair switches to the
    plain chain for good where a second derivative may follow (``_functions.NarrowScales``, ``_twice_plain``).
    Not with a tensor p whose gradient is taken (its derivative would cross the scaled cotangent), nor under
    vmap or torch.compile (``narrow_pair_applies``).
    """
    if m.scales_cotangent or not fn.scalable or not isinstance(A, torch.Tensor):
        return False
    if isinstance(p, torch.Tensor) and _varies(p):
        return False
    return narrow_pair_applies()


def _twice_plain(A) -> bool:
    """Whether the pair around a method differentiated twice runs plain from the start: a tangent enters
    with A (forward mode) where reverse mode may also run (A requires grad: forward over reverse, or reverse
    over the tangent), or a torch.func transform is active (its levels may nest any orders)."""
    if torch._C._are_functorch_transforms_active() or torch._C._functorch.is_functorch_wrapped_tensor(A):
        return True
    tangent = torch.autograd.forward_ad.unpack_dual(A).tangent
    return tangent is not None and (A.requires_grad or tangent.requires_grad)


def _narrow_dp(T, S, k, p, m: Method, fn: SpectralFunction, cdtype) -> torch.Tensor:
    """Zero in value, whose derivative in p is exactly p's derivative term ∂F/∂p, computed on the wide side.

    With a compute dtype narrower than the input's, a cotangent crosses the cast scaled per matrix
    (``NarrowOut``), so p's derivative, a sum over the batch, cannot be taken inside.  Here
    ∂F/∂p = 4^(kp)·U diag(∂φ/∂p + 2k·ln2·φ) Uᵀ from the method's spectrum at the eigenpairs of A/4^k
    (computed in the compute dtype, combined in the wide one), for the reverse and the forward mode.
    Costs one more eigendecomposition, only in this mode.  A second derivative through it raises (``NarrowDp``).
    """
    with torch.no_grad():
        A = (sym2(T) if S is None else S).detach().to(cdtype)
        L, U = torch.linalg.eigh(A)
        Lf = L.clamp_min(_kernels.eigenvalue_floor(L, m.floor_eps(cdtype)))
        pc = p.detach().to(cdtype)
        wide = T.dtype
        kk = k.to(wide)[..., None]  # (*, 1)
        pw = p.detach().to(wide)
        phi, dphi = m.spectrum(fn, Lf, pc), m.spectrum_dp(fn, Lf, pc)
        w = dphi.to(wide) + (2.0 * math.log(2.0)) * kk * phi.to(wide)
        w = w * torch.exp2(2.0 * kk * pw)
        Uw = U.to(wide)
        D = (Uw * w[..., None, :]) @ Uw.mT
    return apply(NarrowDp, p, T, D)


_COMMON = """
    ``method`` is a registered name (``svdgrad.methods(function)`` lists
    those that compute this function), a spec string such as
    ``"taylor:degree=9"``, or a method object such as
    ``svdgrad.Taylor(degree=100)``; ``options`` override its settings.
    The result has A's dtype and device; batch shape (*, n, n).

    A is scaled by an exact power of two to entries of order 1 first, so
    every method is scale-equivariant over the whole float range.
    Eigenvalues below eps·λmax (``eps``, default the compute dtype's
    machine epsilon) are raised to it first, which keeps functions that
    are unbounded at 0 finite on singular input: there they act on
    eps·λmax.

    A is a dense tensor of float16, bfloat16, float32 or float64; an empty
    batch or n = 0 gives an empty result of the same shape.

    Raises SvdgradError for non-square, non-floating (integer, complex,
    float8), sparse, non-finite, asymmetric or indefinite input
    (λmin < -psd_tol·λmax, the same rule for every method), or for a
    method that does not compute the function.
    """


def sqrtm(A: torch.Tensor, method="exact", **options) -> torch.Tensor:
    return _spectral(A, Sqrt(), method, "sqrtm", **options)


def inv_sqrtm(A: torch.Tensor, method="exact", **options) -> torch.Tensor:
    return _spectral(A, InvSqrt(), method, "inv_sqrtm", **options)


def logm(A: torch.Tensor, method="exact", **options) -> torch.Tensor:
    return _spectral(A, Log(), method, "logm", **options)


def powm(A: torch.Tensor, p, method="exact", **options) -> torch.Tensor:
    m = get_method(method, **options)
    if isinstance(p, torch.Tensor):
        if p.dim() != 0 or p.dtype not in FLOAT_DTYPES or p.layout != torch.strided:
            raise SvdgradError(f"Expected p to be a float or a 0-dim floating tensor (float16, bfloat16, float32 or "
                               f"float64); received {describe(p)}. Pass float(p), or p.reshape(()) for one exponent.")
        moves = isinstance(A, torch.Tensor) and p.device != A.device
        if moves and p.device.type != "cpu":  # as torch: a 0-dim CPU tensor goes with any device, no other
            raise SvdgradError(f"Expected p on A's device ({A.device}) or a 0-dim CPU tensor; received p on "
                               f"{p.device}. Move it with p.to(A.device).")
        # The value check synchronizes: not while traced (it could not), and not with check=False; a meta p
        # (then on A's device, or A is no tensor) has no value: A's own check refuses it (``check_has_data``)
        if m.check and not is_traced(p) and not p.is_meta and not math.isfinite(float(p.detach())):
            raise SvdgradError(f"Expected a finite exponent p; received p={float(p.detach())} (a 0-dim tensor). "
                               f"Check what produced p, or pass check=False to skip the value checks.")
        if moves:
            p = p.to(A.device)
    elif isinstance(p, numbers.Real) and not isinstance(p, bool):  # Python and NumPy numbers (np.float32 too)
        try:
            p = float(p)
        except OverflowError:
            raise SvdgradError(f"Expected p to be a finite float or a 0-dim tensor; received an int of "
                               f"{p.bit_length()} bits, beyond the float range (about 1.8e308).") from None
        if not math.isfinite(p):
            raise SvdgradError(f"Expected p to be a finite float or a 0-dim tensor; received {p!r}.")
    else:
        raise SvdgradError(f"Expected p to be a finite float or a 0-dim tensor; received {p!r} "
                           f"({type(p).__name__}).")
    return _spectral(A, Power(), m, "powm", p=p)


def matrix_function(A: torch.Tensor, f, df, method="exact", *, dd=None, **options) -> torch.Tensor:
    if not (callable(f) and callable(df)) or (dd is not None and not callable(dd)):
        raise SvdgradError("Expected callables f(λ) and df(λ) (and dd(λi, λj) if given) acting on eigenvalue "
                           "tensors, e.g. matrix_function(A, torch.exp, torch.exp).")
    if isinstance(A, torch.Tensor) and not torch.compiler.is_compiling():
        _refuse_differentiable_closures(A, f, df, dd)
    return _spectral(A, UserFunction(fn=f, dfn=df, divided=dd), method, "matrix_function", **options)


def _refuse_differentiable_closures(A: torch.Tensor, f, df, dd) -> None:
    """Refuse a user's f, df or dd that computes with tensors being differentiated (f = lambda x: w * x): they
    run inside the autograd Function, so those tensors' derivatives would be silently missing.  Each is probed
    once on a constant (1.0; dd at (1.0, 2.0)); a probe that fails is left to the real call.  The probe's result
    carries the derivative in one of two ways: it requires grad (reverse mode, grad enabled, torch.func.grad;
    also under vmap over A, where the refusal used to be skipped), or it has a forward-mode tangent (a
    forward_ad dual w, torch.func.jvp).  A vmap-batched w is no derivative."""
    dtype = A.dtype if A.dtype in FLOAT_DTYPES and not A.is_meta else torch.float32
    one = torch.ones(1, dtype=dtype, device="cpu" if A.is_meta else A.device)
    probes = (("f", f, (one,)), ("df", df, (one,))) + ((("dd", dd, (one, one * 2.0)),) if dd is not None else ())
    for name, fn, args in probes:
        try:
            out = fn(*args)
        except Exception:  # noqa: BLE001 (the real call reports what is wrong with it)
            continue
        if isinstance(out, torch.Tensor) and (
                (out.requires_grad and torch.is_grad_enabled())
                or (torch.autograd.forward_ad._current_level >= 0
                    and torch.autograd.forward_ad.unpack_dual(out).tangent is not None)):
            raise SvdgradError(
                f"Expected {name} of svdgrad.matrix_function to compute with constants; its result requires grad "
                f"or carries a derivative (it uses a tensor being differentiated, e.g. a parameter w in "
                f"lambda x: w * x). {name} runs inside the autograd Function, so that tensor would get no "
                f"derivative through it, silently. Detach it (w.detach()) if "
                f"it is a constant; for a parametrized function, differentiate through the eigendecomposition "
                f"yourself (svdgrad.eigh) or call matrix_function under torch.no_grad().")


sqrtm.__doc__ = """Principal square root A^{1/2} of symmetric PSD ``A``.
""" + _COMMON
inv_sqrtm.__doc__ = """Inverse square root A^{-1/2} of symmetric PSD ``A`` (eigen methods, or newton_schulz's
    coupled iteration).
""" + _COMMON
logm.__doc__ = """Principal logarithm log A of symmetric PSD ``A`` (eigen methods).
""" + _COMMON
powm.__doc__ = """A^p of symmetric PSD ``A`` for a real p (eigen methods).

    ``p`` is a finite real number (Python or NumPy) or a 0-dim floating
    tensor, on A's device or on the CPU (as torch takes 0-dim CPU tensors
    with any device); a NaN or Inf tensor p raises unless ``check=False``
    or under torch.func/torch.compile.  If it requires grad, its gradient
    Σ_i (UᵀGU)_ii·λi^p·log λi is returned as well.
""" + _COMMON
matrix_function.__doc__ = """U f(Λ) Uᵀ for a user's spectral function: ``f`` and its derivative ``df`` act on eigenvalue tensors.

    ``dd(Li, Lj)`` (broadcasting (*, n, 1) with (*, 1, n)) is the first
    divided difference (f(λi) − f(λj))/(λi − λj) with f′ at ties; without it
    the quotient is used where |λi − λj| > eps^(1/3)·max(|λi|, |λj|) and
    f′ at the midpoint below, which bounds the error by O(eps^(2/3))
    relative (cancellation on one side, truncation on the other).  A is not
    rescaled for a user's f: it sees A's own (floored) eigenvalues.  f, df
    and dd return real tensors of the eigenvalues' shape, on their device;
    another real dtype (float64 for float32 eigenvalues, bool) is cast to
    theirs, a complex one raises SvdgradError.
""" + _COMMON


#: ``algorithm`` of gram_sqrtm/gram_inv_sqrtm (``_functions.GramOp``): "auto" is "gram64" for a
#: compute dtype narrower than float64 on a device with float64 (not MPS), else "svd".
GRAM_ALGORITHMS = ("auto", "svd", "gram64")


def _gram_algorithm(algorithm, cdtype: torch.dtype, device: torch.device, entry: str) -> str:
    if algorithm not in GRAM_ALGORITHMS:
        raise SvdgradError(f"Expected algorithm to be one of {', '.join(map(repr, GRAM_ALGORITHMS))} for {entry}; "
                           f"received {algorithm!r}. Leave it at 'auto' unless you want a particular route.")
    wide_ok = cdtype != torch.float64 and device.type != "mps"
    if algorithm == "auto":
        return "gram64" if wide_ok else "svd"
    if algorithm == "gram64" and not wide_ok:
        raise SvdgradError(f"algorithm='gram64' forms X Xᵀ in float64, which must be wider than the compute "
                           f"dtype and available on the device; received compute dtype {cdtype} on "
                           f"{device.type}. Use algorithm='svd' (or 'auto', which picks it here).")
    return algorithm


#: The options of gram_sqrtm and gram_inv_sqrtm, with their defaults.
GRAM_OPTIONS = {"eps": None, "compute_dtype": None, "check": True, "algorithm": "auto"}


def _no_method_hint(entry: str) -> str:
    return (f" There is no method to choose: svdgrad.{entry} works from the SVD of X (or from X Xᵀ formed in "
            f"float64; algorithm=... picks the route). For another method pass the covariance to "
            f"svdgrad.{entry[5:]}(X @ X.mT, method).")


def _gram_options(args: tuple, options: dict, entry: str) -> dict:
    if args:  # (gram_sqrtm(X, "exact"), by analogy with sqrtm(A, "exact"): Python's own TypeError says nothing)
        raise SvdgradError(
            f"svdgrad.{entry} takes X only, and its options by name; received {len(args)} more: "
            f"{args!r}.{_no_method_hint(entry)} Valid options: {', '.join(GRAM_OPTIONS)}.")
    unknown = sorted(set(options) - set(GRAM_OPTIONS))
    if not unknown:
        return {**GRAM_OPTIONS, **options}
    why = _no_method_hint(entry) if "method" in unknown else ""
    if {"symmetry_tol", "psd_tol"} & set(unknown):
        why += " X Xᵀ is symmetric and positive semi-definite by construction: there is no such check to tune."
    raise SvdgradError(
        f"Unknown option(s) {unknown} for svdgrad.{entry}. Valid options: {', '.join(GRAM_OPTIONS)} "
        f"(algorithm one of {', '.join(map(repr, GRAM_ALGORITHMS))}).{why}"
    )


def _gram(X, inverse: bool, entry: str, args: tuple, **options) -> torch.Tensor:
    o = _gram_options(args, options, entry)
    algorithm = o["algorithm"]
    try:  # (validates the shared options; its messages say "for exact", a method gram_* does not take)
        opts = Exact(eps=o["eps"], compute_dtype=o["compute_dtype"], check=o["check"])
    except SvdgradError as exc:
        raise SvdgradError(str(exc).replace(" for exact", f" for svdgrad.{entry}")) from None
    if not isinstance(X, torch.Tensor):
        raise SvdgradError(f"Expected X to be a torch.Tensor of shape (*, d, N) for {entry}; received {describe(X)}. "
                           f"Convert it with torch.as_tensor(...) first.")
    check_has_data(X, name="X", entry=entry)
    if X.dim() < 2:
        raise SvdgradError(f"Expected features X of shape (*, d, N) with at least 2 dimensions for {entry}; "
                           f"received {describe(X)}. For a covariance Σ = X Xᵀ use svdgrad.sqrtm(Σ) instead.")
    check_dense_float(X, name="X", entry=entry)
    cdtype = _compute_dtype(X, opts)
    algorithm = _gram_algorithm(algorithm, cdtype, X.device, entry)
    work = X.to(_work_dtype(X.dtype))
    d = X.shape[-2]
    if X.numel() == 0 and (d == 0 or math.prod(X.shape[:-2]) == 0):
        return work.new_zeros(X.shape[:-1] + (d,)).to(X.dtype) + 0 * work.sum()
    if X.shape[-1] == 0:  # no samples: X Xᵀ = 0, as for one zero column (cat keeps the graph)
        work = torch.cat((work, work.new_zeros(work.shape[:-1] + (1,))), -1)
    with torch.no_grad():
        amax = max_abs(work.detach())  # (*)
    if opts.check and not is_traced(X) and X.numel() and not bool(torch.isfinite(amax).all()):
        bad = torch.nonzero(~torch.isfinite(amax))[0].tolist() if amax.dim() else []
        raise SvdgradError(f"Expected finite entries in X; received NaN or Inf at batch index {tuple(bad)} "
                           f"({describe(X)}). Check the layer that produced X.")
    k = scale_exponent(amax)  # X/4^k has entries of order 1; (X Xᵀ)^{±1/2} scales by 4^{±k}
    work = guard(work, "gram", message=unsupported_message(
        f"svdgrad.{entry}", f"For second derivatives use svdgrad.{entry[5:]}(X @ X.mT, " + (
            "'newton_schulz', backward='autograd')" if inverse else "'exact')") + " (it forms X Xᵀ, squaring κ)."))
    # (GramOp scales by 4^-k, casts, and scales back itself: its vjp and jvp run at order one)
    F = apply(GramOp, work, k.to(work.dtype), opts.floor_eps(cdtype), inverse, algorithm, cdtype)[0].to(X.dtype)
    # The square root of a finite X can exceed its dtype (σmax up to √N·max|X|), the inverse one too (1/σmin,
    # σ floored at eps·σmax: float16 X with a null space, whose floor takes float32's eps, or a subnormal
    # float32 X): both came back inf, silently.
    if opts.check and not is_traced(F) and not bool(torch.isfinite(F).all()):
        if inverse:
            raise _gram_inverse_overflow(X, opts.floor_eps(cdtype), cdtype)
        raise SvdgradError(
            f"(X Xᵀ)^(1/2) does not fit {X.dtype}: its largest entries are about σmax(X), up to √N·max|X| "
            f"= {math.sqrt(X.shape[-1]) * float(amax.max()):.3g} here ({describe(X)}). Compute in a wider dtype "
            f"(X.float() or X.double()) or scale X down; check=False returns the inf entries.")
    return F


def _gram_inverse_overflow(X: torch.Tensor, eps: float, cdtype: torch.dtype) -> SvdgradError:
    """The refusal of a (X Xᵀ)^(-1/2) beyond X's dtype, with the remedies that apply: a larger eps only where
    singular values were floored (a rank-deficient X, or d > N), a wider dtype below float64."""
    with torch.no_grad():
        sig = torch.linalg.svdvals(X.detach().to(torch.float64))  # (the error path only)
        live = sig[..., 0] > 0  # an all-zero X has no σmax to be relative to: its floor is absolute
        floored = bool(live.any()) and (X.shape[-2] > X.shape[-1] or bool(((sig[..., -1] < eps * sig[..., 0])
                                                                           & live).any()))
        ratio = float((sig[..., -1] / sig[..., 0])[live].min()) if bool(live.any()) else None
    zero = not bool(live.all())
    wider = _wider_cast(X.dtype, "X")
    remedies = ([f"compute in a wider dtype ({wider})"] if wider else []) + (
        ["pass a larger eps=... (the floor)"] if floored else [])
    return SvdgradError(
        f"(X Xᵀ)^(-1/2) does not fit {X.dtype}: its largest entries are about 1/σmin(X) ({describe(X)}"
        + (f", σmin/σmax = {ratio:.3g}" if ratio is not None else "") + ")"
        + (f", with σ floored at eps·σmax ({eps:.3g}) on a rank-deficient X or where d > N" if floored else "")
        + (", and an all-zero X has its σ floored at the absolute tiny^(1/4) of "
           f"{_kernels.coarser_dtype(_work_dtype(X.dtype), cdtype)}" if zero else "")
        + ". " + ("To compute it: " + "; ".join(remedies) + "; or pass" if remedies else "Pass")
        + " check=False to get the inf entries.")


def gram_sqrtm(X: torch.Tensor, *args, **options) -> torch.Tensor:
    """(X Xᵀ)^{1/2} for features X of shape (*, d, N), never from X Xᵀ rounded in X's dtype; gradient w.r.t. X.

    Covariance pooling never needs Σ = X Xᵀ itself, and forming it squares
    the condition number: in float32, Σ keeps eigenvalues down to about
    eps·λmax, the SVD of X down to eps²·λmax (and the float64 Gram matrix
    of ``algorithm="gram64"`` further down still).  The gradient
    2U[(Uᵀ sym(G) U) ∘ D] S Vᵀ with D_ij = 1/(σi + σj) is bounded by 2‖G‖
    even for rank-deficient X.  For a covariance pass Xc/√N with Xc the
    centred features.

    Options: ``eps`` (floor on singular values, relative: σ >= eps·σmax, so
    λ = σ² >= eps²·λmax; default the compute dtype's machine epsilon),
    ``compute_dtype``, ``check`` (finite entries), ``algorithm``:

    - ``"svd"``: the SVD of X (through the QR of Xᵀ when N > d) in the
      compute dtype; σ carries errors of about eps·σmax.
    - ``"gram64"``: for a float32 (or half) compute dtype only, X Xᵀ formed
      and eigendecomposed in float64, where float32 products are exact.
      σ = √λ then carries at most √eps64·σmax = 1e-8·σmax, below float32's
      SVD.  Measured: gradient errors 2.5–100× (median 4.7×) below the
      float32 SVD's in reports/condition_sweep (n = 16–256, κ(X Xᵀ) up to
      1e12, against the float64 X, whose rounding to float32 counts too);
      2–1800× against the reference of the float32 X itself (d = 8,
      N = 16).  Also faster than the SVD route, forward + backward (the
      ratio targets in reports/performance).
    - ``"auto"`` (default): ``"gram64"`` where it applies (compute dtype
      narrower than float64, a device with float64), else ``"svd"``.

    X is scaled by an exact power of two first, so any finite X works whose
    result fits the dtype (σmax(X) up to √N·max|X|; beyond it SvdgradError, or inf with check=False).
    """
    return _gram(X, False, "gram_sqrtm", args, **options)


def gram_inv_sqrtm(X: torch.Tensor, *args, **options) -> torch.Tensor:
    """(X Xᵀ)^{-1/2} for features X of shape (*, d, N), by the routes of ``gram_sqrtm`` (same options).

    D_ij = −1/(σi·σj·(σi + σj)).  Singular values below eps·σmax (a rank-
    deficient X, or d > N) are raised to it, so the result is finite and
    of size about 1/(eps·σmax) on the null space (the floor, or the
    decomposition's rounding noise there where that is larger).  Where that
    does not fit X's dtype (float16 X, computed in float32: 1/(eps32·σmax)
    ≈ 8e6/σmax), ``check=True`` raises SvdgradError; pass a larger ``eps``.
    """
    return _gram(X, True, "gram_inv_sqrtm", args, **options)


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
    if "method" in options:
        raise SvdgradError(f"svdgrad.eigh takes its K-rule as backward=...; received method={options['method']!r}. "
                           f"Write svdgrad.eigh(A, backward={options['method']!r}).")
    rule = get_k_rule(backward, **options)
    check_matrix(A)
    if A.shape[-1] == 0:  # n = 0: empty, as torch.linalg.eigh
        return A.diagonal(dim1=-2, dim2=-1).clone(), A.clone()  # (*, 0), (*, 0, 0), with A's graph
    # (the fold: X is A in its working dtype, S = 2^e·(X + Xᵀ) = sym(A)/4^k without a graph; Eigh applies the
    # law's factors to its derivatives itself, at order one)
    X, e, S, k, in_dtype, cdtype = _prepare(A, rule, fold=True)
    if e is None:  # an empty batch: X is T = A/(2·4^k) and nothing is folded
        S, e = cast(sym2(X.detach()), cdtype), torch.zeros_like(k)
    X = guard(X, rule.name, message=unsupported_message(
        f"svdgrad.eigh (backward={rule.name!r})", "torch.linalg.eigh is differentiable twice where the "
        "eigenvalues are distinct; for a matrix function use svdgrad.sqrtm(A, 'exact')."))
    # (the coarser dtype's eps: the eigenvalues' resolution, as for the PSD tolerance, ``_psd_tol``)
    L, U, Ls = apply(Eigh, X, S, e, k, rule, max(torch.finfo(in_dtype).eps, torch.finfo(cdtype).eps))
    if rule.check and rule.needs_positive:
        check_psd(Ls, psd_tol=_psd_tol(rule, in_dtype, cdtype), A=A, scale_exponent=k,
                  why=f"The {rule.name!r} K-rule expands 1/(λi-λj) in the ratio λmin/λmax, which needs "
                      f"λ >= 0; use backward='ordinary' or 'truncated' for an indefinite matrix.")
    L = L.to(in_dtype)
    if rule.check and not is_traced(L) and L.numel() and not bool(torch.isfinite(L).all()):
        raise SvdgradError(
            f"The eigenvalues of A overflow {in_dtype} (|λ| can reach n·max|A|; received max|A| = "
            f"{float(max_abs(A.detach().double()).max()):.3g}, {describe(A)}). "
            + ("Compute in torch.float64 or scale A down first." if in_dtype != torch.float64 else
               "They exceed float64's range: scale A down first (the eigenvectors do not depend on the scale).")
        )
    return L, U.to(in_dtype)
