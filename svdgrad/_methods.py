"""The backward methods: small frozen dataclasses that carry their settings.

One registry maps each public name to its class; ``svdgrad.methods()``
lists the names and the contract test suite is parametrized over it.
"""

from __future__ import annotations

import abc
import dataclasses
import functools
import math
import numbers
from dataclasses import dataclass
from typing import ClassVar

import torch

from . import _kernels, _matmul_only, _newton_schulz
from ._errors import SvdgradError
from ._functions import (ExactSqrtOp, LyapunovRoot, NewtonSchulzManual, SpectralOp, _shifted, apply, eigh_or_raise,
                         symmetrized)
from ._spectral import InvSqrt, SpectralFunction, Sqrt
from ._pade import pade_coefficients


def _is_real(v) -> bool:
    """A real Python or NumPy number (np.float32 too) in the float range; not a bool (True would pass as 1), not NaN."""
    if not isinstance(v, numbers.Real) or isinstance(v, bool):
        return False
    try:
        return not math.isnan(float(v))
    except OverflowError:  # an int beyond the float range
        return False


def _is_int(v) -> bool:
    """A Python or NumPy integer, not a bool."""
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _received(field: str, v) -> str:
    """``field=v`` for a message, with v's type where it is not a plain number ('1e5' (str))."""
    return f"{field}={v!r}" + ("" if type(v) in (int, float, type(None)) else f" ({type(v).__name__})")


def _plain_numbers(m, *fields: str) -> None:
    """Store validated NumPy scalars as Python int/float, which tensors and torch.compile take as constants."""
    for field in fields:
        v = getattr(m, field)
        if v is not None and type(v) not in (int, float):
            object.__setattr__(m, field, int(v) if isinstance(v, numbers.Integral) else float(v))


@dataclass(frozen=True, kw_only=True)
class Method(abc.ABC):
    """Options every method shares.

    eps:
        Eigenvalue floor, relative: eigenvalues below ``eps·λmax`` are raised
        to it before sqrt (they are rounding noise of the eigensolver).
        ``None`` (default) = machine epsilon of the compute dtype.  Eigen
        methods only; Newton–Schulz has no eigenvalues and ignores it.
    compute_dtype:
        dtype to compute in, e.g. ``torch.float64`` for float32 input, as the
        ICCV21 paper does; the result is cast back to the input dtype.
        ``None`` = the input dtype (float32 for float16/bfloat16).
    symmetry_tol:
        Largest accepted ``||A - A^T||_F / ||A||_F``; ``None`` = sqrt(eps)
        of the input dtype.  Accepted input is symmetrized.
    psd_tol:
        Largest accepted negative eigenvalue, relative: ``λmin >= -psd_tol·λmax``;
        ``None`` = sqrt(eps) of the coarser of input and compute dtype.
    check:
        Run the value checks (finite, symmetric, PSD).  They are skipped
        automatically under torch.func transforms and torch.compile.
    """

    name: ClassVar[str] = ""

    eps: float | None = None
    compute_dtype: torch.dtype | None = None
    symmetry_tol: float | None = None
    psd_tol: float | None = None
    check: bool = True

    def __post_init__(self):
        if self.eps is not None and not (_is_real(self.eps) and 0.0 <= self.eps < 1.0):
            raise SvdgradError(f"Expected a number 0 <= eps < 1 for {self.name}; received "
                               f"{_received('eps', self.eps)}. Use None for the machine epsilon of the compute dtype.")
        for field in ("symmetry_tol", "psd_tol"):
            v = getattr(self, field)
            if v is not None and not (_is_real(v) and 0.0 <= v < math.inf):
                raise SvdgradError(
                    f"Expected a finite number {field} >= 0 (relative to the matrix norm) for {self.name}; "
                    f"received {_received(field, v)}. Use None for the default sqrt(eps) of the input dtype."
                )
        if type(self.check).__module__ == "numpy" and type(self.check).__name__ in ("bool", "bool_"):
            object.__setattr__(self, "check", bool(self.check))  # (a NumPy bool: stored as a Python one)
        if not isinstance(self.check, bool):
            raise SvdgradError(f"Expected check=True or check=False for {self.name}; received check={self.check!r}.")
        if self.compute_dtype is not None and self.compute_dtype not in (torch.float32, torch.float64):
            raise SvdgradError(
                f"Expected compute_dtype torch.float32 or torch.float64; received "
                f"{self.compute_dtype!r}. Use None to compute in the input dtype."
            )
        _plain_numbers(self, "eps", "symmetry_tol", "psd_tol")

    @property
    def double_differentiable(self) -> bool:
        """Whether the backward itself can be differentiated for every function (else double backward raises)."""
        return False

    def differentiable_twice(self, fn) -> bool:
        """Whether the backward of ``fn`` (a function name or object) can be differentiated once more."""
        return self.double_differentiable

    #: Whether ``apply`` returns the eigenvalues (then the PSD check uses them;
    #: otherwise ``_validate.psd_violations`` decides the same rule by Cholesky).
    has_eigenvalues: ClassVar[bool] = True

    #: Whether the forward computes f(A) to working precision (False: an approximation by design).
    forward_is_exact: ClassVar[bool] = True

    @property
    def backward_is_derivative(self) -> bool:
        """Whether the backward is the derivative of this forward (then gradcheck applies).

        False for rules that are, by design, the derivative of something else:
        the Lyapunov backward (exact root at the computed value), power
        iteration (a truncated series).
        """
        return True

    #: Names of the spectral functions this method computes (``svdgrad.functions()``);
    #: None = every function, including a user's (``svdgrad.matrix_function``).
    functions: ClassVar[tuple[str, ...] | None] = None

    def supports(self, fn: SpectralFunction) -> bool:
        return self.functions is None or fn.name in self.functions

    def floor_eps(self, dtype: torch.dtype) -> float:
        return torch.finfo(dtype).eps if self.eps is None else self.eps

    def spectrum(self, fn: SpectralFunction, L: torch.Tensor, p=None) -> torch.Tensor:
        """φ(λ) from floored ascending eigenvalues L (*, n) (TopN clamps them first)."""
        return fn.f(L, p)

    def spectrum_dp(self, fn: SpectralFunction, L: torch.Tensor, p) -> torch.Tensor:
        """∂φ/∂p (*, n) for a parametrized function (the power)."""
        return fn.dfdp(L, p)

    #: Whether ``apply`` can fold an output factor 2^pow2 into what it computes anyway (eigen methods:
    #: the spectrum; newton_schulz: its post-compensation factor), instead of a pass over F and one
    #: over the gradient.
    folds_output_scale: ClassVar[bool] = False

    #: Whether ``apply`` takes ``in_pow2`` (then the entry points may pass A itself with its scale
    #: 2^in_pow2 instead of forming T, ``_api._prepare``): the factor joins the vjp and the jvp, which
    #: saves a pass over A forward and one over the gradient backward.
    folds_input_scale: ClassVar[bool] = False

    #: Whether the rules take every cotangent and tangent at order one themselves (``_functions._at_order_one``),
    #: so that the scaling law's factors meet them in one exponent.  Otherwise the entry points put the
    #: scaling pair around the method in A's own dtype (``_api._scaled_pair``).
    scales_cotangent: ClassVar[bool] = False

    @abc.abstractmethod
    def apply(self, T: torch.Tensor, fn: SpectralFunction, p=None, pow2=None, S=None):
        """2^pow2·f(A) for A = T + Tᵀ in the compute dtype; returns (F, eigenvalues of A or None).

        The entry points pass T = A/(2·4^k) (``_api._prepare``): the symmetrization is
        part of the method, so the eigen methods' backward forms G + Gᵀ once and nothing
        else.  ``pow2`` (*) is used only by methods with ``folds_output_scale`` (the
        entry points pass None to the others).  ``S`` is T + Tᵀ without a graph if the
        caller has it (the eigen methods use its values and T's graph), else None.
        Methods with ``folds_input_scale`` take a keyword ``in_pow2`` (*) as well: then
        A = 2^in_pow2·(T + Tᵀ), and S (given) is that matrix.
        """


