"""autograd.Functions: they save tensors and call the pure rules in _kernels.

All are written in the ``setup_context`` style with
``generate_vmap_rule = True`` so they work under torch.func.  Backward
rules are built from tensors the forward produced without tracking, so a
second differentiation would miss terms; they are therefore marked
``once_differentiable`` and double backward raises instead of being wrong.
"""

from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

from . import _kernels, _newton_schulz
from ._errors import SvdgradError, describe


def eigh_or_raise(A: torch.Tensor):
    """torch.linalg.eigh, with LAPACK's refusal turned into an SvdgradError that says what to do.

    The entry points scale A to entries of order 1 and reject NaN/Inf first,
    so this is reached only with ``check=False`` on non-finite input or on
    a genuine convergence failure.
    """
    try:
        return torch.linalg.eigh(A)
    except torch.linalg.LinAlgError as exc:
        raise SvdgradError(
            f"The eigendecomposition failed ({describe(A)}): {str(exc).splitlines()[0]} "
            f"Expected finite, symmetric input; if you passed check=False, run with check=True to find "
            f"the bad batch entry, or compute in torch.float64 (compute_dtype=torch.float64)."
        ) from None


class SpectralSqrtm(torch.autograd.Function):
    """Z = U φ(L) U^T with φ and the backward supplied by an eigen method."""

    generate_vmap_rule = True

    @staticmethod
    def forward(A, method):
        L, U = eigh_or_raise(A)
        Lf = L.clamp_min(_kernels.eigenvalue_floor(L, method.floor_eps(A.dtype)))  # (*, n)
        phi = method.spectrum(Lf)
        Z = (U * phi[..., None, :]) @ U.mT
        return Z, L, U, Lf

    @staticmethod
    def setup_context(ctx, inputs, output):
        _, L, U, Lf = output
        ctx.mark_non_differentiable(L, U, Lf)
        ctx.save_for_backward(U, Lf)
        ctx.method = inputs[1]
        # Only gZ is used: don't let autograd allocate zero gradients for L, U, Lf.
        ctx.set_materialize_grads(False)

    @staticmethod
    @once_differentiable
    def backward(ctx, gZ, _gL, _gU, _gLf):
        if gZ is None:
            return None, None
        U, Lf = ctx.saved_tensors
        with _no_tf32():
            return ctx.method.backward_rule(Lf, U, gZ), None


class Eigh(torch.autograd.Function):
    """(L, U) = eigh(A) with the eigen backward using a method's K-rule."""

    generate_vmap_rule = True

    @staticmethod
    def forward(A, rule):
        L, U = eigh_or_raise(A)  # a plain tuple: vmap's generated rule rejects the namedtuple
        return L, U

    @staticmethod
    def setup_context(ctx, inputs, output):
        L, U = output
        ctx.save_for_backward(L, U)
        ctx.rule = inputs[1]
        # An unused output arrives as None, which eigh_backward skips.
        ctx.set_materialize_grads(False)

    @staticmethod
    @once_differentiable
    def backward(ctx, gL, gU):
        L, U = ctx.saved_tensors
        with _no_tf32():
            K = ctx.rule.K(L)
            return _kernels.eigh_backward(L, U, gL, gU, K), None


class NewtonSchulzManual(torch.autograd.Function):
    """Newton–Schulz forward with the hand-written backward (seed 002 eqs. 9-12)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(A, iterations, normalization):
        Z, c, live, YJ, Ys, Zs, Ts = _newton_schulz.forward(A, iterations, normalization)
        return (Z, c, live, YJ, *Ys, *Zs, *Ts)

    @staticmethod
    def setup_context(ctx, inputs, output):
        A, iterations, normalization = inputs
        ctx.mark_non_differentiable(*output[1:])
        ctx.save_for_backward(A, *output[1:])
        ctx.iterations = iterations
        ctx.normalization = normalization
        # Only gZ is used: without this autograd fills a zero gradient for
        # each of the 3·iterations saved (B, n, n) outputs on every backward.
        ctx.set_materialize_grads(False)

    @staticmethod
    @once_differentiable
    def backward(ctx, gZ, *_):
        if gZ is None:
            return None, None, None
        A, c, live, YJ, *rest = ctx.saved_tensors
        J = ctx.iterations
        Ys, Zs, Ts = rest[:J], rest[J : 2 * J - 1], rest[2 * J - 1 :]
        with _no_tf32():
            gA = _newton_schulz.backward(gZ, A, c, live, YJ, Ys, Zs, Ts, ctx.normalization)
        return gA, None, None


class _no_tf32:
    """Backward rules are accuracy-critical: no TF32 matmuls inside them on GPU."""

    def __enter__(self):
        self._prev = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = False

    def __exit__(self, *exc):
        torch.backends.cuda.matmul.allow_tf32 = self._prev
