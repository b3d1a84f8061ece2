"""Condition-number sweep: ``svdgrad sweep`` / ``svdgrad report``.

- ``grid``: the grid as data (``default_grid``, ``quick_grid``, ``Grid.narrow``).
- ``cells``: the work on one matrix -> result rows (metrics, reference).
- ``store``: results.csv, append-only and crash-safe.
- ``runner``: planning, resume, parallel execution (joblib: loky or ray).
- ``tables`` (data), ``figures`` (one function per figure family),
  ``markdown`` (the text): the parts of the report;
- ``report``: REPORT.md, figures and the console table from the saved rows.
- ``cli``: the two commands.

Imported only by the CLI.  Its dependencies (joblib, tqdm, filelock,
matplotlib) are core dependencies of the package, so a plain install runs
``svdgrad sweep`` and ``svdgrad report``; Ray (``--backend ray``) is the
``cluster`` extra.
"""

from .grid import Grid, default_grid, quick_grid

__all__ = ["Grid", "default_grid", "quick_grid"]
