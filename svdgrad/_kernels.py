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


def sym2(X: torch.Tensor) -> torch.Tensor:
    """X + X^T: what the spectral Functions take apart (their input T stands for A = T + T^T)."""
    return X + X.mT


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
    k = torch.floor(torch.log2(amax) * 0.5)  # -inf at 0, +inf at inf, NaN at NaN
    return torch.nan_to_num(k, nan=0.0, posinf=0.0, neginf=0.0)


def coarser_dtype(a: torch.dtype, b: torch.dtype) -> torch.dtype:
    """The floating dtype of the two with fewer bits (the one whose rounding and range bound a result)."""
    return a if torch.finfo(a).bits < torch.finfo(b).bits else b


def cast(X: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """X.to(dtype), without a dispatched call when X already has it (the hot paths' no-op casts add up)."""
    return X if X.dtype == dtype else X.to(dtype)


def mm(A: torch.Tensor, B: torch.Tensor, *, out: torch.Tensor | None = None) -> torch.Tensor:
    """A @ B (into ``out`` if given): torch.bmm itself for two 3-D operands of one batch size, else matmul.

    The same kernel and bits; matmul's batched path around it (expand,
    reshape, a final view) costs 2–25 µs per call at (32, 64, 64) on CPU
    (measured in-process), a per cent of a small sqrtm's forward and backward.
    """
    if A.dim() == 3 and B.dim() == 3 and A.shape[0] == B.shape[0]:
        return torch.bmm(A, B, out=out)
    return torch.matmul(A, B, out=out)


def pow2_vector(v: torch.Tensor, k: torch.Tensor, *, halves: bool = False) -> torch.Tensor:
    """v·2^k for v (*, n) and an integer-valued exponent k (*) per matrix; exact barring over/underflow.

    ``halves``: as two factors 2^h·2^(k−h), h = floor(k/2), for a k whose 2^k alone may not be a
    normal number (the power's 2^round(2kp)); the same bits wherever v and v·2^k are normal.
    """
    if halves:
        h = torch.floor(k * 0.5)
        return v * torch.exp2(cast(h, v.dtype))[..., None] * torch.exp2(cast(k - h, v.dtype))[..., None]
    return v * torch.exp2(cast(k, v.dtype))[..., None]


def times_pow2(X: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """X·2^k with k (*) an integer-valued exponent per matrix of X (*, n, n); exact barring over/underflow.

    2^k is formed as a float in X's dtype by exp2 of an integer, which is
    exact; |k| <= 537 for float64 and <= 75 for float32, within the normal
    range.  Differentiable in X (the factor is a constant).
    """
    # The per-matrix factor first: torch 2.13's CPU kernel for X * f with f (*, 1, 1) takes a slow
    # strided path (about 6x slower at (32, 64, 64)); f * X does not.
    return torch.exp2(cast(k, X.dtype))[..., None, None] * X


def times_pow2_halves(X: torch.Tensor, e: torch.Tensor, *, inplace: bool = False) -> torch.Tensor:
    """X·2^e for an exponent e (*) per matrix whose 2^e alone need not be a normal number.

    Two exact factors 2^h and 2^(e−h), h = floor(e/2): each is normal for
    any |e| up to twice the dtype's exponent range, and both move X the same
    way, so no intermediate over- or underflows where the result does not.
    ``inplace`` scales X itself (a fresh temporary of the caller's); that
    works under vmap too, the factors being batched like X.
    """
    h = torch.floor(e * 0.5)
    if inplace:
        return X.mul_(torch.exp2(cast(h, X.dtype))[..., None, None]).mul_(torch.exp2(cast(e - h, X.dtype))[..., None, None])
    return times_pow2(times_pow2(X, h), e - h)


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
    tiny = torch.finfo(L.dtype).tiny
    lmax = L[..., -1:]
    # (in place on the fresh product: one op fewer than a where with a scalar; a NaN λmax, from NaN input
    # under check=False, gives a NaN floor, and so a NaN result, as the NaN eigenvectors do anyway)
    return (lmax * eps).clamp_min_(tiny).masked_fill_(lmax <= 0, tiny ** 0.5)


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
    # sign·(1/λmax)·T_d: sign is ±1 or 0, so the order of the products is exact.  Held within the dtype: a
    # user's f gets A unscaled, and (d+1)/λmax overflowed near the smallest normal number (1e-37 in float32),
    # where a tie's (f(λi) − f(λj))·K was 0·inf, a NaN gradient.
    return series.mul_(inv_lmax).clamp_max_(torch.finfo(L.dtype).max).mul_(_index_sign(n, L.dtype, L.device))


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

    That degenerate approximant (P = 1, Q = 1 − x: every [M/N] with N >= 1,
    ``_pade``) is evaluated as sign/max(λi − λj, pole_gap·λmax), the same
    number without the ratio: a rounded x = λmin/λmax leaves 1 − x with a
    relative error of about eps/(1 − x), which at near ties (1 − x a few
    ulps) moved K by tens of percent away from 1/(λi − λj).  So outside the
    gap this K is ``ordinary_K``'s, bit for bit.
    """
    n = L.shape[-1]
    sign = _index_sign(n, L.dtype, L.device)
    Li, Lj = L[..., :, None], L[..., None, :]
    lmax = torch.maximum(Li, Lj)
    if tuple(p) == (1.0,) and tuple(q) == (1.0, -1.0):
        # λi − λj exact wherever the pair is within a factor 2 (Sterbenz), as in ordinary_K; |·| = hi − lo
        # (the gap at least tiny: pole_gap·λmax of a user's unscaled A near the smallest normal number, 1e-33 in
        # float32, has a reciprocal beyond the dtype, and a tie's (f(λi) − f(λj))·K was 0·inf, a NaN gradient)
        gap = (lmax * pole_gap).clamp_min_(torch.finfo(L.dtype).tiny)
        return torch.maximum((Li - Lj).abs_(), gap).reciprocal_().mul_(sign)
    x = torch.minimum(Li, Lj).div_(lmax).clamp_max_(1.0 - pole_gap)
    r = horner(p, x).div_(horner(q, x))
    return r.div_(lmax).clamp_max_(torch.finfo(L.dtype).max).mul_(sign)  # (held within the dtype, as above)


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


def eigh_jvp(L: torch.Tensor, U: torch.Tensor, dA: torch.Tensor, K: torch.Tensor):
    """(dL, dU) for A = U diag(L) U^T: dL = diag(U^T dA U), dU = U (K^T ∘ (U^T dA U)).

    The adjoint of ``eigh_backward`` (same K), so jvp and vjp agree:
    ⟨eigh_backward(gL, gU), dA⟩ = ⟨gL, dL⟩ + ⟨gU, dU⟩ for symmetric dA.
    """
    M = U.mT @ sym(dA) @ U  # (*, n, n)
    dL = M.diagonal(dim1=-2, dim2=-1).clone()
    return dL, U @ (K.mT * M)


def loewner_map(U: torch.Tensor, S: torch.Tensor, D: torch.Tensor) -> torch.Tensor:
    """U[(U^T S U) ∘ D]U^T for symmetric S: the Fréchet derivative of A -> U f(Λ) U^T (Daleckii–Krein).

    With D the Loewner matrix of f (``SpectralFunction.loewner``) this is
    the exact derivative, valid at ties because D is.  D is symmetric for
    every rule here, so the same map is the vjp (S = sym(G)) and the jvp
    (S = dA).  The spectral Functions take T with A = T + T^T and pass
    S = G + G^T (vjp with respect to T) or dT + dT^T (jvp).  Four matmuls.
    """
    return _conjugated(U, S, lambda M: M.mul_(D))


def _conjugated(U: torch.Tensor, S: torch.Tensor, inner_) -> torch.Tensor:
    """U·inner_(Uᵀ S U)·Uᵀ, ``inner_`` an in-place map of the (*, n, n) middle: four matmuls, two buffers.

    The last two products are written (out=) into the buffers that the first
    two have left free, which saves two (*, n, n) allocations and their
    first touch: a few per cent of a (32, 64, 64) backward on CPU, where a
    fresh buffer costs page faults.  Plain products where out= is not
    allowed: under torch.func transforms and torch's legacy batching (no batching rule), torch.compile,
    a recording autograd, or a forward_ad dual level (no forward-mode rule).
    """
    X = mm(U.mT, S)  # (*, n, n)
    M = inner_(mm(X, U))
    if not _may_write_into(X, M):
        return mm(mm(U, M), U.mT)
    return mm(mm(U, M, out=X), U.mT, out=M)


def _may_write_into(X: torch.Tensor, M: torch.Tensor) -> bool:
    """Whether fresh products X and M may be reused as out= buffers (``_conjugated``, ``sqrtm_vjp_exact``).

    Not under torch.func transforms and torch's legacy batching (no batching
    rule for out=), torch.compile, a recording autograd, or a forward_ad dual
    level (no forward-mode rule).
    """
    return not (X.requires_grad or M.requires_grad or torch.compiler.is_compiling()
                or torch._C._functorch.is_functorch_wrapped_tensor(M)
                or torch._C._functorch.is_legacy_batchedtensor(M)  # (is_grads_batched, jacobian(vectorize=True))
                or torch.autograd.forward_ad._current_level >= 0)  # (a dual level: S may carry a tangent)


def k_rule_loewner(fL: torch.Tensor, dfL: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """D_ij = (f(λi) − f(λj))·K_ij off the diagonal, f′(λi) on it.

    The matrix-backprop rule (CVPR20 eq. 6, supplement A3-A11) in Loewner
    form: with the ordinary K = 1/(λi − λj) it is the naive divided
    difference, exact for distinct eigenvalues and 0·inf = NaN at exact
    ties; the remedies replace K.  Symmetric because f_i − f_j and K are
    both antisymmetric.
    """
    D = (fL[..., :, None] - fL[..., None, :]).mul_(K)
    D.diagonal(dim1=-2, dim2=-1).copy_(dfL)
    return D


def sqrtm_backward_exact(s: torch.Tensor, U: torch.Tensor, S: torch.Tensor) -> torch.Tensor:
    """Daleckii–Krein for the square root: U [(U^T S U) ∘ D] U^T, D_ij = 1/(s_i + s_j), S symmetric.

    The fast path of ``loewner_map`` for sqrt: M ∘ D as M / (s_i + s_j) in
    place (one temporary, one rounding fewer).  D is the divided
    difference of sqrt, (sqrt λi - sqrt λj)/(λi - λj), with no eigenvalue
    difference left in it, so ties are harmless; s > 0 is guaranteed by
    the eigenvalue floor.  Equivalently the solution X of the Lyapunov
    equation Z X + X Z = S.  A factor c on the result is a factor 1/c on
    s (``SpectralOp``'s output scale costs no pass over a matrix).  Four matmuls.
    """
    return _conjugated(U, S, lambda M: M.div_(s[..., :, None] + s[..., None, :]))


def sqrtm_vjp_exact(s: torch.Tensor, U: torch.Tensor, G: torch.Tensor) -> torch.Tensor:
    """``sqrtm_backward_exact(s, U, G + Gᵀ)`` for any G, symmetrized in the eigenbasis: two buffers in all.

    Uᵀ(G + Gᵀ)U = M + Mᵀ for M = UᵀGU, so G + Gᵀ is never formed: the sum
    is written into the buffer of UᵀG, and s_i + s_j into M's, which are
    then the out= buffers of the last two products.  The same map to
    rounding (the middle is symmetric bit for bit, where Uᵀ S U was not);
    two (*, n, n) allocations fewer than G + Gᵀ and a fresh s_i + s_j:
    2–3 % of the (32, 64, 64) float32 forward and backward on CPU.  Where
    out= is not allowed (``_may_write_into``), the same steps out of place.
    G is not written.
    """
    X = mm(U.mT, G)  # (*, n, n)
    M = mm(X, U)  # UᵀGU
    if not _may_write_into(X, M):
        P = (M + M.mT).div_(s[..., :, None] + s[..., None, :])
        return mm(mm(U, P), U.mT)
    torch.add(M, M.mT, out=X)
    X.div_(torch.add(s[..., :, None], s[..., None, :], out=M))
    return mm(mm(U, X, out=M), U.mT, out=X)


def sqrtm_second_derivative(s: torch.Tensor, U: torch.Tensor, X: torch.Tensor, Y: torch.Tensor) -> torch.Tensor:
    """D²√(A)[X, Y] for A = U diag(s²) Uᵀ and symmetric X, Y: U M Uᵀ, tie-stable.

    The second-order Daleckii–Krein formula M_ij = Σ_k f[λi, λk, λj]·(X̂_ik Ŷ_kj + Ŷ_ik X̂_kj)
    (X̂ = Uᵀ X U) with the second divided difference of √ in closed form,
    f[a, b, c] = −D_ab·D_bc·D_ac, D_ij = 1/(s_i + s_j): no eigenvalue
    difference anywhere, so ties (the identity) are exact.  Then
    M = −D ∘ [(D∘X̂)(D∘Ŷ) + (D∘Ŷ)(D∘X̂)]: eight matmuls, no n³ tensor.
    The map is symmetric in X and Y and, as the third derivative of
    tr(A^{3/2})·2/3, ⟨V, D²√[X, Y]⟩ = ⟨D²√[V, Y], X⟩ for symmetric V, X, Y.
    """
    D = (s[..., :, None] + s[..., None, :]).reciprocal()
    Xh = (U.mT @ X @ U).mul_(D)
    Yh = (U.mT @ Y @ U).mul_(D)
    P = Xh @ Yh
    M = (P + P.mT).mul_(D).neg_()  # (D∘Ŷ)(D∘X̂) = ((D∘X̂)(D∘Ŷ))ᵀ for symmetric X̂, Ŷ
    return U @ M @ U.mT


def topn_clamp(L: torch.Tensor, keep: int) -> torch.Tensor:
    """max(L, λ_k) for ascending L (*, n), λ_k the smallest of the ``keep`` largest: the TopN spectrum."""
    n = L.shape[-1]
    k = n - keep
    kept = torch.arange(n, device=L.device) >= k  # (n,)
    return torch.where(kept, L, L[..., k : k + 1])


def topn_loewner(fn, L: torch.Tensor, keep: int, p=None) -> torch.Tensor:
    """Divided differences of φ(λ) = f(max(λ, λ_k)), λ_k the smallest kept eigenvalue.

    kept×kept: f[λi, λj]; dropped×dropped: 0 (φ is constant there); kept i ×
    dropped j: (f(λi) − f(λk))/(λi − λj) = r·f[λi, λk] with
    r = (λi − λk)/(λi − λj) in [0, 1] because λj <= λk <= λi; r := 0 when
    λi = λj (then also λi = λk).  Every entry is finite.  Symmetric.
    """
    n = L.shape[-1]
    k = n - keep  # index of the smallest kept eigenvalue (ascending order)
    Lkept = L[..., k:]  # (*, keep)
    Dkk = fn.dd(Lkept[..., :, None], Lkept[..., None, :], p)  # (*, keep, keep)
    if k == 0:
        return Dkk
    lk = L[..., k : k + 1]  # (*, 1)
    Lk, Ld = L[..., k:, None], L[..., None, :k]  # kept rows, dropped columns
    num = (Lk - lk[..., None]).clamp_min(0)  # λ_i - λ_k, (*, keep, 1)
    den = Lk - Ld  # λ_i - λ_j >= 0, (*, keep, k)
    pos = den > 0
    r = torch.where(pos, num / torch.where(pos, den, torch.ones_like(den)), torch.zeros_like(den))
    Dcross = r * fn.dd(Lkept[..., :, None], lk[..., None], p)  # row kept, column dropped
    # Blocks joined once with cat (a preallocated tensor written in place
    # could not be batched by vmap).
    Ddd = torch.zeros_like(Ld.mT.expand(Ld.shape[:-2] + (k, k)))  # dropped×dropped: 0
    return torch.cat((torch.cat((Ddd, Dcross.mT), -1), torch.cat((Dcross, Dkk), -1)), -2)


def topn_map(fn, L: torch.Tensor, U: torch.Tensor, S: torch.Tensor, keep: int, p=None, *, adjoint: bool) -> torch.Tensor:
    """Derivative of A -> U φ(Λ) U^T for TopN at a symmetric S: the Loewner part plus the moving floor.

    The floor λ_k is itself an eigenvalue of A, so every dropped output
    f(λ_k) moves with it: dλ_k = u_k^T dA u_k.  In the eigenbasis
    (M = U^T S U) the vjp (``adjoint=True``) adds f′(λk)·Σ_{dropped j}
    M_jj at (k, k); the jvp adds f′(λk)·M_kk at every dropped (j, j).
    """
    n = L.shape[-1]
    k = n - keep
    M = U.mT @ S @ U  # (*, n, n)
    inner = M * topn_loewner(fn, L, keep, p)
    if k > 0:
        dfk = fn.df(L[..., k], p)  # (*)
        diag = inner.diagonal(dim1=-2, dim2=-1)
        if adjoint:
            diag[..., k].add_(dfk * M.diagonal(dim1=-2, dim2=-1)[..., :k].sum(-1))
        else:
            diag[..., :k].add_((dfk * M[..., k, k])[..., None])
    return U @ inner @ U.mT


# ---------------------------------------------------------------------------
# The features route: (X Xᵀ)^{±1/2} from X = U S Vᵀ (the SVD of X, or float64 eigh of X Xᵀ).
# ---------------------------------------------------------------------------

def singular_value_floor(S: torch.Tensor, eps: float, dtype: torch.dtype | None = None,
                         zero_dtype: torch.dtype | None = None) -> torch.Tensor:
    """Floor eps·σmax for descending singular values S (*, r) -> (*, 1), for σ kept in ``dtype``
    (default S's own; the float64 eigenvalues of ``GramOp``'s gram64 are kept in float32).

    The SVD's backward error is about eps·σmax, so this is the relative
    floor of the features route: λ = σ² keeps values down to eps²·λmax,
    where Σ = X Xᵀ formed explicitly keeps only eps·λmax (κ(X)², not κ(X)).
    Never below √tiny, so σ² stays a normal number; the zero matrix gets
    tiny^(1/4), which matches ``eigenvalue_floor``'s √tiny for λ: that of
    ``zero_dtype`` if given (the input's, where it is coarser than the
    compute dtype: the result and its derivative then fit it).
    """
    info = torch.finfo(S.dtype if dtype is None else dtype)
    smax = S[..., :1]
    relative = (eps * smax).clamp_min(info.tiny ** 0.5)
    zero = torch.finfo(zero_dtype).tiny ** 0.25 if zero_dtype is not None else info.tiny ** 0.25
    return torch.where(smax > 0, relative, torch.full_like(relative, zero))


def gram_loewner(Sf: torch.Tensor, inverse: bool) -> torch.Tensor:
    """D_ij = f[λi, λj] for f = √ or 1/√ at λ = σ²: 1/(σi + σj) or −1/(σi·σj·(σi + σj))."""
    si, sj = Sf[..., :, None], Sf[..., None, :]
    D = (si + sj).reciprocal()
    return D.div_(-(si * sj)) if inverse else D


def gram_backward(U, P, G, D) -> torch.Tensor:
    """gX = 2U[(Uᵀ sym(G) U) ∘ D]P for F = f(X Xᵀ), X = U P with P = S Vᵀ (*, r, N), U (*, d, d).

    dL/dΣ = U[(Uᵀ sym(G) U) ∘ D]Uᵀ (Daleckii–Krein at Σ = X Xᵀ) and
    dΣ = dX Xᵀ + X dXᵀ give dL/dX = 2·(dL/dΣ)·X = 2U[(Uᵀ sym(G) U) ∘ D]UᵀX.
    Row j of P = UᵀX is σj·vjᵀ; for the square root |D_ij·σj| <= 1, so the
    gradient is bounded by 2‖G‖ even for rank-deficient X, provided row j of
    P is accurate relative to σj (not to σmax): P must come from the SVD, or
    from UᵀX formed in a wider dtype (``GramOp``).  The columns of the
    eigenbasis beyond r (X's null space) do not meet P.
    """
    r = P.shape[-2]
    M = U.mT @ sym(G) @ U  # (*, d, d)
    M = M.mul_(D)
    if r < M.shape[-1]:  # (a full slice is an alias op, which torch's legacy batching lacks: is_grads_batched)
        M = M[..., :, :r]
    return 2.0 * ((U @ M) @ P)


def gram_jvp(U, P, dX, D) -> torch.Tensor:
    """dF for the tangent dX, P = S Vᵀ as in ``gram_backward``: Uᵀ dΣ U = T + Tᵀ with T = Uᵀ dX Pᵀ,
    then U[(·) ∘ D]Uᵀ."""
    d, r = U.shape[-1], P.shape[-2]
    T = (U.mT @ dX) @ P.mT  # (*, d, r)
    if r < d:
        T = torch.cat((T, T.new_zeros(T.shape[:-1] + (d - r,))), -1)
    return U @ (T + T.mT).mul_(D) @ U.mT
