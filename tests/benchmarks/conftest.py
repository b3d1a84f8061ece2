"""``pytest tests/benchmarks``: the package's benchmark suite (svdgrad/bench/suite.py) with its plugin.

Environment: SVDGRAD_BENCH_PROFILE=quick (default, a few seconds) or full
(the report's grid), SVDGRAD_BENCH_DEVICE, SVDGRAD_BENCH_THREADS,
SVDGRAD_BENCH_METHODS; see svdgrad/bench/suite.py.
"""

from svdgrad.bench.plugin import pytest_benchmark_update_machine_info  # noqa: F401
