"""Benchmarks of svdgrad's methods against the hardware floor (``svdgrad bench``).

``grid`` declares what is measured and the targets; ``cases`` builds the
timed callables (device-agnostic); ``timing`` runs them interleaved;
``memory`` counts saved-tensor bytes; ``report`` writes
``reports/performance/``; ``cli`` ties it together.  The pytest-benchmark
suite is ``suite.py`` (with its pytest ``plugin``), part of the package so
that ``svdgrad bench`` runs from an install with the ``bench`` extra;
``tests/benchmarks/`` only re-exports it.
"""
