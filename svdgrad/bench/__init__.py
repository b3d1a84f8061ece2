"""Benchmarks of svdgrad's methods against the hardware floor (``svdgrad bench``).

``grid`` declares what is measured and the targets; ``cases`` builds the
timed callables (device-agnostic); ``timing`` runs them interleaved;
``memory`` counts saved-tensor bytes; ``report`` writes
``reports/performance/``; ``cli`` ties it together.  The pytest-benchmark
suite in ``tests/benchmarks/`` reads the same grid.
"""
