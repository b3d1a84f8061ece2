"""The pytest-benchmark grid: speed of every method, forward and forward + backward, with the baselines.

Part of the package, so that ``svdgrad bench`` runs from an installed
package (it passes this file to pytest with ``-p svdgrad.bench.plugin``);
``tests/benchmarks/`` re-exports it for a plain ``pytest tests/benchmarks``.
Needs the ``bench`` extra (pytest, pytest-benchmark).

Settings come from the environment (set by ``svdgrad bench``):
SVDGRAD_BENCH_DEVICE (default cpu), SVDGRAD_BENCH_PROFILE (default quick, so
that a plain pytest run takes seconds; ``full`` is the report's grid),
SVDGRAD_BENCH_THREADS (grid.THREADS) and SVDGRAD_BENCH_METHODS (a JSON list
of method specs; default grid.VARIANTS).
"""

import functools
import os

import pytest
import torch

from svdgrad.bench import cases, grid

DEVICE = os.environ.get("SVDGRAD_BENCH_DEVICE", "cpu")
PROFILE = grid.PROFILES[os.environ.get("SVDGRAD_BENCH_PROFILE", "quick")]
THREADS = int(os.environ.get("SVDGRAD_BENCH_THREADS", grid.THREADS))
VARIANTS = grid.selected_variants()

torch.set_num_threads(THREADS)


@functools.lru_cache(maxsize=None)
def _inputs(n, dtype):
    return cases.Inputs(PROFILE.batch, n, dtype, DEVICE)


def _run(benchmark, fn):
    benchmark.pedantic(fn, rounds=PROFILE.pedantic_rounds, warmup_rounds=PROFILE.warmup_rounds, iterations=1)


def _info(benchmark, **kw):
    benchmark.group = f"n={kw['n']} {kw['dtype']}"
    benchmark.extra_info.update(kw, batch=PROFILE.batch, threads=torch.get_num_threads(),
                                device=DEVICE, requested_threads=THREADS)


SIZES_DTYPES = [(n, dt) for n in PROFILE.sizes for dt in PROFILE.dtypes]


@pytest.mark.parametrize("n,dtype", SIZES_DTYPES, ids=[f"n{n}-{dt}" for n, dt in SIZES_DTYPES])
@pytest.mark.parametrize("mode", grid.MODES)
@pytest.mark.parametrize("label", [v.label for v in VARIANTS])
def test_sqrtm(benchmark, label, mode, n, dtype):
    _info(benchmark, kind="sqrtm", label=label, mode=mode, n=n, dtype=dtype)
    _run(benchmark, cases.sqrtm_case(_inputs(n, dtype), label, mode))


@pytest.mark.parametrize("n,dtype", SIZES_DTYPES, ids=[f"n{n}-{dt}" for n, dt in SIZES_DTYPES])
@pytest.mark.parametrize("name", grid.BASELINES)
def test_baseline(benchmark, name, n, dtype):
    mode = "forward_backward" if name == "eigh_autograd" else "forward"
    _info(benchmark, kind="baseline", label=name, mode=mode, n=n, dtype=dtype)
    _run(benchmark, cases.baseline_case(_inputs(n, dtype), name))


@pytest.mark.parametrize("n,dtype", SIZES_DTYPES, ids=[f"n{n}-{dt}" for n, dt in SIZES_DTYPES])
@pytest.mark.parametrize("mode", grid.MODES)
@pytest.mark.parametrize("method", grid.POOLING_METHODS)
def test_pooling(benchmark, method, mode, n, dtype):
    reason = cases.pooling_available()
    if reason:
        pytest.skip(reason)
    _info(benchmark, kind="pooling", label=f"pooling[{method}]", mode=mode, n=n, dtype=dtype)
    _run(benchmark, cases.pooling_case(PROFILE.batch, n, dtype, DEVICE, method, mode))


@pytest.mark.parametrize("n,dtype", SIZES_DTYPES, ids=[f"n{n}-{dt}" for n, dt in SIZES_DTYPES])
@pytest.mark.parametrize("function,method", grid.FUNCTION_CASES, ids=[f"{f}-{m}" for f, m in grid.FUNCTION_CASES])
def test_function(benchmark, function, method, n, dtype):
    _info(benchmark, kind="function", label=f"{function}[{method}]", mode="forward_backward", n=n, dtype=dtype)
    _run(benchmark, cases.function_case(_inputs(n, dtype), function, method))


@functools.lru_cache(maxsize=None)
def _gram_inputs(n, dtype):
    return cases.GramInputs(PROFILE.batch, n, dtype, DEVICE)


@pytest.mark.parametrize("n,dtype", SIZES_DTYPES, ids=[f"n{n}-{dt}" for n, dt in SIZES_DTYPES])
@pytest.mark.parametrize("route", grid.GRAM_CASES)
def test_gram(benchmark, route, n, dtype):
    _info(benchmark, kind="gram", label=route, mode="forward_backward", n=n, dtype=dtype)
    _run(benchmark, cases.gram_case(_gram_inputs(n, dtype), route))


@pytest.mark.parametrize("n,dtype", SIZES_DTYPES, ids=[f"n{n}-{dt}" for n, dt in SIZES_DTYPES])
def test_jvp(benchmark, n, dtype):
    _info(benchmark, kind="jvp", label=grid.JVP_CASE, mode="jvp", n=n, dtype=dtype)
    _run(benchmark, cases.jvp_case(_inputs(n, dtype)))


@pytest.mark.parametrize("dtype", PROFILE.dtypes)
@pytest.mark.parametrize("label", ["exact", "eigh_autograd"])
def test_many_small(benchmark, label, dtype):
    n, batch = PROFILE.small
    _info(benchmark, kind="small", label=f"{label} (B={batch})", mode="forward_backward", n=n, dtype=dtype)
    inputs = cases.Inputs(batch, n, dtype, DEVICE)
    run = (cases.baseline_case(inputs, "eigh_autograd") if label == "eigh_autograd"
           else cases.sqrtm_case(inputs, label, "forward_backward"))
    _run(benchmark, run)