# ---------------------------------------------------------------------------
# Eigen methods: eigh forward, Z = U φ(L) U^T.
# ---------------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class _EigenMethod(Method):
    """eigh forward F = U φ(Λ) Uᵀ; the backward is the Loewner map with the method's D.

    Every rule here has a symmetric D, so the vjp and the jvp are the same
    map (``_kernels.loewner_map``), which makes them adjoint by construction.
    """

    @abc.abstractmethod
    def loewner(self, fn: SpectralFunction, L: torch.Tensor, p=None) -> torch.Tensor:
        """D (*, n, n), symmetric: the method's stand-in for f[λi, λj]."""

    folds_output_scale: ClassVar[bool] = True
    folds_input_scale: ClassVar[bool] = True
    scales_cotangent: ClassVar[bool] = True

    def backward_rule(self, fn, L, U, S, p=None, pow2=None):
        """The map for floored eigenvalues L, eigenvectors U and a symmetric S, times 2^pow2 (*) if given.

        ``SpectralOp`` passes S = G + Gᵀ (the vjp with respect to T, A = T + Tᵀ), scaled to order one.
        """
        D = self.loewner(fn, L, p)
        return _kernels.loewner_map(U, S, D if pow2 is None else _kernels.times_pow2(D, pow2))

    def jvp_rule(self, fn, L, U, S, p=None, pow2=None):
        """dF for the symmetric tangent S = dT + dTᵀ: the same map (D is symmetric)."""
        return self.backward_rule(fn, L, U, S, p, pow2)

    def apply(self, T, fn, p=None, pow2=None, S=None, in_pow2=None):
        F, L, _, _ = apply(SpectralOp, T, p, self, fn, pow2, S, in_pow2)
        return F, L


