"""What a torch.linalg user expects, found missing by the session-16 review (each test failed before its fix).

- Two threads running backward through one graph (retain_graph=True, which torch allows) where the
  scaling pair is active (iterative methods far from order one, a narrower compute dtype): the pair
  passed the cotangent's exponent from one node to the other in one shared slot, and the passes
  overwrote each other's: gradients off by powers of two, silently.
- ``mpa``/``mtp`` returned a column-major output: ``F.view(B, -1)`` raised.
- ``svdgrad.eigh(A, method=...)`` and ``method_spec("taylor")`` leaked a bare TypeError.
- ``gram_sqrtm``'s option errors named the method 'exact', which it does not take.
- Two threads building their first Padé method changed mpmath's process-wide precision.
- torch's legacy batched gradients (``is_grads_batched``, ``jacobian(vectorize=True)``) hit the
  rules' ``out=`` products: "Batching rule not implemented for aten::bmm.out".

Session 17 (the sections at the end; each test quotes the error it got before):

- meta and nested tensors, to every entry point and to the layers: RuntimeErrors from deep inside
  ("Tensor.item() cannot be called on meta tensors", "NestedTensorImpl doesn't support sizes").
- gram_sqrtm told a 2-D NumPy array that it lacked dimensions; the layers took a list to an
  AttributeError, and Whitening returned an integer input whitened then truncated to integers.
- powm(A, p) with an empty batch (0, n, n) left p.grad None (torch: a zero gradient).
"""

import threading
import warnings

import mpmath
import numpy as np
import pytest
import torch

import svdgrad
import svdgrad.nn
import svdgrad.testing as T
from svdgrad import SvdgradError


@pytest.mark.parametrize("method, scale, options", [("mpa", 1e6, {}), ("newton_schulz", 1e-6, {}),
                                                    ("exact", 1.0, {"compute_dtype": torch.float32})])
