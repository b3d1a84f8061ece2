"""autograd.Functions: they save tensors and call the pure rules in _kernels.

All are written in the ``setup_context`` style with
``generate_vmap_rule = True`` so they work under torch.func.  Backward
rules are built from tensors the forward produced without tracking, so a
second differentiation would miss terms; they are therefore marked
``once_differentiable`` and double backward raises instead of being wrong.
"""

from __future__ import annotations

import math
import threading

import torch
from torch.autograd.function import once_differentiable

from . import _kernels, _matmul_only, _newton_schulz
from ._errors import SvdgradError, describe

#: The refusal of reverse mode through a once-differentiable backward's cotangent (``linear_in_cotangent``).
REVERSE_IN_COTANGENT = (
    "svdgrad: reverse mode through the cotangent of a gradient (d/dW of ∂⟨f(A), W⟩/∂A: a gradient penalty "
    "differentiated in the weights that produced the cotangent) is not supported: this backward rule is not "
    "itself differentiable. That derivative is the jvp of f at A, exact by forward mode: torch.func.jvp(f, (A,), "
    "(V,)), or forward mode in W over the gradient (torch.func.jvp of grad)."
)


def once_differentiable_in_cotangent(backward):
    """``once_differentiable``, and reverse mode through the cotangent refused loudly.

    ``once_differentiable`` cuts the gradient off from the cotangent's graph: under torch.func
    (grad of grad in W) that derivative was then silently zero, and under autograd a misleading
    'not used in the graph'.  Where it may follow (``_guard.cotangent_may_be_differentiated``), each
    returned gradient is tied to the live cotangents so that its backward raises
    ``REVERSE_IN_COTANGENT``; its jvp in them passes (the rule is linear in the cotangent, so forward
    mode there is exact and stays supported).
    """
    inner = once_differentiable(backward)

    def wrapper(ctx, *grads):
        out = inner(ctx, *grads)
        from ._guard import cotangent_may_be_differentiated, raise_on_second_derivative  # (imports this module)

        live = [g for g in grads if isinstance(g, torch.Tensor) and cotangent_may_be_differentiated(g)]
        if not live:
            return out

        def tie(t):
            if not isinstance(t, torch.Tensor):
                return t
            for g in live:
                t = raise_on_second_derivative(t, None, REVERSE_IN_COTANGENT, loose=g)
            return t

        return tuple(tie(t) for t in out) if isinstance(out, tuple) else tie(out)

    wrapper.__name__, wrapper.__doc__ = backward.__name__, backward.__doc__
    return wrapper


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


def apply(cls, *args):
    """``cls.apply(*args)`` without torch's per-call ``inspect.signature``.

    ``Function.apply`` binds the arguments to ``forward``'s signature on every
    call (to fill defaults for ``setup_context``): about 40 µs, a sixth of a
    small sqrtm.  Our forwards have no defaults and are always called with
    every argument, so outside torch.compile and functorch transforms this
    goes straight to the C entry, as ``Function.apply`` itself does after
    binding; under them the full path runs.
    """
    if _FAST_APPLY is None or torch.compiler.is_compiling() or _FAST_APPLY[0]():
        return cls.apply(*args)
    return super(torch.autograd.Function, cls).apply(*_FAST_APPLY[1](args))


def _fast_apply_hooks():
    """(transforms active?, unwrap dead wrappers) from torch's internals, or None (then ``apply`` is the plain one)."""
    try:
        from torch._functorch.utils import unwrap_dead_wrappers

        return torch._C._are_functorch_transforms_active, unwrap_dead_wrappers
    except (ImportError, AttributeError):  # a torch without them: no shortcut
        return None


_FAST_APPLY = _fast_apply_hooks()


def _tangent_or_zero(t, like):
    return torch.zeros_like(like) if t is None else _writable(t)


def _writable(t):
    """t, or a materialized copy where it is autograd's immutable zero (a ZeroTensor, also inside torch.func's
    wrappers): a (co)tangent that no path needs arrives so in reverse mode over a jvp, and the rules write into
    their temporaries in place."""
    if t is None:
        return t
    inner = t
    while torch._C._functorch.is_functorch_wrapped_tensor(inner):
        inner = torch._C._functorch.get_unwrapped(inner)
    return t.clone() if inner._is_zerotensor() else t


