"""Speed of every method, forward and forward + backward, with the baselines.

The tests live in the package (``svdgrad/bench/suite.py``) so that
``svdgrad bench`` runs from an installed package; this file collects them
for ``pytest tests/benchmarks``.
"""

from svdgrad.bench.suite import test_baseline, test_pooling, test_sqrtm  # noqa: F401