def test_two_threads_backward_through_one_graph(method, scale, options):
    A = (T.spd(5, 10.0, batch=(4,), seed=1) * scale).requires_grad_(True)
    F = svdgrad.sqrtm(A, method, **options)
    G = T.gradients(F.shape, seed=2)
    ref = {s: torch.autograd.grad(F, A, G * s, retain_graph=True)[0] for s in (1e-3, 1e3)}
    bad = []

    def work(s):
        for _ in range(15):
            g = torch.autograd.grad(F, A, G * s, retain_graph=True)[0]
            if not torch.equal(g, ref[s]):
                bad.append(s)

    threads = [threading.Thread(target=work, args=(s,)) for s in (1e-3, 1e3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not bad


@pytest.mark.parametrize("entry, method", [("sqrtm", "mpa"), ("inv_sqrtm", "mpa"), ("sqrtm", "mtp"),
                                           ("inv_sqrtm", "mtp")])
def test_matmul_only_outputs_are_contiguous(entry, method):
    A = T.spd(4, 10.0, batch=(3,), seed=2)
    F = getattr(svdgrad, entry)(A, method)
    assert F.is_contiguous()
    F.view(3, -1)


def test_eigh_with_method_instead_of_backward_is_an_svdgrad_error():
    with pytest.raises(SvdgradError, match="backward="):
        svdgrad.eigh(T.spd(3, 10.0, seed=1), method="taylor")


@pytest.mark.parametrize("bad", ["taylor", 3, None])
def test_method_spec_of_a_non_method_is_an_svdgrad_error(bad):
    with pytest.raises(SvdgradError, match="method object"):
        svdgrad.method_spec(bad)


@pytest.mark.parametrize("options", [{"eps": "1e-3"}, {"check": 1}])
def test_gram_option_errors_name_gram(options):
    with pytest.raises(SvdgradError) as info:
        svdgrad.gram_sqrtm(torch.randn(3, 5), **options)
    assert "gram_sqrtm" in str(info.value) and "for exact" not in str(info.value)


def test_building_pade_methods_in_two_threads_keeps_mpmath_precision():
    from svdgrad import _matmul_only

    for f in (_matmul_only.pade_roots, _matmul_only.pade_coefficients):
        f.cache_clear()
    before = mpmath.mp.dps
    errors = []

    def build(k):
        try:
            for m in range(3, 9):
                svdgrad.get_method("mpa", num_degree=m + k, den_degree=m)
        except Exception as exc:  # noqa: BLE001 (any failure is the finding)
            errors.append(exc)

    threads = [threading.Thread(target=build, args=(k,)) for k in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and mpmath.mp.dps == before


@pytest.mark.parametrize("method", ["exact", "ordinary", "pade", "mpa"])
def test_legacy_batched_gradients(method):
    A = T.spd(3, 10.0, seed=3).requires_grad_(True)
    F = svdgrad.sqrtm(A, method)
    Gs = T.gradients((2, 3, 3), seed=4)
    batched = torch.autograd.grad(F, A, Gs, is_grads_batched=True, retain_graph=True)[0]
    for i in range(2):
        assert torch.allclose(batched[i], torch.autograd.grad(F, A, Gs[i], retain_graph=True)[0], rtol=1e-12, atol=1e-14)


def test_gram_legacy_batched_gradients():
    X = T.features(3, 5, seed=3).requires_grad_(True)
    F = svdgrad.gram_sqrtm(X)
    Gs = T.gradients((2, 3, 3), seed=4)
    batched = torch.autograd.grad(F, X, Gs, is_grads_batched=True, retain_graph=True)[0]
    for i in range(2):
        assert torch.allclose(batched[i], torch.autograd.grad(F, X, Gs[i], retain_graph=True)[0], rtol=1e-12, atol=1e-14)


# --- session 17: tensors without (*, n, n) data, empty batches, layer inputs ---------------------------------------
# (each test failed before its fix; the errors then are quoted)

def _nested(*shapes):
    with warnings.catch_warnings():  # (torch: "The PyTorch API of nested tensors is in prototype stage")
        warnings.simplefilter("ignore", UserWarning)
        return torch.nested.nested_tensor([torch.ones(s) for s in shapes])


#: Every public entry point, called with one input (a matrix A, or features X for gram_*).
DATA_ENTRIES = {
    "sqrtm": svdgrad.sqrtm,
    "sqrtm_newton_schulz": lambda A: svdgrad.sqrtm(A, "newton_schulz"),
    "inv_sqrtm": svdgrad.inv_sqrtm,
    "logm": svdgrad.logm,
    "powm": lambda A: svdgrad.powm(A, 0.5),
    "matrix_function": lambda A: svdgrad.matrix_function(A, torch.exp, torch.exp),
    "eigh": svdgrad.eigh,
    "gram_sqrtm": svdgrad.gram_sqrtm,
    "gram_inv_sqrtm": svdgrad.gram_inv_sqrtm,
}


@pytest.mark.parametrize("entry", DATA_ENTRIES)
@pytest.mark.parametrize("shape", [(2, 3, 3), (3, 3)])
def test_meta_tensor_is_refused_as_having_no_data(entry, shape):
    """Before: RuntimeError "Tensor.item() cannot be called on meta tensors" from the scale or value checks."""
    with pytest.raises(SvdgradError, match=r"meta device \(shape=\(.*has no data.*Pass a tensor with values"):
        DATA_ENTRIES[entry](torch.empty(shape, device="meta"))


@pytest.mark.parametrize("entry", DATA_ENTRIES)
@pytest.mark.parametrize("shapes", [((3, 3), (2, 2)), ((3, 3), (3, 3))])
def test_nested_tensor_is_refused_with_what_to_pass(entry, shapes):
    """Before: RuntimeError "Internal error: NestedTensorImpl doesn't support sizes. Please file an issue."."""
    match = r"nested tensor of 2 tensors, shapes \(3, 3\).*pass a padded tensor or a list"
    with pytest.raises(SvdgradError, match=match):
        DATA_ENTRIES[entry](_nested(*shapes))


def test_nested_p_of_powm_is_described():
    """Before: describe(p) itself raised the NestedTensorImpl RuntimeError while forming the message."""
    match = r"0-dim floating tensor \(.*\); received a nested tensor of 1 tensor, shapes \(1,\)"
    with pytest.raises(SvdgradError, match=match):
        svdgrad.powm(torch.eye(2), _nested((1,)))


def test_meta_p_with_a_meta_A_is_refused_as_having_no_data():
    """Before: RuntimeError "Tensor.item() cannot be called on meta tensors" (powm's finiteness check of p)."""
    with pytest.raises(SvdgradError, match="meta device.*has no data"):
        svdgrad.powm(torch.empty(3, 3, device="meta"), torch.tensor(0.5, device="meta"))


LAYERS = {
    "CovariancePooling": (lambda: svdgrad.nn.CovariancePooling(4, 3), (2, 4, 5, 5)),
    "CovariancePooling_features": (lambda: svdgrad.nn.CovariancePooling(4, 3, route="features"), (2, 4, 5, 5)),
    "Whitening": (lambda: svdgrad.nn.Whitening(4), (8, 4)),
    "GlobalAveragePooling": (lambda: svdgrad.nn.GlobalAveragePooling(4, 3), (2, 4, 5, 5)),
}


@pytest.mark.parametrize("layer", LAYERS)
@pytest.mark.parametrize("layer_on_meta", [False, True])
def test_layers_refuse_a_meta_input_in_training(layer, layer_on_meta):
    """Before: RuntimeError "Tensor on device cpu is not on the expected device meta!" (a CPU layer, in conv2d),
    NotImplementedError "Cannot copy out of meta tensor; no data!" (CovariancePooling on meta), RuntimeError
    "Tensor.item() cannot be called on meta tensors" (Whitening)."""
    make, shape = LAYERS[layer]
    module = make().to("meta") if layer_on_meta else make()
    with pytest.raises(SvdgradError, match=rf"x in {layer.split('_')[0]}.*meta device.*has no data"):
        module(torch.empty(shape, device="meta"))


def test_whitening_in_eval_still_propagates_meta_shapes():
    """Running statistics need no data: a meta layer in eval mode gives a meta output of the input's shape."""
    out = svdgrad.nn.Whitening(4).to("meta").eval()(torch.empty(8, 4, device="meta"))
    assert out.shape == (8, 4) and out.is_meta


@pytest.mark.parametrize("layer", LAYERS)
def test_layers_refuse_a_nested_input(layer):
    """Before: RuntimeError "Internal error: NestedTensorImpl doesn't support sizes. Please file an issue."."""
    make, shape = LAYERS[layer]
    x = _nested(shape[1:], shape[1:])
    with pytest.raises(SvdgradError, match="nested tensor.*pass a padded tensor or a list"):
        make()(x)


@pytest.mark.parametrize("method", ["exact", "ordinary", "pade"])
@pytest.mark.parametrize("shape", [(0, 3, 3), (0, 2, 3, 3), (2, 0, 0)])
@pytest.mark.parametrize("p_dtype", [torch.float32, torch.float64])
def test_powm_empty_batch_gives_zero_gradients_in_p_and_A(method, shape, p_dtype):
    """An empty batch (0, 3, 3) gave p.grad None: torch's convention for an empty sum that depends on p is a
    zero gradient (n = 0 gave it already)."""
    A = torch.zeros(shape, dtype=torch.float64, requires_grad=True)
    p = torch.tensor(0.5, dtype=p_dtype, requires_grad=True)
    F = svdgrad.powm(A, p, method)
    assert F.shape == shape and F.dtype == A.dtype
    F.sum().backward()
    assert p.grad is not None and p.grad.shape == () and p.grad.dtype == p_dtype and float(p.grad) == 0.0
    assert A.grad is not None and A.grad.shape == shape and not A.grad.any()


@pytest.mark.parametrize("gram", ["gram_sqrtm", "gram_inv_sqrtm"])
def test_gram_refuses_a_numpy_array_as_not_a_tensor(gram):
    """Before: "Expected features X of shape (*, d, N) with at least 2 dimensions; received shape=(3, 4)":
    a 2-D array told it lacked dimensions."""
    with pytest.raises(SvdgradError, match=r"Expected X to be a torch.Tensor.*torch.as_tensor") as info:
        getattr(svdgrad, gram)(np.ones((3, 4)))
    assert "at least 2 dimensions" not in str(info.value)


@pytest.mark.parametrize("layer", LAYERS)
@pytest.mark.parametrize("dtype", [torch.int64, torch.complex64])
def test_layers_refuse_integer_and_complex_input(layer, dtype):
    """Before: Whitening returned an int64 output whitened then truncated to integers, and a complex output with
    the imaginary part dropped (silently wrong); CovariancePooling raised RuntimeError "expected scalar type
    Long but found Float" and NotImplementedError "le_cpu" not implemented for 'ComplexFloat'."""
    make, shape = LAYERS[layer]
    x = (torch.randn(shape, generator=torch.Generator().manual_seed(0)) * 3).to(dtype)
    with pytest.raises(SvdgradError, match=rf"real floating dtype.*x in {layer.split('_')[0]}.*{dtype}"):
        make()(x)


@pytest.mark.parametrize("layer", LAYERS)
def test_layers_refuse_a_list_input(layer):
    """Before: AttributeError "'list' object has no attribute 'dim'"."""
    make, shape = LAYERS[layer]
    with pytest.raises(SvdgradError, match="Expected x to be a torch.Tensor.*torch.as_tensor"):
        make()(torch.ones(shape).tolist())
