"""Spectral functions f(A) = U f(Λ) Uᵀ: each a small object with f, f′ and a stable divided difference.

The eigen methods consume exactly these three and never special-case a
name.  The first divided difference f[λi, λj] = (f(λi) − f(λj))/(λi − λj)
(f′(λi) at a tie) is the Loewner matrix D of the Daleckii–Krein theorem
(Higham, *Functions of Matrices*, 2008, Thm 3.11): the Fréchet derivative
of A -> f(A) is X -> U[(UᵀXU) ∘ D]Uᵀ.  Evaluated as written, the quotient
loses all digits to cancellation when λi ≈ λj; each function below has a
closed form with no eigenvalue difference left to cancel.

Every function here acts on positive eigenvalues: the entry points floor
them at eps·λmax first (relative), so log, inverse square root and negative
powers stay finite on singular input: there they act on eps·λmax.

Each function also says how it scales (``rescale``): f(4^k·Â) from f(Â).
The entry points work on Â = A/4^k (entries of order 1, exact) and undo the
scaling with this law, so every function is right over the whole float range.
"""

from __future__ import annotations

import abc
import math
from dataclasses import dataclass
from typing import Callable, ClassVar

import torch

from ._errors import SvdgradError
from ._kernels import times_pow2, times_pow2_halves

LN4 = 2.0 * math.log(2.0)


def _ordered(Li: torch.Tensor, Lj: torch.Tensor):
    """(lo, hi, δ = hi − lo >= 0) elementwise; broadcasting (*, n, 1) with (*, 1, n) gives (*, n, n)."""
    lo, hi = torch.minimum(Li, Lj), torch.maximum(Li, Lj)
    return lo, hi, hi - lo


@dataclass(frozen=True)
class SpectralFunction(abc.ABC):
    """f on positive eigenvalues, with f′, the divided difference, and ∂f/∂p for parametrized f."""

    name: ClassVar[str] = ""
    #: Whether A may be scaled by 4^-k first (needs ``rescale``).
    scalable: ClassVar[bool] = True
    #: What the PSD error says about why the input must be PSD.
    psd_reason: ClassVar[str | None] = None
    #: Whether f(A) fits A's dtype for every finite PSD A (√ halves the exponent range, log shrinks it to
    #: a few hundred): the entry points then skip the check that the result, cast back from a wider compute
    #: dtype, is finite (``_api._check_result_fits``).
    result_fits_input: ClassVar[bool] = False

    @abc.abstractmethod
    def f(self, L: torch.Tensor, p=None) -> torch.Tensor:
        ...

    @abc.abstractmethod
    def df(self, L: torch.Tensor, p=None) -> torch.Tensor:
        ...

    @abc.abstractmethod
    def dd(self, Li: torch.Tensor, Lj: torch.Tensor, p=None) -> torch.Tensor:
        """f[λi, λj], symmetric, f′ at ties; Li (*, n, 1), Lj (*, 1, n) -> (*, n, n)."""

    def dfdp(self, L: torch.Tensor, p) -> torch.Tensor:
        raise SvdgradError(f"{self.name} has no parameter p.")

    @abc.abstractmethod
    def rescale(self, F: torch.Tensor, k: torch.Tensor, p=None) -> torch.Tensor:
        """f(4^k·Â) from F = f(Â), k (*) per matrix."""

    #: Whether ``output_pow2`` may leave the range of 2^e in one factor (then it is applied in two halves).
    wide_pow2: ClassVar[bool] = False

    def output_pow2(self, k: torch.Tensor, p=None) -> torch.Tensor | None:
        """An integer exponent e (*) with f(4^k·Â) = 2^e·f(Â)·r, r of order one (``rescale_remainder``),
        when the law is that factor (eigen methods fold 2^e into the spectrum); else None."""
        return None

    def spectral_shift(self, L: torch.Tensor, p=None) -> torch.Tensor | None:
        """An integer exponent a (*) per matrix at which the methods evaluate f instead, at L·2^-a (floored,
        ascending L (*, n)), for a function whose values leave the range otherwise; None: at L itself."""
        return None

    def rescale_remainder(self, F: torch.Tensor, k: torch.Tensor, p, pow2: torch.Tensor) -> torch.Tensor:
        """f(4^k·Â) from F = 2^pow2·f(Â) (pow2 from ``output_pow2``): F itself where 2^pow2 is the whole law."""
        return F

    def gradient_pow2(self, k: torch.Tensor, p=None) -> torch.Tensor | None:
        """e (*) with d(rescale(F̂)) = 2^e·dF̂: the factor the output's scaling law puts on a derivative
        with respect to A (a tensor p is held fixed), or None."""
        return None

    def loewner(self, L: torch.Tensor, p=None) -> torch.Tensor:
        """D (*, n, n) for ascending eigenvalues L (*, n)."""
        return self.dd(L[..., :, None], L[..., None, :], p)