@dataclass(frozen=True, kw_only=True)
class Exact(_EigenMethod):
    """eigh forward, Daleckii–Krein backward with cancellation-free divided differences.

    D_ij = f[λi, λj] in closed form (√: 1/(√λi + √λj); see ``_spectral``):
    no eigenvalue differences, exact and finite at ties.  Eigenvalues below
    the floor (``eps``) are raised to it and the backward is taken at the
    floored matrix (straight-through for the floor).
    """

    name: ClassVar[str] = "exact"

    def loewner(self, fn, L, p=None):
        return fn.loewner(L, p)

    def differentiable_twice(self, fn) -> bool:
        return (fn == "sqrt") if isinstance(fn, str) else isinstance(fn, Sqrt)

    def apply(self, T, fn, p=None, pow2=None, S=None, in_pow2=None):
        if isinstance(fn, Sqrt):  # differentiable twice (the second-order Daleckii–Krein formula)
            F, L, _, _, _ = apply(ExactSqrtOp, T, p, self, fn, pow2, S, in_pow2)
            return F, L
        return super().apply(T, fn, p, pow2, S, in_pow2)


@dataclass(frozen=True, kw_only=True)
class _KRuleMethod(_EigenMethod):
    """Matrix-backprop backward (CVPR20 eq. 6) with a replaceable K: D_ij = (f(λi) − f(λj))·K_ij, D_ii = f′(λi)."""

    #: Whether ``K`` needs positive eigenvalues (ratio form x = λmin/λmax).
    needs_positive: ClassVar[bool] = False

    @abc.abstractmethod
    def K(self, L: torch.Tensor) -> torch.Tensor:
        """The (*, n, n) antisymmetric replacement of 1/(λi - λj) for ascending L (*, n)."""

    def loewner(self, fn, L, p=None):
        return _kernels.k_rule_loewner(fn.f(L, p), fn.df(L, p), self.K(L))

    def eigh_K(self, L: torch.Tensor, resolution: float = 0.0) -> torch.Tensor:
        """K for ``svdgrad.eigh``'s backward and jvp, where it multiplies any eigenvector cotangent (not, as
        in ``loewner``, differences f(λi) − f(λj) of the same floored eigenvalues): ``K`` unless a rule says.
        ``resolution``: the relative resolution of the eigenvalues, the eps of the coarser of the input and
        compute dtypes (a float16 input computed in float32 carries float16's rounding)."""
        return self.K(L)

    def _positive(self, L):
        return L.clamp_min(_kernels.eigenvalue_floor(L, self.floor_eps(L.dtype)))


@dataclass(frozen=True, kw_only=True)
class Ordinary(_KRuleMethod):
    """K_ij = 1/(λi - λj).  Faithfully unstable: inf/NaN gradients at exact ties."""

    name: ClassVar[str] = "ordinary"

    def K(self, L):
        return _kernels.ordinary_K(L)


@dataclass(frozen=True, kw_only=True)
class Truncated(_KRuleMethod):
    """K clipped to |K_ij| <= threshold (default 1e10, as the ICCV21 reference).

    K is that of the matrix scaled to order one (A/4^k, ``_kernels.scale_exponent``), so the threshold
    is relative to max|A|: gaps below about max|A|/threshold are clipped, whatever A's units (the
    reference applies it in A's own units), and the method is scale-equivariant like the others.
    """

    name: ClassVar[str] = "truncated"
    threshold: float = 1e10

    def __post_init__(self):
        super().__post_init__()
        if not (_is_real(self.threshold) and 0 < self.threshold < math.inf):
            raise SvdgradError(f"Expected a finite number threshold > 0 for truncated; received "
                               f"{_received('threshold', self.threshold)}.")
        _plain_numbers(self, "threshold")

    def K(self, L):
        return _kernels.truncated_K(L, self.threshold)


@dataclass(frozen=True, kw_only=True)
class Taylor(_KRuleMethod):
    """1/(1-x) replaced by Σ_{k=0}^{degree} x^k (default degree 100, as the ICCV21 reference)."""

    name: ClassVar[str] = "taylor"
    needs_positive: ClassVar[bool] = True
    degree: int = 100

    def __post_init__(self):
        super().__post_init__()
        _check_degree(self, "degree")

    def K(self, L):
        return _kernels.taylor_K(self._positive(L), self.degree)


