"""Make a second derivative through a once-differentiable rule fail loudly, in reverse and in forward mode.

``once_differentiable`` only raises when the *incoming gradient* requires
grad.  Differentiating the gradient with respect to A itself would
silently miss terms (zero for most rules), because the rule's saved
eigenvectors carry neither a graph nor a tangent.  That happens two ways:

- reverse over reverse: a ``create_graph=True`` backward differentiated
  again (a gradient penalty with a constant cotangent, gradgradcheck);
- forward over reverse: a backward whose input A carries a tangent
  (``torch.func.jvp`` of ``torch.func.grad``, ``torch.func.hessian``,
  ``torch.autograd.forward_ad`` over ``torch.autograd.grad``).

``guard`` wraps the input.  Its backward, in either situation only (so the
plain first-order backward gains no pass), ties the outgoing gradient to A
through a ``_RaiseOnBackward`` node: its backward raises, and its jvp raises
when A carries a tangent.  A tangent of the cotangent alone passes (the
vjp is linear in it, so forward mode in G over reverse in A is exact).
"""

from __future__ import annotations

import torch

from ._functions import apply


def may_differentiate_again(*tensors) -> bool:
    """Whether a backward that runs now may itself be differentiated, with respect to ``tensors`` (inputs
    saved by the forward): graph recording on (``create_graph=True``, torch.func.grad), or one of them
    carries a tangent (torch.autograd.forward_ad) or is wrapped by a torch.func transform (jvp, vmap)."""
    if torch.is_grad_enabled():
        return True
    return any(t is not None and (torch._C._functorch.is_functorch_wrapped_tensor(t)
                                  or torch.autograd.forward_ad.unpack_dual(t).tangent is not None)
               for t in tensors)


class _RaiseOnBackward(torch.autograd.Function):
    """g (a gradient), tied to ``anchor`` and ``loose``: differentiating it raises ``message``.

    Backward: raises (for a derivative with respect to anything upstream of g, anchor or loose).
    jvp: raises where ``anchor`` carries a tangent, or ``loose`` one that g lacks; a tangent of g (with
    or without one of ``loose``) passes through (the caller vouches that g's forward-mode derivative is right).
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(g, anchor, loose, message):
        return g.clone()

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.message = inputs[3]
        ctx.set_materialize_grads(False)  # the jvp gets None, not zeros, for an input without a tangent

    @staticmethod
    def backward(ctx, _):
        raise RuntimeError(ctx.message)

    @staticmethod
    def jvp(ctx, dg, danchor, dloose, _message):
        # A tangent of ``loose`` that did not reach g (torch.func.jvp of grad in p: the backward ran without the
        # outer level's tangent) would leave g's derivative out; returning None there died in a PyTorch INTERNAL
        # ASSERT ("Expected both tensor and its forward grad to be floating point").
        if danchor is not None or (dg is None and dloose is not None):
            raise RuntimeError(ctx.message)
        return dg


def raise_on_second_derivative(g: torch.Tensor, anchor: torch.Tensor, message: str, *,
                               loose: torch.Tensor | None = None) -> torch.Tensor:
    """g, such that its derivative raises ``message`` (see ``_RaiseOnBackward``); for a backward rule
    to apply to its output when ``may_differentiate_again``."""
    return apply(_RaiseOnBackward, g, anchor, loose, message)


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
        (A,) = ctx.saved_tensors
        if may_differentiate_again(A):
            return raise_on_second_derivative(gA, A, ctx.message), None
        return gA, None

    @staticmethod
    def jvp(ctx, dA, _message):
        return dA.view_as(dA)  # first-order forward mode is the identity (a view, as the forward returns one)


def _forward_mode_on(A: torch.Tensor) -> bool:
    """Whether A carries a tangent now (torch.autograd.forward_ad, or a torch.func.jvp/jacfwd level)."""
    if torch._C._functorch.is_functorch_wrapped_tensor(A):
        stack = torch._C._functorch.get_interpreter_stack() or ()
        return any(i.key() == torch._C._functorch.TransformType.Jvp for i in stack)
    return (torch.autograd.forward_ad._current_level >= 0
            and torch.autograd.forward_ad.unpack_dual(A).tangent is not None)


def _under_grad_transform(A: torch.Tensor) -> bool:
    """Whether A is wrapped by torch.func with a grad (or vjp, jacrev) level anywhere in the stack: under a
    jvp level above it, A.requires_grad is False, yet reverse mode runs over what is computed from it."""
    if not torch._C._functorch.is_functorch_wrapped_tensor(A):
        return False
    return any(i.key() == torch._C._functorch.TransformType.Grad
               for i in torch._C._functorch.get_interpreter_stack() or ())


def _nested_forward(A: torch.Tensor) -> bool:
    """Whether A is wrapped by two or more torch.func forward-mode levels (jvp of jvp, jacfwd of jacfwd): the
    inner level's tangent is then differentiated again by the outer one, in forward mode."""
    if not torch._C._functorch.is_functorch_wrapped_tensor(A):
        return False
    jvp = torch._C._functorch.TransformType.Jvp
    return sum(i.key() == jvp for i in torch._C._functorch.get_interpreter_stack() or ()) >= 2


