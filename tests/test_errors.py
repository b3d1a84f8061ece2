"""Every bad input raises SvdgradError, and the message names shape, dtype and a remedy."""

import pytest
import torch

import svdgrad
from svdgrad import testing as T

METHODS = svdgrad.methods()


def test_error_is_a_value_error():
    assert issubclass(svdgrad.SvdgradError, ValueError)


@pytest.mark.parametrize("method", METHODS)
def test_too_few_dimensions(method):
    with pytest.raises(svdgrad.SvdgradError, match=r"at least 2 dimensions.*shape=\(3,\).*dtype=torch.float64"):
        svdgrad.sqrtm(torch.ones(3, dtype=torch.float64), method)


@pytest.mark.parametrize("method", METHODS)
def test_non_square(method):
    with pytest.raises(svdgrad.SvdgradError, match=r"square.*shape=\(2, 3, 4\).*X @ X.mT"):
        svdgrad.sqrtm(torch.ones(2, 3, 4), method)


@pytest.mark.parametrize("dtype", [torch.int64, torch.bool, torch.complex64, torch.int8])
def test_bad_dtype(dtype):
    with pytest.raises(svdgrad.SvdgradError, match=rf"real floating dtype.*dtype={dtype}.*Cast"):
        svdgrad.sqrtm(torch.eye(3).to(dtype))
    with pytest.raises(svdgrad.SvdgradError, match="real floating dtype"):
        svdgrad.eigh(torch.eye(3).to(dtype))


