"""Matmul-only square roots and the Lyapunov backward (Song, Sebe & Wang, "Fast Differentiable
Matrix Square Root", ICLR 2022).

Forward.  Normalize per matrix, Ã = A/s with s = ‖A‖_F, so that Ã's
eigenvalues lie in (0, 1], and write √Ã = √(I − Z̃) with Z̃ = I − Ã, whose
eigenvalues lie in [0, 1):

- MTP: the Taylor polynomial Σ_{k<=K} c_k Z̃^k of √(1 − z), c_k = (−1)^k·C(1/2, k);
- MPA: the [M/N] Padé approximant P_M(Z̃)·Q_N(Z̃)^{-1} of √(1 − z), with P and
  Q evaluated as products of their linear factors (``pade_roots``).

Then A^{1/2} ≈ √s·(·).  The inverse root is the inverse of that
approximation; every inverse needed is of an SPD polynomial in Z̃ and is
computed by Cholesky (no LU: batched ``lu_solve`` fails for n >= ~192
with 2 threads in torch 2.13, pytorch #142815).

Backward.  For Z = A^{1/2}, dA = Z dZ + dZ Z, so the gradient is the X of
the Lyapunov equation Z X + X Z = sym(G) (−sym(Y G Y) for the inverse
root Y = Z^{-1}).  ``lyapunov_solve`` finds X with the coupled matrix-sign
iteration (Higham 2008, sect. 5.3 and 8.6): the Newton–Schulz iteration for
sign([[B, C], [0, −B]]) keeps its block structure,
B ← ½B(3I − B²), C ← ½(3C − B²C − CB² + BCB), and converges to
B = I, C = 2X.  Each matrix iterates until ‖I − B²‖_F/√n <= tol (or stops
improving at rounding level), with a cap; the converged ones leave the
batch.  The gradient is then the exact gradient of the square root at the
computed Z: the forward's approximation error is the only one.
"""

from __future__ import annotations

import math
import threading
import warnings
from functools import lru_cache

import mpmath
import torch

from ._errors import ConvergenceWarning, SvdgradError


def _flat(X: torch.Tensor) -> torch.Tensor:
    return X.reshape((-1,) + X.shape[-2:])


# ---------------------------------------------------------------------------
# Coefficients (mpmath, 50 digits; cached per degree).
# ---------------------------------------------------------------------------

#: mpmath's working precision is one process-wide setting, which workdps sets and restores: two threads
#: inside workdps at once restored each other's (mp.dps left at 50 or 110) and could fail to converge.
_MPMATH_LOCK = threading.RLock()


def _sqrt_series(order: int) -> list:
    """Taylor coefficients of √(1 − z): c_k = (−1)^k·binomial(1/2, k), k = 0..order."""
    with _MPMATH_LOCK, mpmath.workdps(50):
        return [(-1) ** k * mpmath.binomial(mpmath.mpf(1) / 2, k) for k in range(order + 1)]


@lru_cache(maxsize=None)
def taylor_coefficients(degree: int) -> tuple[float, ...]:
    return tuple(float(c) for c in _sqrt_series(degree))


