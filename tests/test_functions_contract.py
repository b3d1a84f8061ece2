"""The contract every (function, method) pair keeps, parametrized over svdgrad.functions() × svdgrad.methods(f).

Shapes, dtypes, n = 1, empty batches, half precision, refusal of unsupported
pairs, finiteness on every spectrum shape, gradcheck with forward AD.  The
accuracy side is in test_functions.py.
"""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import svdgrad
from svdgrad import testing as T

from .helpers import ACCURATE, finite
from .test_functions import (ACCURATE_METHODS, DERIVATIVE_PAIRS, EIGEN, FUNCTIONS, P, PAIRS, POWERS, STABLE_PAIRS, call,
                             fgrad, methods_for, pairs_for)

#: f(a) and f′(a) of a scalar a > 0 (the 1×1 case), p = P for the power.
SCALAR = {
    "sqrt": (math.sqrt, lambda a: 0.5 / math.sqrt(a)),
    "inv_sqrt": (lambda a: a ** -0.5, lambda a: -0.5 * a ** -1.5),
    "log": (math.log, lambda a: 1 / a),
    "power": (lambda a: a ** P, lambda a: P * a ** (P - 1)),
}


def test_scalar_table_covers_every_function():
    assert set(SCALAR) == set(FUNCTIONS)


