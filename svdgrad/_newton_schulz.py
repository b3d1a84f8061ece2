"""Newton–Schulz matrix square root (iSQRT-COV), forward and hand-written backward.

Seed 002 sect. 2 (Li et al., CVPR18): pre-normalize Ã = A/c, iterate
Y_0 = Ã, Z_0 = I, T_k = ½(3I - Z_k Y_k), Y_{k+1} = Y_k T_k, Z_{k+1} = T_k Z_k,
post-compensate Z = sqrt(c)·Y_J.  c = tr(A) as in the paper, or ‖A‖_F.
Y_J -> Ã^{1/2} when ‖I - Ã‖ < 1, which both normalizations guarantee for
PSD A.  It is an approximation; its gradient is the gradient of the
approximation, not of the square root.

Matmul count for J iterations (J >= 2): the first step has Z_0 = I, so
T_0 = ½(3I - Y_0) and Z_1 = T_0 need no product (1 matmul), each middle
step needs 3, and the last needs only Y (2).  Forward 3J - 3, backward
(2 + 6(J-2) + 4) = 6J - 6; 36 in all for J = 5.
"""

from __future__ import annotations

import torch

NORMALIZATIONS = ("trace", "frobenius")


def _identity_like(A: torch.Tensor) -> torch.Tensor:
    n = A.shape[-1]
    return torch.eye(n, dtype=A.dtype, device=A.device).expand_as(A)


def normalizer(A: torch.Tensor, normalization: str) -> tuple[torch.Tensor, torch.Tensor]:
    """c (*, 1, 1) and whether c is above its floor (same shape).

    The floor sqrt(tiny) keeps A = 0 (fast-MPN-COV issue #4: tr(Σ) = 0
    gave NaN) finite: Ã = 0, Z = 0.  c's own derivative is cut there
    (``live``), but the gradient through Ã = A/c scales with 1/√floor (about
    6e77 in float64): a finite stand-in for the infinite derivative of √ at
    0, as ``exact``'s eigenvalue floor gives (about 4e76).
    """
    if normalization == "trace":
        c = A.diagonal(dim1=-2, dim2=-1).sum(-1)
    else:
        c = torch.linalg.matrix_norm(A)
    c = c[..., None, None]
    floor = torch.finfo(A.dtype).tiny ** 0.5
    live = c > floor
    return c.clamp_min(floor), live


def _flat(X: torch.Tensor) -> torch.Tensor:
    """(*, n, n) -> (b, n, n) view, for bmm/baddbmm."""
    return X.reshape((-1,) + X.shape[-2:])


def _baddbmm_(C: torch.Tensor, X: torch.Tensor, Y: torch.Tensor, alpha: float = 1.0) -> torch.Tensor:
    """C + alpha·(X @ Y), in place on C where possible.

    functorch has no batching rule for the in-place baddbmm_ (it would fall
    back to a slow per-example loop with a warning), so under vmap this is
    the out-of-place op, same numbers.
    """
    if torch._C._functorch.is_functorch_wrapped_tensor(C):
        return torch.baddbmm(C, X, Y, alpha=alpha)
    return C.baddbmm_(X, Y, alpha=alpha)


def _dot(X: torch.Tensor, Y: torch.Tensor) -> torch.Tensor:
    """Σ X∘Y per matrix, (*, 1, 1), as a batched dot product: no (*, n, n) temporary."""
    n2 = X.shape[-1] * X.shape[-2]
    return torch.bmm(X.reshape(-1, 1, n2), Y.reshape(-1, n2, 1)).reshape(X.shape[:-2] + (1, 1))