@lru_cache(maxsize=None)
def pade_coefficients(num_degree: int, den_degree: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(p, q), lowest order first, of the [M/N] Padé approximant of √(1 − z) (p_0 = q_0 = 1)."""
    with _MPMATH_LOCK, mpmath.workdps(50):
        p, q = mpmath.pade(_sqrt_series(num_degree + den_degree), num_degree, den_degree)
        return tuple(float(c) for c in p), tuple(float(c) for c in q)


@lru_cache(maxsize=None)
def pade_roots(num_degree: int, den_degree: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Roots of P and of Q for the [M/N] Padé approximant of √(1 − z): P(z) = Π(1 − z/r_i), same for Q.

    Evaluated in this factored form, P(Z̃) and Q(Z̃) are products of
    I − Z̃/r with eigenvalues 1 − z/r that are computed to full relative
    accuracy.  The monomial form 1 − 2.75z + 2.75z² − … cancels near z = 1
    (P(1) ≈ 1e-3 for [5/5]), which cost the float32 forward a factor of
    ~1e3 in accuracy.  √(1 − z) is a Stieltjes-type function: the roots are
    real and lie outside [0, 1] (checked here, not assumed), so every factor
    is SPD.
    """
    p, q = pade_coefficients(num_degree, den_degree)
    out = []
    with _MPMATH_LOCK, mpmath.workdps(50):
        pp, qq = mpmath.pade(_sqrt_series(num_degree + den_degree), num_degree, den_degree)
        for coeffs in (pp, qq):
            coeffs = list(coeffs)
            while len(coeffs) > 1 and coeffs[-1] == 0:
                coeffs.pop()
            roots = mpmath.polyroots(coeffs[::-1], maxsteps=400, extraprec=200) if len(coeffs) > 1 else []
            if any(abs(mpmath.im(r)) > 1e-30 or 0 <= mpmath.re(r) <= 1 for r in roots):
                raise SvdgradError(f"The [{num_degree}/{den_degree}] Padé approximant of sqrt(1 - z) has a root "
                                   f"that is complex or in [0, 1]; choose other degrees (e.g. equal ones).")
            out.append(tuple(float(mpmath.re(r)) for r in roots))
    return out[0], out[1]


def _factored(A: torch.Tensor, s: torch.Tensor, roots, A2: torch.Tensor) -> torch.Tensor:
    """Π_i (I − Z̃/r_i) with Z̃ = I − A/s, from A and A2 = A²: ⌈len(roots)/2⌉ − 1 matmuls.

    Each linear factor is a·I + (b/s)·A with a = 1 − 1/r, b = 1/r; two of them
    multiply out to a₁a₂·I + ((a₁b₂ + a₂b₁)/s)·A + (b₁b₂/s²)·A², formed
    elementwise from the shared A², so the product of five factors costs two
    matmuls (three with A²) instead of four.  Measured against the float64
    Padé root, float32 at κ = 10…1e4: 6e-7…2e-6, as with one factor at a time.
    """
    n = A.shape[-1]
    out = None
    rs = list(roots)
    while rs:
        if len(rs) >= 2:
            r1, r2 = rs.pop(0), rs.pop(0)
            a1, b1, a2, b2 = 1.0 - 1.0 / r1, 1.0 / r1, 1.0 - 1.0 / r2, 1.0 / r2
            # (*, 1, 1) factors first (see _kernels.times_pow2)
            F = torch.addcmul(((a1 * b2 + a2 * b1) / s) * A, (b1 * b2) / (s * s), A2)
            F.diagonal(dim1=-2, dim2=-1).add_(a1 * a2)
        else:
            r = rs.pop(0)
            F = (1.0 / (s * r)) * A
            F.diagonal(dim1=-2, dim2=-1).add_(1.0 - 1.0 / r)
        out = F if out is None else out @ F
    return torch.eye(n, dtype=A.dtype, device=A.device).expand_as(A).clone() if out is None else out


def _poly(coeffs, powers):
    """Σ_k coeffs[k]·powers[k], powers[0] = I."""
    out = powers[0] * coeffs[0]
    for c, P in zip(coeffs[1:], powers[1:]):
        out = out + c * P
    return out


def _powers(Zt: torch.Tensor, degree: int) -> list[torch.Tensor]:
    n = Zt.shape[-1]
    eye = torch.eye(n, dtype=Zt.dtype, device=Zt.device).expand_as(Zt)
    powers = [eye]
    if degree >= 1:
        powers.append(Zt)
    for _ in range(2, degree + 1):
        powers.append(powers[-1] @ Zt)
    return powers


def _traced(X: torch.Tensor) -> bool:
    """Under vmap/grad transforms, torch's legacy batching (is_grads_batched) or torch.compile: no data-dependent
    Python control flow."""
    return (torch.compiler.is_compiling() or bool(torch._C._functorch.is_functorch_wrapped_tensor(X))
            or bool(torch._C._functorch.is_legacy_batchedtensor(X)))


def _spd_inverse_apply(M: torch.Tensor, R: torch.Tensor) -> torch.Tensor:
    """M^{-1} R for SPD M by Cholesky."""
    L, info = torch.linalg.cholesky_ex(M)
    if not _traced(info) and bool((info > 0).any()):
        raise SvdgradError("A matmul-only root hit a polynomial in A that is not positive definite: the input "
                           "is too ill-conditioned for this degree. Raise the degree or use an eigen method.")
    return torch.cholesky_solve(R, L)


def _norm_scale(A: torch.Tensor) -> torch.Tensor:
    """s = ‖A‖_F per matrix (*, 1, 1); the zero matrix gets √tiny."""
    return torch.linalg.matrix_norm(A)[..., None, None].clamp_min(torch.finfo(A.dtype).tiny ** 0.5)


def normalize(A: torch.Tensor):
    """(Z̃ = I − A/s, s) with s = ‖A‖_F per matrix (*, 1, 1); the zero matrix keeps s = √tiny."""
    s = _norm_scale(A)
    n = A.shape[-1]
    eye = torch.eye(n, dtype=A.dtype, device=A.device)
    return eye - A / s, s


def _row_major_symmetric(X: torch.Tensor) -> torch.Tensor:
    """X (exactly symmetric: X = (Y + Yᵀ)/2) in row-major layout, as every other method returns: Xᵀ, the same
    numbers, where X came column-major out of a Cholesky solve (then ``F.view(B, -1)`` raised)."""
    return X.mT if not X.is_contiguous() and X.mT.is_contiguous() else X


def mtp_root(A: torch.Tensor, degree: int, inverse: bool):
    """(Z ≈ A^{1/2}, F) with F = Z or Z^{-1}: the Taylor polynomial of √(1 − z), degree ``degree``."""
    Zt, s = normalize(A)
    root = _poly(taylor_coefficients(degree), _powers(Zt, degree))  # ≈ Ã^{1/2}, SPD: every c_k<0 for k>=1
    Z = s.sqrt() * root
    if not inverse:
        return Z, Z
    eye = torch.eye(A.shape[-1], dtype=A.dtype, device=A.device).expand_as(A)
    return Z, (_spd_inverse_apply(root, eye) / s.sqrt()).contiguous()  # (column-major out of the solve)


def mpa_root(A: torch.Tensor, num_degree: int, den_degree: int, inverse: bool):
    """(Z ≈ A^{1/2}, F): the [M/N] Padé approximant P Q^{-1} of √(1 − z); P and Q commute.

    P and Q are symmetric up to rounding and are not symmetrized: the
    Cholesky factorization reads Q's lower triangle only, and the result
    is symmetrized once.
    """
    s = _norm_scale(A)
    rp, rq = pade_roots(num_degree, den_degree)
    A2 = A @ A
    P, Q = _factored(A, s, rp, A2), _factored(A, s, rq, A2)  # polynomials in Z̃ = I − A/s: commuting
    root = _spd_inverse_apply(Q, P)  # Q^{-1} P = P Q^{-1}, symmetric up to rounding
    root = _row_major_symmetric(0.5 * (root + root.mT))
    Z = s.sqrt() * root
    if not inverse:
        return Z, Z
    inv = _spd_inverse_apply(P, Q)  # (P Q^{-1})^{-1} = Q P^{-1}
    return Z, _row_major_symmetric(0.5 * (inv + inv.mT)) / s.sqrt()


# ---------------------------------------------------------------------------
# The Lyapunov backward.
# ---------------------------------------------------------------------------

def default_tol(dtype: torch.dtype) -> float:
    """‖I − B²‖_F/√n at which the sign iteration stops: 100·eps of the compute dtype."""
    return 100.0 * torch.finfo(dtype).eps


def lyapunov_solve(Z: torch.Tensor, C: torch.Tensor, *, tol: float | None = None, max_iterations: int = 100,
                   what: str = "the Lyapunov backward") -> torch.Tensor:
    """X (*, n, n) with Z X + X Z = C, for SPD Z and symmetric C, by the coupled matrix-sign iteration.

    Per matrix: B = Z/s, C/s with s close to λmax(Z): s = min(‖Z‖_F,
    1.5·μ), μ the Rayleigh quotient of two power steps.  The iteration maps
    (0, √3) to 1, and the small eigenvalues only grow by 1.5× per step, so
    a tight s saves iterations: ‖Z‖_F alone can exceed λmax by √n.  A
    matrix whose μ underestimated λmax by more than 1.5·√3 would converge
    to a B with eigenvalues −1; tr(B) = n catches that, and such a matrix
    is solved again with s = ‖Z‖_F (always safe).  From the second step on
    the steps are scaled (``_scaled_step``, with the lower end of the
    spectrum estimated by power steps on I − B): in float32 and float64 at
    κ(A) = 1e1…1e6 this took about 35-40% less time to the same or a
    smaller residual than the unscaled iteration.  A matrix leaves the
    batch once ‖I − B²‖_F/√n <= tol, or once that measure stops halving
    below 1e-2 (rounding level).  Matrices still iterating after
    ``max_iterations`` are reported with a ConvergenceWarning (their X is
    the last iterate).  Five matmuls per iteration (B, C and BCB are
    symmetric, so CB² = (B²C)ᵀ).
    """
    shape = Z.shape
    n = shape[-1]
    tol = default_tol(Z.dtype) if tol is None else tol
    if _traced(Z) or _traced(C):
        return _lyapunov_solve_masked(Z, C, tol, max_iterations).reshape(shape)
    Zf, Cf = _flat(Z), _flat(C)
    X, wrong, (late, measure) = _sign_iteration(Zf, Cf, _tight_scale(Zf), tol, max_iterations)
    if bool(wrong.any()):  # the estimate was too low for these: redo them with the safe ‖Z‖_F
        idx = torch.nonzero(wrong).flatten()
        Zw = Zf[idx]
        X[idx], _, (late_w, measure_w) = _sign_iteration(Zw, Cf[idx], torch.linalg.matrix_norm(Zw)[:, None, None],
                                                         tol, max_iterations)
        late, measure = torch.cat((late[~wrong[late]], idx[late_w])), torch.cat((measure[~wrong[late]], measure_w))
    if late.numel():
        warnings.warn(ConvergenceWarning(
            f"{what} did not converge in max_iterations={max_iterations} for {late.numel()} of "
            f"{Zf.shape[0]} matrices (‖I - B²‖ = {float(measure.max()):.2e} > tol = {tol:.2e}); their gradient is "
            f"the last iterate. Raise max_iterations, or use an eigen method for such ill-conditioned input."
        ), stacklevel=3)
    return X.reshape(shape)


def _tight_scale(Zf: torch.Tensor) -> torch.Tensor:
    """s (b, 1, 1) = min(‖Z‖_F, 1.5·μ), μ the Rayleigh quotient after two power steps from the largest diagonal column."""
    tiny = torch.finfo(Zf.dtype).tiny
    diag = Zf.diagonal(dim1=-2, dim2=-1)
    m = diag.argmax(-1)
    v1 = torch.gather(Zf, -1, m[:, None, None].expand(Zf.shape[:-1] + (1,)))[..., 0]  # Z e_m
    v2 = (Zf * v1[:, None, :]).sum(-1)
    mu = (v1 * v2).sum(-1) / (v1 * v1).sum(-1).clamp_min(tiny)  # <= λmax(Z)
    fro = torch.linalg.matrix_norm(Zf)
    return torch.minimum(fro, 1.5 * torch.maximum(mu, diag.amax(-1))).clamp_min(tiny)[:, None, None]


def _sign_iteration(Zf, Cf, s, tol, max_iterations):
    """The compacting sign iteration on flat (b, n, n) batches.

    Returns (X, wrong, unconverged): ``wrong`` marks matrices whose Z/s had
    an eigenvalue above √3 (the iteration then ends at eigenvalues −1, so
    tr(B) != n, or escapes: ‖I − B²‖/√n > 2.5, impossible from (0, √3));
    ``unconverged`` those still iterating at the cap, with their measure.
    """
    n = Zf.shape[-1]
    B, Cc = Zf / s, Cf / s
    X = torch.zeros_like(Cf)
    trace = torch.full((Zf.shape[0],), float(n), dtype=Zf.dtype, device=Zf.device)
    active = torch.arange(Zf.shape[0], device=Zf.device)
    eye = torch.eye(n, dtype=Zf.dtype, device=Zf.device)
    prev = torch.full((Zf.shape[0],), math.inf, dtype=Zf.dtype, device=Zf.device)
    unconverged = (active[:0], prev[:0])
    alpha = torch.ones_like(prev)  # the first step is unscaled: it maps (0, √3) into (0, 1]
    low = None  # the lower end l of [l, 1] the scaled steps assume, from the second step on
    bufs = None
    for it in range(max_iterations + 1):
        if bufs is None or bufs.shape != B.shape:  # new buffers only when the batch shrinks
            bufs = _Buffers(B)
        B2 = torch.bmm(B, B, out=bufs.b2)
        if low is not None and it < max_iterations and not bool((low >= _CHECK_FROM).any()):
            # Every spectrum is still within [l, 1] with l < 0.9 (l overestimates λmin): none has converged.
            prev = torch.full_like(prev, math.inf)
            alpha, low = _scaled_step(low)
            B, Cc = _sign_step(B, B2, Cc, alpha, bufs.step_out())
            continue
        delta = torch.linalg.matrix_norm(eye - B2) / math.sqrt(n)  # (b,)
        escaped = ~(delta <= 2.5)  # also NaN
        done = (delta <= tol) | ((delta < 1e-2) & (delta > 0.5 * prev)) | escaped
        if it == max_iterations:
            done = torch.ones_like(done)
            unconverged = (active[~escaped & (delta > tol)], delta[~escaped & (delta > tol)])
        if bool(done.any()):
            X[active[done]] = 0.5 * Cc[done]
            trace[active[done]] = torch.where(escaped[done], torch.nan, B[done].diagonal(dim1=-2, dim2=-1).sum(-1))
            keep = ~done
            active, B, B2, Cc, delta, alpha = active[keep], B[keep], B2[keep], Cc[keep], delta[keep], alpha[keep]
            low = None if low is None else low[keep]
            if active.numel() == 0:
                break
        prev = delta
        if it == 1:  # B's spectrum is in (0, 1] now: estimate its lower end
            low = _smallest_eigenvalue_estimate(B)
        if low is not None:
            alpha, low = _scaled_step(low)
        if bufs.shape != B.shape:  # some matrices left the batch
            bufs = _Buffers(B)
        B, Cc = _sign_step(B, B2, Cc, alpha, bufs.step_out())
    wrong = ~((trace - n).abs() < 0.5)  # NaN (escaped) counts as wrong
    return X, wrong, unconverged


#: The convergence measure is computed only once the assumed lower end l reaches this (or at the
#: cap): below it ‖I − B²‖_F/√n >= 1 − l² > tol for every matrix, so nothing can have converged.
_CHECK_FROM = 0.9


def _sign_step(B, B2, Cc, alpha, out):
    """One scaled step on M = [[B, C], [0, −B]]: M ← (α/2)(3M − α²M³), with B2 = B² given.

    B ← 1.5α·B − 0.5α³·B³ and C ← 1.5α·C − 0.5α³·(B²C + CB² − BCB) (B, C, BCB symmetric, so
    CB² = (B²C)ᵀ).  Five matmuls; the subtraction of BCB rides on its matmul (baddbmm).  Every
    result goes into ``out`` = (B′, C′, t1, t2, t3), buffers that alias none of the inputs:
    allocating these (b, n, n) temporaries afresh each step cost more than the step's matmuls
    on CPU (page faults; measured 4 ms against 1.2 ms at (32, 64, 64)).
    """
    Bn, Cn, t1, t2, t3 = out
    a = alpha[:, None, None]
    c3 = -0.5 * a * a * a
    torch.bmm(B2, Cc, out=t1)  # B²C
    torch.add(t1, t1.mT, out=t2)  # B²C + CB²
    torch.bmm(B, Cc, out=t1)  # BC
    torch.baddbmm(t2, t1, B, alpha=-1.0, out=t3)  # W = B²C + CB² − BCB
    torch.bmm(B, B2, out=t1)  # B³
    # (*, 1, 1) factors first (see _kernels.times_pow2).
    torch.mul(1.5 * a, B, out=Bn).addcmul_(c3, t1)
    torch.mul(1.5 * a, Cc, out=Cn).addcmul_(c3, t3)
    return Bn, Cn


class _Buffers:
    """Reused (b, n, n) buffers for the sign iteration: B², two (B, C) pairs used in turn, three temporaries."""

    def __init__(self, like: torch.Tensor):
        self.shape = like.shape
        # Row-major whatever like's layout: bmm and baddbmm write a batch at once (MKL) only into a contiguous
        # out=; into a column-major one (Z from a Cholesky solve is) they loop over the batch, matrix by matrix.
        self.b2, *pairs = (torch.empty(like.shape, dtype=like.dtype, device=like.device) for _ in range(8))
        self.pairs = (tuple(pairs[0:2]), tuple(pairs[2:4]))
        self.tmp = tuple(pairs[4:7])
        self.turn = 0

    def step_out(self):
        """Output buffers for the next step.  The pairs take turns, so a step never writes the pair its
        input came from (new buffers are made whenever the batch shrinks, and its B, C are then fresh)."""
        self.turn ^= 1
        return self.pairs[self.turn] + self.tmp


#: The smallest lower end the scaled steps assume: α <= √(3/(1 + 1e-3)), so αx < √3 for every x <= 1
#: with a margin far above rounding (at αx = √3 a step would map x to 0).
_LOW_MIN = 1e-3


def _smallest_eigenvalue_estimate(B: torch.Tensor, steps: int = 8) -> torch.Tensor:
    """An estimate (b,) of λmin(B) for B (b, n, n) with spectrum in (0, 1]: 1 − the Rayleigh quotient
    of I − B after ``steps`` power steps (matrix-vector products only).

    The quotient is at most λmax(I − B), so the estimate is at least λmin: the scaled steps that
    use it then raise the eigenvalues below it by at least 1.5× per step, as the unscaled ones
    do, and every other eigenvalue as the scaling intends.
    """
    n = B.shape[-1]
    gen = torch.Generator(device=B.device).manual_seed(0)
    v = torch.rand(n, generator=gen, dtype=B.dtype, device=B.device).add_(0.5).expand(B.shape[:-1]).clone()
    tiny = torch.finfo(B.dtype).tiny
    for _ in range(steps):
        w = v - (B @ v[..., None])[..., 0]  # (I − B) v
        v = w / torch.linalg.vector_norm(w, dim=-1, keepdim=True).clamp_min(tiny)
    mu = (v * (v - (B @ v[..., None])[..., 0])).sum(-1)
    return (1.0 - mu).clamp(_LOW_MIN, 1.0)


def _scaled_step(low: torch.Tensor):
    """(α, l′) of the scaled Newton–Schulz sign step for a spectrum in [l, 1] (Chen & Chow, SIAM
    J. Sci. Comput. 2014): α = √(3/(1 + l + l²)) maps l and 1 to the same value l′ and the
    maximum 1 at 1/α, so the spectrum after the step is in [l′, 1]; l′ = 3αl(1 + l)/(2(1 + l + l²)).
    The small eigenvalues grow by up to 3√3/2 ≈ 2.6× per step instead of 1.5×.
    """
    q = 1.0 + low + low * low
    alpha = torch.sqrt(3.0 / q)
    return alpha, torch.clamp(1.5 * alpha * low * (1.0 + low) / q, _LOW_MIN, 1.0)


def _lyapunov_solve_masked(Z: torch.Tensor, C: torch.Tensor, tol: float, max_iterations: int) -> torch.Tensor:
    """The same iteration without data-dependent control flow (under vmap / torch.compile).

    Every matrix runs ``max_iterations`` steps; a converged matrix is frozen
    by a mask instead of leaving the batch, so the result equals
    ``lyapunov_solve``'s, at the cost of the full cap (and no warning).
    """
    n = Z.shape[-1]
    s = torch.linalg.matrix_norm(Z)[..., None, None].clamp_min(torch.finfo(Z.dtype).tiny)
    B, Cc = Z / s, C / s
    eye = torch.eye(n, dtype=Z.dtype, device=Z.device)
    frozen = torch.zeros(Z.shape[:-2] + (1, 1), dtype=torch.bool, device=Z.device)
    prev = torch.full(Z.shape[:-2] + (1, 1), math.inf, dtype=Z.dtype, device=Z.device)
    for _ in range(max_iterations):
        B2 = B @ B
        delta = (torch.linalg.matrix_norm(eye - B2) / math.sqrt(n))[..., None, None]
        frozen = frozen | (delta <= tol) | ((delta < 1e-2) & (delta > 0.5 * prev))
        prev = delta
        B2C = B2 @ Cc
        Cn = 0.5 * (3.0 * Cc - B2C - B2C.mT + (B @ Cc) @ B)
        Bn = 0.5 * (B @ (3.0 * eye - B2))
        Cc = torch.where(frozen, Cc, Cn)
        B = torch.where(frozen, B, Bn)
    return 0.5 * Cc