@pytest.mark.parametrize("function,method", pairs_for("shape_dtype_and_symmetry", PAIRS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_shape_dtype_and_symmetry(function, method, dtype):
    A = T.spd(6, 1e2, batch=(2, 3), dtype=dtype, seed=1)
    F = call(function, A, method)
    assert F.shape == A.shape and F.dtype == dtype and F.device == A.device
    tol = 10 * torch.finfo(dtype).eps * float(F.abs().max())
    assert float((F - F.mT).abs().max()) <= tol


@pytest.mark.parametrize("function,method", pairs_for("n_equals_one_and_empty_batch", PAIRS))
def test_n_equals_one_and_empty_batch(function, method):
    a = torch.tensor([4.0, 9.0], dtype=torch.float64)
    A = a.reshape(2, 1, 1).clone().requires_grad_(True)
    F = call(function, A, method)
    f, df = SCALAR[function]
    # 1×1: eigen methods apply f to the value; trace-normalized Newton–Schulz is exact (Ã = 1 is a fixed point)
    assert torch.allclose(F.flatten(), torch.tensor([f(4.0), f(9.0)], dtype=torch.float64), rtol=1e-13)
    F.sum().backward()
    assert finite(A.grad)
    if method in ACCURATE:
        assert torch.allclose(A.grad.flatten(), torch.tensor([df(4.0), df(9.0)], dtype=torch.float64), rtol=1e-12)
    E = torch.zeros(0, 5, 5, dtype=torch.float32, requires_grad=True)
    FE = call(function, E, method)
    assert FE.shape == (0, 5, 5)
    FE.sum().backward()
    assert E.grad.shape == (0, 5, 5)


@pytest.mark.parametrize("function,method", pairs_for("half_precision_is_computed_in_float32", PAIRS))
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_is_computed_in_float32(function, method, dtype):
    A = T.spd(5, 10.0, seed=3).to(dtype)
    F = call(function, A, method)
    assert F.dtype == dtype
    assert torch.equal(F, call(function, A.float(), method).to(dtype))
    A1 = A.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(call(function, A1, method), A1, torch.ones(5, 5, dtype=dtype))
    assert g.dtype == dtype and finite(g)


@pytest.mark.parametrize("function,method", pairs_for("batched_equals_looped_and_gradient_is_symmetric", PAIRS))
def test_batched_equals_looped_and_gradient_is_symmetric(function, method):
    A = T.spd(6, 1e3, batch=(3,), seed=7)
    G = T.gradients(A.shape, seed=8)  # not symmetric
    F, gA = fgrad(function, A, G, method)
    A1 = A.clone().requires_grad_(True)
    (raw,) = torch.autograd.grad(call(function, A1, method), A1, G)
    assert torch.allclose(raw, raw.mT, rtol=0, atol=1e-12 * float(raw.abs().max()))
    for i in range(3):
        Fi, gi = fgrad(function, A[i], G[i], method)
        assert torch.allclose(F[i], Fi, rtol=1e-12, atol=1e-14 * float(Fi.abs().max()))
        assert torch.allclose(gA[i], gi, rtol=1e-10, atol=1e-12 * float(gi.abs().max()))


@pytest.mark.parametrize("function,method", pairs_for("gradcheck", DERIVATIVE_PAIRS))
def test_gradcheck_with_forward_ad(function, method):
    """Backward and forward mode against torch's own finite differences, float64 only."""
    A = T.spd(3, 30.0, seed=11).requires_grad_(True)
    f = lambda X: call(function, X, method, check=False)  # noqa: E731
    assert torch.autograd.gradcheck(f, (A,), check_forward_ad=True)


@pytest.mark.parametrize("method", methods_for("gradcheck_p", "power",
                                                [m for f, m in DERIVATIVE_PAIRS if f == "power"]))
def test_gradcheck_in_a_and_p_with_forward_ad(method):
    A = T.spd(3, 30.0, seed=12).requires_grad_(True)
    p = torch.tensor(-0.7, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda X, q: svdgrad.powm(X, q, method, check=False), (A, p),
                                    check_forward_ad=True)


@pytest.mark.parametrize("function,method", PAIRS)
def test_double_backward_fails_loudly_or_is_finite(function, method):
    """A method that is not differentiable twice says so, naming itself, never a silently wrong Hessian;
    one that declares ``double_differentiable`` gives a finite second derivative."""
    A = T.spd(4, 10.0, seed=13).requires_grad_(True)
    (g,) = torch.autograd.grad(call(function, A, method).sum(), A, create_graph=True)
    if svdgrad.get_method(method).differentiable_twice(function):
        (h,) = torch.autograd.grad((g * g).sum(), A)
        assert finite(h)
        return
    with pytest.raises(RuntimeError, match=method):
        torch.autograd.grad(g.sum(), A)


# ---------------------------------------------------------------------------
# Refusals
# ---------------------------------------------------------------------------

UNSUPPORTED = [(f, m) for f in FUNCTIONS for m in svdgrad.methods() if m not in svdgrad.methods(f)]


def test_there_are_unsupported_pairs():
    assert ("log", "newton_schulz") in UNSUPPORTED and ("power", "newton_schulz") in UNSUPPORTED


@pytest.mark.parametrize("function,method", UNSUPPORTED)
def test_unsupported_pair_lists_the_valid_methods(function, method):
    A = T.spd(4, 10.0, seed=14)
    with pytest.raises(svdgrad.SvdgradError) as exc:
        call(function, A, method)
    msg = str(exc.value)
    assert method in msg
    assert all(name in msg for name in svdgrad.methods(function)), msg


def test_matrix_function_refuses_newton_schulz_with_the_eigen_methods():
    A = T.spd(4, 10.0, seed=15)
    with pytest.raises(svdgrad.SvdgradError) as exc:
        svdgrad.matrix_function(A, torch.exp, torch.exp, "newton_schulz")
    assert all(name in str(exc.value) for name in EIGEN)


@pytest.mark.parametrize("p", [[0.5], torch.tensor([0.5]), torch.tensor(1), float("nan"), True])
def test_powm_refuses_a_bad_p(p):
    with pytest.raises(svdgrad.SvdgradError, match="p"):
        svdgrad.powm(T.spd(3, 10.0), p)


def test_powm_tensor_p_equals_float_p():
    A = T.spd(5, 1e3, seed=16)
    assert torch.equal(svdgrad.powm(A, torch.tensor(0.7, dtype=torch.float64)), svdgrad.powm(A, 0.7))


@pytest.mark.parametrize("function", FUNCTIONS)
def test_indefinite_input_is_refused(function):
    A = torch.diag(torch.tensor([-1.0, 1.0, 2.0], dtype=torch.float64))
    with pytest.raises(svdgrad.SvdgradError, match="indefinite|PSD|negative"):
        call(function, A)


# ---------------------------------------------------------------------------
# Finite on every spectrum shape
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("function,method", pairs_for("finite", STABLE_PAIRS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@settings(max_examples=8)
@given(data=st.data())
def test_finite_on_every_spectrum(function, method, dtype, data):
    """Every method but `ordinary` is finite, forward and gradient, on every finite PSD input.

    Powers down to p = −1.5: at the floor eps·λmax, f′ = |p|·eps^(p−1) is representable in
    float32 for p >= −5; the floor is what keeps log, inverse sqrt and negative powers finite.
    """
    A, info = data.draw(T.spd_matrices(n=(1, 16), log10_kappa=(0, 12), dtype=dtype))
    p = data.draw(st.sampled_from(POWERS))
    G = T.gradients(A.shape, seed=info["seed"] % 1000, dtype=dtype)
    F, gA = fgrad(function, A, G, method, p)
    assert finite(F) and finite(gA), info


SPECIAL = {
    "identity": lambda dtype: torch.eye(6, dtype=dtype),
    "zero": lambda dtype: torch.zeros(6, 6, dtype=dtype),
    "rank_one": lambda dtype: torch.ones(6, 6, dtype=dtype),
    "repeated_1e12": lambda dtype: T.spd(6, 1e12, "repeated", seed=1, dtype=dtype),
    "rank_deficient_1e8": lambda dtype: T.spd(6, 1e8, "rank_deficient", seed=2, dtype=dtype),
}


@pytest.mark.parametrize("function,method", pairs_for("finite_special", STABLE_PAIRS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("matrix", sorted(SPECIAL))
def test_finite_on_ties_zero_and_rank_one(function, method, dtype, matrix):
    A = SPECIAL[matrix](dtype)
    G = T.gradients(A.shape, seed=3, dtype=dtype)
    powers = POWERS if function == "power" else (P,)
    if matrix == "zero":  # p < −1 at the zero matrix: see the xfail below
        powers = [p for p in powers if p >= -1]
    for p in powers:
        F, gA = fgrad(function, A, G, method, p)
        assert finite(F) and finite(gA), (p, F, gA)


@pytest.mark.parametrize("function,method", pairs_for("zero_matrix_computed_wider", STABLE_PAIRS))
@pytest.mark.parametrize("batch", [(), (3,)])
def test_zero_matrix_computed_wider_is_the_input_dtypes(function, method, batch):
    """float32 zeros computed in float64 give what the method gives at √tiny32·I in float32: finite.

    The zero matrix has no scale, so its floor is absolute; it was the compute dtype's √tiny, so the
    derivative there (4e76 for sqrt in float64) came back inf in float32, inv_sqrtm was refused, and
    logm read -354 where float32 reads -43.7.  The eigen methods give exactly what float32 gives at the
    zero matrix (f and f′ at the floor √tiny32), to one rounding of f and f′ in either dtype; the
    iterative ones, which take the zero matrix to 0 in their own dtype, give f at √tiny32·I to their
    own float32 convergence.  In a batch (the zero matrix in the middle) the others are untouched.
    """
    A = torch.zeros(batch + (4, 4))
    if batch:
        A[0], A[2] = T.spd(4, 10.0, seed=5), T.spd(4, 1e3, seed=6)
        A[2, 0, 1] *= 1 + 1e-5  # (symmetric within the tolerance only: the batch takes the checked path)
    G = T.gradients(A.shape, seed=3, dtype=torch.float32)
    p = -0.5  # (p < −1 overflows float32 at √tiny32 whatever the compute dtype: the xfail below)
    F64, g64 = fgrad(function, A, G, method, p, compute_dtype=torch.float64)
    assert finite(F64) and finite(g64), (F64, g64)
    z = (1,) if batch else ()
    c = torch.finfo(torch.float32).tiny ** 0.5
    at_floor = fgrad(function, c * torch.eye(4), G[z], method, p)
    accurate = method in ACCURATE_METHODS
    tol = 8 * torch.finfo(torch.float32).eps if accurate else 1e-5
    for got, want in zip((F64[z], g64[z]), at_floor):
        torch.testing.assert_close(got, want, rtol=tol, atol=tol * float(want.abs().max()))
    if accurate:  # float32's own zero matrix: the same floor
        for got, want in zip((F64[z], g64[z]), fgrad(function, A[z], G[z], method, p)):
            torch.testing.assert_close(got, want, rtol=tol, atol=tol * float(want.abs().max()))
    if batch:  # the others: as computed in float64 alone
        F, g = fgrad(function, A[0::2], G[0::2], method, p, compute_dtype=torch.float64)
        assert torch.equal(F64[0::2], F) and torch.equal(g64[0::2], g)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("function", FUNCTIONS)
def test_half_zero_matrix_computed_in_float64_is_computed_in_float32s(function, dtype):
    """A half input's floor is float32's, where it is computed by default (logm read -354 with float64).
    Where f(√tiny32) does not fit the half dtype (float16: 1/√√tiny32, and (√tiny32)^P), both refuse, and
    the refusal computed in float64 no longer suggests leaving compute_dtype unset (it would not help)."""
    A = torch.zeros(4, 4, dtype=dtype)
    try:
        want = call(function, A)
    except svdgrad.SvdgradError as exc:
        assert "does not fit" in str(exc)
        with pytest.raises(svdgrad.SvdgradError, match="does not fit") as info:
            call(function, A, compute_dtype=torch.float64)
        assert "compute_dtype" not in str(info.value), str(info.value)
        return
    assert torch.equal(call(function, A, compute_dtype=torch.float64), want)


@pytest.mark.xfail(strict=True, reason=(
    "core: the zero matrix's absolute floor sqrt(tiny) (_kernels.eigenvalue_floor) makes f′ = p·λ^(p−1) "
    "overflow for p < −1 (float32: 1.5·(1.1e-19)^−2.5 ~ 1e47; float64: 1.5·(1.5e-154)^−2.5 ~ 1e384) and the "
    "Loewner map turns inf into NaN; a floor of eps for λmax = 0 would keep every p >= −2 finite"))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_zero_matrix_gradient_is_finite_for_powers_below_minus_one(dtype):
    A = torch.zeros(6, 6, dtype=dtype)
    G = T.gradients(A.shape, seed=3, dtype=dtype)
    F, gA = fgrad("power", A, G, "exact", -1.5)
    assert finite(F) and finite(gA)


# ---------------------------------------------------------------------------
# Options: the floor's meaning, compute_dtype
# ---------------------------------------------------------------------------

EXACT_F = {
    "sqrt": lambda x: x.sqrt(),
    "inv_sqrt": lambda x: x.rsqrt(),
    "log": lambda x: x.log(),
    "power": lambda x: x.pow(P),
}


@pytest.mark.parametrize("function", FUNCTIONS)
@pytest.mark.parametrize("eps", [None, 1e-6])
@pytest.mark.parametrize("c", [2.0 ** -40, 1.0, 1e10])
def test_floor_is_relative_and_feeds_f(function, eps, c):
    """diag(0, ½, 2)·c: the zero is raised to eps·λmax = eps·2c before f (log(eps·2c), (eps·2c)^p, ...).

    A diagonal A has exact eigenvalues, and the internal 4^-k scaling is exact, so the only
    rounding is that of f and of undoing the scale: 10·eps relative per entry.
    """
    assert set(EXACT_F) == set(FUNCTIONS)
    A = torch.diag(torch.tensor([0.0, 0.5, 2.0], dtype=torch.float64)) * c
    e = torch.finfo(torch.float64).eps if eps is None else eps
    lam = torch.tensor([e * 2.0 * c, 0.5 * c, 2.0 * c], dtype=torch.float64)
    F = call(function, A, "exact", **({} if eps is None else {"eps": eps}))
    expect = EXACT_F[function](lam)
    assert torch.allclose(torch.diagonal(F), expect, rtol=10 * torch.finfo(torch.float64).eps, atol=0)
    assert torch.count_nonzero(F - torch.diag(torch.diagonal(F))) == 0


@pytest.mark.parametrize("function,method", pairs_for("compute_dtype_float64_for_float32_input", PAIRS))
def test_compute_dtype_float64_for_float32_input(function, method):
    """float32 in, float64 inside: the float64 result rounded to float32 (log's + k·log 4·I rounds once more)."""
    A = T.spd(6, 1e3, seed=30, dtype=torch.float32)
    F = call(function, A, method, compute_dtype=torch.float64)
    assert F.dtype == torch.float32
    ref = call(function, A.double(), method)
    assert T.rel_error(F, ref) <= 2 * torch.finfo(torch.float32).eps