def iterate(A_tilde: torch.Tensor, iterations: int, inverse: bool = False):
    """Run the coupled iteration.  Returns (Y_J, Z_J, Ys, Zs, Ts).

    Ys = [Y_0..Y_{J-1}], Ts = [T_0..T_{J-1}], Zs = [Z_1..Z_{J-1}] (Z_0 = I
    is implicit), which is what the backward needs: O(J·n²) per matrix.
    Z_J (-> Ã^{-1/2}) costs one more product and is formed only for
    ``inverse``; otherwise Z_J is an empty tensor.

    T_k = ½(3I - Z_k Y_k) is formed as 1.5·I - 0.5·(Z_k Y_k) by one fused
    baddbmm (scaling by ½ is exact, so this is the same number), which also
    saves autograd two elementwise passes per step.
    """
    shape = A_tilde.shape
    n = shape[-1]
    I15 = torch.eye(n, dtype=A_tilde.dtype, device=A_tilde.device).mul_(1.5)  # (n, n)
    X = _flat(A_tilde)  # (b, n, n)
    T = torch.add(I15, X, alpha=-0.5)  # Z_0 = I: T_0 = ½(3I - Y_0), no product
    Ys, Zs, Ts = [X], [], [T]
    Y = torch.bmm(X, T)
    Z = T
    for k in range(1, iterations):
        Ys.append(Y)
        Zs.append(Z)
        T = torch.baddbmm(I15, Z, Y, alpha=-0.5)
        Ts.append(T)
        if k < iterations - 1 or inverse:  # the square root's last step needs only Y
            Z = torch.bmm(T, Z)
        Y = torch.bmm(Y, T)
    ZJ = Z.reshape(shape) if inverse else Y.new_empty(0)

    def unflat(Xs):
        return [X.reshape(shape) for X in Xs]

    return Y.reshape(shape), ZJ, unflat(Ys), unflat(Zs), unflat(Ts)


def forward(A: torch.Tensor, iterations: int, normalization: str, inverse: bool = False, pow2=None):
    """F ≈ 2^pow2·A^{1/2} (or 2^pow2·A^{-1/2} for ``inverse``); pow2 (*) or None (no factor).

    Returns (F, c, live, post, Y_J, Z_J, Ys, Zs, Ts) for the backward: post (*, 1, 1) is
    the output's factor on Y_J (2^pow2·√c) or on Z_J (2^pow2/√c), so the entry point's
    power-of-two output scale costs no pass of its own (``Method.folds_output_scale``).
    """
    c, live = normalizer(A, normalization)
    YJ, ZJ, Ys, Zs, Ts = iterate(A / c, iterations, inverse)
    post = c.rsqrt() if inverse else c.sqrt()
    if pow2 is not None:
        post = post * torch.exp2(pow2.to(post.dtype))[..., None, None]
    F = post * (ZJ if inverse else YJ)
    return F, c, live, post, YJ, ZJ, Ys, Zs, Ts