def first_derivatives_only(A: torch.Tensor) -> bool:
    """Whether every derivative that can be taken through a computation on A from now on is a first
    derivative: at most one torch.func grad (vjp, jacrev) or jvp (jacfwd) level around A, any number of vmap
    levels, and no torch.autograd graph or forward_ad tangent on the plain tensor inside them.  Rules that
    rescale a tangent or a cotangent by an exponent their partner undoes (``NarrowCast``) may do so only
    then: a second-order tangent or cotangent would not carry the factor, and summed with a first-order
    one it could not be told apart."""
    levels = 0
    base = A
    T = torch._C._functorch.TransformType
    if torch._C._functorch.is_functorch_wrapped_tensor(A):
        levels = sum(i.key() in (T.Grad, T.Jvp) for i in torch._C._functorch.get_interpreter_stack() or ())
        while torch._C._functorch.is_functorch_wrapped_tensor(base):
            base = torch._C._functorch.get_unwrapped(base)
    if levels > 1:
        return False
    plain_ad = ((torch.is_grad_enabled() and base.requires_grad)
                or (torch.autograd.forward_ad._current_level >= 0
                    and torch.autograd.forward_ad.unpack_dual(base).tangent is not None))
    return not plain_ad


def second_derivative_may_follow(g: torch.Tensor) -> bool:
    """In a backward rule: whether its result may be differentiated again (create_graph=True, a torch.func grad
    or jvp level around it, a forward_ad tangent).  Unlike ``may_differentiate_again`` a vmap level alone does
    not count: a custom Function created under vmap runs its backward under vmap again (its generated rule),
    for a first-order backward too."""
    if torch.is_grad_enabled():
        return True
    T = torch._C._functorch.TransformType
    if any(k in (T.Grad, T.Jvp) for k in _levels_of(g)):
        return True
    return torch.autograd.forward_ad._current_level >= 0 and torch.autograd.forward_ad.unpack_dual(g).tangent is not None


def _levels_of(X: torch.Tensor) -> list:
    """The torch.func transform levels on the stack (TransformType keys, outermost first), if X is wrapped."""
    if not torch._C._functorch.is_functorch_wrapped_tensor(X):
        return []
    return [i.key() for i in torch._C._functorch.get_interpreter_stack() or ()]


def tangent_may_be_differentiated(A: torch.Tensor) -> bool:
    """In a jvp rule: whether reverse mode may run over the tangent it returns (torch.func.grad or jacrev of a
    jvp, or a backward through a torch.autograd.forward_ad tangent of an input that requires grad)."""
    if not torch.is_grad_enabled():
        return False
    if torch._C._functorch.is_functorch_wrapped_tensor(A):
        keys = [i.key() for i in torch._C._functorch.get_interpreter_stack() or ()]
        jvp = torch._C._functorch.TransformType.Jvp
        last_jvp = max((n for n, k in enumerate(keys) if k == jvp), default=-1)
        return torch._C._functorch.TransformType.Grad in keys[:last_jvp]
    return A.requires_grad


