"""Timed callables for the grid, built for any device.

Each case is set up once (inputs on the device, a leaf that requires grad)
and returns a zero-argument ``run`` that performs exactly the measured work
and waits for the device, so wall-clock time is the cost.  Inputs are
``svdgrad.testing.spd`` matrices with κ = grid.KAPPA.
"""

from __future__ import annotations

import torch

import svdgrad
from svdgrad import testing

from . import grid

DTYPES = {"float32": torch.float32, "float64": torch.float64}


def synchronize(device: torch.device) -> None:
    """Wait for queued work on ``device`` (a no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":  # pragma: no cover - not on the test machines
        torch.mps.synchronize()


def variant(label: str) -> grid.Variant:
    """A label of grid.VARIANTS or a method spec (``taylor:degree=9``) -> its Variant."""
    return grid.variant_of(label)


class Inputs:
    """A (B, n, n) SPD matrix, an incoming gradient G and two matmul operands on ``device``."""

    def __init__(self, batch: int, n: int, dtype: str, device, seed: int = 0):
        self.device = torch.device(device)
        dt = DTYPES[dtype]
        self.A = testing.spd(n, grid.KAPPA, batch=(batch,), dtype=dt, seed=seed).to(self.device)
        gen = torch.Generator().manual_seed(seed + 1)
        self.G = torch.randn(batch, n, n, generator=gen, dtype=dt).to(self.device)
        self.M1 = torch.randn(batch, n, n, generator=gen, dtype=dt).to(self.device)
        self.M2 = torch.randn(batch, n, n, generator=gen, dtype=dt).to(self.device)
        self.leaf = self.A.clone().requires_grad_(True)


def _forward_backward(inputs: Inputs, f):
    a, G, dev = inputs.leaf, inputs.G, inputs.device

    def run():
        a.grad = None
        f(a).backward(G)
        synchronize(dev)

    return run


def sqrtm_fn(label: str, check: bool = True):
    """a -> svdgrad.sqrtm(a) with the variant's method object."""
    v = variant(label)
    method = svdgrad.get_method(v.method, **v.options, check=check)
    return lambda a: svdgrad.sqrtm(a, method)


def sqrtm_case(inputs: Inputs, label: str, mode: str, check: bool = True):
    """``svdgrad.sqrtm`` with the variant's options; ``check=False`` skips the value checks."""
    v = variant(label)
    method = svdgrad.get_method(v.method, **v.options, check=check)
    A, dev = inputs.A, inputs.device
    if mode == "forward":
        def run():
            with torch.no_grad():
                svdgrad.sqrtm(A, method)
            synchronize(dev)
        return run
    if mode == "forward_backward":
        return _forward_backward(inputs, lambda a: svdgrad.sqrtm(a, method))
    raise ValueError(f"unknown mode {mode!r}; expected one of {grid.MODES}")


def eigh_sqrtm(a: torch.Tensor) -> torch.Tensor:
    """What a user writes today: Z = U diag(sqrt λ) U^T through torch.linalg.eigh."""
    L, U = torch.linalg.eigh(a)
    return (U * L.clamp_min(0).sqrt()[..., None, :]) @ U.mT


def baseline_case(inputs: Inputs, name: str):
    A, dev = inputs.A, inputs.device
    if name == "eigh_forward":
        def run():
            torch.linalg.eigh(A)
            synchronize(dev)
        return run
    if name == "eigh_autograd":
        return _forward_backward(inputs, eigh_sqrtm)
    if name == "matmul":
        M1, M2 = inputs.M1, inputs.M2

        def run():
            torch.matmul(M1, M2)
            synchronize(dev)
        return run
    raise ValueError(f"unknown baseline {name!r}; expected one of {grid.BASELINES}")


def pooling_available() -> str | None:
    """None if svdgrad.nn.CovariancePooling can be used, else the reason."""
    try:
        from svdgrad.nn import CovariancePooling  # noqa: F401
    except Exception as exc:  # the layer is optional for the benchmark
        return f"svdgrad.nn.CovariancePooling not importable ({type(exc).__name__}: {exc})"
    return None


