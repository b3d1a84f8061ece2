"""Edge-case input: n = 0 works as torch.linalg does; unsupported dtypes, layouts and options raise SvdgradError.

Each test names the gap it closes (audit F4): before, these gave raw IndexError,
NotImplementedError, TypeError, OverflowError, or a silent NaN or ignored option.
"""

import math
import re

import numpy as np
import pytest
import torch

import svdgrad
from svdgrad import testing as T

METHODS = svdgrad.methods()
ENTRIES = {
    "sqrtm": svdgrad.sqrtm,
    "inv_sqrtm": svdgrad.inv_sqrtm,
    "logm": svdgrad.logm,
    "powm": lambda A, method, **kw: svdgrad.powm(A, 0.5, method, **kw),
    "matrix_function": lambda A, method, **kw: svdgrad.matrix_function(A, torch.exp, torch.exp, method, **kw),
}
FUNCTION_OF = {"sqrtm": "sqrt", "inv_sqrtm": "inv_sqrt", "logm": "log", "powm": "power", "matrix_function": None}
#: (method, entry) for every method and every entry point that it computes
PAIRS = [(method, entry) for entry, fn in FUNCTION_OF.items()
         for method in (svdgrad.methods(fn) if fn else [m for m in METHODS if svdgrad.get_method(m).functions is None])]


# ---------------------------------------------------------------------------
# 1. n = 0: empty results, as torch.linalg.eigh
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("method, entry", PAIRS)
@pytest.mark.parametrize("shape", [(0, 0), (2, 0, 0), (0, 0, 0), (2, 3, 0, 0)])
def test_n_zero_gives_an_empty_result(method, entry, shape):
    A = torch.zeros(shape, dtype=torch.float64, requires_grad=True)
    F = ENTRIES[entry](A, method)
    assert F.shape == shape and F.dtype == A.dtype
    (g,) = torch.autograd.grad(F.sum(), A)
    assert g.shape == shape


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_n_zero_keeps_the_dtype(dtype):
    assert svdgrad.sqrtm(torch.zeros(3, 0, 0, dtype=dtype)).dtype == dtype


def test_n_zero_powm_with_a_tensor_p_gives_a_zero_gradient_in_p():
    A = torch.zeros(2, 0, 0, dtype=torch.float64, requires_grad=True)
    p = torch.tensor(0.5, dtype=torch.float64, requires_grad=True)
    F = svdgrad.powm(A, p)
    gA, gp = torch.autograd.grad(F.sum(), (A, p))
    assert F.shape == (2, 0, 0) and gA.shape == (2, 0, 0) and float(gp) == 0.0


@pytest.mark.parametrize("backward", ["ordinary", "truncated", "taylor", "pade"])
@pytest.mark.parametrize("shape", [(0, 0), (2, 0, 0), (0, 0, 0)])
def test_n_zero_eigh_matches_torch(backward, shape):
    A = torch.zeros(shape, dtype=torch.float64, requires_grad=True)
    L, U = svdgrad.eigh(A, backward=backward)
    L0, U0 = torch.linalg.eigh(A)
    assert L.shape == L0.shape and U.shape == U0.shape and L.dtype == U.dtype == A.dtype
    (g,) = torch.autograd.grad(L.sum() + U.sum(), A)
    assert g.shape == shape


def test_n_zero_still_checks_the_rest():
    with pytest.raises(svdgrad.SvdgradError, match="square"):
        svdgrad.sqrtm(torch.zeros(3, 0))
    with pytest.raises(svdgrad.SvdgradError, match="real floating dtype"):
        svdgrad.sqrtm(torch.zeros(0, 0, dtype=torch.int64))
    with pytest.raises(svdgrad.SvdgradError, match="Unknown method"):
        svdgrad.sqrtm(torch.zeros(0, 0), "svd")
    with pytest.raises(svdgrad.SvdgradError, match="real floating dtype"):
        svdgrad.eigh(torch.zeros(0, 0, dtype=torch.int64))


# ---------------------------------------------------------------------------
# 2. float8 dtypes and sparse layouts
# ---------------------------------------------------------------------------

FLOAT8 = [getattr(torch, name) for name in ("float8_e4m3fn", "float8_e5m2") if hasattr(torch, name)]


@pytest.mark.parametrize("dtype", FLOAT8)
def test_float8_is_refused_with_the_supported_dtypes(dtype):
    A = torch.eye(3).to(dtype)
    match = rf"float16, bfloat16, float32 or float64.*dtype={dtype}.*Cast with A.to\(torch.float32\)"
    with pytest.raises(svdgrad.SvdgradError, match=match):
        svdgrad.sqrtm(A)
    with pytest.raises(svdgrad.SvdgradError, match=match):
        svdgrad.eigh(A)
    with pytest.raises(svdgrad.SvdgradError, match=r"float16, bfloat16, float32 or float64.*gram_sqrtm.*X.to"):
        svdgrad.gram_sqrtm(torch.ones(3, 5).to(dtype))


@pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta")
@pytest.mark.parametrize("to_sparse", [torch.Tensor.to_sparse, torch.Tensor.to_sparse_csr])
def test_sparse_is_refused_with_to_dense(to_sparse):
    A = to_sparse(torch.eye(3))
    with pytest.raises(svdgrad.SvdgradError, match=r"dense \(torch.strided\).*layout=torch.sparse.*A.to_dense\(\)"):
        svdgrad.sqrtm(A)
    with pytest.raises(svdgrad.SvdgradError, match="A.to_dense"):
        svdgrad.eigh(A)
    with pytest.raises(svdgrad.SvdgradError, match="X.to_dense"):
        svdgrad.gram_sqrtm(to_sparse(torch.ones(3, 5)))


# ---------------------------------------------------------------------------
# 3. gram_sqrtm's options
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("gram", [svdgrad.gram_sqrtm, svdgrad.gram_inv_sqrtm])
@pytest.mark.parametrize("options, hint", [
    ({"symmetry_tol": 1e-3}, "symmetric and positive semi-definite by construction"),
    ({"psd_tol": 1e-3}, "by construction"),
    ({"method": "exact"}, r"X @ X.mT, method"),
    ({"degre": 3}, ""),
])
def test_gram_unknown_options_list_the_valid_ones(gram, options, hint):
    X = T.features(3, 5, 10.0, seed=1)
    name = next(iter(options))
    match = rf"Unknown option\(s\) \['{name}'\].*Valid options: eps, compute_dtype, check, algorithm.*{hint}"
    with pytest.raises(svdgrad.SvdgradError, match=match):
        gram(X, **options)


@pytest.mark.parametrize("gram", [svdgrad.gram_sqrtm, svdgrad.gram_inv_sqrtm])
@pytest.mark.parametrize("args", [("exact",), ("newton_schulz", 5), (1e-5,)])
def test_gram_positional_method_gets_the_no_method_hint(gram, args):
    """gram_sqrtm(X, "exact"), by analogy with sqrtm(A, "exact"), gave Python's bare TypeError."""
    X = T.features(3, 5, 10.0, seed=1)
    # the hint names the covariance entry that takes a method: sqrtm for gram_sqrtm, inv_sqrtm for gram_inv_sqrtm
    target = re.escape(f"svdgrad.{gram.__name__.removeprefix('gram_')}(X @ X.mT, method)")
    match = (rf"{gram.__name__} takes X only.*received {len(args)} more: \({args[0]!r}.*no method to choose"
             rf".*{target}.*Valid options: eps, compute_dtype, check, algorithm")
    with pytest.raises(svdgrad.SvdgradError, match=match):
        gram(X, *args)


# ---------------------------------------------------------------------------
# 4. powm's p
# ---------------------------------------------------------------------------

def test_powm_huge_int_p_is_refused():
    with pytest.raises(svdgrad.SvdgradError, match="finite float.*beyond the float range"):
        svdgrad.powm(torch.eye(3), 10 ** 400)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_powm_non_finite_tensor_p_is_refused(bad, dtype):
    with pytest.raises(svdgrad.SvdgradError, match="finite exponent p.*check=False"):
        svdgrad.powm(torch.eye(3), torch.tensor(bad, dtype=dtype))


def test_powm_non_finite_tensor_p_follows_check_false():
    F = svdgrad.powm(4 * torch.eye(3), torch.tensor(float("nan")), check=False)
    assert F.shape == (3, 3)  # (the caller switched the value checks off)


def test_powm_tensor_p_check_is_skipped_while_traced():
    """Under torch.func the value check cannot synchronize: it is skipped, and the derivative still flows."""
    A = 4 * torch.eye(3, dtype=torch.float64)
    dp = torch.func.grad(lambda q: svdgrad.powm(A, q).trace())(torch.tensor(0.5, dtype=torch.float64))
    assert float(dp) == pytest.approx(3 * 2 * math.log(4.0))


def test_powm_p_on_another_device_is_refused():
    p = torch.tensor(0.5, device="meta")
    with pytest.raises(svdgrad.SvdgradError, match=r"A's device \(cpu\) or a 0-dim CPU tensor.*meta.*p.to\(A.device\)"):
        svdgrad.powm(torch.eye(3), p)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_powm_cpu_p_goes_with_a_cuda_matrix_as_in_torch():
    A = 4 * torch.eye(3, device="cuda", dtype=torch.float64)
    p = torch.tensor(0.5, dtype=torch.float64, requires_grad=True)
    F = svdgrad.powm(A, p)
    assert F.device == A.device and torch.allclose(F, 2 * torch.eye(3, device="cuda", dtype=torch.float64))
    (gp,) = torch.autograd.grad(F.trace(), p)
    assert float(gp) == pytest.approx(3 * 2 * math.log(4.0))
    with pytest.raises(svdgrad.SvdgradError, match="0-dim CPU tensor"):
        svdgrad.powm(A.cpu(), p.detach().cuda())


