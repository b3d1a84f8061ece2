"""Speed of every method, forward and forward + backward, with the baselines.

The tests live in the package (``svdgrad/bench/suite.py``) so that
``svdgrad bench`` runs from an installed package; this file collects them
for ``pytest tests/benchmarks``.
"""

from svdgrad.bench.suite import (test_baseline, test_function, test_gram, test_jvp, test_many_small,  # noqa: F401
                                 test_pooling, test_sqrtm)