def cotangent_may_be_differentiated(g: torch.Tensor) -> bool:
    """In a backward rule: whether reverse mode may run over its result through its cotangent ``g``
    (grad of grad in the weights that made g; a create_graph=True backward with a g that requires grad)."""
    if torch._C._functorch.is_functorch_wrapped_tensor(g):
        keys = [i.key() for i in torch._C._functorch.get_interpreter_stack() or ()]
        grad = torch._C._functorch.TransformType.Grad
        last_grad = max((n for n, k in enumerate(keys) if k == grad), default=-1)
        return grad in keys[:last_grad]  # a reverse-mode level outside the one running this backward
    return torch.is_grad_enabled() and g.requires_grad


def forward_over_forward(A: torch.Tensor) -> bool:
    """In a jvp rule: whether an outer torch.func forward-mode level will differentiate the tangent it returns
    (jvp of jvp, jacfwd of jacfwd).  That derivative cannot be right: torch 2.13's forward mode over a
    custom Function's jvp rule does not see the rule's saved tensors as functions of the input (even a
    rule of plain differentiable ops gives 0), so the rules tie such a tangent to A and it raises."""
    if not torch._C._functorch.is_functorch_wrapped_tensor(A):
        return False
    keys = [i.key() for i in torch._C._functorch.get_interpreter_stack() or ()]
    jvp = torch._C._functorch.TransformType.Jvp
    last_jvp = max((n for n, k in enumerate(keys) if k == jvp), default=-1)
    return jvp in keys[:last_jvp]


class _GuardTangent(torch.autograd.Function):
    """``_Guard`` where A carries a tangent: a copy (a view's jvp must be a view of the tangent, which cannot be
    tied), whose jvp ties the tangent to A where reverse mode may run over it, so that it raises: the rule's
    jvp reaches A only through its saved constants (torch.func.grad of a jvp would be silently zero)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(A, message):
        return A.clone()

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(inputs[0])
        ctx.save_for_forward(inputs[0])
        ctx.message = inputs[1]

    @staticmethod
    def backward(ctx, gA):
        return _Guard.backward(ctx, gA)

    @staticmethod
    def jvp(ctx, dA, _message):
        (A,) = ctx.saved_tensors
        if tangent_may_be_differentiated(A) or forward_over_forward(A):
            return raise_on_second_derivative(dA, A, ctx.message)
        return dA


def unsupported_message(what: str, instead: str, *, why: str = "its backward rule is not itself differentiable") -> str:
    """The refusal of a second derivative through ``what`` (because ``why``), saying what to use ``instead``."""
    return (f"svdgrad: a second derivative (double backward, forward mode over a backward: torch.func.hessian, "
            f"jvp of grad, or reverse mode over a jvp: grad of jvp) through {what} is not supported: {why}. "
            f"{instead}")


def guard(A: torch.Tensor, method_name: str, *, order: int = 2, message: str | None = None) -> torch.Tensor:
    """A, tied so that derivative number ``order`` through ``method_name`` raises instead of being wrong.

    ``message`` replaces the default refusal (for an entry point other than the spectral functions).
    """
    if not (A.requires_grad or _under_grad_transform(A) or _nested_forward(A)):
        return A  # (no backward will run, and one forward-mode level alone is first order)
    if message is not None:
        msg = message
    elif order == 2:
        msg = (f"svdgrad: double backward through method={method_name!r} is not supported (a second "
               f"derivative, by reverse or forward mode over a backward: torch.func.hessian, jvp of grad, or "
               f"reverse or forward mode over a jvp: grad of jvp, jvp of jvp, jacfwd of jacfwd): its "
               f"backward rule is not itself differentiable. Use method='newton_schulz' with "
               f"backward='autograd' (or sqrtm with method='exact') if you need second derivatives.")
    else:
        msg = (f"svdgrad: a third derivative through method={method_name!r} is not supported: its second "
               f"derivative (the second-order Daleckii–Krein formula) is not differentiated again.")
    return apply(_GuardTangent if _forward_mode_on(A) else _Guard, A, msg)