def test_not_a_tensor():
    with pytest.raises(svdgrad.SvdgradError, match="torch.Tensor"):
        svdgrad.sqrtm([[1.0]])


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_names_batch_index(method, bad):
    A = T.spd(4, 10.0, batch=(2, 3), seed=1)
    A[1, 2, 0, 1] = bad
    with pytest.raises(svdgrad.SvdgradError, match=r"NaN or Inf at batch index \(1, 2\).*shape=\(2, 3, 4, 4\)"):
        svdgrad.sqrtm(A, method)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("where", ["diagonal", "pair"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_symmetric_non_finite_names_batch_index(method, where, bad, dtype):
    """A non-finite A that is symmetric bit for bit (an inf on the diagonal, or a mirrored pair): exactly
    symmetric input skips the asymmetry's norm, which was also the finiteness check (``_api._prepare``)."""
    A = T.spd(4, 10.0, batch=(2, 3), seed=1, dtype=dtype)
    if where == "diagonal":
        A[1, 2, 1, 1] = bad
    else:
        A[1, 2, 0, 1] = A[1, 2, 1, 0] = bad
    with pytest.raises(svdgrad.SvdgradError, match=r"NaN or Inf at batch index \(1, 2\).*shape=\(2, 3, 4, 4\)"):
        svdgrad.sqrtm(A, method)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_exactly_symmetric_input_gives_the_bits_of_the_general_path(method, dtype):
    """Exactly symmetric A takes S = 2^e·(A + A) (contiguous reads) where the general path forms 2^e·(A + Aᵀ)
    and checks the asymmetry: the same values and gradient, also with signed zeros mirrored (−0 against +0),
    at extreme scales, and in a batch that mixes it with a matrix symmetric only within the tolerance."""
    B = T.spd(5, 100.0, batch=(4,), seed=3, dtype=dtype)
    A = torch.zeros(4, 6, 6, dtype=dtype)
    A[:, :5, :5], A[:, 5, 5] = B, 0.7
    A[:, 0, 5] = A[:, 2, 5] = A[:, 5, 3] = -0.0
    A[1] *= 1e30 if dtype == torch.float32 else 1e300
    A[2] *= 1e-30 if dtype == torch.float32 else 1e-300
    G = T.gradients(A.shape, seed=4, dtype=dtype)
    near = A.clone()
    near[3, 0, 1] += 1e-3 * float(torch.finfo(dtype).eps) ** 0.5 * float(A[3, 0, 1])  # (symmetric within tol)

    def run(X, **o):
        X = X.clone().requires_grad_(True)
        F = svdgrad.sqrtm(X, method, **o)
        (g,) = torch.autograd.grad(F, X, G)
        return F, g

    for X in (A, near):
        for got, want in zip(run(X), run(X, check=False)):
            assert torch.equal(got, want)


@pytest.mark.parametrize("method", METHODS)
def test_asymmetric(method):
    A = T.spd(4, 10.0, batch=(3,), seed=2)
    A[2, 0, 1] += 0.1
    with pytest.raises(svdgrad.SvdgradError, match=r"symmetric.*batch index \(2,\).*\(A \+ A.mT\) / 2"):
        svdgrad.sqrtm(A, method)
    with pytest.raises(svdgrad.SvdgradError, match="symmetric"):
        svdgrad.eigh(A)


def test_tiny_asymmetry_is_accepted_and_symmetrized():
    A = T.spd(4, 10.0, seed=3)
    A[0, 1] += 1e-12
    Z = svdgrad.sqrtm(A)
    assert torch.equal(Z, svdgrad.sqrtm(0.5 * (A + A.mT)))


@pytest.mark.parametrize("method", METHODS)
def test_indefinite(method):
    A = torch.diag(torch.tensor([-1.0, 1.0, 2.0], dtype=torch.float64))
    with pytest.raises(svdgrad.SvdgradError, match=r"positive semi-definite.*λmin=-1.*psd_tol"):
        svdgrad.sqrtm(A, method)
    B = torch.eye(3, dtype=torch.float64).repeat(3, 1, 1)
    B[2] = A
    with pytest.raises(svdgrad.SvdgradError, match=r"batch index \(2,\) \(shape=\(3, 3, 3\)"):
        svdgrad.sqrtm(B, method)


@pytest.mark.parametrize("method", METHODS)
def test_rounding_negative_eigenvalues_are_clamped(method):
    A = T.spd(8, 1e3, "rank_deficient", seed=4)  # computed eigenvalues ~ ±1e-17
    L = torch.linalg.eigvalsh(A)
    assert float(L[0]) != 0.0
    Z = svdgrad.sqrtm(A, method)
    assert bool(torch.isfinite(Z).all())
    A2 = A - 1e-12 * torch.eye(8, dtype=torch.float64)  # λmin = -1e-12·λmax, below sqrt(eps)
    assert bool(torch.isfinite(svdgrad.sqrtm(A2, method)).all())


def test_unknown_method_lists_the_valid_ones():
    with pytest.raises(svdgrad.SvdgradError, match="Unknown method 'svd'.*exact, ordinary, truncated, topn, taylor, pade, newton_schulz"):
        svdgrad.sqrtm(torch.eye(2), "svd")


def test_unknown_option_lists_the_valid_ones():
    with pytest.raises(svdgrad.SvdgradError, match=r"Unknown option\(s\) \['degre'\].*degree"):
        svdgrad.sqrtm(torch.eye(2), "taylor", degre=3)


@pytest.mark.parametrize("method,options,match", [
    ("truncated", {"threshold": -1.0}, "threshold"),
    ("taylor", {"degree": -1}, "degree"),
    ("taylor", {"degree": 2.5}, "degree"),
    ("pade", {"num_degree": -2}, "num_degree"),
    ("pade", {"pole_gap": 2.0}, "pole_gap"),
    ("topn", {"keep": 0.0}, "keep"),
    ("topn", {"keep_count": 0}, "keep_count"),
    ("newton_schulz", {"iterations": 0}, "iterations"),
    ("newton_schulz", {"normalization": "spectral"}, "normalization"),
    ("newton_schulz", {"backward": "fast"}, "backward"),
    ("exact", {"eps": 2.0}, "eps"),
    ("exact", {"compute_dtype": torch.int32}, "compute_dtype"),
])
def test_bad_options(method, options, match):
    with pytest.raises(svdgrad.SvdgradError, match=match):
        svdgrad.get_method(method, **options)


def test_eigh_rejects_sqrtm_only_methods():
    with pytest.raises(svdgrad.SvdgradError, match="K-rule.*ordinary, truncated, taylor, pade"):
        svdgrad.eigh(torch.eye(3), backward="exact")


def test_eigh_taylor_needs_psd():
    A = torch.diag(torch.tensor([-1.0, 1.0, 2.0]))
    svdgrad.eigh(A)  # ordinary: any symmetric matrix
    with pytest.raises(svdgrad.SvdgradError, match="positive semi-definite"):
        svdgrad.eigh(A, backward="taylor")


@pytest.mark.parametrize("method", METHODS)
def test_large_finite_float32_entries_are_valid_input(method):
    """Squares of 1e20 overflow float32 in the check's norms; the check must not call that non-finite."""
    A = (1e20 * T.spd(4, 10.0, seed=5)).float()
    Z = svdgrad.sqrtm(A, method)
    assert bool(torch.isfinite(Z).all())


@pytest.mark.parametrize("options, match", [
    ({"psd_tol": -1}, "psd_tol >= 0"), ({"symmetry_tol": -1e-3}, "symmetry_tol >= 0"),
    ({"psd_tol": float("nan")}, "psd_tol"), ({"check": "yes"}, "check=True or check=False"),
    ({"eps": True}, "eps"),
])
def test_shared_options_are_validated(options, match):
    """Issue 12: psd_tol=-1 was accepted (then 'λmin >= --1·λmax'), check='yes' too."""
    with pytest.raises(svdgrad.SvdgradError, match=match):
        svdgrad.sqrtm(torch.eye(3), "exact", **options)


def test_eigh_unknown_backward_lists_only_k_rules():
    with pytest.raises(svdgrad.SvdgradError) as info:
        svdgrad.eigh(torch.eye(3), backward="foo")
    msg = str(info.value)
    assert "ordinary, truncated, taylor, pade" in msg and "'foo'" in msg and "newton_schulz," not in msg


def test_eigh_taylor_on_indefinite_input_names_the_k_rule():
    A = torch.diag(torch.tensor([-1.0, 1.0, 2.0]))
    with pytest.raises(svdgrad.SvdgradError, match="'taylor' K-rule") as info:
        svdgrad.eigh(A, backward="taylor")
    assert "square root" not in str(info.value)


def test_random_symmetric_takes_an_int_and_rejects_bad_shapes():
    assert T.random_symmetric(4).shape == (4, 4)
    with pytest.raises(svdgrad.SvdgradError, match="random_symmetric"):
        T.random_symmetric((3, 4))


@pytest.mark.parametrize("spec, expected", [
    ("taylor:degree=9", svdgrad.Taylor(degree=9)),
    ("newton_schulz:iterations=7,normalization=frobenius", svdgrad.NewtonSchulz(iterations=7, normalization="frobenius")),
    ("exact:compute_dtype=float64,check=false", svdgrad.Exact(compute_dtype=torch.float64, check=False)),
    ("truncated: threshold = 1e8", svdgrad.Truncated(threshold=1e8)),
    ("pade", svdgrad.Pade()),
])
def test_method_specs_round_trip(spec, expected):
    m = svdgrad.get_method(spec)
    assert m == expected
    assert svdgrad.get_method(svdgrad.method_spec(m)) == m
    assert svdgrad.get_method(spec, check=False) == svdgrad.get_method(m, check=False)  # keywords override


@pytest.mark.parametrize("spec, match", [
    ("taylor:degree", "key=value"), ("taylor:degree=9,degree=8", "twice"), ("taylor:degree=", "Expected a value"),
    ("taylor:degre=9", "Unknown option.*degree"), ("taylr:degree=9", "Unknown method 'taylr'"),
    ("taylor:degree=9.5", "integer degree"),
])
def test_bad_method_specs(spec, match):
    with pytest.raises(svdgrad.SvdgradError, match=match):
        svdgrad.get_method(spec)