@dataclass(frozen=True)
class Sqrt(SpectralFunction):
    """√λ; f[λi, λj] = 1/(√λi + √λj): no difference at all."""

    name: ClassVar[str] = "sqrt"
    psd_reason: ClassVar[str] = "The square root of an indefinite matrix is not real."
    result_fits_input: ClassVar[bool] = True

    def f(self, L, p=None):
        return L.sqrt()

    def df(self, L, p=None):
        return 0.5 / L.sqrt()

    def dd(self, Li, Lj, p=None):
        return (Li.sqrt() + Lj.sqrt()).reciprocal()

    def rescale(self, F, k, p=None):
        return times_pow2(F, k)

    def output_pow2(self, k, p=None):
        return k

    def gradient_pow2(self, k, p=None):
        return k


@dataclass(frozen=True)
class InvSqrt(SpectralFunction):
    """1/√λ; f[λi, λj] = −1/(√λi·√λj·(√λi + √λj))."""

    name: ClassVar[str] = "inv_sqrt"
    psd_reason: ClassVar[str] = "The inverse square root of an indefinite matrix is not real."

    def f(self, L, p=None):
        return L.rsqrt()

    def df(self, L, p=None):
        return -0.5 * L.rsqrt() / L

    def dd(self, Li, Lj, p=None):
        si, sj = Li.sqrt(), Lj.sqrt()
        return -((si * sj) * (si + sj)).reciprocal()

    def rescale(self, F, k, p=None):
        return times_pow2(F, -k)

    def output_pow2(self, k, p=None):
        return -k

    def gradient_pow2(self, k, p=None):
        return -k


@dataclass(frozen=True)
class Log(SpectralFunction):
    """log λ; f[λi, λj] = log1p(δ/lo)/δ with lo = min, δ = |λi − λj| (1/λ at ties).

    δ/lo >= 0, so log1p never sees the cancellation of log hi − log lo, and
    log1p(t)/δ -> 1/lo smoothly as δ -> 0.
    """

    name: ClassVar[str] = "log"
    psd_reason: ClassVar[str] = "The logarithm of an indefinite matrix is not real."
    result_fits_input: ClassVar[bool] = True

    def f(self, L, p=None):
        return L.log()

    def df(self, L, p=None):
        return L.reciprocal()

    def dd(self, Li, Lj, p=None):
        lo, hi, delta = _ordered(Li, Lj)
        tie = delta == 0
        safe = torch.where(tie, torch.ones_like(delta), delta)
        return torch.where(tie, lo.reciprocal(), torch.log1p(safe / lo) / safe)

    def gradient_pow2(self, k, p=None):
        return torch.zeros_like(k)  # log(4^k·Â) = log Â + k·log 4·I: the derivative is unscaled

    def rescale(self, F, k, p=None):
        eye = torch.eye(F.shape[-1], dtype=F.dtype, device=F.device)
        return F + (k.to(F.dtype) * LN4)[..., None, None] * eye


