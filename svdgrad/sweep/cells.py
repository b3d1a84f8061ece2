"""One unit of work: every pending result row for one test matrix.

A *cell* of the grid is (function, method, dtype, n, κ, spectrum, seed).  The work is
grouped by matrix (n, κ, spectrum, seed): the matrix, the incoming gradient
and the reference are built once and shared by every method, dtype and side
study on it.  Each result row still stands for one cell, and carries its key,
so resuming is exact at the row level.

Conventions (stated in the report too):
- The float64 matrix A is ``svdgrad.testing.spd(n, κ, spectrum, seed=seed)``;
  the float32 input is A cast to float32.  Both are compared with the
  reference computed for the float64 A.
- The incoming gradient is G = ``svdgrad.testing.gradients((n, n), seed=GRAD_SEED + seed)``,
  a fixed non-symmetric random matrix; the loss is ⟨G, f(A)⟩ for the row's
  function f (sqrt, inv_sqrt, log, power with p = ``grid.POWER_P``).
- Reference: mpmath at 50 digits for n <= 32
  (``svdgrad.testing.reference_function_grad``, one per function), float64
  ``exact`` of the same function above (its own float64 row is then the
  reference, ``is-reference``).
- Features route (study ``gram``): X = ``svdgrad.testing.features(n,
  columns·n, √κ, seed=s)``, so κ(X Xᵀ) = κ; rows ``gram_sqrtm`` (its
  default: in float32 the float64 Gram matrix, in float64 the SVD of X),
  ``gram_sqrtm[svd]`` (float32: the SVD of X in float32) and
  ``sqrtm(X X^T)`` (Σ formed in the input dtype, then ``exact``),
  loss ⟨G, (X Xᵀ)^{1/2}⟩, gradient with respect to X.  Reference
  ``svdgrad.testing.reference_gram_grad`` (mpmath, Σ formed exactly) for
  n <= 32, float64 ``gram_sqrtm`` above.
- Gradients are compared through their symmetric parts.
- ``rank_deficient`` (n - r exact zero eigenvalues, r = ceil(n/2): the
  covariance X Xᵀ of r samples X = Q_r diag(√λ) with a prescribed spectrum):
  the true gradient is infinite on the null space × null space block, so
  gradient errors and blow-up are measured on the finite part g - P0 g P0,
  P0 the projector on the null space (from float64 eigh of A).  The
  reference is that part's limit as the n - r smallest eigenvalues (rounding
  noise in the float64 A) go to 0: f[λi, 0] = f(λi)/λi between the range
  and the null space (``reference_function_grad(..., zero_eigenvalues=n - r)``
  for n <= 32, ``svdgrad.testing.limit_function_grad`` in float64 above, label
  ``float64-limit``, where float64 ``exact`` is then a measured row).  A
  reference floored at eps64·λmax, as before, sat √(eps64·κ) from the limit
  for sqrt (the cross terms 1/(√λi + √floor)) and moved with A's rounding: at
  κ = 1e12, n = 16 by 1e-3 to 3e-3 (sqrt) and 5e-3 to 8e-3 (p = 0.25).
  The forward reference likewise has exact zeros there.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass

import torch

from .. import get_method, gram_sqrtm, inv_sqrtm, logm, powm, sqrtm
from ..testing import (features, gradients, limit_function_grad, reference_function_grad, reference_gram_grad,
                       rel_error, spd, sym_part)
from .grid import kappa as _kappa
from .grid import reference_floor

#: Seed offset of the incoming gradient G (matrix seed s -> G seed GRAD_SEED + s).
GRAD_SEED = 10_000

KEY = ("study", "function", "method", "variant", "dtype", "n", "log10_kappa", "spectrum", "seed")
VALUES = ("reference", "kappa_reached", "fwd_err", "grad_err", "nonfinite_out", "nonfinite_grad",
          "blowup", "time_ms", "ref_floor", "fwd_at_floor", "at_floor", "frac_nonpositive",
          "frac_wrong_magnitude", "error")
COLUMNS = KEY + VALUES

#: Reference labels.
REF_MPMATH = "mpmath"
REF_EXACT64 = "float64-exact"
REF_LIMIT64 = "float64-limit"  # rank_deficient above the mpmath size: the limit at exact zero eigenvalues
#: The float64 references, whose own error is of order (κ + n)·eps64 (``grid.reference_floor``).
FLOAT64_REFS = (REF_EXACT64, REF_LIMIT64)
REF_GRAM64 = "float64-gram"
REF_SELF = "is-reference"

#: Method labels of the features-route rows (study ``gram``).
GRAM_ROUTE = "gram_sqrtm"
GRAM_SVD = "gram_sqrtm[svd]"  # float32 rows only: in float64 it is GRAM_ROUTE's own algorithm
GRAM_VIA_SIGMA = "sqrtm(X X^T)"

_DTYPES = {"float32": torch.float32, "float64": torch.float64}


@dataclass(frozen=True)
class CellTask:
    """One matrix and the row keys still to compute on it."""

    n: int
    log10_kappa: int
    spectrum: str
    seed: int
    pending: tuple[tuple, ...]
    timing_repeats: int = 1
    mpmath_max_n: int = 32
    mpmath_dps: int = 50
    power_p: float = 0.25
    gram_columns: int = 2


def ns_variant(normalization: str, iterations: int) -> str:
    return f"{normalization}/{iterations}"


def parse_ns_variant(variant: str) -> tuple[str, int]:
    norm, it = variant.split("/")
    return norm, int(it)


def function_call(function: str, method, p: float = 0.25):
    """A -> f(A) through the library's entry point for ``function`` with ``method`` (a name, spec or object)."""
    if function == "sqrt":
        return lambda A: sqrtm(A, method)
    if function == "inv_sqrt":
        return lambda A: inv_sqrtm(A, method)
    if function == "log":
        return lambda A: logm(A, method)
    if function == "power":
        return lambda A: powm(A, p, method)
    raise ValueError(f"unknown function {function!r}; expected sqrt, inv_sqrt, log or power")


