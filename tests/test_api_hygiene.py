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
"""

import threading

import mpmath
import pytest
import torch

import svdgrad
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
