"""Make double backward through a once-differentiable rule fail loudly.

``once_differentiable`` only raises when the *incoming gradient* requires
grad.  Differentiating the gradient with respect to A itself (a gradient
penalty with a constant cotangent, gradgradcheck) would silently return
zero, because the rule's saved eigenvectors carry no graph.  ``guard``
wraps the input: on a ``create_graph=True`` backward it ties the outgoing
gradient to A through a node whose own backward raises.
"""

from __future__ import annotations

import torch

from ._functions import apply


class _RaiseOnBackward(torch.autograd.Function):
    generate_vmap_rule = True

    @staticmethod
    def forward(g, anchor, message):
        return g.clone()

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.message = inputs[2]

    @staticmethod
    def backward(ctx, _):
        raise RuntimeError(ctx.message)

    @staticmethod
    def jvp(ctx, dg, _anchor, _message):
        return dg


class _Guard(torch.autograd.Function):
    generate_vmap_rule = True

    @staticmethod
    def forward(A, message):
        return A.view_as(A)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(inputs[0])
        ctx.message = inputs[1]

    @staticmethod
    def backward(ctx, gA):
        if torch.is_grad_enabled():  # create_graph=True: a higher derivative may follow
            (A,) = ctx.saved_tensors
            return _RaiseOnBackward.apply(gA, A, ctx.message), None
        return gA, None

    @staticmethod
    def jvp(ctx, dA, _message):
        return dA  # forward mode is the identity: only reverse-over-reverse is guarded


def guard(A: torch.Tensor, method_name: str, *, order: int = 2) -> torch.Tensor:
    """A, tied so that derivative number ``order`` through ``method_name`` raises instead of being wrong."""
    if not A.requires_grad:
        return A
    if order == 2:
        msg = (f"svdgrad: double backward through method={method_name!r} is not supported: its "
               f"backward rule is not itself differentiable. Use method='newton_schulz' with "
               f"backward='autograd' if you need second derivatives.")
    else:
        msg = (f"svdgrad: a third derivative through method={method_name!r} is not supported: its second "
               f"derivative (the second-order Daleckii–Krein formula) is not differentiated again.")
    return apply(_Guard, A, msg)
