"""One unit of work: every pending result row for one test matrix.

A *cell* of the grid is (method, dtype, n, κ, spectrum, seed).  The work is
grouped by matrix (n, κ, spectrum, seed): the matrix, the incoming gradient
and the reference are built once and shared by every method, dtype and side
study on it.  Each result row still stands for one cell, and carries its key,
so resuming is exact at the row level.

Conventions (stated in the report too):
- The float64 matrix A is ``svdgrad.testing.spd(n, κ, spectrum, seed=seed)``;
  the float32 input is A cast to float32.  Both are compared with the
  reference computed for the float64 A.
- The incoming gradient is G = ``svdgrad.testing.gradients((n, n), seed=GRAD_SEED + seed)``,
  a fixed non-symmetric random matrix; the loss is ⟨G, sqrtm(A)⟩.
- Gradients are compared through their symmetric parts.
- ``rank_deficient`` (n - r exact zero eigenvalues, r = ceil(n/2): the
  covariance X Xᵀ of r samples X = Q_r diag(√λ) with a prescribed spectrum):
  the true gradient is infinite on the null space, so the reference is taken
  at the matrix floored at eps64·λmax (the float64 floor of the eigen
  methods), and gradient errors and blow-up are measured on the finite part
  g - P0 g P0, P0 the projector on the null space (from float64 eigh of A).
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass

import torch

from .. import get_method
from ..testing import gradients, reference_sqrtm_grad, rel_error, spd, sym_part
from .grid import kappa as _kappa
from .grid import reference_floor

#: Seed offset of the incoming gradient G (matrix seed s -> G seed GRAD_SEED + s).
GRAD_SEED = 10_000

KEY = ("study", "method", "variant", "dtype", "n", "log10_kappa", "spectrum", "seed")
VALUES = ("reference", "kappa_reached", "fwd_err", "grad_err", "nonfinite_out", "nonfinite_grad",
          "blowup", "time_ms", "ref_floor", "fwd_at_floor", "at_floor", "frac_nonpositive",
          "frac_wrong_magnitude", "error")
COLUMNS = KEY + VALUES

#: Reference labels.
REF_MPMATH = "mpmath"
REF_EXACT64 = "float64-exact"
REF_SELF = "is-reference"

_DTYPES = {"float32": torch.float32, "float64": torch.float64}


@dataclass(frozen=True)
class CellTask:
    """One matrix and the row keys still to compute on it."""

    n: int
    log10_kappa: int
    spectrum: str
    seed: int
    pending: tuple[tuple, ...]
    timing_repeats: int = 3
    mpmath_max_n: int = 32
    mpmath_dps: int = 50


def ns_variant(normalization: str, iterations: int) -> str:
    return f"{normalization}/{iterations}"


def parse_ns_variant(variant: str) -> tuple[str, int]:
    norm, it = variant.split("/")
    return norm, int(it)


def run_cell(task: CellTask) -> list[dict]:
    """All pending rows of one matrix; never raises (a failure becomes error rows).

    Runs with torch pinned to one thread (restored afterwards), whatever
    the worker's defaults: the pool supplies the parallelism.
    """
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
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
        self.floor = 2.0 ** -52 * float(lam.max()) if self.rank < self.n else 0.0
        self.Zref = self.gref = None
        self.ref_label = ""
        self.exact64 = None  # (Z, g, time_ms) when float64 exact is the reference
        self._kappa_reached = {}

    def finite_part(self, g: torch.Tensor) -> torch.Tensor:
        return g if self.P0 is None else g - self.P0 @ g @ self.P0

    def kappa_reached(self, dtype) -> float:
        """λmax / (r-th largest λ) of the matrix actually passed in, evaluated in float64."""
        if dtype not in self._kappa_reached:
            L = torch.linalg.eigvalsh(self.A.to(dtype).double())
            lo = float(L[self.n - self.rank])
            self._kappa_reached[dtype] = float(L[-1]) / lo if lo > 0 else math.inf
        return self._kappa_reached[dtype]

    def build_reference(self):
        if self.Zref is not None:
            return
        if self.n <= self.task.mpmath_max_n:
            self.Zref, self.gref = reference_sqrtm_grad(self.A, self.G, dps=self.task.mpmath_dps, floor=self.floor)
            self.ref_label = REF_MPMATH
        else:
            Z, g, t = timed(get_method("exact"), self.A, self.G, self.task.timing_repeats)
            self.Zref, self.gref, self.ref_label = Z, g, REF_EXACT64
            self.exact64 = (Z, g, t)
        self.gref_part = self.finite_part(sym_part(self.gref))


def timed(method, A: torch.Tensor, G: torch.Tensor, repeats: int):
    """(Z, gA, median ms) of forward + backward of ⟨G, sqrtm(A)⟩; one untimed warm-up call."""
    from .. import sqrtm

    times = []
    for r in range(repeats + 1):
        Ar = A.detach().clone().requires_grad_(True)
        t0 = time.perf_counter()
        Z = sqrtm(Ar, method)
        (g,) = torch.autograd.grad(Z, Ar, G.to(A.dtype))
        if r:
            times.append(1e3 * (time.perf_counter() - t0))
    return Z.detach(), g, statistics.median(times) if times else float("nan")


def _nonfinite(x: torch.Tensor) -> float:
    return float((~torch.isfinite(x)).double().mean())


def _compare(m: _Matrix, Z, g, dtype) -> dict:
    gs = m.finite_part(sym_part(g.double()))
    gref = m.gref_part
    out = {
        "reference": m.ref_label,
        "kappa_reached": m.kappa_reached(dtype),
        "fwd_err": rel_error(Z, m.Zref),
        "grad_err": rel_error(gs, gref),
        "nonfinite_out": _nonfinite(Z),
        "nonfinite_grad": _nonfinite(g),
    }
    den = float(torch.linalg.vector_norm(gref))
    out["blowup"] = float(torch.linalg.vector_norm(gs)) / den if bool(torch.isfinite(gs).all()) else math.inf
    if m.ref_label == REF_EXACT64:
        floor = reference_floor(m.kappa, m.n)
        out["ref_floor"] = floor
        out["at_floor"] = int(out["grad_err"] <= floor)
        out["fwd_at_floor"] = int(out["fwd_err"] <= floor)
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


def _run_cell(task: CellTask) -> list[dict]:
    m = _Matrix(task)
    rows = []
    for key in task.pending:
        study, method, variant, dtype_name = key[:4]
        dtype = _DTYPES[dtype_name]
        try:
            if study == "eig":
                rows.append(_eig_row(m, key, dtype))
                continue
            m.build_reference()
            if study == "method":
                if method == "exact" and dtype == torch.float64 and m.exact64 is not None:
                    _, _, t = m.exact64
                    rows.append(_row(key, reference=REF_SELF, kappa_reached=m.kappa_reached(dtype), time_ms=t))
                    continue
                Z, g, t = timed(get_method(method), m.A.to(dtype), m.G, task.timing_repeats)
            elif study == "ns":
                norm, it = parse_ns_variant(variant)
                Z, g, t = timed(get_method("newton_schulz", iterations=it, normalization=norm),
                                m.A.to(dtype), m.G, 0)
            else:
                raise ValueError(f"unknown study {study!r}")
            rows.append(_row(key, time_ms=t, **_compare(m, Z, g, dtype)))
        except Exception as exc:
            rows.append(_row(key, error=_message(exc)))
    return rows
