"""REPORT.md, figures and the console table, from a sweep's saved files only.

Nothing here recomputes a result: every number in the report is read from
results.csv / approx.csv (or is a constant of ``grid``), so ``svdgrad
report`` rebuilds the same report from the same files.  The work is split:

- ``tables``: data (aggregates, rankings, tables as rows), no drawing, no prose;
- ``figures``: one function per figure family;
- ``markdown``: the text of REPORT.md;
- this module: ``build`` (all of it into a directory) and ``console_table``.
"""

from __future__ import annotations

from pathlib import Path

from .._io import remove_stale_temporaries
from . import figures, markdown, tables
from .runner import REPORT, RESULTS
from .store import write_atomic
from .tables import axes, error_table, load, load_grid, method_cells, reference_of

__all__ = ["build", "console_table", "load", "load_grid", "method_cells"]


def console_table(out: Path) -> str:
    """Gradient error (median over seeds) per method and dtype against κ, at the smallest n, per spectrum."""
    rows = tables.sqrt_rows(load(out))
    if not any(r["study"] == "method" for r in rows):
        return "(no sqrt method rows)"
    ax = axes(rows, load_grid(out))
    cells = method_cells(rows)
    n = ax["sizes"][0]
    parts = []
    for sp in ax["spectra"]:
        parts.append(f"\nRelative gradient error (symmetric part, median over {len(ax['seeds'])} seeds) vs κ; "
                     f"n={n}, spectrum={sp}, reference: {reference_of(cells, n, sp)}")
        parts.append(error_table(cells, ax, n, sp, markdown=False))
    parts.append("inf = non-finite gradient; ≤floor = below the float64 reference's κ·eps floor; "
                 "ref = this is the reference.")
    return "\n".join(parts)


def build(out: Path, note=None) -> Path:
    """Write REPORT.md and the figures into ``out`` from its results.csv / approx.csv / grid.json.

    ``note`` (a print-like callable) gets one line if rows of the grid are missing (a stopped sweep).
    """
    out = Path(out)
    remove_stale_temporaries(out)  # (a killed report's or sweep's; only dead writers': no lock is needed)
    runs = tables.load_runs(out)  # (every file read before any figure is drawn: damage is found first)
    all_rows = load(out)
    rows = tables.sqrt_rows(all_rows)
    g = load_grid(out)
    approx = tables.load_approx(out)
    if not any(r["study"] == "method" for r in rows):
        raise ValueError(f"{out / RESULTS} holds no sqrt method rows; nothing to report")
    ax = axes(rows, g)
    cells = method_cells(rows)
    figs = {}
    n_head = tables.headline_size(ax, g)
    if n_head is not None:
        figs["headline"], figs["headline_n"] = "headline_mpmath.png", n_head
        figures.fig_headline(cells, ax, n_head, out / figs["headline"])
    for n in ax["sizes"]:
        figs[f"grad_{n}"] = f"grad_error_n{n}.png"
        figures.fig_grad_error(cells, ax, n, out / figs[f"grad_{n}"])
    figs["nonfinite"], figs["blowup"] = "nonfinite.png", "blowup.png"
    figures.fig_nonfinite(rows, ax, out / figs["nonfinite"])
    figures.fig_blowup(rows, ax, out / figs["blowup"])
    if approx:
        figs["approx"] = "taylor_pade.png"
        figures.fig_approx(approx, out / figs["approx"])
    if figures.fig_newton_schulz(rows, out / "newton_schulz.png"):
        figs["ns"] = "newton_schulz.png"
    figs["eig"] = "float32_eigenvalues.png"
    figures.fig_eigenvalues(rows, ax, out / figs["eig"])
    for f in tables.functions_present(all_rows, g):
        if f == "sqrt":
            continue
        frows = tables.function_rows(all_rows, f)
        fax = axes(frows, g)
        fcells = method_cells(frows)
        for n in fax["sizes"]:
            figs[f"{f}_grad_{n}"] = f"{f}_grad_error_n{n}.png"
            figures.fig_grad_error(fcells, fax, n, out / figs[f"{f}_grad_{n}"], function=f)
    if figures.fig_gram(all_rows, out / "gram.png"):
        figs["gram"] = "gram.png"
    for n in tables.option_sizes(all_rows):
        if figures.fig_accuracy_cost(tables.accuracy_cost(all_rows, n), n, out / f"accuracy_cost_n{n}.png"):
            figs[f"accuracy_cost_{n}"] = f"accuracy_cost_n{n}.png"
    coverage = tables.missing_rows(all_rows, g, runs)
    text = markdown.write(rows, approx, g, ax, cells, figs, runs, all_rows=all_rows, coverage=coverage)
    write_atomic(out / REPORT, text)
    if coverage[0] and note is not None:
        note(tables.completeness_text(*coverage).replace("**", "") + ".")
    return out / REPORT
