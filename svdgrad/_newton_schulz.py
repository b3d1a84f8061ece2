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
    gave NaN) finite: Ã = 0, Z = 0, and the gradient does not depend on c.
    """
    if normalization == "trace":
        c = A.diagonal(dim1=-2, dim2=-1).sum(-1)
    else:
        c = torch.linalg.matrix_norm(A)
    c = c[..., None, None]
    floor = torch.finfo(A.dtype).tiny ** 0.5
    live = c > floor
    return c.clamp_min(floor), live


def iterate(A_tilde: torch.Tensor, iterations: int):
    """Run the coupled iteration.  Returns (Y_J, Ys, Zs, Ts).

    Ys = [Y_0..Y_{J-1}], Ts = [T_0..T_{J-1}], Zs = [Z_1..Z_{J-1}] (Z_0 = I
    is implicit), which is what the backward needs: O(J·n²) per matrix.
    """
    I3 = 3.0 * _identity_like(A_tilde)
    Ys, Zs, Ts = [A_tilde], [], []
    T = 0.5 * (I3 - A_tilde)  # Z_0 = I
    Ts.append(T)
    Y = A_tilde @ T
    Z = T
    for k in range(1, iterations):
        Ys.append(Y)
        Zs.append(Z)
        T = 0.5 * (I3 - Z @ Y)
        Ts.append(T)
        if k < iterations - 1:
            Z = T @ Z
        Y = Y @ T
    return Y, Ys, Zs, Ts


def forward(A: torch.Tensor, iterations: int, normalization: str):
    """Z ≈ A^{1/2}.  Returns (Z, c, live, Y_J, Ys, Zs, Ts) for the backward."""
    c, live = normalizer(A, normalization)
    YJ, Ys, Zs, Ts = iterate(A / c, iterations)
    return c.sqrt() * YJ, c, live, YJ, Ys, Zs, Ts


def backward(G, A, c, live, YJ, Ys, Zs, Ts, normalization: str) -> torch.Tensor:
    """Hand-written backward, seed 002 eqs. 9-12 with the transposes kept.

    The paper writes eq. 10 for symmetric matrices and drops transposes;
    fast-MPN-COV therefore returns the transpose for a non-symmetric G.
    Here every product is transposed correctly, so the result equals
    autograd through ``iterate`` for any G.
    """
    J = len(Ts)
    sc = c.sqrt()
    gY = sc * G  # eq. 9
    g_c = (G * YJ).sum((-2, -1), keepdim=True) / (2.0 * sc)
    gZ = None  # dL/dZ_J = 0
    for k in range(J - 1, 0, -1):
        Y, Z, T = Ys[k], Zs[k - 1], Ts[k]
        gT = Y.mT @ gY  # Y_{k+1} = Y_k T_k
        gY_prev = gY @ T.mT
        if gZ is not None:  # Z_{k+1} = T_k Z_k
            gT = gT + gZ @ Z.mT
            gZ_prev = T.mT @ gZ
        else:
            gZ_prev = 0.0
        # T_k = ½(3I - Z_k Y_k)
        gZ = gZ_prev - 0.5 * (gT @ Y.mT)
        gY = gY_prev - 0.5 * (Z.mT @ gT)
    # k = 0: Z_0 = I, Z_1 = T_0 = ½(3I - Y_0), Y_1 = Y_0 T_0  (eq. 11)
    gT = Ys[0].mT @ gY
    if gZ is not None:
        gT = gT + gZ
    g_tilde = gY @ Ts[0].mT - 0.5 * gT
    # eq. 12: pre-normalization Ã = A / c, plus the post-compensation term.
    g_c = g_c - (g_tilde * A).sum((-2, -1), keepdim=True) / (c * c)
    g_c = torch.where(live, g_c, torch.zeros_like(g_c))
    if normalization == "trace":
        dc = _identity_like(A)
    else:
        dc = A / c
    return g_tilde / c + g_c * dc