def baseline_call(name: str):
    """A -> the baseline's value, e.g. ``torch.linalg.matrix_sqrth`` (only planned when torch has it)."""
    obj = torch
    for part in name.split(".")[1:]:
        obj = getattr(obj, part)
    return obj


def run_cell(task: CellTask) -> list[dict]:
    """All pending rows of one matrix; never raises (a failure becomes error rows).

    Runs with torch pinned to one thread (restored afterwards), whatever
    the worker's defaults: the pool supplies the parallelism.
    """
    import warnings

    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with warnings.catch_warnings():
            # ConvergenceWarning of the capped iterations: the row's error says what came of it.
            warnings.simplefilter("ignore")
            return _run_cell(task)
    except Exception as exc:  # a cell that raises is recorded, the sweep goes on
        return [_row(key, error=_message(exc)) for key in task.pending]
    finally:
        torch.set_num_threads(prev)


def _message(exc: BaseException) -> str:
    return " ".join(f"{type(exc).__name__}: {exc}".split())[:500]


def _row(key, **values) -> dict:
    row = dict(zip(KEY, key))
    for col in VALUES:
        row.setdefault(col, "")
    row.update(values)
    return row


class _Reference:
    """Reference value and gradient of one function on the matrix."""

    def __init__(self, Z, g, label, part, exact64=None):
        self.Z, self.g, self.label, self.part, self.exact64 = Z, g, label, part, exact64