@dataclass(frozen=True)
class Power(SpectralFunction):
    """λ^p; f[λi, λj] = lo^p·expm1(p·log1p(δ/lo))/δ (p·λ^(p−1) at ties); ∂f/∂p = λ^p·log λ.

    hi^p − lo^p = lo^p·((1 + δ/lo)^p − 1), and expm1(p·log1p(t)) keeps
    every digit of that difference for small t.
    """

    name: ClassVar[str] = "power"
    psd_reason: ClassVar[str] = "A real power of an indefinite matrix is not real."

    def f(self, L, p=None):
        return L.pow(p)

    def df(self, L, p=None):
        return p * L.pow(p - 1)

    def dd(self, Li, Lj, p=None):
        lo, hi, delta = _ordered(Li, Lj)
        return self._quotient(lo, delta, lo.pow(p), hi.pow(p), p * lo.pow(p - 1), p)

    def loewner(self, L, p=None):
        # ``dd`` over every pair, with the powers taken once per eigenvalue (a pow of an n × n tensor costs
        # about as much as a batched matmul: four of them were a third of powm's backward at n = 64) and
        # picked per pair: lo^p is the power of whichever of λi, λj is lower, the same number dd computes.
        Li, Lj = L[..., :, None], L[..., None, :]
        lo, hi, delta = _ordered(Li, Lj)
        phi, dphi = L.pow(p), p * L.pow(p - 1)
        i_low = Li <= Lj
        lo_p = torch.where(i_low, phi[..., :, None], phi[..., None, :])
        hi_p = torch.where(i_low, phi[..., None, :], phi[..., :, None])
        # (at a tie λi = λj, so p·λi^(p−1) is p·lo^(p−1) itself: no pick needed)
        return self._quotient(lo, delta, lo_p, hi_p, dphi[..., :, None], p)

    def _quotient(self, lo, delta, lo_p, hi_p, dlo_p, p):
        """f[lo, hi] from δ = hi − lo and the powers lo^p, hi^p, p·lo^(p−1) (``dd``)."""
        tie = delta == 0
        safe = torch.where(tie, torch.ones_like(delta), delta)
        u = p * torch.log1p(safe / lo)  # log((hi/lo)^p)
        # |u| < 1: the expm1 form keeps the digits of hi^p − lo^p.  Beyond, (hi/lo)^p >= e (or <= 1/e) leaves
        # little to cancel, and the plain difference stays finite where expm1(u) overflows while lo^p underflows
        # (p = 7 at κ = 1e6 in float32 gave 0·inf = NaN).
        near = u.abs() < 1.0
        quot = torch.where(near, lo_p * torch.expm1(torch.where(near, u, torch.zeros_like(u))), hi_p - lo_p) / safe
        return torch.where(tie, dlo_p, quot)

    def dfdp(self, L, p):
        return L.pow(p) * L.log()

    def gradient_pow2(self, k, p=None):
        # 4^(k·p): the factor on a derivative with respect to A (p held fixed; a tensor p's own derivative
        # is taken elsewhere, see ``_api._narrow_dp``)
        return 2.0 * k * (p.detach().to(k.dtype) if isinstance(p, torch.Tensor) else p)

    wide_pow2: ClassVar[bool] = True

    def output_pow2(self, k, p=None):
        # 4^(k·p) = 2^(2kp) = 2^e·2^r with e = round(2kp), |r| <= 1/2: 2^e joins the spectrum (in two
        # halves: |e| may exceed the exponent range where the result does not), 2^r is ``rescale_remainder``
        return torch.round(2.0 * k * (p.detach().to(k.dtype) if isinstance(p, torch.Tensor) else p))

    def spectral_shift(self, L, p=None):
        # λ^p at Â's eigenvalues (in [eps·λmax, 4n]) leaves the range for a large |p| (float32: 8^50 at
        # p = 50; (2^-25)^-6 at p = -6) where A^p need not.  Where the dominant value, the largest λ^p
        # (λmax's for p > 0, the floored λmin's for p < 0), is past 2^±(range/2), the methods take
        # λ·2^-a with a = round(log2 of the dominant λ) instead: its power is then within 2^±(|p|/2).
        # Elsewhere a = 0 (the same bits as no shift).
        pd = p.detach().to(L.dtype) if isinstance(p, torch.Tensor) else p
        if isinstance(pd, torch.Tensor):  # (no synchronization: p may be batched by vmap)
            t = torch.log2(torch.where(pd > 0, L[..., -1], L[..., 0]))  # (*)
        else:
            t = torch.log2(L[..., -1] if pd > 0 else L[..., 0])
        half = math.log2(torch.finfo(L.dtype).max) / 2
        return torch.where((t * pd).abs() > half, torch.round(t), torch.zeros_like(t))

    def rescale_remainder(self, F, k, p, pow2):
        # 2^(2kp − e), of order one; differentiable in p when p is a tensor that requires grad (its
        # derivative 2k·ln2 is the scaling law's part of ∂F/∂p), formed in float64 (2kp − e cancels)
        r = 2.0 * k.to(torch.float64) * (p.to(torch.float64) if isinstance(p, torch.Tensor) else p) - pow2.to(
            torch.float64)
        return torch.exp2(r).to(F.dtype)[..., None, None] * F

    def rescale(self, F, k, p=None):
        # 4^(k·p) = 2^(2kp), as 2^r·2^e (``output_pow2``): no factor over- or underflows where F·4^(kp) does not
        e = self.output_pow2(k, p)
        return times_pow2_halves(self.rescale_remainder(F, k, p, e), e)