@dataclass(frozen=True, kw_only=True)
class Pade(_KRuleMethod):
    """1/(1-x) replaced by its [num_degree/den_degree] Padé approximant P/Q (default [50/50]).

    Coefficients come from exact rational arithmetic (see ``_pade``); for
    1/(1-x) the approximant reduces to 1/(1-x) itself, so this method equals
    ``ordinary`` except at the pole x = 1 (exact ties), where 1 - x is
    floored at ``pole_gap`` (``None`` = machine eps of the compute dtype),
    which keeps K finite: |K_ij| <= 1/(pole_gap·λmax).
    """

    name: ClassVar[str] = "pade"
    needs_positive: ClassVar[bool] = True
    num_degree: int = 50
    den_degree: int = 50
    pole_gap: float | None = None

    def __post_init__(self):
        super().__post_init__()
        _check_degree(self, "num_degree")
        _check_degree(self, "den_degree")
        if self.pole_gap is not None and not (_is_real(self.pole_gap) and 0 < self.pole_gap < 1):
            raise SvdgradError(f"Expected a number 0 < pole_gap < 1 (or None) for pade; received "
                               f"{_received('pole_gap', self.pole_gap)}.")
        _plain_numbers(self, "pole_gap")
        object.__setattr__(self, "coefficients", pade_coefficients(self.num_degree, self.den_degree))

    #: (p, q), lowest order first, reduced; set once in __post_init__ so that
    #: no cached call runs inside traced code (torch.compile warned about the
    #: lru_cache and took 83 s to compile ``pade``).
    coefficients: tuple = dataclasses.field(init=False, repr=False, compare=False)

    def _gap(self, dtype: torch.dtype) -> float:
        eps = torch.finfo(dtype).eps
        return eps if self.pole_gap is None else max(self.pole_gap, eps)

    def K(self, L):
        p, q = self.coefficients
        return _kernels.pade_K(self._positive(L), p, q, self._gap(L.dtype))

    def eigh_K(self, L, resolution=0.0):
        """``K`` within its documented bound |K_ij| <= 1/(g·λmax), λmax the matrix's largest eigenvalue and
        g the larger of pole_gap and ``resolution`` (the coarser dtype's eps).

        The pole gap is relative to each pair, so two eigenvalues raised to the floor eps·λmax (the null space
        of a rank-deficient covariance: rounding noise) got a gap of eps²·λmax, |K| up to 1/(eps²·λmax).  In a
        matrix function that K meets f(λi) − f(λj) = 0 of the same floored pair; in ``svdgrad.eigh`` it meets
        the eigenvector cotangent, which carries the unfloored eigenvalues, and the gradient of a smooth loss
        came out 1e15 too large (float64; inf in float16).  Differences below pole_gap·λmax are below the
        eigendecomposition's own resolution (eps·λmax), so K is held to the bound there.  Where the input is
        coarser than the compute dtype, its own rounding (eps_in·λmax, some of it negative and floored to ties)
        is the resolution: with the compute dtype's eps the gradient still grew by eps_in/eps_c (5e6 for float32
        computed in float64).
        """
        p, q = self.coefficients
        gap, Lp = self._gap(L.dtype), self._positive(L)
        bound = (Lp[..., -1:, None] * max(gap, resolution)).reciprocal_()  # (*, 1, 1)
        return _kernels.pade_K(Lp, p, q, gap).clamp_(-bound, bound)


@dataclass(frozen=True, kw_only=True)
class TopN(_EigenMethod):
    """Keep the largest eigenvalues, raise the rest to the smallest kept one.

    keep:
        Fraction of n to keep, in (0, 1]; the count is ceil(keep·n)
        (default 0.8: the ICCV21 reference drops the 50 smallest of 256).
    keep_count:
        Absolute count instead (clipped to n); overrides ``keep``.

    Conditioning becomes λmax/λ_k.  The backward is the exact gradient of
    this function, with divided differences evaluated stably (finite at ties).
    """

    name: ClassVar[str] = "topn"
    forward_is_exact: ClassVar[bool] = False  # a different function: the small eigenvalues are raised
    keep: float = 0.8
    keep_count: int | None = None

    def __post_init__(self):
        super().__post_init__()
        if not (_is_real(self.keep) and 0.0 < self.keep <= 1.0):
            raise SvdgradError(f"Expected a number 0 < keep <= 1 (a fraction of n) for topn; received "
                               f"{_received('keep', self.keep)}. Use keep_count=... for an absolute number.")
        if self.keep_count is not None and not (_is_int(self.keep_count) and self.keep_count >= 1):
            raise SvdgradError(f"Expected an integer keep_count >= 1 (or None) for topn; received "
                               f"{_received('keep_count', self.keep_count)}.")
        _plain_numbers(self, "keep", "keep_count")

    def kept(self, n: int) -> int:
        if self.keep_count is not None:
            return min(self.keep_count, n)
        return max(1, min(n, math.ceil(self.keep * n - 1e-9)))

    def spectrum(self, fn, L, p=None):
        return fn.f(_kernels.topn_clamp(L, self.kept(L.shape[-1])), p)

    def spectrum_dp(self, fn, L, p):
        return fn.dfdp(_kernels.topn_clamp(L, self.kept(L.shape[-1])), p)

    def loewner(self, fn, L, p=None):
        return _kernels.topn_loewner(fn, L, self.kept(L.shape[-1]), p)

    def backward_rule(self, fn, L, U, S, p=None, pow2=None):
        return _scaled(_kernels.topn_map(fn, L, U, S, self.kept(L.shape[-1]), p, adjoint=True), pow2)

    def jvp_rule(self, fn, L, U, S, p=None, pow2=None):
        return _scaled(_kernels.topn_map(fn, L, U, S, self.kept(L.shape[-1]), p, adjoint=False), pow2)


