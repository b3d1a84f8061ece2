"""Public test helpers: matrix generators, hypothesis strategies, references, VJP checks.

Matrices are built as Q·diag(λ)·Q^T in float64 with Q Haar-random, so the
spectrum (and κ) is chosen, not filtered for.  ``hypothesis`` is imported
lazily: the strategies need the ``dev`` extra, the rest does not.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ._errors import SvdgradError, describe
from ._kernels import sym as _sym
# mpmath's working precision is process-wide: the references take the lock that guards it (workdps in two
# threads at once restores the other's precision under it).
from ._matmul_only import _MPMATH_LOCK

#: Spectrum shapes of ``spd``.
SPECTRA = ("logspaced", "clustered", "repeated", "rank_deficient")

#: Relative gap inside a ``clustered`` pair.
CLUSTER_GAP = 1e-9


def eigenvalues(n: int, kappa: float, spectrum: str = "logspaced", *, rank: int | None = None) -> np.ndarray:
    """Ascending float64 eigenvalues with λmax = 1 and λmax/λmin = kappa.

    logspaced:       n values log-spaced in [1/κ, 1].
    clustered:       pairs (b, b·(1 + 1e-9)) with b log-spaced in [1/κ, 1]
                     (odd n: the largest is single); κ is reached to 1e-9.
    repeated:        every value exactly twice (exact ties; odd n: the
                     largest is single).
    With n = 2, clustered and repeated have a single pair, so κ ≈ 1;
    they need n >= 3 to reach κ.
    rank_deficient:  n - rank exact zeros and ``rank`` (default ceil(n/2))
                     values log-spaced in [1/κ, 1]; κ is that of the nonzero
                     part, the pseudo-condition number.  ``rank`` is refused
                     with the other spectra (they have full rank).
    """
    if n < 1:
        raise SvdgradError(f"Expected n >= 1; received n={n}.")
    if not (kappa >= 1 and math.isfinite(kappa)):
        raise SvdgradError(f"Expected a finite kappa >= 1; received kappa={kappa!r}.")
    if spectrum not in SPECTRA:
        raise SvdgradError(f"Unknown spectrum {spectrum!r}; expected one of {', '.join(SPECTRA)}.")
    if rank is not None and spectrum != "rank_deficient":
        raise SvdgradError(f"Expected rank only with spectrum='rank_deficient'; received rank={rank} with "
                           f"spectrum={spectrum!r}. Drop rank, or pass spectrum='rank_deficient'.")
    r = (n + 1) // 2 if rank is None else rank  # rank_deficient's nonzero eigenvalues (checked before n = 1 returns)
    if spectrum == "rank_deficient" and not 1 <= r <= n:
        raise SvdgradError(f"Expected 1 <= rank <= n for rank_deficient; received rank={rank}, n={n}.")
    lo = -math.log10(kappa)
    if n == 1:
        return np.ones(1)
    if spectrum == "logspaced":
        lam = np.logspace(lo, 0.0, n)
    elif spectrum in ("clustered", "repeated"):
        base = np.logspace(lo, 0.0, (n + 1) // 2)
        twin = 1.0 if spectrum == "repeated" else 1.0 + CLUSTER_GAP
        lam = np.stack([base, base * twin], axis=1).reshape(-1)[:n]
        lam = lam / lam.max()
    else:
        lam = np.concatenate([np.zeros(n - r), np.logspace(lo if r > 1 else 0.0, 0.0, r)])
    return np.sort(lam)


def haar_orthogonal(n: int, batch=(), *, rng: np.random.Generator) -> np.ndarray:
    """Haar-random orthogonal matrices (*batch, n, n) via QR with sign fix."""
    g = rng.standard_normal((*batch, n, n))
    q, r = np.linalg.qr(g)
    d = np.sign(np.diagonal(r, axis1=-2, axis2=-1))
    d[d == 0] = 1.0
    return q * d[..., None, :]


def spd(n: int, kappa: float = 1e2, spectrum: str = "logspaced", *, batch=(), dtype=torch.float64,
        seed: int = 0, scale: float = 1.0, rank: int | None = None, return_eigenvalues: bool = False):
    """Symmetric PSD test matrices Q diag(λ) Q^T of shape (*batch, n, n).

    λ from ``eigenvalues(n, kappa, spectrum)`` times ``scale``; one Haar Q
    per matrix, drawn from ``seed``.  Built in float64 and symmetrized
    exactly, then cast to ``dtype``.  With ``return_eigenvalues`` also
    returns the float64 λ (n,) that every matrix in the batch shares.
    """
    batch = tuple(batch) if not isinstance(batch, int) else (batch,)
    rng = np.random.default_rng(seed)
    lam = eigenvalues(n, kappa, spectrum, rank=rank) * scale
    Q = haar_orthogonal(n, batch, rng=rng)
    A = (Q * lam) @ np.swapaxes(Q, -1, -2)
    A = 0.5 * (A + np.swapaxes(A, -1, -2))
    At = torch.from_numpy(np.ascontiguousarray(A)).to(dtype)
    return (At, torch.from_numpy(lam)) if return_eigenvalues else At


def features(d: int, N: int, kappa: float = 1e2, *, batch=(), dtype=torch.float64, seed: int = 0,
             scale: float = 1.0, rank: int | None = None, return_singular_values: bool = False):
    """Feature matrices X = P·diag(σ)·Vᵀ of shape (*batch, d, N) with κ(X) = σmax/σmin = kappa.

    The input of ``svdgrad.gram_sqrtm``: κ(X Xᵀ) = kappa².  σ are min(d, N)
    values (or ``rank`` of them, the rest exact zeros) log-spaced in
    [1/κ, 1], times ``scale``; P (d, d) and V (N, N) Haar-random, one per
    matrix, drawn from ``seed``.  Built in float64, then cast to ``dtype``.
    With ``return_singular_values`` also returns the float64 σ (descending).
    """
    if d < 1 or N < 1:
        raise SvdgradError(f"Expected d >= 1 and N >= 1; received d={d}, N={N}.")
    if not (kappa >= 1 and math.isfinite(kappa)):
        raise SvdgradError(f"Expected a finite kappa >= 1; received kappa={kappa!r}.")
    m = min(d, N)
    r = m if rank is None else rank
    if not 1 <= r <= m:
        raise SvdgradError(f"Expected 1 <= rank <= min(d, N) = {m}; received rank={rank}.")
    batch = tuple(batch) if not isinstance(batch, int) else (batch,)
    rng = np.random.default_rng(seed)
    sig = np.concatenate([np.logspace(0.0, -math.log10(kappa) if r > 1 else 0.0, r), np.zeros(m - r)]) * scale
    P = haar_orthogonal(d, batch, rng=rng)[..., :, :m]
    V = haar_orthogonal(N, batch, rng=rng)[..., :, :m]
    X = (P * sig) @ np.swapaxes(V, -1, -2)
    Xt = torch.from_numpy(np.ascontiguousarray(X)).to(dtype)
    return (Xt, torch.from_numpy(sig)) if return_singular_values else Xt


def condition_number(A: torch.Tensor) -> torch.Tensor:
    """λmax/λmin per matrix, in float64; inf where the computed λmin <= 0 (singular to working precision)."""
    L = torch.linalg.eigvalsh(A.to(torch.float64))
    kappa = L[..., -1] / L[..., 0]
    return torch.where(L[..., 0] > 0, kappa, torch.full_like(kappa, float("inf")))


# ---------------------------------------------------------------------------
# High-precision reference.
# ---------------------------------------------------------------------------

def _mp_floored_eig(A: torch.Tensor, G: torch.Tensor, floor: float, what: str, zeros: int = 0):
    """(Q, floored eigenvalues, sym(G)) of sym(A) in mpmath at the caller's working precision.

    Shared by the references: A and G are symmetrized exactly in mpmath,
    the ``zeros`` smallest eigenvalues are set to exact zeros (a null space
    the caller knows of), the others below ``floor`` are raised to it, and a
    singular result among those (the gradient would be infinite) is refused.
    """
    import mpmath

    n = A.shape[-1]
    a = A.detach().to(torch.float64).cpu().numpy()
    g = G.detach().to(torch.float64).cpu().numpy()
    Am = mpmath.matrix(n, n)
    Gs = mpmath.matrix(n, n)
    for i in range(n):
        for j in range(n):
            Am[i, j] = (mpmath.mpf(a[i, j]) + mpmath.mpf(a[j, i])) / 2
            Gs[i, j] = (mpmath.mpf(g[i, j]) + mpmath.mpf(g[j, i])) / 2
    E, Q = mpmath.eigsy(Am)
    null = set(sorted(range(n), key=lambda i: E[i])[:zeros])
    lam = [mpmath.mpf(0) if i in null else max(E[i], mpmath.mpf(floor)) for i in range(n)]
    kept = [lam[i] for i in range(n) if i not in null]
    if min(kept) <= 0:
        limit = not zeros and what in ("sqrt", "power", "function")  # (functions finite at 0)
        raise SvdgradError(
            f"The {what} gradient is infinite at a singular matrix (λmin={mpmath.nstr(min(E), 5)}); "
            f"pass floor=... to take it at the floored matrix"
            + (", or zero_eigenvalues=... to take the limit on a known null space." if limit else ".")
        )
    return Q, lam, Gs


def reference_sqrtm_grad(A: torch.Tensor, G: torch.Tensor, *, dps: int = 50, floor: float = 0.0):
    """(Z, gA) for one matrix, at ``dps`` decimal digits with mpmath (small n).

    The float64 entries of A are taken as exact.  gA = U[(U^T sym(G) U) ∘ D]U^T
    with D_ij = 1/(sqrt λi + sqrt λj) (Daleckii–Krein), all in mpmath.
    Eigenvalues below ``floor`` (absolute) are raised to it; with floor = 0
    a zero eigenvalue makes the gradient infinite and raises SvdgradError.
    Returns float64 tensors.
    """
    import mpmath

    if A.dim() != 2:
        raise SvdgradError(f"reference_sqrtm_grad takes one matrix (n, n); received shape={tuple(A.shape)}.")
    n = A.shape[-1]
    with _MPMATH_LOCK, mpmath.workdps(dps):
        Q, lam, Gs = _mp_floored_eig(A, G, floor, "sqrtm")
        s = [mpmath.sqrt(x) for x in lam]
        Z = Q * mpmath.diag(s) * Q.T
        M = Q.T * Gs * Q
        for i in range(n):
            for j in range(n):
                M[i, j] = M[i, j] / (s[i] + s[j])
        gA = Q * M * Q.T
        Zn = np.array(Z.tolist(), dtype=float)
        gn = np.array(gA.tolist(), dtype=float)
    return torch.from_numpy(Zn), torch.from_numpy(gn)


def reference_sqrtm_grad_derivative(A: torch.Tensor, G: torch.Tensor, H: torch.Tensor, *, dps: int = 50):
    """d/dt gA(A + tH) at t = 0, gA the gradient of ⟨G, sqrtm(A)⟩, for one matrix at ``dps`` digits (small n).

    The second derivative (a Hessian-vector product) by a central difference of the
    Daleckii–Krein gradient in mpmath with step t = 10^(−2·dps/5): truncation t² and
    rounding 10^−dps/t are both far below float64, and nothing here uses a second
    divided difference, so it checks ``sqrtm_second_derivative`` independently.
    A, G and the symmetric part of H are taken as exact.  Returns a float64 tensor.
    """
    import mpmath

    if A.dim() != 2:
        raise SvdgradError(f"reference_sqrtm_grad_derivative takes one matrix (n, n); received shape="
                           f"{tuple(A.shape)}.")
    n = A.shape[-1]
    with _MPMATH_LOCK, mpmath.workdps(dps):
        Q, lam, Gs = _mp_floored_eig(A, G, 0.0, "sqrtm")
        Am = Q * mpmath.diag(lam) * Q.T
        _, _, Hs = _mp_floored_eig(A, H, 0.0, "sqrtm")  # (the symmetrized H)
        t = mpmath.mpf(10) ** (-(2 * dps) // 5)

        def grad_at(M):
            E, U = mpmath.eigsy(M)
            if min(E) <= 0:
                raise SvdgradError("Expected a positive definite A for the second-derivative reference.")
            sq = [mpmath.sqrt(x) for x in E]
            W = U.T * Gs * U
            for i in range(n):
                for j in range(n):
                    W[i, j] = W[i, j] / (sq[i] + sq[j])
            return U * W * U.T

        D = (grad_at(Am + t * Hs) - grad_at(Am - t * Hs)) / (2 * t)
        out = np.array(D.tolist(), dtype=float)
    return torch.from_numpy(out)


#: mpmath forms (f, f′) of the spectral functions of ``svdgrad.functions()``;
#: the power takes p as a second argument.
_MP_FUNCTIONS = {
    "sqrt": (lambda m, x, p: m.sqrt(x), lambda m, x, p: 1 / (2 * m.sqrt(x))),
    "inv_sqrt": (lambda m, x, p: 1 / m.sqrt(x), lambda m, x, p: -1 / (2 * x * m.sqrt(x))),
    "log": (lambda m, x, p: m.log(x), lambda m, x, p: 1 / x),
    "power": (lambda m, x, p: m.power(x, p), lambda m, x, p: p * m.power(x, p - 1)),
}


def reference_function_grad(A: torch.Tensor, G: torch.Tensor, function, *, p=None, dps: int = 50,
                            floor: float = 0.0, zero_eigenvalues: int = 0):
    """(F, gA, gp) for one symmetric matrix, at ``dps`` decimal digits with mpmath (small n).

    ``function`` is a name of ``svdgrad.functions()`` ("sqrt", "inv_sqrt",
    "log", "power"; the power needs ``p``), or a pair (f, df) of callables
    on one mpmath number (e.g. ``(mpmath.exp, mpmath.exp)``).  The float64
    entries of A (symmetrized) and of p are taken as exact.

    F = U f(λ) U^T and, by Daleckii–Krein, gA = U[(U^T sym(G) U) ∘ D]U^T with
    D the first divided differences f[λi, λj] = (f(λi) − f(λj))/(λi − λj).
    At ``dps`` digits the direct quotient is accurate for any float64-distinct
    pair (a relative gap of 1e-16 costs 16 of the digits); pairs closer than
    10^(-dps/3) relative use f′ at their midpoint, which is second-order
    accurate (error ~ gap²), so exact ties get f′.  For the power,
    gp = dL/dp = Σ_i (U^T G U)_ii·λi^p·log λi.  Eigenvalues below ``floor``
    (absolute) are raised to it; a floored eigenvalue <= 0 raises
    SvdgradError (f′ or log λ is infinite there).  Returns float64 tensors
    (gp is a 0-dim tensor for the power, else None).

    ``zero_eigenvalues`` = m takes A as singular with a known null space:
    its m smallest eigenvalues (rounding noise of A's float entries) are
    exact zeros.  f(0) must be finite (√, a power p > 0).  The gradient is
    then the limit, as those eigenvalues go to 0, of everything but its
    null × null block: f[λi, 0] = (f(λi) − f(0))/λi between the range and
    the null space.  The null × null block (f′(0): infinite for √ and
    p < 1) is returned as 0 and is left out of every comparison: compare
    g − P₀gP₀ (P₀ the projector on the null space).  Unlike a floor, the limit does not move
    with the size of the noise (a floor at eps·λmax moves the cross terms
    1/(√λi + √floor) by √(eps·κ)).  gp's terms at λ = 0 are their limit 0.
    """
    import mpmath

    if A.dim() != 2 or G.shape != A.shape:
        raise SvdgradError(f"reference_function_grad takes one matrix A (n, n) and G of the same shape; "
                           f"received A {tuple(A.shape)}, G {tuple(G.shape)}.")
    if isinstance(function, str):
        if function not in _MP_FUNCTIONS:
            raise SvdgradError(f"Unknown function {function!r} for reference_function_grad; expected one of "
                               f"{', '.join(_MP_FUNCTIONS)} or a pair (f, df) of mpmath callables.")
        if (function == "power") != (p is not None):
            raise SvdgradError(f"reference_function_grad: p is needed for 'power' and only for it; "
                               f"received function={function!r}, p={p!r}.")
        f_, df_ = _MP_FUNCTIONS[function]
    else:
        try:
            fu, dfu = function
        except (TypeError, ValueError):
            raise SvdgradError(f"Expected a function name or a pair (f, df); received {function!r}.") from None
        f_, df_ = (lambda m, x, p: fu(x)), (lambda m, x, p: dfu(x))
    n = A.shape[-1]
    _check_zero_eigenvalues(zero_eigenvalues, n)
    pf = None if p is None else float(p.detach() if isinstance(p, torch.Tensor) else p)
    if zero_eigenvalues and function == "power" and not pf > 0:
        raise SvdgradError(f"zero_eigenvalues needs p > 0 for the power (λ^p·log λ, dL/dp's term, has no "
                           f"limit 0 at λ = 0 otherwise); received p={p!r}. Pass floor=... instead.")
    with _MPMATH_LOCK, mpmath.workdps(dps):
        Q, lam, Gs = _mp_floored_eig(A, G, floor, function if isinstance(function, str) else "function",
                                     zeros=zero_eigenvalues)
        pm = None if pf is None else mpmath.mpf(pf)
        if zero_eigenvalues:
            _require_finite_at_zero(lambda: f_(mpmath, mpmath.mpf(0), pm), function, p)
        fl = [f_(mpmath, x, pm) for x in lam]
        F = Q * mpmath.diag(fl) * Q.T
        M = Q.T * Gs * Q
        close = mpmath.mpf(10) ** (-(dps // 3))
        gp = mpmath.mpf(0)
        for i in range(n):
            if pm is not None and lam[i] != 0:  # (λ^p·log λ -> 0 at a zero eigenvalue, p > 0)
                gp += M[i, i] * mpmath.power(lam[i], pm) * mpmath.log(lam[i])
            for j in range(n):
                li, lj = lam[i], lam[j]
                if li == 0 and lj == 0:  # (zero_eigenvalues: the null × null block, left out)
                    D = 0
                elif abs(li - lj) <= close * max(abs(li), abs(lj)):
                    D = df_(mpmath, (li + lj) / 2, pm)
                else:
                    D = (fl[i] - fl[j]) / (li - lj)
                M[i, j] = M[i, j] * D
        gA = Q * M * Q.T
        Fn = np.array(F.tolist(), dtype=float)
        gn = np.array(gA.tolist(), dtype=float)
        gpn = None if pm is None else torch.tensor(float(gp), dtype=torch.float64)
    return torch.from_numpy(Fn), torch.from_numpy(gn), gpn


def _check_zero_eigenvalues(zeros, n: int) -> None:
    if isinstance(zeros, bool) or not (isinstance(zeros, int) and 0 <= zeros < n):
        raise SvdgradError(f"Expected zero_eigenvalues an integer in [0, n) = [0, {n}); received "
                           f"{zeros!r}. It counts A's known zero eigenvalues (n minus its rank).")


def _require_finite_at_zero(f0, function, p) -> None:
    """Refuse ``zero_eigenvalues`` for a function that is not finite at 0 (log, inv_sqrt, p <= 0)."""
    try:
        v = complex(f0())
        ok = math.isfinite(v.real) and math.isfinite(v.imag)
    except (ZeroDivisionError, ValueError, OverflowError):
        ok = False
    if not ok:
        name = function if isinstance(function, str) else "the function"
        raise SvdgradError(f"zero_eigenvalues needs f(0) finite; {name}"
                           + (f" with p={p!r}" if p is not None else "") + " is not. Pass floor=... to take "
                           "the gradient at the floored matrix instead.")


def limit_function_grad(A: torch.Tensor, G: torch.Tensor, function: str, *, zero_eigenvalues: int, p=None):
    """(F, gA) in float64 at a singular PSD A with a known null space: ``reference_function_grad(...,
    zero_eigenvalues=m)``'s limit, for sizes where mpmath is too slow.

    A float64 eigendecomposition of sym(A); its m smallest eigenvalues are
    set to exact zeros.  F = U f(λ) Uᵀ and gA = U[(Uᵀ sym(G) U) ∘ D]Uᵀ with
    D the function's own cancellation-free divided differences on the
    range (``svdgrad.functions()``), f[λi, 0] = f(λi)/λi between the range
    and the null space (f(0) = 0: "sqrt", or "power" with p > 0, the
    functions finite at 0), and 0 on the null × null block.  Its error is
    the eigendecomposition's, of order (κ + n)·eps64.
    """
    from ._spectral import get_function

    if A.dim() != 2 or G.shape != A.shape:
        raise SvdgradError(f"limit_function_grad takes one matrix A (n, n) and G of the same shape; "
                           f"received A {tuple(A.shape)}, G {tuple(G.shape)}.")
    n = A.shape[-1]
    _check_zero_eigenvalues(zero_eigenvalues, n)
    fn = get_function(function)
    if (function == "power") != (p is not None) or (p is not None and not float(p) > 0):
        raise SvdgradError(f"limit_function_grad: p > 0 is needed for 'power' and only for it (f(0) = 0); "
                           f"received function={function!r}, p={p!r}.")
    zero = torch.zeros(1, dtype=torch.float64)
    _require_finite_at_zero(lambda: float(fn.f(zero, p)), function, p)
    m = zero_eigenvalues
    L, U = torch.linalg.eigh(_sym(A.detach().to(torch.float64)))
    L = torch.cat([torch.zeros(m, dtype=torch.float64), L[m:]])
    Lr = L[m:]
    if float(Lr[0]) <= 0:
        raise SvdgradError(f"Expected {n - m} positive eigenvalues above the {m} zero ones; received "
                           f"λ = {float(Lr[0]):.3g} among them. Pass the number of A's zero eigenvalues.")
    fl = fn.f(L, p)
    D = torch.zeros(n, n, dtype=torch.float64)
    D[m:, m:] = fn.dd(Lr[:, None], Lr[None, :], p)
    cross = fl[m:] / Lr  # f[λi, 0] = (f(λi) − f(0))/λi, f(0) = 0 for √ and p > 0
    D[m:, :m] = cross[:, None]
    D[:m, m:] = cross[None, :]
    F = (U * fl) @ U.mT
    g = U @ ((U.mT @ _sym(G.detach().to(torch.float64)) @ U) * D) @ U.mT
    return F, g


def reference_gram_grad(X: torch.Tensor, G: torch.Tensor, *, inverse: bool = False, dps: int = 50):
    """(F, gX) for F = (X Xᵀ)^{±1/2} of one feature matrix X (d, N), at ``dps`` digits with mpmath.

    The float64 entries of X are exact and Σ = X Xᵀ is formed in mpmath (a
    float64 product needs 32 digits), so this references ``gram_sqrtm`` and
    ``gram_inv_sqrtm`` without the squaring of κ that a float Σ brings.
    With Σ = U diag(σ²) Uᵀ: gΣ = U[(Uᵀ sym(G) U) ∘ D]Uᵀ with D_ij = 1/(σi + σj)
    (inverse: −1/(σi·σj·(σi + σj))) and gX = 2·gΣ·X.  X must have full row
    rank (σ > 0).  Returns float64 tensors.
    """
    import mpmath

    if X.dim() != 2 or G.shape != (X.shape[0], X.shape[0]):
        raise SvdgradError(f"reference_gram_grad takes one X (d, N) and G (d, d); received X {tuple(X.shape)}, "
                           f"G {tuple(G.shape)}.")
    d = X.shape[0]
    x = X.detach().to(torch.float64).cpu().numpy()
    g = G.detach().to(torch.float64).cpu().numpy()
    with _MPMATH_LOCK, mpmath.workdps(dps):
        Xm = mpmath.matrix(x.tolist())
        Gs = mpmath.matrix(d, d)
        for i in range(d):
            for j in range(d):
                Gs[i, j] = (mpmath.mpf(g[i, j]) + mpmath.mpf(g[j, i])) / 2
        E, U = mpmath.eigsy(Xm * Xm.T)
        if min(E) <= 0:
            raise SvdgradError(f"reference_gram_grad needs X of full row rank; the smallest σ² is "
                               f"{mpmath.nstr(min(E), 5)}.")
        s = [mpmath.sqrt(e) for e in E]
        F = U * mpmath.diag([1 / v if inverse else v for v in s]) * U.T
        M = U.T * Gs * U
        for i in range(d):
            for j in range(d):
                M[i, j] *= -1 / (s[i] * s[j] * (s[i] + s[j])) if inverse else 1 / (s[i] + s[j])
        gX = 2 * (U * M * U.T) * Xm
        Fn = np.array(F.tolist(), dtype=float)
        gn = np.array(gX.tolist(), dtype=float)
    return torch.from_numpy(Fn), torch.from_numpy(gn)


# ---------------------------------------------------------------------------
# Finite-difference VJP check (JAX's check_vjp idea).
# ---------------------------------------------------------------------------

def random_symmetric(shape, *, dtype=torch.float64, seed: int = 0) -> torch.Tensor:
    """Unit-Frobenius-norm symmetric direction(s) of the given (*, n, n) shape.

    An int n means a single (n, n) matrix.
    """
    if isinstance(shape, int) and not isinstance(shape, bool):
        shape = (shape, shape)
    shape = tuple(shape) if isinstance(shape, (tuple, list, torch.Size)) else shape
    if not (isinstance(shape, tuple) and len(shape) >= 2 and all(isinstance(s, int) and s >= 0 for s in shape)
            and shape[-1] == shape[-2]):
        raise SvdgradError(f"Expected a shape (*, n, n) or an int n for random_symmetric; received {shape!r}. "
                           f"Write random_symmetric(4) or random_symmetric((2, 4, 4)).")
    gen = torch.Generator().manual_seed(seed)
    T = torch.randn(shape, generator=gen, dtype=torch.float64)
    T = T + T.mT
    return (T / torch.linalg.matrix_norm(T)[..., None, None].clamp_min(1e-300)).to(dtype)


def vjp_fd_error(f, A: torch.Tensor, *, directions: int = 3, step: float | None = None, seed: int = 0) -> float:
    """Worst relative mismatch of ⟨t, J^T c⟩ and the central difference ⟨(f(A+ht) - f(A-ht))/2h, c⟩.

    t are random symmetric directions (A must stay symmetric), c random
    cotangents.  ``step`` defaults to eps^(1/3)·λmin(A), so A ± h·t stays
    positive definite; the truncation error is then O(eps^(2/3)) relative
    to the local scale.  Returns max |lhs - rhs| / (‖J^T c‖·‖t‖), the
    mismatch relative to the Cauchy–Schwarz bound on either side.
    """
    A = A.detach()
    dtype = A.dtype
    L = torch.linalg.eigvalsh(A.to(torch.float64))
    lmin = float(L[..., 0].min())
    h = step if step is not None else torch.finfo(dtype).eps ** (1 / 3) * max(lmin, 1e-300)
    worst = 0.0
    for d in range(directions):
        t = random_symmetric(A.shape, dtype=dtype, seed=seed + 2 * d)
        gen = torch.Generator().manual_seed(seed + 2 * d + 1)
        Ar = A.clone().requires_grad_(True)
        out = f(Ar)
        c = torch.randn(out.shape, generator=gen, dtype=torch.float64).to(out.dtype)
        (gA,) = torch.autograd.grad(out, Ar, c)
        lhs = float((gA.double() * t.double()).sum())
        with torch.no_grad():
            fd = (f(A + h * t).double() - f(A - h * t).double()) / (2 * h)
        rhs = float((fd * c.double()).sum())
        # Scale: ‖J^T c‖·‖t‖ bounds |lhs| (Cauchy–Schwarz); dividing by |lhs| alone
        # would blow up whenever a random direction happens to be nearly orthogonal.
        denom = max(abs(lhs), abs(rhs), float(torch.linalg.vector_norm(gA.double())) * float(torch.linalg.vector_norm(t.double())), 1e-300)
        worst = max(worst, abs(lhs - rhs) / denom)
    return worst


def jvp_fd_error(f, A: torch.Tensor, *, directions: int = 3, step: float | None = None, seed: int = 0) -> float:
    """Worst relative mismatch of the forward-mode J t (``torch.func.jvp``) and (f(A+ht) − f(A−ht))/2h.

    t are random unit symmetric directions (A must stay symmetric); the whole
    output tangent is compared, not a projection.  ``step`` defaults to
    eps^(1/3)·λmin(A) as in ``vjp_fd_error``, so A ± h·t stays positive
    definite and the truncation error is O(eps^(2/3)) relative to the local
    scale.  Returns max ‖J t − fd‖_F / max(‖J t‖_F, ‖fd‖_F); use the same
    tolerance as for ``vjp_fd_error``.
    """
    from torch.func import jvp

    A = A.detach()
    dtype = A.dtype
    L = torch.linalg.eigvalsh(A.to(torch.float64))
    lmin = float(L[..., 0].min())
    h = step if step is not None else torch.finfo(dtype).eps ** (1 / 3) * max(lmin, 1e-300)
    worst = 0.0
    for d in range(directions):
        t = random_symmetric(A.shape, dtype=dtype, seed=seed + 2 * d)
        _, Jt = jvp(f, (A,), (t,))
        with torch.no_grad():
            fd = (f(A + h * t).double() - f(A - h * t).double()) / (2 * h)
        Jt = Jt.double()
        if not bool(torch.isfinite(Jt).all()):
            return math.inf
        denom = max(float(torch.linalg.vector_norm(Jt)), float(torch.linalg.vector_norm(fd)), 1e-300)
        worst = max(worst, float(torch.linalg.vector_norm(Jt - fd)) / denom)
    return worst


def rel_error(x: torch.Tensor, ref: torch.Tensor) -> float:
    """‖x - ref‖_F / ‖ref‖_F over the whole tensor, in float64 (inf if x is not finite; SvdgradError if ref is not).

    Both are divided by max|ref| first, so that the norms neither overflow nor underflow (entries of
    1e288, as A^-40 has, squared overflow float64).
    """
    x = x.detach().double()
    ref = ref.detach().double()
    if not bool(torch.isfinite(ref).all()):
        # (the error would be NaN, and medians drop NaN rows without a word: the sweep records this as an error)
        raise SvdgradError(f"rel_error: the reference has NaN or Inf entries ({describe(ref)}); an error "
                           f"against it means nothing. Check the reference's inputs and precision.")
    if not bool(torch.isfinite(x).all()):
        return math.inf
    m = float(ref.abs().max()) if ref.numel() else 0.0
    if 0.0 < m < math.inf:
        x, ref = x / m, ref / m
    den = float(torch.linalg.vector_norm(ref))
    num = float(torch.linalg.vector_norm(x - ref))
    return num / den if den > 0 else num


def sym_part(X: torch.Tensor) -> torch.Tensor:
    """(X + X^T)/2, the part of a gradient that tests compare (gauge: A is symmetric)."""
    return _sym(X)


# ---------------------------------------------------------------------------
# Hypothesis strategies.
# ---------------------------------------------------------------------------

def spd_matrices(*, n=(1, 32), log10_kappa=(0.0, 12.0), spectra=SPECTRA, batch=(), dtype=torch.float64):
    """Strategy for (A, info) where A = spd(...) and info holds n, kappa, spectrum, seed.

    n and log10_kappa are inclusive (lo, hi) ranges; ``spectra`` a subset of SPECTRA.
    Needs hypothesis (``pip install "svdgrad[test]"``).
    """
    try:
        from hypothesis import strategies as st
    except ModuleNotFoundError:
        raise SvdgradError('svdgrad.testing.spd_matrices needs hypothesis: pip install "svdgrad[test]"') from None

    @st.composite
    def build(draw):
        nn = draw(st.integers(*n))
        lk = draw(st.floats(*log10_kappa, allow_nan=False, allow_infinity=False))
        sp = draw(st.sampled_from(tuple(spectra)))
        seed = draw(st.integers(0, 2**31 - 1))
        kappa = 10.0 ** lk
        A = spd(nn, kappa, sp, batch=batch, dtype=dtype, seed=seed)
        return A, {"n": nn, "kappa": kappa, "spectrum": sp, "seed": seed}

    return build()


def gradients(G_shape, *, seed: int = 0, dtype=torch.float64, symmetric: bool = False) -> torch.Tensor:
    """Random incoming gradient G (deterministic by seed); not symmetric unless asked."""
    gen = torch.Generator().manual_seed(seed)
    G = torch.randn(G_shape, generator=gen, dtype=torch.float64)
    if symmetric:
        G = sym_part(G)
    return G.to(dtype)


__all__ = [
    "SPECTRA", "CLUSTER_GAP", "eigenvalues", "spd", "features", "haar_orthogonal", "condition_number",
    "reference_sqrtm_grad", "reference_sqrtm_grad_derivative", "reference_function_grad", "limit_function_grad",
    "reference_gram_grad", "random_symmetric",
    "vjp_fd_error", "jvp_fd_error", "rel_error", "sym_part", "spd_matrices", "gradients",
]