def backward(G, A, c, live, post, YJ, ZJ, Ys, Zs, Ts, normalization: str, inverse: bool = False) -> torch.Tensor:
    """Hand-written backward, seed 002 eqs. 9-12 with the transposes kept.

    The paper writes eq. 10 for symmetric matrices and drops transposes;
    fast-MPN-COV therefore returns the transpose for a non-symmetric G.
    Here every product is transposed correctly, so the result equals
    autograd through ``iterate`` for any G.  For ``inverse`` the output is
    Z_J/√c: the reverse sweep starts from dL/dZ_J instead of dL/dY_J.
    """
    J = len(Ts)
    shape = G.shape
    # The sweep is linear in its start, so it starts from G itself and the output's factor w = post
    # (2^pow2·√c, or 2^pow2/√c for the inverse) on dL/dY_J or dL/dZ_J multiplies its result (g̃ below) in
    # the final in-place pass.  d(post)/dc = ±post/(2c).
    w = post
    if inverse:  # F = post·Z_J
        gY = None  # dL/dY_J = 0
        gZ = _flat(G)
        g_c = -post * _dot(G, ZJ) / (2.0 * c)
    else:  # F = post·Y_J, eq. 9
        gY = _flat(G)
        gZ = None  # dL/dZ_J = 0
        g_c = post * _dot(G, YJ) / (2.0 * c)
    # The sums and the -½ of eq. 10 are fused into baddbmm (beta = 1), so the
    # 6 products per step need no elementwise passes of their own.
    for k in range(J - 1, 0, -1):
        Y, Z, T = _flat(Ys[k]), _flat(Zs[k - 1]), _flat(Ts[k])
        gT = None
        gY_prev = gZ_prev = None
        if gY is not None:  # Y_{k+1} = Y_k T_k
            gT = torch.bmm(Y.mT, gY)
            gY_prev = torch.bmm(gY, T.mT)
        if gZ is not None:  # Z_{k+1} = T_k Z_k
            gT = torch.bmm(gZ, Z.mT) if gT is None else _baddbmm_(gT, gZ, Z.mT)
            gZ_prev = torch.bmm(T.mT, gZ)
        # T_k = ½(3I - Z_k Y_k)
        if gZ_prev is not None:
            gZ = _baddbmm_(gZ_prev, gT, Y.mT, alpha=-0.5)
        else:
            gZ = torch.baddbmm(gT.new_zeros(()), gT, Y.mT, beta=0, alpha=-0.5)
        if gY_prev is not None:
            gY = _baddbmm_(gY_prev, Z.mT, gT, alpha=-0.5)
        else:
            gY = torch.baddbmm(gT.new_zeros(()), Z.mT, gT, beta=0, alpha=-0.5)
    # k = 0: Z_0 = I, Z_1 = T_0 = ½(3I - Y_0), Y_1 = Y_0 T_0  (eq. 11)
    gT = torch.bmm(_flat(Ys[0]).mT, gY) if gY is not None else None
    if gZ is not None:
        gT = gZ.clone() if gT is None else gT.add_(gZ)
    if gY is not None:
        g_tilde = torch.bmm(gY, _flat(Ts[0]).mT).add_(gT, alpha=-0.5).reshape(shape)
    else:
        g_tilde = (gT * -0.5).reshape(shape)
    # eq. 12: pre-normalization Ã = A / c, plus the post-compensation term (dL/dÃ = w·g̃).
    g_c = g_c - w * _dot(g_tilde, A) / (c * c)
    g_c = torch.where(live, g_c, torch.zeros_like(g_c))
    gA = g_tilde.mul_(w / c)
    if normalization == "trace":  # dc/dA = I: only the diagonal moves
        gA.diagonal(dim1=-2, dim2=-1).add_(g_c[..., 0])
    else:  # dc/dA = A / c
        gA.add_(g_c * (A / c))
    return gA


def jvp(dA, A, c, live, post, YJ, ZJ, Ys, Zs, Ts, normalization: str, inverse: bool = False) -> torch.Tensor:
    """Forward-mode derivative through the same iteration, from the saved iterates.

    dc = tr(dA) or ⟨A, dA⟩/‖A‖; dÃ = dA/c − Ã·dc/c; then
    dT = −½(dZ Y + Z dY), dY' = dY T + Y dT, dZ' = dT Z + T dZ per step, and
    the output's d(post·Y_J) or d(post·Z_J).  The adjoint of ``backward``.
    """
    J = len(Ts)
    shape = A.shape
    if normalization == "trace":
        dc = dA.diagonal(dim1=-2, dim2=-1).sum(-1)[..., None, None]
    else:
        dc = (A * dA).sum((-2, -1), keepdim=True) / c
    dc = torch.where(live, dc, torch.zeros_like(dc))
    dX = _flat(dA / c - (A / c) * (dc / c))  # dÃ = dY_0
    # k = 0: T_0 = ½(3I - Y_0), Y_1 = Y_0 T_0, Z_1 = T_0
    dT = dX * -0.5
    dY = torch.bmm(dX, _flat(Ts[0])).add_(torch.bmm(_flat(Ys[0]), dT))
    dZ = dT
    for k in range(1, J):
        Y, Z, T = _flat(Ys[k]), _flat(Zs[k - 1]), _flat(Ts[k])
        dT = torch.bmm(dZ, Y).add_(torch.bmm(Z, dY)).mul_(-0.5)
        if k < J - 1 or inverse:
            dZ = torch.bmm(dT, Z).add_(torch.bmm(T, dZ))
        dY = torch.bmm(dY, T).add_(torch.bmm(Y, dT))
    if inverse:
        return post * dZ.reshape(shape) - ZJ * (post * dc / (2.0 * c))
    return post * dY.reshape(shape) + YJ * (post * dc / (2.0 * c))