def _user_result(out, shape, like: torch.Tensor, what: str) -> torch.Tensor:
    """A user's f, df or dd result, checked: a tensor of exactly ``shape`` (a broadcastable one of another
    shape, say (1,) from f = lambda x: x[..., :1], would spread silently over every eigenvalue), real, on the
    eigenvalues' device, and taken in their dtype.

    A real result of another dtype (f computed in float64 for float32 eigenvalues, an integer or a bool
    one: f = λ > 1 is a spectral projector) is cast to theirs; in the kernels a wider one failed ("expected
    m1 and m2 to have the same dtype"), and a bool one in the fallback divided difference.  A complex result
    (torch.sqrt of a complex λ) has no real matrix function: refused."""
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != tuple(shape):
        got = f"shape={tuple(out.shape)}" if isinstance(out, torch.Tensor) else f"a {type(out).__name__}"
        raise SvdgradError(
            f"Expected {what} of svdgrad.matrix_function to return a tensor of shape {tuple(shape)} (one value per "
            f"eigenvalue, elementwise); received {got} for eigenvalues of shape {tuple(like.shape)}. Write f with "
            f"elementwise torch operations, e.g. torch.exp."
        )
    if out.dtype.is_complex:
        raise SvdgradError(
            f"Expected {what} of svdgrad.matrix_function to return a real tensor; received dtype={out.dtype} for "
            f"eigenvalues of dtype {like.dtype}. svdgrad computes real matrix functions of symmetric matrices: "
            f"return the real values (e.g. torch.sqrt(λ.clamp_min(0)), or .real where the imaginary part is zero)."
        )
    if out.device != like.device:
        raise SvdgradError(
            f"Expected {what} of svdgrad.matrix_function to return a tensor on the eigenvalues' device "
            f"({like.device}); received {out.device}. Return it with .to(λ.device), or compute it with torch "
            f"operations on λ."
        )
    return out if out.dtype == like.dtype else out.to(like.dtype)


@dataclass(frozen=True)
class UserFunction(SpectralFunction):
    """A user's f and f′ (callables on eigenvalue tensors), with an optional divided difference.

    Without ``divided``, f[λi, λj] = ∫₀¹ f′(λj + t·δ) dt is the quotient
    (f(λi) − f(λj))/δ or Simpson's rule on f′, (f′(lo) + 4f′(mid) + f′(hi))/6,
    whichever has the smaller estimated error for that pair: the quotient's
    rounding error is about eps·(|f(λi)| + |f(λj)|)/δ; Simpson's is below
    the midpoint rule's, estimated by |Simpson − f′(mid)| (about |f‴|·δ²/24).
    The errors depend on f, not on λ alone: a switch at a gap relative to λ
    (the earlier rule, δ < eps^(1/3)·max|λ|) took f′(mid) over a gap of 6 for
    sin at λ = 1e6 (8 % off) and of 0.2 for exp at λ = 40 in float32 (6.5e-4).
    Where it picks Simpson the gap is small against f's own variation, where
    Simpson is exact to O(δ⁴); ties give f′ exactly (all three points equal).
    A is not rescaled: f sees A's own eigenvalues.
    """

    name: ClassVar[str] = "user"
    psd_reason: ClassVar[str] = "svdgrad.matrix_function floors the eigenvalues at eps·λmax and needs a PSD matrix."
    scalable: ClassVar[bool] = False
    fn: Callable = None
    dfn: Callable = None
    divided: Callable | None = None

    def f(self, L, p=None):
        return _user_result(self.fn(L), L.shape, L, "f(λ)")

    def df(self, L, p=None):
        return _user_result(self.dfn(L), L.shape, L, "df(λ)")

    def rescale(self, F, k, p=None):
        return F  # not scalable: the entry point never scales A for a user's f (k = 0)

    def dd(self, Li, Lj, p=None):
        if self.divided is not None:
            shape = torch.broadcast_shapes(Li.shape, Lj.shape)
            return _user_result(self.divided(Li, Lj), shape, Li, "dd(λi, λj)")
        eps = torch.finfo(Li.dtype).eps
        lo, hi, delta = _ordered(Li, Lj)
        f_hi, f_lo = (_user_result(self.fn(x), x.shape, x, "f(λ)") for x in (hi, lo))
        mid = lo + 0.5 * delta  # (0.5·(lo + hi) overflows above max/2)
        d_lo, d_mid, d_hi = (_user_result(self.dfn(x), x.shape, x, "df(λ)") for x in (lo, mid, hi))
        simpson = (d_lo + 4.0 * d_mid + d_hi) / 6.0
        tied = delta == 0
        quotient = (f_hi - f_lo) / torch.where(tied, torch.ones_like(delta), delta)
        # (an inf or NaN estimate compares False: the quotient stays where Simpson's estimate is not finite)
        quotient_error = eps * (f_hi.abs() + f_lo.abs()) / delta  # inf at ties
        use_simpson = tied | ((simpson - d_mid).abs() < quotient_error)
        return torch.where(use_simpson, simpson, quotient)


_REGISTRY: dict[str, SpectralFunction] = {fn.name: fn for fn in (Sqrt(), InvSqrt(), Log(), Power())}


def functions() -> tuple[str, ...]:
    """Registered spectral function names, in a fixed order."""
    return tuple(_REGISTRY)


def get_function(name: str) -> SpectralFunction:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise SvdgradError(f"Unknown function {name!r}. Expected one of {', '.join(functions())}.") from None
