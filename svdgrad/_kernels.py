"""Pure backward rules: functions of tensors, no autograd state.

Notation (Ionescu et al. ICCV15; Song et al. ICCV21): A = U diag(L) U^T with L ascending, Z = A^{1/2},
S = diag(s) with s = sqrt(L), G = dLoss/dZ, sym(X) = (X + X^T)/2.
K is the (n, n) matrix that the eigen backward multiplies with U^T gU:
ordinarily K_ij = 1/(L_i - L_j) off the diagonal and 0 on it.  Every
smoothing remedy (truncation, Taylor, Padé) is a different K; each K-rule
below is antisymmetric, which is what makes the symmetrized eigen backward
reduce to a divided difference.
"""

from __future__ import annotations

import torch


def sym(X: torch.Tensor) -> torch.Tensor:
    # In place on the fresh sum: one temporary instead of two (same values,
    # 0.5·(a + b) either way; autograd-safe, add's backward saves nothing).
    return (X + X.mT).mul_(0.5)


def scale_exponent(amax: torch.Tensor) -> torch.Tensor:
    """k (*) such that A·4^-k has its largest |entry| of order 1 ([1/4, 4)), from amax = max|A| (*).

    Scaling by a power of two is exact (only the exponent changes), so
    f(A) = 2^k·f(A / 4^k) for the square root costs no rounding, and every
    method then works on entries of order 1: nothing in an eigensolver, a
    Cholesky or a Newton–Schulz step can overflow or underflow, whatever
    the scale of A.  A zero or non-finite amax gives k = 0.
    """
    # floor(log2(amax)/2) in amax's dtype.  Any integer k keeps the scaling
    # exact; log2's rounding near a power of two only moves the scaled
    # maximum within [1/4, 4].  (frexp's integer exponent would be exact but
    # miscompiles under torch.compile's CPU backend in torch 2.13.)
    k = torch.floor(torch.log2(amax) * 0.5)
    return torch.where(torch.isfinite(amax) & (amax > 0), k, torch.zeros_like(k))