def _scaled(X: torch.Tensor, pow2) -> torch.Tensor:
    return X if pow2 is None else _kernels.times_pow2(X, pow2)


# ---------------------------------------------------------------------------
# Newton–Schulz.
# ---------------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class NewtonSchulz(Method):
    """iSQRT-COV (seed 002 sect. 2): an approximate square root, and inverse square root.

    The coupled iteration carries both roots: Y -> Ã^{1/2} and Z -> Ã^{-1/2},
    so ``sqrtm`` returns √c·Y and ``inv_sqrtm`` returns Z/√c (IterNorm, CVPR19).

    iterations:
        Number of coupled iterations (default 5, as every shipped iSQRT-COV model).
    normalization:
        ``"trace"`` (the paper) or ``"frobenius"`` (smaller forward error).
    backward:
        ``"manual"`` (default; seed 002 eqs. 9-12 with the transposes kept)
        or ``"autograd"`` (through the iterations).  Both make the same 36
        matmuls for 5 iterations and give the same gradient of the
        approximation; manual measured faster (reports/performance), while
        autograd also supports double backward.  ``"lyapunov"``: the exact
        gradient of the square root at the computed output, solved by the
        coupled matrix-sign iteration (``_matmul_only``), which separates
        the forward's error from the backward rule's.
    tol, max_iterations:
        Stopping rule of the ``"lyapunov"`` backward (default 100·eps of the
        compute dtype, 100 iterations; non-convergence is a ConvergenceWarning).

    ``eps`` is not used.  The PSD check applies the rule of the eigen
    methods, λmin >= -psd_tol·λmax, by Cholesky factorizations shifted by
    psd_tol times an estimate of λmax (``_validate.psd_violations``), with
    no eigendecomposition except for matrices right at the boundary.
    """

    name: ClassVar[str] = "newton_schulz"
    has_eigenvalues: ClassVar[bool] = False
    forward_is_exact: ClassVar[bool] = False
    functions: ClassVar[tuple[str, ...]] = ("sqrt", "inv_sqrt")
    iterations: int = 5
    normalization: str = "trace"
    backward: str = "manual"
    tol: float | None = None
    max_iterations: int = 100

    def __post_init__(self):
        super().__post_init__()
        _check_degree(self, "iterations", 1)
        if self.normalization not in _newton_schulz.NORMALIZATIONS:
            raise SvdgradError(f"Expected normalization in {_newton_schulz.NORMALIZATIONS}; "
                               f"received {self.normalization!r}.")
        if self.backward not in ("manual", "autograd", "lyapunov"):
            raise SvdgradError(f"Expected backward 'manual', 'autograd' or 'lyapunov' for newton_schulz; "
                               f"received {self.backward!r}.")
        _check_lyapunov_options(self)

    @property
    def double_differentiable(self) -> bool:
        return self.backward == "autograd"

    @property
    def backward_is_derivative(self) -> bool:
        return self.backward != "lyapunov"

    def root(self, A, inverse):
        """(Z ≈ A^{1/2}, F) without a graph, for the Lyapunov backward; for the inverse Z = F^{-1} exactly."""
        F = _newton_schulz.forward(A, self.iterations, self.normalization, inverse)[0]
        if not inverse:
            return F, F
        eye = torch.eye(A.shape[-1], dtype=A.dtype, device=A.device).expand_as(A)
        return _matmul_only._spd_inverse_apply(F, eye), F

    # The output's power of two joins the post-compensation factor (no pass of its own).
    folds_output_scale: ClassVar[bool] = True

    def apply(self, T, fn, p=None, pow2=None, S=None):
        A = symmetrized(T, S)  # (S, formed by the checks, is A's value: no pass of its own)
        inverse = isinstance(fn, InvSqrt)
        if self.backward == "lyapunov":
            F = apply(LyapunovRoot, A, self, inverse)[0]
            return (F if pow2 is None else _kernels.times_pow2(F, pow2)), None
        if self.backward == "manual":
            F = apply(NewtonSchulzManual, A, self.iterations, self.normalization, inverse, pow2)[0]
        else:
            F = _newton_schulz.forward(A, self.iterations, self.normalization, inverse, pow2)[0]
        return F, None


def _check_lyapunov_options(m) -> None:
    if m.tol is not None and not (_is_real(m.tol) and 0 < m.tol < 1):
        raise SvdgradError(f"Expected a number 0 < tol < 1 (or None) for {m.name}; received "
                           f"{_received('tol', m.tol)}.")
    _check_degree(m, "max_iterations", 1)
    _plain_numbers(m, "tol")


def _check_degree(m, field: str, low: int = 0) -> None:
    v = getattr(m, field)
    if not (_is_int(v) and v >= low):
        raise SvdgradError(f"Expected an integer {field} >= {low} for {m.name}; received {_received(field, v)}.")
    _plain_numbers(m, field)