class SpectralOp(torch.autograd.Function):
    """F = 2^pow2·U φ(Λ) Uᵀ with A = T + Tᵀ = U Λ Uᵀ, for an eigen method and a spectral function (``_spectral``).

    Inputs (T, p, method, fn, pow2, S, in_pow2): p is the power's exponent (a
    float, a 0-dim tensor, or None); pow2 (*) an integer-valued exponent per
    matrix or None; S = T + Tᵀ without a graph if the caller formed it, else
    None.  The output factor 2^pow2 multiplies φ (a vector), and the vjp
    with respect to T is the method's Loewner map of G + Gᵀ (that is 2·sym(G)
    taken through A = T + Tᵀ), the jvp that of dT + dTᵀ, both taken at order
    one (``_at_order_one``).  When p is a tensor, ∂F/∂p = U diag(∂φ/∂p) Uᵀ
    enters both.

    ``in_pow2`` (*) or None: when given (the entry points' fold), the input
    is A itself and A/4^k = 2^in_pow2·(T + Tᵀ) = S (``_api._prepare`` formed
    S without a graph); the vjp and the jvp then carry the factor
    2^in_pow2 in the same final exponent, so T is never formed.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(T, p, method, fn, pow2, S, in_pow2):
        F, L, U, Lf, _, _ = SpectralOp._decomposed(T, p, method, fn, pow2, S)
        return F, L, U, Lf

    @staticmethod
    def _decomposed(T, p, method, fn, pow2, S):
        """(F, L, U, Lf, φ(Lf), 2^pow2·φ(Lf)): the forward and the spectra it forms on the way."""
        # S is symmetric bit for bit, so its transposed view is the same matrix: LAPACK's column-major copy
        # of it is then a plain copy, not the transposing one a row-major S costs (the same L and U).
        L, U = eigh_or_raise((_kernels.sym2(T) if S is None else S).mT)
        Lf = L.clamp_min(_kernels.eigenvalue_floor(L, method.floor_eps(T.dtype)))  # (*, n)
        Lw, e, _ = _shifted(fn, Lf, p, pow2, 0)
        phi0 = method.spectrum(fn, Lw, p)
        phi = phi0 if e is None else _kernels.pow2_vector(phi0, e, halves=fn.wide_pow2)
        F = _kernels.mm(U * phi[..., None, :], U.mT)
        return F, L, U, Lf, phi0, phi

    @staticmethod
    def setup_context(ctx, inputs, output):
        _, p, method, fn, pow2, _, in_pow2 = inputs
        _, L, U, Lf = output
        ctx.mark_non_differentiable(L, U, Lf)
        ctx.p_tensor = isinstance(p, torch.Tensor)
        ctx.has_pow2 = pow2 is not None
        ctx.has_in_pow2 = in_pow2 is not None
        saved = (U, Lf) + ((p,) if ctx.p_tensor else ()) + ((pow2,) if ctx.has_pow2 else ()) + (
            (in_pow2,) if ctx.has_in_pow2 else ())
        # With a tensor p, T (an input: no copy) anchors p's gradient for the higher-order guard (backward).
        # Both lists are the same: torch's generated vmap rule keeps one list of the saved tensors' batch
        # dimensions, and a longer backward list failed there ("flat_bdims must not be None", vmap with a tensor p).
        saved = saved + ((inputs[0],) if ctx.p_tensor else ())
        ctx.save_for_backward(*saved)
        ctx.save_for_forward(*saved)
        ctx.p = None if ctx.p_tensor else p
        ctx.method, ctx.fn = method, fn
        # Only gF is used: don't let autograd allocate zero gradients for L, U, Lf.
        ctx.set_materialize_grads(False)

    @staticmethod
    def _saved(ctx):
        """(U, Lf, p, pow2, in_pow2) from the front of the saved tensors."""
        U, Lf, *rest = ctx.saved_tensors
        p = rest.pop(0) if ctx.p_tensor else ctx.p
        pow2 = rest.pop(0) if ctx.has_pow2 else None
        return U, Lf, p, pow2, (rest[0] if ctx.has_in_pow2 else None)

    @staticmethod
    def backward(ctx, gF, _gL, _gU, _gLf):
        gT, gp = SpectralOp._vjp(ctx, gF)
        if ctx.p_tensor and gF is not None:
            # With a tensor p, gT and gp are built from the saved U and Lf, constants: their derivative in p alone
            # is right in forward mode (A held constant: torch.func.hessian in p), every other second derivative
            # (in A, or in p by reverse mode, which also reaches gT through p) misses terms, so it raises.
            from ._guard import may_differentiate_again, raise_on_second_derivative, unsupported_message

            T, p = ctx.saved_tensors[-1], SpectralOp._saved(ctx)[2]
            if may_differentiate_again(T, p):
                msg = unsupported_message(
                    f"powm with a tensor p (method={ctx.method.name!r})",
                    "Pass p as a float for second derivatives in A; one in p alone (A held constant) works with "
                    "torch.func.hessian in p (not with jvp or jacfwd of grad in p, whose backward runs without the "
                    "outer tangent).")
                gT = raise_on_second_derivative(gT, T, msg, loose=p)
                gp = None if gp is None else raise_on_second_derivative(gp, T, msg, loose=p)
        return gT, gp, None, None, None, None, None

    @staticmethod
    @once_differentiable_in_cotangent
    def _vjp(ctx, gF):
        """(gT, gp or None) from constants: the backward rule is not itself differentiable."""
        if gF is None:
            return None, None
        gF = _writable(gF)
        U, Lf, p, pow2, in_pow2 = SpectralOp._saved(ctx)
        with _no_tf32():
            Lw, e, _ = _shifted(ctx.fn, Lf, p, pow2, 1)
            gT = _at_order_one(ctx.method.backward_rule, ctx.fn, Lw, U, _kernels.sym2(gF), p, e, in_pow2)
            gp = None
            if ctx.p_tensor and ctx.needs_input_grad[1]:
                Mdiag = ((U.mT @ gF) * U.mT).sum(-1)  # diag(Uᵀ G U), (*, n)
                dphi, e = _spectrum_dp(ctx.method, ctx.fn, Lf, p, pow2)
                gp = (Mdiag * (dphi if e is None else _kernels.pow2_vector(dphi, e, halves=True))).sum()
        return gT, gp

    @staticmethod
    def jvp(ctx, dT, dp, _method, _fn, _pow2, _S, _in_pow2):
        U, Lf, p, pow2, in_pow2 = SpectralOp._saved(ctx)
        with _no_tf32():
            Lw, e, _ = _shifted(ctx.fn, Lf, p, pow2, 1)
            dF = _at_order_one(ctx.method.jvp_rule, ctx.fn, Lw, U, _kernels.sym2(_tangent_or_zero(dT, U)), p, e,
                               in_pow2)
            if dp is not None and ctx.p_tensor:
                dphi, e = _spectrum_dp(ctx.method, ctx.fn, Lf, p, pow2)
                dphi = dphi * dp
                if e is not None:
                    dphi = _kernels.pow2_vector(dphi, e, halves=True)
                dF = dF + (U * dphi[..., None, :]) @ U.mT
        if ctx.p_tensor:
            from ._guard import forward_over_forward, raise_on_second_derivative, unsupported_message

            if forward_over_forward(p):  # (A's side is the guard's, in _api._spectral)
                dF = raise_on_second_derivative(dF, p, unsupported_message(
                    f"powm with a tensor p (method={ctx.method.name!r}) by forward over forward mode (jvp of jvp, "
                    f"jacfwd of jacfwd)", "Take the second derivative in p by forward over reverse "
                    "(torch.func.hessian in p), which is exact.", why="torch's outer forward level does not see "
                    "the jvp rule's saved p and eigenvalues move"))
        return dF, None, None, None


def _shifted(fn, Lf, p, pow2, order: int):
    """(Lw, e, a): the floored eigenvalues the method evaluates f at, and the exponent of their factor.

    Usually (a None) Lw = Lf and e = pow2.  A function with a ``spectral_shift`` (the power, where λ^p
    itself can leave the range for a large |p|) evaluates at Lw = Lf·2^-a (exact; a (*) per matrix):
    f(Lf) = 2^(a·p)·f(Lw) and f[Lf] = 2^(a·(p−1))·f[Lw], so e = pow2 + a·(p − order) with ``order`` 0 for
    the values and 1 for the divided differences.  e is then not an integer: applied in halves.
    """
    a = fn.spectral_shift(Lf, p)
    if a is None:
        return Lf, pow2, None
    pd = p.detach().to(Lf.dtype) if isinstance(p, torch.Tensor) else p
    extra = a * (pd - order)
    return _kernels.pow2_vector(Lf, -a), (extra if pow2 is None else pow2 + extra), a


def _spectrum_dp(method, fn, Lf, p, pow2):
    """(∂φ/∂p at the method's evaluation points, its exponent) with the shift of ``_shifted``:
    ∂(λ^p)/∂p = λ^p·log λ at λ = 2^a·Lw is 2^(a·p)·(∂φ/∂p(Lw) + a·ln2·φ(Lw))."""
    Lw, e, a = _shifted(fn, Lf, p, pow2, 0)
    dphi = method.spectrum_dp(fn, Lw, p)
    if a is not None:
        dphi = dphi + (a * math.log(2.0))[..., None] * method.spectrum(fn, Lw, p)
    return dphi, e


def _at_order_one(rule, fn, Lf, U, S, p, pow2, in_pow2) -> torch.Tensor:
    """2^pow2·2^in_pow2·rule(S) for a fresh symmetric S (G + Gᵀ or dT + dTᵀ), taken at order one.

    S is scaled in place by 2^-s to entries of order 1, the rule runs
    without a factor, and the one exponent s + pow2 + in_pow2 is applied to
    its result in two exact factors.  So nothing in between over- or
    underflows where the result does not: with 2^pow2 on D first, a
    cotangent of 1e300 into the square root of a 1e300 float64 matrix gave
    NaN (D·2^pow2·S overflowed in a matmul), one of 1e-300 at 1e-290 gave 0,
    while both gradients (1e150, 1e-155) are representable.  Two passes over
    S and one over the result more than the factor on D: not on exact's
    square root, whose one exponent −k−1 is moderate (its saved spectrum sb, ``ExactSqrtOp``).
    """
    with torch.no_grad():
        s = 2.0 * _kernels.scale_exponent(S.abs().amax(dim=(-2, -1)))  # (*): max|S|·2^-s in [1/4, 4)
    R = rule(fn, Lf, U, _input_scaled(S, -s), p, None)
    e = s if pow2 is None else s + pow2
    return _input_scaled(R, e if in_pow2 is None else e + in_pow2)


def _input_scaled(X: torch.Tensor, in_pow2) -> torch.Tensor:
    """X·2^in_pow2 in place (X a fresh temporary of the caller's), or X if in_pow2 is None.

    In two exact halves (``_kernels.times_pow2_halves``): 2^e itself need not
    be a normal number (e = −2k−1 reaches −127 in float32).
    """
    if in_pow2 is None:
        return X
    # (out of place under torch.func: X may wrap autograd's immutable zero, a gradient that no path needs)
    inplace = not (X._is_zerotensor() or torch._C._functorch.is_functorch_wrapped_tensor(X))
    return _kernels.times_pow2_halves(X, in_pow2, inplace=inplace)


#: The refusal of forward over forward mode (``_guard.forward_over_forward``) for the square root under ``exact``.
FORWARD_OVER_FORWARD = (
    "svdgrad: forward mode over forward mode (torch.func.jvp of jvp, jacfwd of jacfwd) through method='exact' "
    "is not supported: torch's outer forward level does not see the saved eigenvectors of the inner jvp rule "
    "move with A, so the result would be silently wrong. Take the second derivative by forward over reverse "
    "(torch.func.hessian, jacfwd(jacrev(f)), jvp of grad) or reverse over reverse; both are exact at ties too."
)


class ExactSqrtOp(SpectralOp):
    """``SpectralOp`` for ``exact``'s square root, differentiable twice.

    The same forward, jvp and (first) backward; under ``create_graph=True`` the
    backward is ``ExactSqrtVJP`` of (T, G + Gᵀ), whose own derivative is the
    second-order Daleckii–Krein formula (``_kernels.sqrtm_second_derivative``),
    finite and exact at ties.  T is saved as well, to tie the gradient to it.

    The first-order map (the vjp's and the jvp's: exact's is self-adjoint)
    is U[(Uᵀ S U) ∘ D]Uᵀ with D_ij = 1/(sb_i + sb_j), where sb = √Lf·2^-(pow2+in_pow2)
    carries both factors (no pass over a matrix).  The forward returns sb as
    a fifth output.  ``in_pow2`` comes only with ``pow2``, from the entry
    points' fold: pow2 = k and in_pow2 = −2k−1, so sb = √Lf·2^(k+1) is twice
    the output's spectrum 2^k·√Lf, the same bits as the two factors applied
    one after the other (one op in the forward, none in the backward).
    """

    @staticmethod
    def forward(T, p, method, fn, pow2, S, in_pow2):
        if in_pow2 is not None and pow2 is None:
            raise ValueError("ExactSqrtOp: in_pow2 is the fold of the entry points, which pass pow2 with it")
        F, L, U, Lf, phi0, phi = SpectralOp._decomposed(T, p, method, fn, pow2, S)
        if in_pow2 is not None:
            sb = phi * 2.0  # the fold: 2^-(pow2+in_pow2) = 2^(k+1)
        else:
            sb = phi0 if pow2 is None else _kernels.pow2_vector(phi0, -pow2)
        return F, L, U, Lf, sb

    @staticmethod
    def setup_context(ctx, inputs, output):
        T, _, method, fn, pow2, _, in_pow2 = inputs
        _, L, U, Lf, sb = output
        ctx.mark_non_differentiable(L, U, Lf, sb)
        ctx.has_pow2, ctx.has_in_pow2 = pow2 is not None, in_pow2 is not None
        saved = (U, Lf, sb, T) + ((pow2,) if ctx.has_pow2 else ()) + ((in_pow2,) if ctx.has_in_pow2 else ())
        ctx.save_for_backward(*saved)
        ctx.save_for_forward(*saved)
        ctx.method, ctx.fn = method, fn
        ctx.set_materialize_grads(False)

    @staticmethod
    def _saved(ctx):
        """(U, Lf, sb, T, pow2, in_pow2)."""
        U, Lf, sb, T, *rest = ctx.saved_tensors
        pow2 = rest.pop(0) if ctx.has_pow2 else None
        return U, Lf, sb, T, pow2, (rest[0] if ctx.has_in_pow2 else None)

    @staticmethod
    def backward(ctx, gF, _gL, _gU, _gLf, _gsb):
        if gF is None:
            return None, None, None, None, None, None, None
        gF = _writable(gF)
        from ._guard import may_differentiate_again  # (imports this module)

        U, _, sb, T, _, _ = ExactSqrtOp._saved(ctx)
        if may_differentiate_again(T):  # create_graph=True, or T has a tangent: a second derivative may follow
            return ExactSqrtOp._map(ctx, _kernels.sym2(gF), True), None, None, None, None, None, None
        with _no_tf32():  # (the map of G + Gᵀ, symmetrized in the eigenbasis: two buffers fewer)
            return _kernels.sqrtm_vjp_exact(sb, U, gF), None, None, None, None, None, None

    @staticmethod
    def jvp(ctx, dT, _dp, _method, _fn, _pow2, _S, _in_pow2):
        from ._guard import forward_over_forward, raise_on_second_derivative, tangent_may_be_differentiated

        U, T = ExactSqrtOp._saved(ctx)[0], ExactSqrtOp._saved(ctx)[3]
        if forward_over_forward(T):  # (jvp of jvp: torch's outer level would not see U and s move with T)
            dF = ExactSqrtOp._map(ctx, _kernels.sym2(_tangent_or_zero(dT, U)), False)
            return raise_on_second_derivative(dF, T, FORWARD_OVER_FORWARD), None, None, None, None
        # The jvp's map is the vjp's (self-adjoint); where reverse mode may run over the tangent (grad of jvp,
        # jacrev of jacfwd) it is taken differentiably, as the backward is under create_graph=True.
        dF = ExactSqrtOp._map(ctx, _kernels.sym2(_tangent_or_zero(dT, U)), tangent_may_be_differentiated(T))
        return dF, None, None, None, None

    @staticmethod
    def _map(ctx, S, differentiably: bool):
        """U[(Uᵀ S U) ∘ D]Uᵀ (with both factors): as a function of T too when ``differentiably`` (ExactSqrtVJP)."""
        U, Lf, sb, T, pow2, in_pow2 = ExactSqrtOp._saved(ctx)
        if not differentiably:
            with _no_tf32():
                return _kernels.sqrtm_backward_exact(sb, U, S)
        from ._guard import guard  # (imports this module)

        # A third derivative raises
        anchor = guard(T, "exact", order=3)
        out = apply(ExactSqrtVJP, anchor, S, Lf.sqrt(), U, pow2, in_pow2)
        return out if in_pow2 is None else _kernels.times_pow2_halves(out, in_pow2)  # (differentiable, out of place)


class ExactSqrtVJP(torch.autograd.Function):
    """y = 2^pow2·U[(Uᵀ S U) ∘ D]Uᵀ, D_ij = 1/(s_i + s_j): the exact square root's vjp with respect to T
    (A = c·(T + Tᵀ) = U diag(s²) Uᵀ, c = 2^in_pow2 or 1, S = G + Gᵀ), as a function of T and S; the vjp
    with respect to T is c·y (the caller applies c).

    vjp for a cotangent V: with respect to S the same map of V (it is self-adjoint); with respect to T
    2^pow2·D²√(A)[c·(V + Vᵀ), S].  The jvp is 2^pow2·(D²√(A)[c·(dT + dTᵀ), S] + the map of dS).
    T itself is only the anchor of the graph: U and s stand for it.
    """

    generate_vmap_rule = True

    @staticmethod
    def _first(s, U, S, pow2):
        """The first-order map 2^pow2·U[(Uᵀ S U) ∘ D]Uᵀ, the factor folded into s."""
        return _kernels.sqrtm_backward_exact(s if pow2 is None else _kernels.pow2_vector(s, -pow2), U, S)

    @staticmethod
    def forward(T, S, s, U, pow2, in_pow2):
        with _no_tf32():
            return ExactSqrtVJP._first(s, U, S, pow2)

    @staticmethod
    def setup_context(ctx, inputs, output):
        _, S, s, U, pow2, in_pow2 = inputs
        ctx.has_pow2, ctx.has_in_pow2 = pow2 is not None, in_pow2 is not None
        saved = (S, s, U) + ((pow2,) if ctx.has_pow2 else ()) + ((in_pow2,) if ctx.has_in_pow2 else ())
        ctx.save_for_backward(*saved)
        ctx.save_for_forward(*saved)

    @staticmethod
    def _terms(ctx, dT2, dS):
        """2^pow2·(D²√[c·dT2, S] + the first-order map of dS) for dT2 = dT + dTᵀ; either may be None."""
        S, s, U, *rest = ctx.saved_tensors
        pow2 = rest.pop(0) if ctx.has_pow2 else None
        in_pow2 = rest[0] if ctx.has_in_pow2 else None
        out = None
        with _no_tf32():
            if dT2 is not None:  # D²√ is linear in dA: c joins 2^pow2, one exponent of moderate size
                W = _kernels.sqrtm_second_derivative(s, U, dT2, S)
                if pow2 is not None and in_pow2 is not None:  # (the entry points pass both: −k−1 for sqrt)
                    out = _kernels.times_pow2(W, pow2 + in_pow2)
                else:
                    out = _input_scaled(W if pow2 is None else _kernels.times_pow2(W, pow2), in_pow2)
            if dS is not None:
                first = ExactSqrtVJP._first(s, U, dS, pow2)
                out = first if out is None else out + first
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, V):
        V = _writable(V)
        gT, gS = ExactSqrtVJP._terms(ctx, _kernels.sym2(V), None), ExactSqrtVJP._terms(ctx, None, V)
        return gT, gS, None, None, None, None

    @staticmethod
    def jvp(ctx, dT, dS, _ds, _dU, _dpow2, _din_pow2):
        out = ExactSqrtVJP._terms(ctx, None if dT is None else _kernels.sym2(_writable(dT)), _writable(dS))
        return out if out is not None else torch.zeros_like(ctx.saved_tensors[0])


class Eigh(torch.autograd.Function):
    """(L, U, Ls) = eigh(A) with the eigen backward using a method's K-rule, and the scaling law inside.

    Inputs (X, S, e, k, rule, resolution): X is A in its working dtype (the graph's anchor), S = 2^e·(X + Xᵀ)
    = A/4^k symmetrized, formed without a graph in the compute dtype (``_api._prepare``'s fold), e = −2k−1,
    and ``resolution`` the eps of the coarser of the input and compute dtypes (``Method.eigh_K``).  The
    eigenpairs are those of S; the outputs are L = 4^k·Ls and U in the wider of X's and the compute dtype
    (the entry point casts them to A's), and Ls (not differentiable).

    The derivatives are taken at order one and the law's factors applied once, at the end.  dλ/dA = u uᵀ
    carries no factor, the eigenvectors' part 4^-k (K is the scaled matrix's): gA = B(gL, 4^-k·gU) for the
    backward map B of S's eigenpairs.  Applied through autograd one factor at a time (4^k on gL, then 2^e on
    the gradient), a cotangent of 1e10 at A ~ 1e30 (float32) overflowed on the way and the gradient was inf,
    one of 1e-20 at 1e-30 underflowed to 0, and a tangent of 1e9 at 1e-30 gave dL = inf (session 22).

    With a compute dtype narrower than X's (float64 computed in float32) the K-rule is evaluated on the
    narrow eigenvalues (its epsilons are the compute dtype's), and the backward and jvp run in X's dtype; with
    a wider one (float32 computed in float64) they run in the compute dtype (in float32, K ~ 1e5 at a gap of
    1e-5 times a float32 Uᵀ gU was 5x less accurate than the float64 backward).
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(X, S, e, k, rule, resolution):
        Ls, U = eigh_or_raise(S)  # a plain tuple: vmap's generated rule rejects the namedtuple
        wide = torch.promote_types(X.dtype, S.dtype)  # the outputs', the backward's and the jvp's dtype
        h = torch.exp2(_kernels.cast(k, wide))[..., None]  # 2^k: normal wherever 4^k·Ls can be finite
        return (Ls.to(wide) * h) * h, U.to(wide), Ls

    @staticmethod
    def setup_context(ctx, inputs, output):
        _, _, _, k, rule, resolution = inputs
        _, U, Ls = output
        ctx.mark_non_differentiable(Ls)
        ctx.save_for_backward(U, Ls, k)
        ctx.save_for_forward(U, Ls, k)
        ctx.rule, ctx.resolution, ctx.in_dtype = rule, resolution, inputs[0].dtype
        # An unused output arrives as None, which eigh_backward skips.
        ctx.set_materialize_grads(False)

    @staticmethod
    def _K(ctx, U, Ls):
        return ctx.rule.eigh_K(Ls, ctx.resolution).to(U.dtype)  # (on the compute dtype's eigenvalues)

    @staticmethod
    @once_differentiable_in_cotangent
    def backward(ctx, gL, gU, _gLs):
        U, Ls, k = ctx.saved_tensors
        if gL is None and gU is None:
            return None, None, None, None, None, None
        # one exponent t per matrix with gL·2^-t and gU·2^(-2k-t) at most of order one; gA = 2^t·B(both)
        tL, tU = _order(gL, 1), _order(gU, 2)
        tU = None if tU is None else tU - 2.0 * k
        t = tU if tL is None else tL if tU is None else torch.maximum(tL, tU)
        t = torch.where(torch.isfinite(t), t, torch.zeros_like(t))  # (all-zero cotangents)
        gLs = None if gL is None else _kernels.pow2_vector(_writable(gL), -t, halves=True)
        gUs = None if gU is None else _kernels.times_pow2_halves(_writable(gU), -2.0 * k - t)
        with _no_tf32():
            gX = _kernels.eigh_backward(Ls, U, gLs, gUs, Eigh._K(ctx, U, Ls))
        return (_kernels.times_pow2_halves(gX, t, inplace=True).to(ctx.in_dtype),
                None, None, None, None, None)

    @staticmethod
    def jvp(ctx, dX, _dS, _de, _dk, _rule, _resolution):
        # (the rule's K is formed in place, and its derivative is not taken: reverse mode over this tangent
        # raises through the guard's tie of dX, ``_guard``)
        U, Ls, k = (t.detach() for t in ctx.saved_tensors)
        dX = _tangent_or_zero(dX, U).to(U.dtype)  # (in the outputs' dtype, the wider of X's and the compute one)
        with torch.no_grad():
            s = 2.0 * _kernels.scale_exponent(dX.abs().amax(dim=(-2, -1)))  # (*): dX·2^-s of order one
        with _no_tf32():
            dL, dU = _kernels.eigh_jvp(Ls, U, _kernels.times_pow2_halves(dX, -s), Eigh._K(ctx, U, Ls))
        # dL = diag(Uᵀ sym(dA) U), no factor; dU = U(Kᵀ ∘ Uᵀ dS U) with dS = 2^e·(dX + dXᵀ) = 4^-k·2·sym(dX)
        return _kernels.pow2_vector(dL, s, halves=True), _kernels.times_pow2_halves(dU, s - 2.0 * k), None


def _order(g, dims: int):
    """(*) 2·scale_exponent(max|g|) over g's last ``dims`` dimensions, −inf where g is all zero; None for None."""
    if g is None:
        return None
    with torch.no_grad():
        amax = g.abs().amax(dim=tuple(range(-dims, 0)))  # (no detach: torch's legacy batching has no rule for it)
        t = 2.0 * _kernels.scale_exponent(amax)
        return torch.where(amax > 0, t, torch.full_like(t, -math.inf))


class NewtonSchulzManual(torch.autograd.Function):
    """Newton–Schulz forward with the hand-written backward (seed 002 eqs. 9-12) and its jvp.

    ``inverse`` selects the output: √c·Y_J (the square root) or Z_J/√c (the
    inverse square root), both from the same coupled iteration.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(A, iterations, normalization, inverse, pow2=None):
        F, c, live, post, YJ, ZJ, Ys, Zs, Ts = _newton_schulz.forward(A, iterations, normalization, inverse, pow2)
        return (F, c, live, post, YJ, ZJ, *Ys, *Zs, *Ts)

    @staticmethod
    def setup_context(ctx, inputs, output):
        A, iterations, normalization, inverse, _ = inputs
        ctx.mark_non_differentiable(*output[1:])
        ctx.save_for_backward(A, *output[1:])
        ctx.save_for_forward(A, *output[1:])
        ctx.iterations = iterations
        ctx.normalization = normalization
        ctx.inverse = inverse
        # Only gF is used: without this autograd fills a zero gradient for
        # each of the 3·iterations saved (B, n, n) outputs on every backward.
        ctx.set_materialize_grads(False)

    @staticmethod
    def _saved(ctx):
        A, c, live, post, YJ, ZJ, *rest = ctx.saved_tensors
        J = ctx.iterations
        nz = len(rest) - 2 * J  # Z_1..Z_{J-1}, and Z_J too for the inverse
        return A, c, live, post, YJ, ZJ, rest[:J], rest[J : J + nz], rest[J + nz :]

    @staticmethod
    @once_differentiable_in_cotangent
    def backward(ctx, gF, *_):
        if gF is None:
            return None, None, None, None, None
        A, c, live, post, YJ, ZJ, Ys, Zs, Ts = NewtonSchulzManual._saved(ctx)
        with _no_tf32():
            gA = _newton_schulz.backward(_writable(gF), A, c, live, post, YJ, ZJ, Ys, Zs, Ts, ctx.normalization, ctx.inverse)
        return gA, None, None, None, None

    @staticmethod
    def jvp(ctx, dA, *_):
        A, c, live, post, YJ, ZJ, Ys, Zs, Ts = NewtonSchulzManual._saved(ctx)
        with _no_tf32():
            dF = _newton_schulz.jvp(_tangent_or_zero(dA, A), A, c, live, post, YJ, ZJ, Ys, Zs, Ts,
                                    ctx.normalization, ctx.inverse)
        return (dF,) + (None,) * (5 + len(Ys) + len(Zs) + len(Ts))


class GramOp(torch.autograd.Function):
    """F = (X Xᵀ)^{±1/2} = U f(S) Uᵀ for X = U S Vᵀ, with f(σ) = σ or 1/σ, never from Σ = X Xᵀ rounded
    in X's dtype: κ(X), not κ(X)², sets the accuracy.  Two algorithms (``_api.GRAM_ALGORITHMS``):

    ``"svd"``: the SVD of X in its own dtype.  For N > d it is taken of the
    d×d factor R of Xᵀ = Q R (X = Rᵀ Qᵀ, Rᵀ = U S Wᵀ, V = Q W): Householder
    QR and the SVD are both backward stable, so U S Vᵀ is as close to X as
    a direct SVD's.  Its errors are about eps·σmax in σ.

    ``"gram64"`` (float32 X): Σ = X Xᵀ formed and eigendecomposed in
    float64.  Products of float32 numbers are exact in float64, and the
    float64 eigenvalue errors, about eps64·λmax, move σ = √λ by at most
    √eps64·σmax = 1e-8·σmax, below the float32 SVD's eps32·σmax = 1.2e-7·σmax;
    its eigenvectors are better by eps64/eps32·σmax/(σi + σj).  P = S Vᵀ =
    UᵀX, which the backward needs row-accurate relative to σj, is formed in
    float64 too (error eps64·σmax, below the floor's eps32·σmax), then
    rounded.  On this machine it costs 0.60× (n = 64) and 0.79× (n = 256)
    the float32 SVD route's time (reports/performance).

    Singular values are floored at eps·σmax (``_kernels.singular_value_floor``)
    either way.  Outputs: F, then U (compute dtype), Sf (floored σ, the
    eigenbasis order), and the factors the backward needs (P or its pieces).
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(Xw, k, eps, inverse, algorithm, cdtype):
        """Xw in the work dtype, k (*) its power-of-four exponent: X = Xw·4^-k in ``cdtype`` is of order one,
        F = 4^(±k)·(X Xᵀ)^{±1/2} is returned in Xw's dtype (the scaling, and the cast, are exact or are
        the cast's own rounding).  The vjp and the jvp are taken at order one (``_scaled_by``)."""
        X = _kernels.times_pow2_halves(Xw, -2.0 * k).to(cdtype)
        # (the zero X's absolute floor: the coarser dtype's, as ``_api._zero_matrix_lift`` for A)
        F, *rest = GramOp._at_order_one_forward(X, eps, inverse, algorithm, _kernels.coarser_dtype(Xw.dtype, cdtype))
        F = _kernels.times_pow2_halves(F.to(Xw.dtype), -2.0 * k if inverse else 2.0 * k)
        return (F, *rest, X)

    @staticmethod
    def _at_order_one_forward(X, eps, inverse, algorithm, zero_dtype):
        d, N = X.shape[-2], X.shape[-1]
        if algorithm == "gram64":
            Xw = X.to(torch.float64)
            L, Uw = eigh_or_raise(Xw @ Xw.mT)  # ascending
            S = L.clamp_min(0).sqrt()
            floor = _kernels.singular_value_floor(S[..., -1:], eps, X.dtype, zero_dtype)  # (*, 1)
            Sf = S.clamp_min(floor).to(X.dtype)
            U = Uw.to(X.dtype)
            saved = (Uw, S < floor)  # (the floored σ: their rows of P are zero, as on the svd route)
        else:
            U, S, Vh = _svd_of_features(X)
            floor = _kernels.singular_value_floor(S, eps, zero_dtype=zero_dtype)  # (*, 1)
            Sf = S.clamp_min(floor)  # (*, r), descending
            if d > N:  # the null space of X Xᵀ gets the floor as well
                Sf = torch.cat((Sf, floor.expand(Sf.shape[:-1] + (d - N,))), -1)
            saved = (S, Vh)
        phi = Sf.reciprocal() if inverse else Sf
        F = (U * phi[..., None, :]) @ U.mT
        return (F, U, Sf) + saved

    @staticmethod
    def setup_context(ctx, inputs, output):
        _, k, _, inverse, algorithm, _ = inputs
        _, U, Sf, *saved, X = output
        ctx.mark_non_differentiable(U, Sf, *saved, X)
        # gram64 keeps X (the scaled input, an output) to form P = UᵀX in float64 when it is needed
        tensors = (U, Sf, X) + tuple(saved) if algorithm == "gram64" else (U, Sf) + tuple(saved)
        ctx.save_for_backward(k, *tensors)
        ctx.save_for_forward(k, *tensors)
        ctx.inverse = inverse
        ctx.algorithm = algorithm
        ctx.n_outputs = len(output)
        ctx.set_materialize_grads(False)

    @staticmethod
    def _scaled_by(ctx, rule, Y, like):
        """rule(Y) for a fresh (co)tangent Y in the work dtype, taken at order one: Y·2^-s (max|Y·2^-s| in
        [1/4, 4)) crosses into the compute dtype, and the one exponent s (times 4^-2k for the inverse
        root: F = 4^(±k)·G(Xw·4^-k), so its vjp and jvp carry 4^(±k)·4^-k) is applied on the way back.
        Nothing in between over- or underflows where the result does not (a cotangent F of X at 1e20
        in float32 was scaled by 4^k first: NaN)."""
        k = ctx.saved_tensors[0]
        with torch.no_grad():
            s = 2.0 * _kernels.scale_exponent(Y.abs().amax(dim=(-2, -1)))  # (*)
        R = rule(_kernels.cast(_kernels.times_pow2_halves(Y, -s), like.dtype))  # (cast: no alias op when equal,
        return _kernels.times_pow2_halves(_kernels.cast(R, Y.dtype), s - 4.0 * k if ctx.inverse else s)  # legacy vmap)

    @staticmethod
    def factors(ctx):
        """U, P = S Vᵀ (rows accurate relative to σj) and D for ``_kernels.gram_backward``/``gram_jvp``."""
        if ctx.algorithm == "gram64":
            _, U, Sf, X, Uw, floored = ctx.saved_tensors
            # A σ held at the floor in the forward has no derivative: its row of P is zero, as on the svd route
            # (UᵀX kept it, and D at the floor, −1/(2·floor³) for the inverse root, made the gradient of a float32
            # X with a σ below eps32·σmax 4.6e5× too large)
            P = (Uw.mT @ X.to(torch.float64)).masked_fill_(floored[..., :, None], 0.0).to(X.dtype)
        else:
            _, U, Sf, S, Vh = ctx.saved_tensors
            # σ below the floor is the SVD's rounding noise (about eps·σmax) of a σ that may be 0: its row of P
            # is taken as zero, as the d > N rows are (with the noise, D at the floor, 1/floor³ for the inverse
            # root, made the gradient of an X with a zero row 1e13 too large, and dependent on the column order)
            P = torch.where(S < Sf[..., :S.shape[-1]], 0.0, S)[..., :, None] * Vh
        return U, P, _kernels.gram_loewner(Sf, ctx.inverse)

    @staticmethod
    @once_differentiable_in_cotangent
    def backward(ctx, gF, *_):
        if gF is None:
            return None, None, None, None, None, None
        U, P, D = GramOp.factors(ctx)
        with _no_tf32():
            gX = GramOp._scaled_by(ctx, lambda G: _kernels.gram_backward(U, P, G, D), gF, U)
        return gX, None, None, None, None, None

    @staticmethod
    def jvp(ctx, dX, _dk, _eps, _inverse, _algorithm, _cdtype):
        U, P, D = GramOp.factors(ctx)
        k = ctx.saved_tensors[0]
        with _no_tf32():
            if dX is None:
                dF = U.new_zeros(U.shape, dtype=k.dtype)  # (k has the work dtype, F's)
            else:
                dF = GramOp._scaled_by(ctx, lambda V: _kernels.gram_jvp(U, P, V, D), _writable(dX), U)
        return (dF,) + (None,) * (ctx.n_outputs - 1)


def _svd_of_features(X):
    """U (*, d, d), S (*, r) descending, Vh (*, r, N) with r = min(d, N): X = U[:, :r] S Vh."""
    d, N = X.shape[-2], X.shape[-1]
    try:
        if N > d:  # X = Rᵀ Qᵀ and Rᵀ = U S Wᵀ: X = U S (Q W)ᵀ, with the SVD of a d×d matrix only
            Q, R = torch.linalg.qr(X.mT)  # (*, N, d), (*, d, d)
            U, S, Wh = torch.linalg.svd(R.mT)
            return U, S, Wh @ Q.mT  # (*, d, N)
        return torch.linalg.svd(X, full_matrices=d > N)  # d > N: the full U spans X Xᵀ's null space too
    except torch.linalg.LinAlgError as exc:
        raise SvdgradError(f"The SVD failed ({describe(X)}): {str(exc).splitlines()[0]} Expected finite "
                           f"input; run with check=True, or compute in torch.float64.") from None


def _zeros_like_input(dX, U, P):
    """The tangent of X (*, d, N), zeros if it has none."""
    if dX is not None:
        return dX
    return U.new_zeros(U.shape[:-1] + (P.shape[-1],))


class Symmetrized(torch.autograd.Function):
    """A = T + Tᵀ as a graph node whose value S = T + Tᵀ is already formed, without a graph (the checks of
    ``_api._prepare`` form it): the forward costs no pass over a matrix.

    vjp G + Gᵀ and jvp dT + dTᵀ, as for ``_kernels.sym2(T)``; the backward is made of differentiable ops, so
    a double backward through it works as through sym2.  ``symmetrized`` picks it or sym2.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(T, S):
        return S

    @staticmethod
    def setup_context(ctx, inputs, output):
        pass

    @staticmethod
    def backward(ctx, G):
        return _kernels.sym2(G), None

    @staticmethod
    def jvp(ctx, dT, _dS):
        return _kernels.sym2(_tangent_or_zero(dT, _dS))


def symmetrized(T: torch.Tensor, S: torch.Tensor | None) -> torch.Tensor:
    """T + Tᵀ with T's graph: S's value where the caller has S = T + Tᵀ without a graph (``_api._spectral``
    casts both to the compute dtype), else sym2(T)."""
    if S is None:
        return _kernels.sym2(T)
    return apply(Symmetrized, T, S)


class LyapunovRoot(torch.autograd.Function):
    """F = A^{1/2} or A^{-1/2} from a matmul-only forward, with the Lyapunov backward (and jvp).

    ``method.root(A, inverse)`` returns (Z ≈ A^{1/2}, F) without a graph.
    vjp: X with Z X + X Z = sym(G) (for the inverse root Y: −sym(Y G Y));
    jvp: dZ with Z dZ + dZ Z = sym(dA) (inverse: −Y dZ Y).  The same
    self-adjoint solve, so the two agree.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(A, method, inverse):
        with torch.no_grad():
            Z, F = method.root(A, inverse)
        # For the square root Z is F itself; an empty placeholder keeps F differentiable.
        return F, (Z if inverse else F.new_empty(0))

    @staticmethod
    def setup_context(ctx, inputs, output):
        _, method, inverse = inputs
        F, Z = output
        ctx.mark_non_differentiable(Z)
        ctx.save_for_backward(F, Z)
        ctx.save_for_forward(F, Z)
        ctx.method, ctx.inverse = method, inverse
        ctx.set_materialize_grads(False)

    @staticmethod
    def _solve(ctx, F, Z, C):
        Z = Z if ctx.inverse else F
        return _matmul_only.lyapunov_solve(Z, C, tol=ctx.method.tol, max_iterations=ctx.method.max_iterations,
                                           what=f"The Lyapunov backward of {ctx.method.name!r}")

    @staticmethod
    @once_differentiable_in_cotangent
    def backward(ctx, gF, _gZ):
        if gF is None:
            return None, None, None
        F, Z = ctx.saved_tensors
        if torch._C._functorch.is_functorch_wrapped_tensor(F):  # (torch.func: its levels take the out= products)
            return LyapunovRoot._vjp(ctx, F, Z, gF), None, None
        # Under forward_ad, a tangent cannot enter the solve's out= products.  One of A (through F, Z) is a second
        # derivative, which the guard on A refuses; one of the cotangent alone passes through this linear map.
        F, Z = F.detach(), Z.detach()
        if torch.autograd.forward_ad._current_level < 0:
            return LyapunovRoot._vjp(ctx, F, Z, gF), None, None
        g, dg = torch.autograd.forward_ad.unpack_dual(gF)
        gT = LyapunovRoot._vjp(ctx, F, Z, g.detach())
        if dg is not None:
            gT = torch.autograd.forward_ad.make_dual(gT, LyapunovRoot._vjp(ctx, F, Z, dg))
        return gT, None, None

    @staticmethod
    def _vjp(ctx, F, Z, gF):
        with _no_tf32():
            C = -_kernels.sym(F @ gF @ F) if ctx.inverse else _kernels.sym(gF)
            return LyapunovRoot._solve(ctx, F, Z, C)

    @staticmethod
    def jvp(ctx, dA, _method, _inverse):
        F, Z = ctx.saved_tensors
        C = _kernels.sym(_tangent_or_zero(dA, Z))
        if torch._C._functorch.is_functorch_wrapped_tensor(C):  # (torch.func: its levels take the out= products)
            with _no_tf32():
                dZ = LyapunovRoot._solve(ctx, F, Z, C)
                return (-(F @ dZ @ F) if ctx.inverse else dZ), None
        with _no_tf32(), torch.no_grad():  # (the solve writes into buffers, out=: no graph through it)
            F0 = F.detach()
            dZ = LyapunovRoot._solve(ctx, F0, Z.detach(), C.detach())
            dF = -(F0 @ dZ @ F0) if ctx.inverse else dZ
        if C.requires_grad:
            # Reverse mode over this tangent: the guard tied dA to A so that it raises (``_guard``); keep the tie.
            from ._guard import raise_on_second_derivative, unsupported_message

            dF = raise_on_second_derivative(dF, C, unsupported_message(
                f"the Lyapunov jvp of {ctx.method.name!r}", "Use method='exact' for second derivatives."))
        return dF, None


class _no_tf32:
    """Backward rules are accuracy-critical: no TF32 matmuls inside them on GPU."""

    def __enter__(self):
        self._prev = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = False

    def __exit__(self, *exc):
        torch.backends.cuda.matmul.allow_tf32 = self._prev


def _to_order_one(X: torch.Tensor, dtype: torch.dtype):
    """(X·2^-s cast to ``dtype``, s): s (*) per matrix makes max|X| of order 1, so the cast neither
    overflows nor underflows; s = 0 for a zero or non-finite matrix."""
    with torch.no_grad():
        s = _kernels.scale_exponent(X.abs().amax(dim=(-2, -1))) * 2.0  # 4^k: max|X|·2^-s in [1/4, 4)
    return _kernels.times_pow2_halves(X, -s).to(dtype), s


def narrow_pair_applies() -> bool:
    """Whether ``NarrowIn``/``NarrowOut`` may carry the cast now: not under torch.compile, nor under any vmap level
    (jacfwd, jacrev of vmap, vmap of grad or jvp: the scale exponent k that NarrowOut's closure captures, and the
    per-matrix scales the pair shares, would then be batched tensors of a level the closure outlives).  Under
    grad and jvp alone the pair applies, and keeps the first-order derivatives' scale there too."""
    if torch.compiler.is_compiling():
        return False
    stack = torch._C._functorch.get_interpreter_stack()
    return not stack or all(i.key() != torch._C._functorch.TransformType.Vmap for i in stack)


def _per_thread(slot: str) -> property:
    """A property whose value is kept per thread, in the dict attribute ``slot`` (``NarrowScales``)."""

    def get(self):
        return getattr(self, slot).get(threading.get_ident())

    def set_(self, value):
        getattr(self, slot)[threading.get_ident()] = value

    return property(get, set_)


class NarrowScales:
    """The per-matrix exponents a tangent or a cotangent was scaled by at the narrow side of one call,
    shared by its ``NarrowIn`` and ``NarrowOut`` (forward mode: NarrowIn sets, NarrowOut reads; reverse
    mode: the other way round), and a tensor p whose derivative is taken on the wide side (``NarrowDp``): A's
    gradient does not depend on it in the graph, so NarrowIn ties a second-order one to it, to raise.

    ``twice``: the pair goes, in A's own dtype, around a method whose backward is differentiable
    (newton_schulz with backward='autograd').  A second-order cotangent reaches ``NarrowIn`` from the
    backward's own graph, not through ``NarrowOut``, so it cannot share the first-order one's scale.  The
    pair then runs ``plain``: each node applies its own factor (NarrowOut the output law's 2^law, NarrowIn
    the fold's 2^e_in), the chain without the pair, exact for any mix of orders.  ``plain`` is set, for good,
    by the first backward that may be differentiated again (``create_graph=True``, torch.func.grad, a dual
    cotangent), and from the start where a tangent enters the forward with A requiring grad or under a
    torch.func transform; a first-order backward before it is scaled, and its graph holds no second order."""

    __slots__ = ("_tangent", "_cotangent", "p", "twice", "plain", "law", "e_in")

    def __init__(self, p=None, *, twice: bool = False, plain: bool = False):
        # The exponents are per thread: two threads may run backward through one graph at once
        # (retain_graph=True), and on the CPU each pass runs on its caller's thread (with one shared slot
        # the passes overwrote each other's exponent: gradients off by powers of two).
        self._tangent, self._cotangent = {}, {}
        self.p = p
        self.twice, self.plain = twice, plain
        self.law = self.e_in = None  # (set by NarrowIn: the output law's exponent and the fold's)

    tangent = _per_thread("_tangent")
    cotangent = _per_thread("_cotangent")

    def plain_now(self, *tensors) -> bool:
        """Whether this pair runs plain from now on (only with ``twice``): already, or a backward or jvp that
        runs now may be differentiated again with respect to ``tensors`` (``_guard.may_differentiate_again``)."""
        if self.twice and not self.plain:
            from ._guard import may_differentiate_again  # (imports this module)

            self.plain = may_differentiate_again(*tensors)
        return self.plain


class NarrowIn(torch.autograd.Function):
    """The cast of the scaled input T to a narrower compute dtype (float64 input computed in float32).

    Forward: T.to(dtype).  The output's scaling law multiplies every derivative
    by 2^e (``SpectralFunction.gradient_pow2``); applied after the cast back,
    as the plain chain does, that factor (up to 2^511 for the square root of
    a float64 1e300) overflows the float32 gradient.  So this pair moves it to
    the wide side, and each tangent or cotangent crosses the cast scaled to
    entries of order 1 (a tangent dA/4^k of a 1e300 matrix would underflow
    float32): the vjp is g.to(wide)·2^(e + s) with s the exponent ``NarrowOut``
    scaled the cotangent by, the jvp (dT·2^e·2^-s).to(dtype), undone by
    ``NarrowOut``.  The composition is the exact derivative (every map in
    between is linear in the tangent).

    With ``e_in`` (*) the input is A itself (``_api._prepare``'s fold) and T =
    A·2^e_in is formed here: its factor joins the same exponent, which a
    separate multiplication after this vjp could not take (g·2^(e + s) may
    lie below the float64 range where g·2^(e + s + e_in) does not).
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(T, e, e_in, dtype, scales):
        return (T if e_in is None else _kernels.times_pow2_halves(T, e_in)).to(dtype)

    @staticmethod
    def setup_context(ctx, inputs, output):
        T, law, e_in, dtype, scales = inputs
        e = law if e_in is None else law + e_in
        ctx.save_for_backward(e, T)  # (T, an input: no copy, anchors the higher-order refusal)
        ctx.save_for_forward(e)
        ctx.wide, ctx.narrow, ctx.scales = T.dtype, dtype, scales
        if scales.twice:  # (the plain chain's factors, one per node)
            scales.law, scales.e_in = law, e_in

    @staticmethod
    def _plain(ctx, x):
        """The plain chain's derivative of this node: x·2^e_in (the fold), also the jvp (the map is linear)."""
        e_in = ctx.scales.e_in
        return x if e_in is None else _kernels.times_pow2_halves(x, e_in)

    @staticmethod
    def backward(ctx, g):
        from ._guard import may_differentiate_again, raise_on_second_derivative, unsupported_message

        e, T = ctx.saved_tensors
        if ctx.scales.plain_now(T, g):
            return NarrowIn._plain(ctx, g), None, None, None, None
        s = ctx.scales.cotangent
        gT = _kernels.times_pow2_halves(g.to(ctx.wide), e if s is None else e + s)
        p = ctx.scales.p
        # (In A's own dtype the pair serves a once-differentiable method, whose guard refuses a second derivative
        # with its own message, or runs plain where one may follow (``twice``): ``_api._scaled_pair``.)
        if ctx.narrow != ctx.wide and may_differentiate_again(T, p):
            # A second-order cotangent reaches this node from the backward's own graph, not through NarrowOut, so
            # it does not carry the scale 2^-s this factor undoes; summed with a first-order one (a gradient
            # penalty) the two cannot be told apart.  So a second derivative here raises.
            msg = unsupported_message(
                f"a compute_dtype narrower than the input ({ctx.wide} computed in {ctx.narrow})",
                f"Compute in the input's dtype (compute_dtype=None or {ctx.wide}), or use torch.func.hessian (under "
                f"its vmap the cast is the plain chain, exact but without the scale guard at extreme scales).",
                why="the first-order cotangent crosses the cast rescaled to order one, and a second-order one "
                    "cannot share that scale")
            gT = raise_on_second_derivative(gT, T, msg)
            if p is not None:  # (p is held constant inside, so d/dp of A's gradient would be silently missing)
                gT = raise_on_second_derivative(gT, p, msg)
        return gT, None, None, None, None

    @staticmethod
    def jvp(ctx, dT, _de, _de_in, _ddtype, _dscales):  # tangents of (T, e, e_in, dtype, scales)
        if ctx.scales.plain:  # (decided with the forward, where a tangent enters: ``_api._scaled_pair``)
            return NarrowIn._plain(ctx, dT)
        (e,) = ctx.saved_tensors
        out, ctx.scales.tangent = _to_order_one(_kernels.times_pow2_halves(dT, e), ctx.narrow)
        return out


class NarrowOut(torch.autograd.Function):
    """rescale(F.to(wide)); its vjp and jvp are casts at order-one scale, the scaling law's
    derivative factor being carried by ``NarrowIn`` (see there)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(F, wide, rescale, scales):
        return rescale(F.to(wide))

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.narrow, ctx.wide, ctx.scales = inputs[0].dtype, inputs[1], inputs[3]

    @staticmethod
    def backward(ctx, g):
        if ctx.scales.plain_now(g):  # (the output law's factor here, differentiably: ``NarrowScales``)
            return _kernels.times_pow2_halves(g, ctx.scales.law), None, None, None
        out, ctx.scales.cotangent = _to_order_one(g, ctx.narrow)
        return out, None, None, None

    @staticmethod
    def jvp(ctx, dF, _dwide, _drescale, _dscales):  # tangents of (F, wide, rescale, scales)
        if ctx.scales.plain:
            return _kernels.times_pow2_halves(dF, ctx.scales.law)
        s = ctx.scales.tangent
        dF = dF.to(ctx.wide)
        return dF if s is None else _kernels.times_pow2_halves(dF, s)


def _physical_matrix_max(X: torch.Tensor) -> torch.Tensor:
    """max|X| per matrix over every instance that torch.func's vmap levels hold of X (*, n, n), read from the
    plain tensor inside the wrappers (a vmap level inserts a dimension at its bdim), without a graph."""
    pos = list(range(X.dim()))  # where X's logical dimensions lie in the tensor being unwrapped
    base = X
    while torch._C._functorch.is_functorch_wrapped_tensor(base):
        if torch._C._functorch.is_batchedtensor(base):
            b = torch._C._functorch.maybe_get_bdim(base)
            pos = [d if d < b else d + 1 for d in pos]
        base = torch._C._functorch.get_unwrapped(base)
    with torch.no_grad():
        return base.detach().abs().amax(dim=(pos[-2], pos[-1]))


def physical(X: torch.Tensor) -> torch.Tensor:
    """The plain tensor inside torch.func's wrappers of X (every vmap instance of it), detached: for a
    refusal that must read values under vmap, where X itself cannot be synchronized on."""
    base = X
    while torch._C._functorch.is_functorch_wrapped_tensor(base):
        base = torch._C._functorch.get_unwrapped(base)
    return base.detach()


def plain_narrow_refusal(k: torch.Tensor, fn, p, narrow: torch.dtype) -> str | None:
    """Why the plain chain of a narrower cast (``NarrowCast`` without ``scaled``) cannot carry a second
    derivative at A's scale, or None: the tangent crosses the cast with 2^(−2k−1), the cotangent with the
    law's 2^g (``gradient_pow2``), and a second derivative inside the method with their product, so
    |2k+1| + |g| must stay within half the narrow dtype's exponent range (float32: 64, A within about 1e±12
    for the square root) for each instance of k (read through vmap's wrappers)."""
    if torch.compiler.is_compiling() or k.numel() == 0:
        return None
    kp = physical(k)
    pp = float(physical(p).abs().amax()) if isinstance(p, torch.Tensor) else (abs(p) if p is not None else None)
    g = fn.gradient_pow2(kp, pp)
    spread = (2.0 * kp + 1.0).abs() + (g.abs() if g is not None else 0.0)
    limit = math.floor(math.log2(torch.finfo(narrow).max)) // 2
    if not bool((spread > limit).any()):
        return None
    return (f"A compute_dtype narrower than the input ({narrow} for a {k.dtype} A) cannot carry a second "
            f"derivative under vmap (torch.func.hessian, two grad or jvp levels, or create_graph=True) at this "
            f"scale: max|A| is about 4^{float(kp.abs().amax()):.0f}, and the tangent and cotangent would cross the "
            f"cast with factors whose exponents add up to more than {limit}, leaving {narrow}'s range; the result "
            f"would be 0 or NaN. Compute in the input's dtype (compute_dtype=None), or scale A nearer to order one.")


def _check_narrow_range(X: torch.Tensor, narrow: torch.dtype, what: str) -> None:
    """Raise where a tangent or cotangent X (wide) would cross the plain chain's cast to ``narrow`` outside its
    range: a nonzero matrix below tiny/eps (it underflows to 0 or to a few bits) or above the largest number."""
    if torch.compiler.is_compiling():
        return
    info = torch.finfo(narrow)
    m = _physical_matrix_max(X)
    bad = ((m > 0) & (m < info.tiny / info.eps)) | (m > info.max)
    if bool(bad.any()):
        worst = float(m[bad].flatten()[0])
        raise SvdgradError(
            f"A compute_dtype narrower than the input ({X.dtype} computed in {narrow}) cannot carry this "
            f"derivative under vmap: where a second derivative may follow (torch.func.hessian, two grad or jvp "
            f"levels), the {what} crosses the cast with the scaling law's factor, and its entries of order "
            f"{worst:.3g} lie outside {narrow}'s range ({info.tiny / info.eps:.3g} to {info.max:.3g}); the result "
            f"would be 0 or NaN. Compute in the input's dtype (compute_dtype=None), or scale A nearer to order one.")


class NarrowCast(torch.autograd.Function):
    """The cast of T to a narrower compute dtype where ``NarrowIn``/``NarrowOut`` cannot go (under vmap or
    torch.compile, whose transforms the pair's shared per-call state would outlive): Tn = (T·2^e_in).to(dtype),
    and a carrier c (*), zero, that only ``NarrowCastBack`` takes.

    The plain chain carries the output law's factor 2^law on the cotangent before the cast back, and
    2^e_in on the tangent before this cast: far from order one either leaves the narrow range (jacfwd of a
    float64 A ≈ 1e50 computed in float32 gave 0, vmap of grad at 1e200 NaN).  With ``scaled`` a tangent
    (cotangent) crosses each cast scaled to entries of order one, by 2^-s per matrix, and the exponent s
    travels as the carrier's own tangent (cotangent), from this jvp to ``NarrowCastBack``'s (from its
    backward to this one): no state outside the graph, so vmap levels and threads keep each s apart.  Every
    map in between is linear in the tangent, so the composition is the exact derivative.  ``scaled`` only
    where every derivative is a first one (``_guard.first_derivatives_only``, decided with the forward): a
    second-order tangent or cotangent would not carry s.  Without it, the plain chain.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(T, e_in, dtype, scaled, refusal):
        Tn = (T if e_in is None else _kernels.times_pow2_halves(T, e_in)).to(dtype)
        return Tn, T.new_zeros(T.shape[:-2])

    @staticmethod
    def setup_context(ctx, inputs, output):
        T, e_in, dtype, scaled, refusal = inputs
        ctx.has_e_in = e_in is not None
        saved = (e_in,) if ctx.has_e_in else ()
        ctx.save_for_backward(*saved)
        ctx.save_for_forward(*saved)
        ctx.wide, ctx.narrow, ctx.scaled, ctx.refusal = T.dtype, dtype, scaled, refusal
        ctx.set_materialize_grads(False)

    @staticmethod
    def backward(ctx, gTn, s):
        if gTn is None:
            return None, None, None, None, None
        e = ctx.saved_tensors[0] if ctx.has_e_in else None
        if s is not None and ctx.scaled:  # (the exponent NarrowCastBack scaled the cotangent by)
            e = s if e is None else e + s
        g = gTn.to(ctx.wide)
        return (g if e is None else _kernels.times_pow2_halves(g, e)), None, None, None, None

    @staticmethod
    def jvp(ctx, dT, _de_in, _ddtype, _dscaled, _drefusal):
        x = dT if not ctx.has_e_in else _kernels.times_pow2_halves(dT, ctx.saved_tensors[0])
        if ctx.scaled:
            return _to_order_one(x, ctx.narrow)
        if ctx.refusal is not None:  # (plain: forward mode here means a second derivative may follow)
            raise SvdgradError(ctx.refusal)
        _check_narrow_range(x, ctx.narrow, "tangent")
        return x.to(ctx.narrow), torch.zeros(x.shape[:-2], dtype=ctx.wide, device=x.device)


class NarrowCastBack(torch.autograd.Function):
    """F.to(wide), the cast back after ``NarrowCast`` (see there), which also takes its carrier c."""

    generate_vmap_rule = True

    @staticmethod
    def forward(F, c, wide, scaled, refusal):
        return F.to(wide)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.narrow, ctx.wide, ctx.scaled, ctx.refusal = inputs[0].dtype, inputs[2], inputs[3], inputs[4]
        ctx.set_materialize_grads(False)

    @staticmethod
    def backward(ctx, g):
        from ._guard import second_derivative_may_follow

        if g is None:
            return None, None, None, None, None
        if ctx.scaled:
            gn, s = _to_order_one(g, ctx.narrow)
            return gn, s, None, None, None
        if ctx.refusal is not None and second_derivative_may_follow(g):  # (a first-order one is carried)
            raise SvdgradError(ctx.refusal)
        _check_narrow_range(g, ctx.narrow, "cotangent")
        return g.to(ctx.narrow), None, None, None, None

    @staticmethod
    def jvp(ctx, dF, s, _dwide, _dscaled, _drefusal):
        out = dF.to(ctx.wide)
        return out if s is None or not ctx.scaled else _kernels.times_pow2_halves(out, s)


class NarrowDp(torch.autograd.Function):
    """Zero in value; p's derivative term D = ∂F/∂p for a compute dtype narrower than the input (``_api._narrow_dp``).

    vjp: gp = Σ g∘D (reduced to p's shape); jvp: dp·D.  D is a constant (formed without a graph), so a second
    derivative through gp would miss D's own dependence on A and p: where the backward may be differentiated
    again (``_guard.may_differentiate_again``), gp is tied to A and to p so that differentiating it raises.
    """

    @staticmethod
    def forward(p, T, D):
        return torch.zeros_like(D)

    @staticmethod
    def setup_context(ctx, inputs, output):
        p, T, D = inputs
        ctx.save_for_backward(p, T, D)
        ctx.save_for_forward(D)

    @staticmethod
    def backward(ctx, g):
        from ._guard import may_differentiate_again, raise_on_second_derivative, unsupported_message

        p, T, D = ctx.saved_tensors
        gp = (g * D).sum_to_size(p.shape).to(p.dtype)
        if may_differentiate_again(T, p):
            msg = unsupported_message(
                f"powm with a tensor p and a compute_dtype narrower than the input ({T.dtype} computed in "
                f"a narrower dtype)",
                "Compute in the input's dtype (compute_dtype=None), or use torch.func.hessian (under its vmap "
                "the cast is the plain chain).",
                why="p's derivative term is formed on the wide side as a constant")
            gp = raise_on_second_derivative(raise_on_second_derivative(gp, T, msg), p, msg)
        return gp, None, None

    @staticmethod
    def jvp(ctx, dp, _dT, _dD):
        (D,) = ctx.saved_tensors  # (in forward mode: those saved for it)
        return torch.zeros_like(D) if dp is None else dp.to(D.dtype) * D