@pytest.mark.parametrize("p", [torch.tensor(0.5).to(torch.float8_e4m3fn), torch.tensor(1), torch.ones(2)])
def test_powm_bad_tensor_p_is_refused(p):
    with pytest.raises(svdgrad.SvdgradError, match="0-dim floating tensor"):
        svdgrad.powm(torch.eye(3), p)


@pytest.mark.parametrize("p", [np.float32(0.5), np.float64(0.5), np.float16(0.5)])
def test_powm_accepts_numpy_scalars(p):
    F = svdgrad.powm(4 * torch.eye(3, dtype=torch.float64), p)
    assert torch.allclose(F, 2 * torch.eye(3, dtype=torch.float64))


@pytest.mark.parametrize("p", ["0.5", np.bool_(True), True, None, [0.5]])
def test_powm_non_number_p_is_refused(p):
    with pytest.raises(svdgrad.SvdgradError, match="Expected p to be a finite float"):
        svdgrad.powm(torch.eye(3), p)


# ---------------------------------------------------------------------------
# 5. p is an option of powm only
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("entry", ["sqrtm", "inv_sqrtm", "logm", "matrix_function"])
def test_p_outside_powm_is_refused(entry):
    match = rf"Unknown option 'p' for svdgrad.{entry}.*powm\(A, p\).*Valid options"
    with pytest.raises(svdgrad.SvdgradError, match=match):
        ENTRIES[entry](4 * torch.eye(3), "exact", p=2.0)


# ---------------------------------------------------------------------------
# 6. Method options: bools, strings, NumPy numbers
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("method, options, match", [
    ("topn", {"keep_count": True}, r"integer keep_count.*keep_count=True \(bool\)"),
    ("topn", {"keep": True}, r"number 0 < keep <= 1.*keep=True \(bool\)"),
    ("truncated", {"threshold": True}, r"number threshold > 0.*threshold=True \(bool\)"),
    ("pade", {"pole_gap": True}, r"number 0 < pole_gap < 1.*pole_gap=True \(bool\)"),
    ("topn", {"keep": "0.5"}, r"number 0 < keep <= 1.*keep='0.5' \(str\)"),
    ("truncated", {"threshold": "1e5"}, r"number threshold > 0.*threshold='1e5' \(str\)"),
    ("pade", {"pole_gap": "0.1"}, r"number 0 < pole_gap < 1.*pole_gap='0.1' \(str\)"),
    ("topn", {"keep_count": "2"}, r"integer keep_count.*\(str\)"),
    ("exact", {"eps": "1e-6"}, r"number 0 <= eps < 1.*eps='1e-6' \(str\)"),
    ("exact", {"psd_tol": "0.1"}, r"number psd_tol >= 0.*\(str\)"),
    ("newton_schulz", {"tol": "1e-6"}, r"number 0 < tol < 1.*\(str\)"),
    ("taylor", {"degree": "9"}, r"integer degree.*degree='9' \(str\)"),
    ("newton_schulz", {"max_iterations": True}, r"integer max_iterations.*\(bool\)"),
    ("truncated", {"threshold": 10 ** 400}, "finite number threshold"),
    ("truncated", {"threshold": float("nan")}, "threshold"),
])
def test_method_options_of_the_wrong_type_are_refused_clearly(method, options, match):
    with pytest.raises(svdgrad.SvdgradError, match=match) as info:
        svdgrad.sqrtm(torch.eye(3), method, **options)
    assert "not supported between" not in str(info.value)


@pytest.mark.parametrize("method, options", [
    ("topn", {"keep": np.float32(0.5)}), ("topn", {"keep_count": np.int64(2)}),
    ("truncated", {"threshold": np.float32(1e5)}), ("pade", {"pole_gap": np.float32(0.1)}),
    ("exact", {"eps": np.float32(1e-6)}), ("exact", {"psd_tol": np.float64(1e-3)}),
    ("taylor", {"degree": np.int32(9)}), ("newton_schulz", {"iterations": np.int64(3), "tol": np.float32(1e-6)}),
])
def test_method_options_accept_numpy_numbers_as_python_ones(method, options):
    m = svdgrad.get_method(method, **options)
    plain = {k: (int(v) if isinstance(v, np.integer) else float(v)) for k, v in options.items()}
    assert m == svdgrad.get_method(method, **plain)
    for k in options:  # stored as Python numbers (tensors and torch.compile take those as constants)
        assert type(getattr(m, k)) in (int, float), k
    A = T.spd(4, 10.0, seed=3)
    assert torch.equal(svdgrad.sqrtm(A, m), svdgrad.sqrtm(A, method, **plain))


@pytest.mark.parametrize("flag", [np.bool_(True), np.bool_(False)])
def test_check_accepts_a_numpy_bool_as_a_python_one(flag):
    """check=np.bool_(True) (e.g. from a config array) was refused as not True or False, although NumPy
    numbers are taken for every numeric option; it is stored as a Python bool."""
    m = svdgrad.get_method("exact", check=flag)
    assert type(m.check) is bool and m == svdgrad.get_method("exact", check=bool(flag))
    with pytest.raises(svdgrad.SvdgradError, match="check=True or check=False"):
        svdgrad.get_method("exact", check=np.int64(1))
