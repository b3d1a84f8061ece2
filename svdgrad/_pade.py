"""Padé coefficients of 1/(1-x), computed once and cached.

The [M/N] Padé approximant P/Q of a power series c(x) matches it through
x^(M+N): Q(x)c(x) - P(x) = O(x^(M+N+1)).  For c(x) = 1/(1-x) = Σ x^k and any
M >= 0, N >= 1 the approximant *as a rational function* is unique (Baker &
Graves-Morris, Thm 1.1.1) and equals 1/(1-x) itself, because c is already a
[0/1] rational function.  The linear system for Q's coefficients, however,
is an N×(N+1) Toeplitz matrix of all ones: rank 1, so the coefficient vector
is not unique.  ``scipy.interpolate.pade`` and ``mpmath.pade`` both solve
that system directly and refuse it as singular; the DifferentiableSVD
reference only obtains coefficients because ``mpmath.taylor``'s numerical
differentiation perturbs the series, which makes the result depend on
rounding.

We follow the robust-Padé recipe of Gonnet, Güttel & Trefethen (SIAM Rev.
2013, "Robust Padé approximation via SVD"), but with exact rank: the
Toeplitz block is formed from the *exact* rational series coefficients and
its rank is computed in rational arithmetic (``fractions.Fraction``), so no
tolerance and no rounding enter.  While the rank ρ is below N we lower the
degrees (M, N) -> (M - (N - ρ), ρ); at the reduced degrees the system is
nonsingular and mpmath solves it.  For 1/(1-x) this gives P = 1,
Q = 1 - x for every requested [M/N] with N >= 1 (and the Taylor polynomial
for N = 0).  That is the degeneracy of the ICCV21 reference code (Song et al. 2021): its "[50/50]
Padé" is exactly the ordinary K = 1/(λi-λj), with a pole at x = 1.
"""

from __future__ import annotations

from fractions import Fraction
from functools import lru_cache

import mpmath


def geometric_series(order: int) -> list[Fraction]:
    """Exact coefficients of 1/(1-x) = Σ_k x^k through x^order."""
    return [Fraction(1)] * (order + 1)


def _rank(rows: list[list[Fraction]]) -> int:
    """Exact rank by fraction-free Gaussian elimination."""
    m = [list(r) for r in rows]
    rank = 0
    ncols = len(m[0]) if m else 0
    for col in range(ncols):
        pivot = next((r for r in range(rank, len(m)) if m[r][col] != 0), None)
        if pivot is None:
            continue
        m[rank], m[pivot] = m[pivot], m[rank]
        for r in range(rank + 1, len(m)):
            if m[r][col] != 0:
                f = m[r][col] / m[rank][col]
                m[r] = [a - f * b for a, b in zip(m[r], m[rank])]
        rank += 1
    return rank


def reduced_degrees(series: list[Fraction], num_degree: int, den_degree: int) -> tuple[int, int]:
    """Lower (M, N) until the Padé system of ``series`` has full rank (GGT 2013)."""
    m, n = num_degree, den_degree
    while n > 0:
        # Rows M+1..M+N of the Toeplitz matrix C_ij = c_{i-j}, columns 0..N.
        C = [[series[i - j] if i - j >= 0 else Fraction(0) for j in range(n + 1)]
             for i in range(m + 1, m + n + 1)]
        rho = _rank(C)
        if rho == n:
            break
        m, n = max(m - (n - rho), 0), rho
    return m, n


@lru_cache(maxsize=None)
def pade_coefficients(num_degree: int, den_degree: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Coefficients (p, q), lowest order first, of the [M/N] Padé of 1/(1-x).

    Returned in reduced form: trailing zero coefficients are dropped, so the
    degrees may be lower than requested (see the module docstring).  q[0] = 1.
    Cached: computed once per (M, N) per process.
    """
    if num_degree < 0 or den_degree < 0:
        raise ValueError("Padé degrees must be non-negative")
    series = geometric_series(num_degree + den_degree)
    m, n = reduced_degrees(series, num_degree, den_degree)
    with mpmath.workdps(60):
        p, q = mpmath.pade([mpmath.mpf(c.numerator) / c.denominator for c in series[: m + n + 1]], m, n)
        p = [float(c) for c in p]
        q = [float(c) for c in q]
    while len(p) > 1 and p[-1] == 0.0:
        p.pop()
    while len(q) > 1 and q[-1] == 0.0:
        q.pop()
    return tuple(p), tuple(q)