class _Matrix:
    """The float64 test matrix with what every row on it needs."""

    def __init__(self, task: CellTask):
        self.task = task
        self.n = task.n
        self.kappa = _kappa(task.log10_kappa)
        self.A, lam = spd(task.n, self.kappa, task.spectrum, seed=task.seed, return_eigenvalues=True)
        self.lam = lam  # (n,) true eigenvalues, ascending
        self.rank = int((lam > 0).sum())
        self.G = gradients((task.n, task.n), seed=GRAD_SEED + task.seed)
        self.P0 = None
        if self.rank < self.n:
            U = torch.linalg.eigh(self.A)[1][:, : self.n - self.rank]  # (n, n - r) null space
            self.P0 = U @ U.mT
        self.refs: dict[str, _Reference] = {}
        self._kappa_reached = {}
        self._gram = None

    def finite_part(self, g: torch.Tensor) -> torch.Tensor:
        return g if self.P0 is None else g - self.P0 @ g @ self.P0

    def kappa_reached(self, dtype) -> float:
        """λmax / (r-th largest λ) of the matrix actually passed in, evaluated in float64."""
        if dtype not in self._kappa_reached:
            L = torch.linalg.eigvalsh(self.A.to(dtype).double())
            lo = float(L[self.n - self.rank])
            self._kappa_reached[dtype] = float(L[-1]) / lo if lo > 0 else math.inf
        return self._kappa_reached[dtype]

    def reference(self, function: str) -> _Reference:
        if function not in self.refs:
            p = self.task.power_p if function == "power" else None
            zeros = self.n - self.rank
            if self.n <= self.task.mpmath_max_n:
                Z, g, _ = reference_function_grad(self.A, self.G, function, p=p, dps=self.task.mpmath_dps,
                                                  zero_eigenvalues=zeros)
                ref = _Reference(Z, g, REF_MPMATH, self.finite_part(sym_part(g)))
            elif zeros:
                Z, g = limit_function_grad(self.A, self.G, function, p=p, zero_eigenvalues=zeros)
                ref = _Reference(Z, g, REF_LIMIT64, self.finite_part(sym_part(g)))
            else:
                Z, g, t = timed(function_call(function, get_method("exact"), p), self.A, self.G,
                                self.task.timing_repeats)
                ref = _Reference(Z, g, REF_EXACT64, self.finite_part(sym_part(g)), exact64=t)
            self.refs[function] = ref
        return self.refs[function]

    def gram(self):
        """(X, Fref, gXref, label, t_ref) of the features route at κ(X Xᵀ) = κ."""
        if self._gram is None:
            t = self.task
            X = features(t.n, t.gram_columns * t.n, math.sqrt(self.kappa), seed=t.seed)  # (n, columns·n)
            if t.n <= t.mpmath_max_n:
                F, gX = reference_gram_grad(X, self.G, dps=t.mpmath_dps)
                self._gram = (X, F, gX, REF_MPMATH, None)
            else:
                F, gX, ms = timed(gram_sqrtm, X, self.G, t.timing_repeats)
                self._gram = (X, F, gX, REF_GRAM64, ms)
        return self._gram


def timed(fn, A: torch.Tensor, G: torch.Tensor, repeats: int):
    """(Z, gA, median ms) of forward + backward of ⟨G, fn(A)⟩; one untimed warm-up call."""
    times = []
    for r in range(repeats + 1):
        Ar = A.detach().clone().requires_grad_(True)
        t0 = time.perf_counter()
        Z = fn(Ar)
        (g,) = torch.autograd.grad(Z, Ar, G.to(A.dtype))
        if r:
            times.append(1e3 * (time.perf_counter() - t0))
    return Z.detach(), g, statistics.median(times) if times else float("nan")


def _nonfinite(x: torch.Tensor) -> float:
    return float((~torch.isfinite(x)).double().mean())


def _metrics(Z, Zref, gs, gref) -> dict:
    out = {"fwd_err": rel_error(Z, Zref), "grad_err": rel_error(gs, gref), "nonfinite_out": _nonfinite(Z),
           "nonfinite_grad": _nonfinite(gs)}
    den = float(torch.linalg.vector_norm(gref))
    out["blowup"] = float(torch.linalg.vector_norm(gs)) / den if bool(torch.isfinite(gs).all()) else math.inf
    return out


def _with_floor(out: dict, floor: float) -> dict:
    out["ref_floor"] = floor
    out["at_floor"] = int(out["grad_err"] <= floor)
    out["fwd_at_floor"] = int(out["fwd_err"] <= floor)
    return out