@dataclass(frozen=True, kw_only=True)
class _MatmulRoot(Method):
    """A matmul-only forward of A^{±1/2} with the Lyapunov backward (FDMS, ICLR22); see ``_matmul_only``.

    tol:
        Stopping rule of the backward's matrix-sign iteration, per matrix:
        ‖I − B²‖_F/√n <= tol (default None = 100·eps of the compute dtype).
    max_iterations:
        Cap (default 100); a matrix still iterating is reported with a
        ``svdgrad.ConvergenceWarning``.

    The input is normalized per matrix by its Frobenius norm.  ``eps`` is
    not used (no eigenvalues).  The gradient is the exact gradient of the
    square root at the computed forward value.
    """

    has_eigenvalues: ClassVar[bool] = False
    forward_is_exact: ClassVar[bool] = False
    functions: ClassVar[tuple[str, ...]] = ("sqrt", "inv_sqrt")
    backward: str = "lyapunov"
    tol: float | None = None
    max_iterations: int = 100

    @property
    def backward_is_derivative(self) -> bool:
        return False

    def __post_init__(self):
        super().__post_init__()
        if self.backward != "lyapunov":
            raise SvdgradError(f"Expected backward='lyapunov' for {self.name}; received {self.backward!r}.")
        _check_lyapunov_options(self)

    @abc.abstractmethod
    def root(self, A, inverse):
        """(Z ≈ A^{1/2}, F = Z or Z^{-1}) without a graph."""

    def apply(self, T, fn, p=None, pow2=None, S=None):
        return apply(LyapunovRoot, symmetrized(T, S), self, isinstance(fn, InvSqrt))[0], None


@dataclass(frozen=True, kw_only=True)
class Mpa(_MatmulRoot):
    """Matrix Padé approximant: √(1 − z) ≈ P_M(z)/Q_N(z) at z = I − A/‖A‖_F (default [5/5], as FDMS)."""

    name: ClassVar[str] = "mpa"
    num_degree: int = 5
    den_degree: int = 5

    def __post_init__(self):
        super().__post_init__()
        _check_degree(self, "num_degree", 1)
        _check_degree(self, "den_degree", 1)
        _matmul_only.pade_roots(self.num_degree, self.den_degree)  # validates the roots, caches

    def root(self, A, inverse):
        return _matmul_only.mpa_root(A, self.num_degree, self.den_degree, inverse)


@dataclass(frozen=True, kw_only=True)
class Mtp(_MatmulRoot):
    """Matrix Taylor polynomial: √(1 − z) ≈ Σ_{k<=degree} c_k z^k at z = I − A/‖A‖_F (default degree 10, as FDMS)."""

    name: ClassVar[str] = "mtp"
    degree: int = 10

    def __post_init__(self):
        super().__post_init__()
        _check_degree(self, "degree", 1)

    def root(self, A, inverse):
        return _matmul_only.mtp_root(A, self.degree, inverse)


