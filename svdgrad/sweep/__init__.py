"""Condition-number sweep: ``svdgrad sweep`` / ``svdgrad report``.

- ``grid``: the grid as data (``default_grid``, ``quick_grid``, ``Grid.narrow``).
- ``cells``: the work on one matrix -> result rows (metrics, reference).
- ``store``: results.csv, append-only and crash-safe.
- ``runner``: planning, resume, parallel execution (joblib: loky or ray).
- ``report``: REPORT.md and figures from the saved rows.
- ``cli``: the two commands.

Imported only by the CLI: it needs the study dependencies (joblib, tqdm,
matplotlib), which the core library does not.
"""

from .grid import Grid, default_grid, quick_grid

__all__ = ["Grid", "default_grid", "quick_grid"]