def _compare(m: _Matrix, ref: _Reference, Z, g, dtype) -> dict:
    out = {"reference": ref.label, "kappa_reached": m.kappa_reached(dtype),
           **_metrics(Z, ref.Z, m.finite_part(sym_part(g.double())), ref.part)}
    out["nonfinite_grad"] = _nonfinite(g)
    if ref.label in FLOAT64_REFS:
        _with_floor(out, reference_floor(m.kappa, m.n))
    return out


def _eig_row(m: _Matrix, key, dtype) -> dict:
    """Eigenvalues of the dtype-cast matrix computed in that dtype, against the true λ > 0."""
    L = torch.linalg.eigvalsh(m.A.to(dtype)).double()
    idx = slice(m.n - m.rank, m.n)
    Lc, Lt = L[idx], m.lam[idx]
    nonpos = Lc <= 0
    wrong = nonpos | (torch.log10(Lc.clamp_min(1e-300) / Lt).abs() >= 1.0)
    return _row(key, kappa_reached=m.kappa_reached(dtype), frac_nonpositive=float(nonpos.double().mean()),
                frac_wrong_magnitude=float(wrong.double().mean()))


def _gram_via_sigma(X: torch.Tensor) -> torch.Tensor:
    """sqrtm(X Xᵀ) with Σ formed in X's dtype: what a user writes without the features route."""
    return sqrtm(X @ X.mT)


def _gram_svd(X: torch.Tensor) -> torch.Tensor:
    """gram_sqrtm through the SVD of X in X's dtype (the default in float32 forms X Xᵀ in float64)."""
    return gram_sqrtm(X, algorithm="svd")


def _gram_row(m: _Matrix, key, method: str, dtype) -> dict:
    X, F, gX, label, t_ref = m.gram()
    if label == REF_GRAM64 and method == GRAM_ROUTE and dtype == torch.float64:
        return _row(key, reference=REF_SELF, kappa_reached=m.kappa, time_ms=t_ref)
    fn = {GRAM_ROUTE: gram_sqrtm, GRAM_SVD: _gram_svd, GRAM_VIA_SIGMA: _gram_via_sigma}[method]
    Z, g, t = timed(fn, X.to(dtype), m.G, m.task.timing_repeats)
    S = torch.linalg.svdvals(X.to(dtype).double())
    out = {"reference": label, "kappa_reached": float((S[0] / S[-1]) ** 2) if S[-1] > 0 else math.inf,
           **_metrics(Z, F, g.double(), gX)}
    if label == REF_GRAM64:
        _with_floor(out, reference_floor(math.sqrt(m.kappa), m.n))  # the route's error scales with κ(X) = √κ
    return _row(key, time_ms=t, **out)


def _run_cell(task: CellTask) -> list[dict]:
    m = _Matrix(task)
    rows = []
    for key in task.pending:
        study, function, method, variant, dtype_name = key[:5]
        dtype = _DTYPES[dtype_name]
        try:
            if study == "eig":
                rows.append(_eig_row(m, key, dtype))
                continue
            if study == "gram":
                rows.append(_gram_row(m, key, method, dtype))
                continue
            ref = m.reference(function)
            if study in ("method", "option"):
                if method == "exact" and dtype == torch.float64 and ref.exact64 is not None:
                    rows.append(_row(key, reference=REF_SELF, kappa_reached=m.kappa_reached(dtype),
                                     time_ms=ref.exact64))
                    continue
                fn = function_call(function, get_method(method), task.power_p)
                Z, g, t = timed(fn, m.A.to(dtype), m.G, task.timing_repeats)
            elif study == "baseline":
                Z, g, t = timed(baseline_call(method), m.A.to(dtype), m.G, task.timing_repeats)
            elif study == "ns":
                norm, it = parse_ns_variant(variant)
                fn = function_call(function, get_method("newton_schulz", iterations=it, normalization=norm))
                Z, g, t = timed(fn, m.A.to(dtype), m.G, 0)
            else:
                raise ValueError(f"unknown study {study!r}")
            rows.append(_row(key, time_ms=t, **_compare(m, ref, Z, g, dtype)))
        except Exception as exc:
            rows.append(_row(key, error=_message(exc)))
    return rows