@dataclass(frozen=True, kw_only=True)
class PowerIteration(Method):
    """Eigenvectors re-derived by power iteration with deflation, differentiated through the iterations.

    Wang, Dang, Hu, Fua & Salzmann, "Backpropagation-Friendly
    Eigendecomposition" (NeurIPS 2019).  eigh gives the starting vectors
    (detached); then, from the largest eigenvalue down, each vector is
    refined by ``iterations`` power steps on the deflated matrix
    A_f − Σ_{earlier} λ_j v_j v_jᵀ, with λ_i = v_iᵀ A_f v_i, and
    F = Σ f(λ_i) v_i v_iᵀ.  A_f is A with its eigenvalues floored
    (``eps``), so no power step divides by zero.  The forward is eigh's up
    to the rounding that deflation accumulates (about κ·eps·n, more than
    eigh's); the backward is autograd through the K steps, which replaces
    1/(λi − λj) by a truncated series in λj/λi (Wang et al., TPAMI 2021).
    Unlike DSVD's code, nothing multiplies by I − VVᵀ (which is zero for a
    full basis).  Cost: n·iterations sequential matrix-vector steps.
    Double backward raises: the starting vectors are constants, so the
    second derivative through the steps is not the derivative of the gradient.
    """

    name: ClassVar[str] = "power_iteration"
    # Deflation accumulates rounding: inv·sqrt = I to 3e-9 at κ = 1e6 in float64 (exact: 3e-14).
    forward_is_exact: ClassVar[bool] = False
    #: The output's 2^pow2 joins the spectrum (with a large power's shift), as for the eigen methods.
    folds_output_scale: ClassVar[bool] = True
    iterations: int = 9

    def __post_init__(self):
        super().__post_init__()
        _check_degree(self, "iterations", 1)

    @property
    def backward_is_derivative(self) -> bool:
        return False

    def apply(self, T, fn, p=None, pow2=None, S=None):
        A = _kernels.sym2(T)
        # Constants: detach() also drops forward-mode tangents, which no_grad() would let through
        # (and the jvp would then be eigh's exact derivative, not the power iteration's).
        L, U = (t.detach() for t in eigh_or_raise(A.detach()))
        Lf = L.clamp_min(_kernels.eigenvalue_floor(L, self.floor_eps(A.dtype)))
        lift = (U * (Lf - L)[..., None, :]) @ U.mT  # A_f − A
        Af = A + lift  # differentiable in A, eigenvalues >= the floor
        n = A.shape[-1]
        tiny = torch.finfo(A.dtype).tiny
        # The steps run on Af/2^e with max|Af/2^e| in [1, 2): the norms square their vectors, which overflow or
        # underflow outside about 1e±19 in float32 (matrix_function does not rescale A for a user's f).  Powers
        # of two are exact: V and λ = 2^e·λ_scaled are the same bits as unscaled wherever both are normal.
        e = torch.nan_to_num(torch.floor(torch.log2(Af.detach().abs().amax(dim=(-2, -1)))),
                             nan=0.0, posinf=0.0, neginf=0.0)  # (*)
        R = _kernels.times_pow2_halves(Af, -e)
        vs, lams = [], []
        for i in range(n - 1, -1, -1):  # largest first
            v = U[..., :, i]
            for _ in range(self.iterations):
                w = (R * v[..., None, :]).sum(-1)  # R v as a broadcast sum
                v = w / torch.linalg.vector_norm(w, dim=-1, keepdim=True).clamp_min(tiny)
            lam = (v * (R * v[..., None, :]).sum(-1)).sum(-1)  # (*)
            vs.append(v)
            lams.append(lam)
            R = R - lam[..., None, None] * (v[..., :, None] * v[..., None, :])
        V = torch.stack(vs[::-1], -1)  # ascending, like eigh
        lam = _kernels.pow2_vector(torch.stack(lams[::-1], -1), e, halves=True)
        # Deflation leaves rounding noise of order eps·λmax in the smallest λ: floor their values
        # straight-through (the value is raised, the derivative passes), as ``exact`` does.
        floor = _kernels.eigenvalue_floor(L, self.floor_eps(A.dtype))  # (*, 1)
        lam = lam + (floor - lam).clamp_min(0).detach()
        # The output's scale 2^pow2 and a large power's shift join f's values in one exponent, as for the eigen
        # methods (``_functions._shifted``): λ^p at the scaled eigenvalues overflowed (float32 powm(0.975·ones(2, 2),
        # 50) = 1.6e14 was refused as not fitting float32).
        Lw, e, a = _shifted(fn, lam, p, pow2, 0)
        phi = fn.f(Lw, p)
        if e is not None:  # (a constant exponent: torch.func.jvp gave its zero tangent in float64)
            phi = _kernels.pow2_vector(phi, e.detach(), halves=fn.wide_pow2)
        if a is not None and isinstance(p, torch.Tensor) and p.requires_grad:
            # λ^p = 2^(a·p)·Lw^p: e holds a·p as a constant; this factor is 1 with the derivative a·ln2 in p
            phi = phi * torch.exp2(a.detach()[..., None] * (p - p.detach()))
        return (V * phi[..., None, :]) @ V.mT, L


# ---------------------------------------------------------------------------
# Registry.
# ---------------------------------------------------------------------------

_REGISTRY: dict[str, type[Method]] = {
    cls.name: cls for cls in (Exact, Ordinary, Truncated, TopN, Taylor, Pade, NewtonSchulz, Mpa, Mtp, PowerIteration)
}

#: The K-rules that ``svdgrad.eigh`` accepts as ``backward``.
_K_RULES = ("ordinary", "truncated", "taylor", "pade")


def methods(function: str | None = None) -> tuple[str, ...]:
    """Registered method names, in a fixed order; with ``function``, those that compute it.

    ``svdgrad.methods("log")`` lists the eigen methods; ``newton_schulz``
    computes ``"sqrt"`` and ``"inv_sqrt"`` only.
    """
    if function is None:
        return tuple(_REGISTRY)
    from ._spectral import get_function

    fn = get_function(function)
    return tuple(name for name, cls in _REGISTRY.items() if cls.functions is None or fn.name in cls.functions)


def _option_names(cls) -> list[str]:
    return [f.name for f in dataclasses.fields(cls) if f.init]


def _parse_value(key: str, text: str, spec: str):
    """One option value of a spec string: int, float, bool, None, a torch dtype or a bare string."""
    low = text.strip()
    if low in ("None", "none"):
        return None
    if low in ("True", "true"):
        return True
    if low in ("False", "false"):
        return False
    if low.startswith("torch."):
        low = low[len("torch."):]
    if low in ("float32", "float64"):
        return getattr(torch, low)
    try:
        return int(low)
    except ValueError:
        pass
    try:
        return float(low)
    except ValueError:
        pass
    if not low:
        raise SvdgradError(f"Expected a value for option {key!r} in method spec {spec!r}; received nothing. "
                           f"Write it as name:option=value, e.g. 'taylor:degree=9'.")
    return low