def pooling_case(batch: int, n: int, dtype: str, device, method: str, mode: str, seed: int = 0):
    """CovariancePooling(n, reduced_channels=None, method) on (B, n, POOL_HW, POOL_HW) features."""
    from svdgrad.nn import CovariancePooling

    dev = torch.device(device)
    dt = DTYPES[dtype]
    layer = CovariancePooling(n, None, method).to(device=dev, dtype=dt)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, n, grid.POOL_HW, grid.POOL_HW, generator=gen, dtype=dt).to(dev)
    if mode == "forward":
        def run():
            with torch.no_grad():
                layer(x)
            synchronize(dev)
        return run
    leaf = x.clone().requires_grad_(True)
    gout = torch.randn(batch, layer.out_features, generator=gen, dtype=dt).to(dev)

    def run():
        leaf.grad = None
        layer(leaf).backward(gout)
        synchronize(dev)
    return run


def function_case(inputs: Inputs, function: str, method: str):
    """Forward + backward of the library's entry point for ``function`` (inv_sqrt, log, power) with ``method``."""
    m = svdgrad.get_method(method)
    call = {"sqrt": lambda a: svdgrad.sqrtm(a, m), "inv_sqrt": lambda a: svdgrad.inv_sqrtm(a, m),
            "log": lambda a: svdgrad.logm(a, m), "power": lambda a: svdgrad.powm(a, grid.POWER_P, m)}
    if function not in call:
        raise ValueError(f"unknown function {function!r}; expected one of {', '.join(call)}")
    return _forward_backward(inputs, call[function])


class GramInputs:
    """Features X (B, n, GRAM_COLUMNS·n) with κ(X) = √KAPPA, so κ(X Xᵀ) = KAPPA, and an incoming gradient."""

    def __init__(self, batch: int, n: int, dtype: str, device, seed: int = 0):
        self.device = torch.device(device)
        dt = DTYPES[dtype]
        X = testing.features(n, grid.GRAM_COLUMNS * n, grid.KAPPA ** 0.5, batch=(batch,), dtype=dt, seed=seed)
        self.leaf = X.to(self.device).requires_grad_(True)
        gen = torch.Generator().manual_seed(seed + 1)
        self.G = torch.randn(batch, n, n, generator=gen, dtype=dt).to(self.device)


def gram_case(inputs: GramInputs, route: str):
    """Forward + backward with respect to X: ``gram_sqrtm(X)``, its SVD route, or ``sqrtm(X @ X.mT)`` (exact)."""
    if route == "gram_sqrtm":
        f = svdgrad.gram_sqrtm
    elif route == "gram_sqrtm[svd]":
        def f(x):
            return svdgrad.gram_sqrtm(x, algorithm="svd")
    elif route == "sqrtm(X X^T)":
        def f(x):
            return svdgrad.sqrtm(x @ x.mT)
    else:
        raise ValueError(f"unknown route {route!r}; expected one of {grid.GRAM_CASES}")
    return _forward_backward(inputs, f)


def jvp_case(inputs: Inputs):
    """``torch.func.jvp`` of ``sqrtm(·, "exact")`` at A in a fixed symmetric direction: value and tangent."""
    A, dev = inputs.A, inputs.device
    T = inputs.M1 + inputs.M1.mT  # (B, n, n) symmetric direction

    def run():
        torch.func.jvp(lambda a: svdgrad.sqrtm(a, "exact"), (A,), (T,))
        synchronize(dev)
    return run


def ratio_cases(batch: int, n: int, dtype: str, device, names) -> dict:
    """The named cases of the ratio targets at one shape (``grid.RatioTarget``'s names); a ``sqrtm[...]``
    name with the suffix ``grid.NO_CHECK`` is that case with ``check=False``."""
    inputs = Inputs(batch, n, dtype, device)
    gram = None
    out = {}
    for name in names:
        base, nocheck = (name[:-len(grid.NO_CHECK)], True) if name.endswith(grid.NO_CHECK) else (name, False)
        if base.startswith("sqrtm[") and base.endswith("]"):
            out[name] = sqrtm_case(inputs, base[len("sqrtm["):-1], "forward_backward", check=not nocheck)
        elif name == "eigh_autograd":
            out[name] = baseline_case(inputs, name)
        elif name in grid.GRAM_CASES:
            gram = gram or GramInputs(batch, n, dtype, device)
            out[name] = gram_case(gram, name)
        elif name == grid.JVP_CASE:
            out[name] = jvp_case(inputs)
        else:
            raise ValueError(f"unknown ratio-target case {name!r}")
    return out