def times_pow2(X: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """X·2^k with k (*) an integer-valued exponent per matrix of X (*, n, n); exact barring over/underflow.

    2^k is formed as a float in X's dtype by exp2 of an integer, which is
    exact; |k| <= 537 for float64 and <= 75 for float32, within the normal
    range.  Differentiable in X (the factor is a constant).
    """
    return X * torch.exp2(k.to(X.dtype))[..., None, None]


def eigenvalue_floor(L: torch.Tensor, eps: float) -> torch.Tensor:
    """Floor eps·λmax for ascending eigenvalues L (*, n) -> (*, 1).

    Relative: eigenvalues below eps·λmax are rounding noise of the
    eigendecomposition (its backward error is about eps·λmax).  It is never
    below the smallest normal number, so that sqrt and 1/sqrt stay finite
    for eps = 0.  Only a matrix with λmax <= 0 (the all-zero matrix; it is
    PSD only if zero) gets the absolute floor sqrt(tiny).  The entry points
    scale A to entries of order 1 first (``scale_exponent``), so the floor
    is relative over the whole float range.
    """
    info = torch.finfo(L.dtype)
    lmax = L[..., -1:]
    relative = (eps * lmax).clamp_min(info.tiny)
    return torch.where(lmax > 0, relative, torch.full_like(relative, info.tiny ** 0.5))


# ---------------------------------------------------------------------------
# K-rules.  Each takes floored ascending eigenvalues L (*, n) and returns
# K (*, n, n), antisymmetric, zero on the diagonal.
# ---------------------------------------------------------------------------

def _index_sign(n: int, dtype, device) -> torch.Tensor:
    """sign_ij = +1 for i > j, -1 for i < j, 0 on the diagonal.

    With L ascending, L_i >= L_j for i > j, so this is the sign of
    1/(L_i - L_j) everywhere, including at exact ties, where the
    difference itself has no sign.
    """
    i = torch.arange(n, device=device)
    return torch.sign(i[:, None] - i[None, :]).to(dtype)


def ordinary_K(L: torch.Tensor) -> torch.Tensor:
    """K_ij = 1/(L_i - L_j) (CVPR20 eq. 6, supplement A3-A11).

    Valid for distinct eigenvalues only.  At an exact tie the entry is
    +inf (1/+0), which the backward turns into inf/NaN, exactly as the
    textbook formula and torch.linalg.eigh's autograd do.
    """
    K = (L[..., :, None] - L[..., None, :]).reciprocal_()  # (*, n, n)
    K.diagonal(dim1=-2, dim2=-1).zero_()
    return K


def truncated_K(L: torch.Tensor, threshold: float) -> torch.Tensor:
    """K_ij = sign_ij · min(1/|L_i - L_j|, threshold) (ICCV21 "SVD-Trunc").

    Written as sign/max(|ΔL|, 1/threshold), which equals clipping 1/ΔL to
    ±threshold and never forms inf, so ties get ±threshold.
    """
    n = L.shape[-1]
    absdiff = (L[..., :, None] - L[..., None, :]).abs_().clamp_min_(1.0 / threshold)
    # sign/d == (1/d)·sign exactly, as sign is 0 or ±1; in place on one temporary.
    return absdiff.reciprocal_().mul_(_index_sign(n, L.dtype, L.device))


def _ratio_form(L: torch.Tensor):
    """x_ij = min(L_i,L_j)/max(L_i,L_j) in (0, 1] and 1/max(L_i,L_j).

    K_ij = sign_ij · (1/λmax_ij) · 1/(1 - x_ij), the form in which the
    ICCV21 paper expands K (requires L > 0, which the floor guarantees).
    """
    Li, Lj = L[..., :, None], L[..., None, :]
    lmax = torch.maximum(Li, Lj)
    x = torch.minimum(Li, Lj).div_(lmax)
    return x, lmax.reciprocal_()


def taylor_K(L: torch.Tensor, degree: int) -> torch.Tensor:
    """1/(1-x) replaced by T_d(x) = Σ_{k=0}^{d} x^k (Wang et al.; ICCV21 "SVD-Taylor").

    Evaluated in closed form T_d(x) = (1 - x^{d+1})/(1 - x)
    = expm1((d+1)·log x)/expm1(log x), which is accurate to a few ulps for
    all x in (0, 1) (no cancellation: both expm1 arguments are exact
    multiples of log x) and costs O(1) instead of O(d) passes.  T_d(1) = d+1.
    Truncation error: 1/(1-x) - T_d(x) = x^{d+1}/(1-x), so
    |K - K_ordinary| = x^{d+1}·|K_ordinary| entrywise.
    """
    n = L.shape[-1]
    x, inv_lmax = _ratio_form(L)
    logx = torch.log(x)
    series = torch.mul(logx, degree + 1).expm1_()  # numerator 1 - x^{d+1}, negated
    series.div_(logx.expm1_())  # 0/0 at x = 1, replaced next
    series.masked_fill_(~(x < 1), degree + 1.0)
    # sign·(1/λmax)·T_d: sign is ±1 or 0, so the order of the products is exact.
    return series.mul_(inv_lmax).mul_(_index_sign(n, L.dtype, L.device))


def horner(coeffs, x: torch.Tensor) -> torch.Tensor:
    """Σ_k coeffs[k]·x^k by Horner's rule (coeffs lowest order first)."""
    if len(coeffs) == 1:
        return torch.full_like(x, coeffs[0])
    out = (x * coeffs[-1]).add_(coeffs[-2])
    for c in reversed(coeffs[:-2]):
        out.mul_(x).add_(c)
    return out


def pade_K(L: torch.Tensor, p, q, pole_gap: float) -> torch.Tensor:
    """1/(1-x) replaced by P(x)/Q(x), the Padé approximant (ICCV21 "SVD-Padé").

    x is clipped to 1 - pole_gap before evaluation, because the [M/N] Padé
    of 1/(1-x) is 1/(1-x) itself and has a pole at x = 1 (exact ties);
    the clip bounds |K| by P/Q(1 - pole_gap)/λmax (1/(pole_gap·λmax) for the
    degenerate approximant).
    """
    n = L.shape[-1]
    x, inv_lmax = _ratio_form(L)
    x.clamp_max_(1.0 - pole_gap)
    r = horner(p, x).div_(horner(q, x))
    return r.mul_(inv_lmax).mul_(_index_sign(n, L.dtype, L.device))


# ---------------------------------------------------------------------------
# Backward rules.
# ---------------------------------------------------------------------------

def eigh_backward(L: torch.Tensor, U: torch.Tensor, gL, gU, K: torch.Tensor) -> torch.Tensor:
    """gA from (gL, gU) for A = U diag(L) U^T (matrix backprop, Ionescu et al.).

    gA = sym(U (K^T ∘ (U^T gU) + diag(gL)) U^T), with K_ij ≈ 1/(L_i - L_j).
    Valid for distinct eigenvalues with ordinary K; the remedies swap K.
    The gauge part diag(U^T gU) is dropped by K_ii = 0.
    """
    inner = torch.zeros_like(U)
    if gU is not None:
        inner = K.mT * (U.mT @ gU)
    if gL is not None:
        inner = inner + torch.diag_embed(gL)
    return U @ sym(inner) @ U.mT


def sqrtm_backward_K(L: torch.Tensor, U: torch.Tensor, G: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """gA for Z = U S U^T through the matrix-backprop chain with a given K.

    CVPR20 eq. 6 / supplement A3-A11: gU = 2 sym(G) U S and
    gL = diag(U^T G U)/(2 s).  With M = U^T sym(G) U this is
    U^T gU = 2 M S, so the whole rule costs four matmuls:
    gA = U sym(K^T ∘ (2 M S) + diag(M_ii/(2 s_i))) U^T.
    Valid for distinct eigenvalues with ordinary K.  The two off-diagonal
    terms K_ji·M_ij·s_j and K_ij·M_ji·s_i are formed separately and summed,
    as the textbook rule does, so the cancellation when L_i ≈ L_j is
    reproduced faithfully.
    """
    s = L.sqrt()
    M = U.mT @ sym(G) @ U  # (*, n, n)
    # P_ij = K_ji·M_ij·s_j, then sym(2P + diag) = P + P^T + diag: the factor
    # 2 and sym's ½ cancel exactly, and K_ii = 0 leaves the diagonal to the
    # gL term.  Same products, same sums, three temporaries instead of eight.
    P = (M * s[..., None, :]).mul_(K.mT)
    inner = P + P.mT
    inner.diagonal(dim1=-2, dim2=-1).add_(M.diagonal(dim1=-2, dim2=-1) / (2.0 * s))
    return U @ inner @ U.mT


def sqrtm_backward_exact(s: torch.Tensor, U: torch.Tensor, G: torch.Tensor) -> torch.Tensor:
    """Daleckii–Krein: gA = U [(U^T sym(G) U) ∘ D] U^T, D_ij = 1/(s_i + s_j).

    D is the divided difference of sqrt, (sqrt λi - sqrt λj)/(λi - λj), with
    no eigenvalue difference left in it, so ties are harmless; s > 0 is
    guaranteed by the eigenvalue floor.  Exact for every symmetric positive definite A, tied eigenvalues
    included; equivalently the solution X of the Lyapunov equation
    Z X + X Z = sym(G).  Four matmuls.
    """
    M = U.mT @ sym(G) @ U  # (*, n, n)
    # M ∘ D as M / (s_i + s_j), in place: one temporary, one rounding fewer.
    return U @ M.div_(s[..., :, None] + s[..., None, :]) @ U.mT


def topn_D(L: torch.Tensor, keep: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Divided differences of φ(λ) = sqrt(max(λ, λ_k)), λ_k the smallest kept eigenvalue.

    Returns (phi, D).  kept×kept: 1/(s_i + s_j) (Daleckii–Krein);
    dropped×dropped: 0 (φ is constant there); kept i × dropped j:
    (s_i - s_k)/(λ_i - λ_j) = r/(s_i + s_k) with r = (λ_i - λ_k)/(λ_i - λ_j)
    in [0, 1] because λ_j <= λ_k <= λ_i; r := 0 when λ_i = λ_j (then also
    λ_i = λ_k).  Every entry is finite.
    """
    n = L.shape[-1]
    k = n - keep  # index of the smallest kept eigenvalue (ascending order)
    phi = topn_phi(L, keep)  # (*, n)
    # Kept indices are k..n-1 (ascending order), so D is made of blocks,
    # each computed on its own entries only and joined once with cat
    # (not written into a preallocated tensor, which vmap could not batch).
    pk = phi[..., k:]  # (*, keep)
    Dkk = (pk[..., :, None] + pk[..., None, :]).reciprocal_()  # (*, keep, keep)
    if k == 0:
        return phi, Dkk
    lk = L[..., k : k + 1]  # (*, 1)
    Lk, Ld = L[..., k:, None], L[..., None, :k]  # kept rows, dropped columns
    num = (Lk - lk[..., None]).clamp_min(0)  # λ_i - λ_k, (*, keep, 1)
    den = Lk - Ld  # λ_i - λ_j >= 0, (*, keep, k)
    pos = den > 0
    r = torch.where(pos, num / torch.where(pos, den, torch.ones_like(den)), torch.zeros_like(den))
    Dcross = r.div_(pk[..., :, None] + phi[..., k : k + 1, None])  # row kept, column dropped
    Ddd = torch.zeros_like(Ld.mT.expand(Ld.shape[:-2] + (k, k)))  # dropped×dropped: 0
    D = torch.cat((torch.cat((Ddd, Dcross.mT), -1), torch.cat((Dcross, Dkk), -1)), -2)
    return phi, D


def topn_phi(L: torch.Tensor, keep: int) -> torch.Tensor:
    """φ(L) = sqrt(max(L, λ_k)) for ascending L (*, n): the TopN spectrum, without D."""
    n = L.shape[-1]
    k = n - keep
    kept = torch.arange(n, device=L.device) >= k  # (n,)
    return torch.where(kept, L, L[..., k : k + 1]).sqrt()


def sqrtm_backward_topn(L: torch.Tensor, U: torch.Tensor, G: torch.Tensor, keep: int) -> torch.Tensor:
    """Exact gradient of A -> U diag(sqrt(max(L, λ_k))) U^T (the TopN forward).

    Besides the divided differences of ``topn_D``, the floor λ_k is itself
    an eigenvalue of A, so every dropped output sqrt(λ_k) moves with it:
    dλ_k = u_k^T dA u_k adds (Σ_{dropped j} M_jj)/(2 s_k) · u_k u_k^T.
    """
    n = L.shape[-1]
    k = n - keep
    _, D = topn_D(L, keep)
    M = U.mT @ sym(G) @ U  # (*, n, n)
    inner = M * D
    if k > 0:
        dropped_sum = M.diagonal(dim1=-2, dim2=-1)[..., :k].sum(-1)  # (*)
        bump = dropped_sum / (2.0 * L[..., k].sqrt())
        inner.diagonal(dim1=-2, dim2=-1)[..., k].add_(bump)  # + bump·u_k u_k^T in the eigenbasis
    return U @ inner @ U.mT