def parse_spec(spec: str) -> tuple[str, dict]:
    """Split ``"name:key=value,key=value"`` into (name, options).

    The command-line form of a method with options: ``"taylor:degree=9"``,
    ``"newton_schulz:iterations=7,normalization=frobenius"``,
    ``"exact:compute_dtype=float64"``.  Values are read as int, float, bool,
    None, float32/float64 or else a plain string; ``get_method`` then
    validates them like keyword options.
    """
    name, sep, rest = spec.partition(":")
    name = name.strip()
    options: dict = {}
    if sep and rest.strip():
        for item in rest.split(","):
            key, eq, value = item.partition("=")
            key = key.strip()
            if not eq or not key:
                raise SvdgradError(
                    f"Expected options as key=value in method spec {spec!r}; received {item.strip()!r}. "
                    f"Write e.g. 'taylor:degree=9' or 'newton_schulz:iterations=7,normalization=frobenius'."
                )
            if key in options:
                raise SvdgradError(f"Option {key!r} is given twice in method spec {spec!r}.")
            options[key] = _parse_value(key, value, spec)
    return name, options


def method_spec(method: Method) -> str:
    """The spec string of a method object: its name plus every option that differs from the default.

    ``get_method(method_spec(m)) == m`` for options that have a spec form
    (numbers, bools, None, strings, float32/float64).
    """
    if not isinstance(method, Method):
        raise SvdgradError(f"Expected a method object for method_spec (e.g. svdgrad.get_method('taylor', degree=9)); "
                           f"received {method!r} ({type(method).__name__}). A name or spec string is already a spec.")
    default = type(method)()
    changed = []
    for f in dataclasses.fields(method):
        if not f.init:
            continue
        v = getattr(method, f.name)
        if v != getattr(default, f.name):
            text = str(v).replace("torch.", "") if isinstance(v, torch.dtype) else str(v)
            changed.append(f"{f.name}={text}")
    return method.name + (":" + ",".join(changed) if changed else "")


def get_method(method="exact", **options) -> Method:
    """Resolve a name, a spec string or a method object (plus option overrides) to a method object.

    ``get_method("taylor", degree=9)``, ``get_method("taylor:degree=9")`` and
    ``get_method(Taylor(degree=9))`` give the same object.  Keyword options
    override those of the spec or object.
    """
    if isinstance(method, Method):
        if not options:
            return method  # frozen: nothing to copy
        return _with_options(type(method), method, options)
    if isinstance(method, str):
        return _from_spec(method) if not options else _from_spec_and_options(method, options)
    raise SvdgradError(
        f"Expected method to be a name ({', '.join(methods())}) or a method object; "
        f"received {type(method).__name__}."
    )


@functools.lru_cache(maxsize=128)
def _from_spec(spec: str) -> Method:
    """``get_method(spec)`` for a spec string alone, resolved once per spec: the objects are frozen, so one
    may be shared.  Every ``sqrtm(A)`` resolves its method, and parsing 'exact' took 15-20 µs a call, a
    quarter of a per cent of a (32, 64, 64) float32 forward and backward.  A spec that raises is not cached."""
    return _from_spec_and_options(spec, {})


def _from_spec_and_options(spec: str, options: dict) -> Method:
    name, spec_options = parse_spec(spec)
    cls = _REGISTRY.get(name)
    if cls is None:
        raise SvdgradError(
            f"Unknown method {name!r}. Expected one of {', '.join(methods())}, "
            f"a spec such as 'taylor:degree=9', or a method object such as svdgrad.Taylor(degree=100)."
        )
    return _with_options(cls, None, {**spec_options, **options})


def _with_options(cls: type[Method], base: Method | None, options: dict) -> Method:
    """cls(**options), or ``base`` with ``options`` replaced: each option validated."""
    unknown = sorted(set(options) - set(_option_names(cls)))
    if unknown:
        raise SvdgradError(
            f"Unknown option(s) {unknown} for method {cls.name!r}. Valid options: "
            f"{', '.join(_option_names(cls))}."
        )
    try:
        return dataclasses.replace(base, **options) if base is not None else cls(**options)
    except TypeError as exc:  # e.g. a positional-looking misuse; keep one error type
        raise SvdgradError(f"Invalid options {options} for method {cls.name!r}: {exc}.") from None


def get_k_rule(backward="ordinary", **options) -> _KRuleMethod:
    """Resolve the ``backward`` of ``svdgrad.eigh``: one of the K-rules only."""
    name = backward.partition(":")[0].strip() if isinstance(backward, str) else getattr(backward, "name", None)
    if name not in _K_RULES:
        got = repr(name) if name is not None else type(backward).__name__
        raise SvdgradError(
            f"Expected an eigh backward K-rule, one of {', '.join(_K_RULES)} (or such a method object); "
            f"received {got}. 'exact', 'topn' and 'newton_schulz' are square-root methods: use svdgrad.sqrtm."
        )
    return get_method(backward, **options)
