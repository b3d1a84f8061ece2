"""REPORT.md, figures and the console table, from a sweep's saved files only.

Nothing here recomputes a result: every number in the report is read from
results.csv / approx.csv (or is a constant of ``grid``), so ``svdgrad
report`` rebuilds the same report from the same files.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from pathlib import Path

from . import grid as grid_mod
from .cells import COLUMNS, KEY, REF_EXACT64, REF_MPMATH, REF_SELF, parse_ns_variant
from .grid import Grid, default_grid
from .runner import APPROX, APPROX_COLUMNS, GRID, REPORT, RESULTS, RUNS
from .store import read_rows, to_float, write_atomic

EPS64 = 2.0 ** -52
EPS32 = 2.0 ** -23
_NUMERIC = [c for c in COLUMNS if c not in KEY and c not in ("reference", "error")]
_PLOT_CEIL = 1e3  # non-finite errors are drawn at this height, with their own marker

# ---------------------------------------------------------------------------
# Loading and aggregation.
# ---------------------------------------------------------------------------


def load(out: Path) -> list[dict]:
    rows = []
    for r in read_rows(Path(out) / RESULTS):
        t = dict(r)
        for k in ("n", "log10_kappa", "seed"):
            t[k] = int(t[k])
        for k in _NUMERIC:
            t[k] = to_float(t[k])
        rows.append(t)
    return rows


def load_grid(out: Path) -> Grid:
    p = Path(out) / GRID
    return Grid.from_json(p.read_text()) if p.exists() else default_grid()


def _median(xs) -> float:
    xs = [x for x in xs if not math.isnan(x)]
    return statistics.median(xs) if xs else math.nan


def _mean(xs) -> float:
    xs = [x for x in xs if not math.isnan(x)]
    return sum(xs) / len(xs) if xs else math.nan


def _group(rows, *keys):
    g = defaultdict(list)
    for r in rows:
        g[tuple(r[k] for k in keys)].append(r)
    return g


def _ordered(values, preferred):
    values = set(values)
    return [v for v in preferred if v in values] + sorted(values - set(preferred), key=str)


class Cell:
    """Aggregate of one (method, dtype, n, κ, spectrum) over seeds."""

    def __init__(self, rows):
        self.rows = rows
        ok = [r for r in rows if not r["error"] and r["reference"] != REF_SELF]
        self.is_reference = any(r["reference"] == REF_SELF for r in rows)
        self.errors = [r["error"] for r in rows if r["error"]]
        self.grad = _median([r["grad_err"] for r in ok])
        self.fwd = _median([r["fwd_err"] for r in ok])
        self.floor = _median([r["ref_floor"] for r in ok])
        self.at_floor = bool(ok) and not math.isnan(self.floor) and self.grad <= self.floor
        self.nonfinite = _mean([float(r["nonfinite_grad"] > 0) for r in ok])
        self.blowup = _median([r["blowup"] for r in ok])
        self.time = _median([r["time_ms"] for r in rows if not r["error"]])
        self.kappa_reached = _median([r["kappa_reached"] for r in rows if not r["error"]])
        self.reference = ok[0]["reference"] if ok else (REF_SELF if self.is_reference else "")

    def text(self) -> str:
        if self.is_reference:
            return "ref"
        if not math.isnan(self.grad) and self.at_floor:
            return "≤floor"
        if math.isnan(self.grad):
            return "ERR" if self.errors else "-"
        if math.isinf(self.grad):
            return "inf"
        return f"{self.grad:.1e}"


def method_cells(rows):
    """(method, dtype, n, log10 κ, spectrum) -> Cell."""
    return {k: Cell(v) for k, v in _group([r for r in rows if r["study"] == "method"],
                                          "method", "dtype", "n", "log10_kappa", "spectrum").items()}


def _axes(rows, g: Grid):
    m = [r for r in rows if r["study"] == "method"]
    return dict(
        methods=_ordered({r["method"] for r in m}, g.methods),
        dtypes=_ordered({r["dtype"] for r in m}, grid_mod.DTYPES),
        sizes=sorted({r["n"] for r in m}),
        kappas=sorted({r["log10_kappa"] for r in m}),
        spectra=_ordered({r["spectrum"] for r in m}, default_grid().spectra),
        seeds=sorted({r["seed"] for r in m}),
    )


# ---------------------------------------------------------------------------
# Tables.
# ---------------------------------------------------------------------------


def _error_table(cells, ax, n, spectrum, markdown: bool) -> str:
    head = ["method", "dtype"] + [grid_mod.kappa_label(k) for k in ax["kappas"]]
    body = []
    for m in ax["methods"]:
        for d in ax["dtypes"]:
            body.append([m, d] + [cells[(m, d, n, k, spectrum)].text() if (m, d, n, k, spectrum) in cells else "-"
                                  for k in ax["kappas"]])
    return _table(head, body, markdown)


def _table(head, body, markdown: bool) -> str:
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(map(str, r)) + " |" for r in body]
        return "\n".join(lines)
    widths = [max(len(str(x)) for x in col) for col in zip(head, *body)]
    fmt = lambda r: "  ".join(str(x).rjust(w) if i > 1 else str(x).ljust(w) for i, (x, w) in enumerate(zip(r, widths)))  # noqa: E731
    return "\n".join([fmt(head), "  ".join("-" * w for w in widths)] + [fmt(r) for r in body])


def console_table(out: Path) -> str:
    """Gradient error (median over seeds) per method and dtype against κ, at the smallest n, per spectrum."""
    rows = load(out)
    if not any(r["study"] == "method" for r in rows):
        return "(no method rows)"
    g = load_grid(out)
    ax = _axes(rows, g)
    cells = method_cells(rows)
    n = ax["sizes"][0]
    parts = []
    for sp in ax["spectra"]:
        ref = _reference_of(cells, n)
        parts.append(f"\nRelative gradient error (symmetric part, median over {len(ax['seeds'])} seeds) vs κ; "
                     f"n={n}, spectrum={sp}, reference: {ref}")
        parts.append(_error_table(cells, ax, n, sp, markdown=False))
    parts.append("inf = non-finite gradient; ≤floor = below the float64 reference's κ·eps floor; "
                 "ref = this is the reference.")
    return "\n".join(parts)


def _reference_of(cells, n) -> str:
    refs = {c.reference for k, c in cells.items() if k[2] == n and c.reference and c.reference != REF_SELF}
    if refs == {REF_MPMATH}:
        return "mpmath (50 digits)"
    if REF_EXACT64 in refs:
        return "float64 exact (errors below its floor shown as ≤floor)"
    return ", ".join(sorted(refs)) or "-"


# ---------------------------------------------------------------------------
# Figures.
# ---------------------------------------------------------------------------

_MARKERS = "osD^v<>pP*hX"


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    plt.rcParams.update({"figure.dpi": 90, "font.size": 8, "axes.titlesize": 9, "legend.fontsize": 7})
    return plt


def _colors(names):
    import matplotlib

    cmap = matplotlib.colormaps["tab10"]
    return {m: cmap(i % 10) for i, m in enumerate(names)}


def _save(fig, path):
    # No bbox_inches="tight": it draws the figure twice; the margins are set by _layout.
    tmp = Path(str(path) + ".tmp.png")
    fig.savefig(tmp, metadata={"Software": None})
    tmp.replace(path)


def _layout(fig, handles=(), labels=(), ncol=6, title=""):
    """Legend under the panels and the title above, with fixed margins in inches."""
    w, h = fig.get_size_inches()
    rows = -(-len(labels) // ncol) if labels else 0
    bottom = (0.62 + 0.17 * rows) / h
    if labels:
        fig.legend(handles, labels, loc="lower center", ncol=ncol, bbox_to_anchor=(0.5, 0.005), frameon=False)
    if title:
        fig.suptitle(title, y=1 - 0.08 / h, va="top")
    fig.subplots_adjust(left=0.75 / w, right=1 - 0.15 / w, bottom=bottom, top=1 - 0.6 / h,
                        wspace=0.12, hspace=0.35)


def fig_grad_error(cells, ax, n, path):
    plt = _plt()
    colors = _colors(ax["methods"])
    nd, ns = len(ax["dtypes"]), len(ax["spectra"])
    fig, axes = plt.subplots(nd, ns, figsize=(3.0 * ns + 0.7, 2.5 * nd + 1.3), squeeze=False, sharex=True, sharey=True)
    ks = ax["kappas"]
    kap = [10.0 ** k for k in ks]
    exact_ref = _reference_of(cells, n).startswith("float64")
    for i, d in enumerate(ax["dtypes"]):
        for j, sp in enumerate(ax["spectra"]):
            a = axes[i][j]
            a.plot(kap, [k * EPS64 for k in kap], "k--", lw=1, label="float64 floor κ·eps64")
            if d == "float32":
                a.plot(kap, [k * EPS32 for k in kap], "k:", lw=1, label="float32 κ·eps32")
            if exact_ref:
                fl = [grid_mod.reference_floor(k, n) for k in kap]
                a.fill_between(kap, 1e-17, fl, color="0.85", label="at the float64 floor (reference = float64 exact)")
            for mi, m in enumerate(ax["methods"]):
                xs, ys, xi, xf, yf = [], [], [], [], []
                for k, kv in zip(ks, kap):
                    c = cells.get((m, d, n, k, sp))
                    if c is None or c.is_reference or math.isnan(c.grad):
                        continue
                    if math.isinf(c.grad):
                        xi.append(kv)
                    elif c.at_floor:
                        xf.append(kv)
                        yf.append(c.floor)
                    else:
                        xs.append(kv)
                        ys.append(max(min(c.grad, _PLOT_CEIL), 1e-17))
                mk = _MARKERS[mi % len(_MARKERS)]
                a.plot(xs, ys, marker=mk, ms=3, lw=1, color=colors[m], label=m)
                a.plot(xf, yf, ls="none", marker=mk, ms=4, mfc="none", color=colors[m])
                a.plot(xi, [_PLOT_CEIL] * len(xi), ls="none", marker="x", ms=5, color=colors[m])
            a.set_xscale("log")
            a.set_yscale("log")
            a.set_ylim(1e-17, _PLOT_CEIL * 3)
            a.set_title(f"{d}, {sp}")
            if i == nd - 1:
                a.set_xlabel("κ")
            if j == 0:
                a.set_ylabel("rel. gradient error")
            a.grid(True, which="major", lw=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    _layout(fig, handles, labels, ncol=6, title=f"Gradient error vs κ, n = {n} (median over seeds; × at the top "
            f"= non-finite; hollow = at the reference floor)")
    _save(fig, path)
    plt.close(fig)


def fig_nonfinite_blowup(rows, ax, path_nonfinite, path_blowup):
    plt = _plt()
    colors = _colors(ax["methods"])
    mrows = [r for r in rows if r["study"] == "method" and not r["error"] and r["reference"] != REF_SELF]
    groups = _group(mrows, "method", "dtype", "spectrum", "log10_kappa")
    ks = ax["kappas"]
    kap = [10.0 ** k for k in ks]
    nd, ns = len(ax["dtypes"]), len(ax["spectra"])
    specs = [
        (path_nonfinite, "fraction of runs with a non-finite gradient (all n, seeds)",
         lambda rs: _mean([float(r["nonfinite_grad"] > 0) for r in rs]), "linear"),
        (path_blowup, "blow-up ‖g‖/‖g_ref‖ (median over n, seeds; non-finite drawn at 1e3)",
         lambda rs: _median([min(r["blowup"], _PLOT_CEIL) for r in rs]), "log"),
    ]
    for path, title, agg, scale in specs:
        fig, axes = plt.subplots(nd, ns, figsize=(3.0 * ns + 0.7, 2.3 * nd + 1.1), squeeze=False, sharex=True, sharey=True)
        for i, d in enumerate(ax["dtypes"]):
            for j, sp in enumerate(ax["spectra"]):
                a = axes[i][j]
                for mi, m in enumerate(ax["methods"]):
                    ys = [agg(groups.get((m, d, sp, k), [])) for k in ks]
                    a.plot(kap, ys, marker=_MARKERS[mi % len(_MARKERS)], ms=3, lw=1, color=colors[m], label=m)
                a.set_xscale("log")
                a.set_yscale(scale)
                if scale == "linear":
                    a.set_ylim(-0.05, 1.05)
                else:
                    a.axhline(1.0, color="k", lw=0.6, ls="--")
                a.set_title(f"{d}, {sp}")
                if i == nd - 1:
                    a.set_xlabel("κ")
                a.grid(True, lw=0.3)
        handles, labels = axes[0][0].get_legend_handles_labels()
        _layout(fig, handles, labels, ncol=7, title=title)
        _save(fig, path)
        plt.close(fig)


def fig_approx(approx, path):
    plt = _plt()
    groups = _group(approx, "kind", "degree")
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4.2))
    styles = {"ordinary": "k-", "taylor": "-", "pade": "--"}
    for (kind, degree), rs in groups.items():
        rs = sorted(rs, key=lambda r: -r["one_minus_x"])
        x = [r["one_minus_x"] for r in rs]
        label = "1/(1-x) in float64" if kind == "ordinary" else f"{kind} [{degree}]" if kind == "pade" else \
            f"taylor degree {degree}"
        a1.plot(x, [abs(r["value"]) for r in rs], styles[kind], lw=1, label=label)
        a2.plot(x, [max(r["rel_err"], 1e-18) for r in rs], styles[kind], lw=1, label=label)
    for a in (a1, a2):
        a.set_xscale("log")
        a.set_yscale("log")
        a.invert_xaxis()
        a.set_xlabel("1 − x   (x = λmin/λmax of an eigenvalue pair; x → 1 to the right)")
        a.grid(True, lw=0.3)
    a1.set_ylabel("|approximation of 1/(1−x)|")
    a2.set_ylabel("relative error vs mpmath")
    a2.axhline(EPS64, color="0.5", lw=0.6, ls=":")
    a1.legend(loc="upper left")
    _layout(fig, title="K-rule approximations of 1/(1−x) as implemented (svdgrad Taylor / Padé .K on the pair (x, 1))")
    fig.subplots_adjust(wspace=0.3, left=0.08)
    _save(fig, path)
    plt.close(fig)


def fig_newton_schulz(rows, path):
    plt = _plt()
    ns = [r for r in rows if r["study"] == "ns" and not r["error"]]
    if not ns:
        return False
    for r in ns:
        r["_norm"], r["_it"] = parse_ns_variant(r["variant"])
    norms = _ordered({r["_norm"] for r in ns}, ("trace", "frobenius"))
    sizes = sorted({r["n"] for r in ns})
    its = sorted({r["_it"] for r in ns})
    ks = sorted({r["log10_kappa"] for r in ns})
    g = _group(ns, "_norm", "n", "_it", "log10_kappa")
    fig, axes = plt.subplots(len(norms), len(sizes), figsize=(max(3.4 * len(sizes) + 1.6, 7.5), 2.6 * len(norms) + 1.2), squeeze=False)
    im = None
    for i, nm in enumerate(norms):
        for j, n in enumerate(sizes):
            M = [[math.log10(max(_median([r["grad_err"] for r in g.get((nm, n, it, k), [])]), 1e-16))
                  for k in ks] for it in its]
            a = axes[i][j]
            im = a.imshow(M, aspect="auto", origin="lower", cmap="viridis", vmin=-16, vmax=1)
            a.set_xticks(range(len(ks)), [str(k) for k in ks])
            a.set_yticks(range(len(its)), [str(t) for t in its])
            a.set_title(f"{nm} normalization, n = {n}")
            a.set_xlabel("log10 κ")
            if j == 0:
                a.set_ylabel("iterations")
    _layout(fig, title="Newton–Schulz gradient error (float64, logspaced, median over seeds)")
    w = fig.get_size_inches()[0]
    fig.subplots_adjust(right=1 - 1.3 / w, hspace=0.45, wspace=0.25)
    cax = fig.add_axes([1 - 1.1 / w, 0.15, 0.15 / w, 0.7])
    fig.colorbar(im, cax=cax, label="log10 rel. gradient error vs sqrt reference")
    _save(fig, path)
    plt.close(fig)
    return True


def fig_eigenvalues(rows, ax, path):
    plt = _plt()
    eig = [r for r in rows if r["study"] == "eig" and not r["error"]]
    g = _group(eig, "dtype", "n", "spectrum", "log10_kappa")
    sizes = sorted({r["n"] for r in eig})
    dtypes = _ordered({r["dtype"] for r in eig}, grid_mod.DTYPES)
    spectra = _ordered({r["spectrum"] for r in eig}, default_grid().spectra)
    ks = sorted({r["log10_kappa"] for r in eig})
    kap = [10.0 ** k for k in ks]
    cols = [("frac_nonpositive", "fraction of λ > 0 computed ≤ 0"),
            ("frac_wrong_magnitude", "fraction off by ≥ 10× (or ≤ 0)")]
    fig, axes = plt.subplots(len(spectra), 2, figsize=(8, 2.0 * len(spectra) + 1.4), squeeze=False, sharex=True,
                             sharey=True)
    colors = _colors([str(n) for n in sizes])
    for i, sp in enumerate(spectra):
        for j, (col, title) in enumerate(cols):
            a = axes[i][j]
            for n in sizes:
                for d in dtypes:
                    ys = [_mean([r[col] for r in g.get((d, n, sp, k), [])]) for k in ks]
                    a.plot(kap, ys, "-" if d == "float32" else "--", marker="o" if d == "float32" else "",
                           ms=3, lw=1, color=colors[str(n)], label=f"{d}, n={n}")
            a.set_xscale("log")
            a.set_ylim(-0.03, 1.03)
            a.set_title(f"{sp}: {title}")
            a.grid(True, lw=0.3)
            if i == len(spectra) - 1:
                a.set_xlabel("κ")
    handles, labels = axes[0][0].get_legend_handles_labels()
    _layout(fig, handles, labels, ncol=max(len(labels) // 2, 1), title="Eigenvalues of the input, computed by "
            "eigvalsh in its own dtype, against the true λ (mean over seeds)")
    fig.subplots_adjust(hspace=0.45)
    _save(fig, path)
    plt.close(fig)


# ---------------------------------------------------------------------------
# The report.
# ---------------------------------------------------------------------------


def _band_of(k):
    for label, lo, hi in grid_mod.KAPPA_BANDS:
        if lo <= k <= hi:
            return label
    return None


def summary_rows(rows, ax):
    """Per regime (dtype, spectrum, κ band): best method by median gradient error, runner-up, ratio."""
    # Where float64 exact is the reference (large n), the float64 exact row is not compared; comparing
    # the others there against exact's n=16 numbers alone would be unfair, so such sizes are left out
    # of that dtype's regimes.
    self_ref = {(r["dtype"], r["n"]) for r in rows if r["study"] == "method" and r["reference"] == REF_SELF}
    mrows = [r for r in rows if r["study"] == "method" and not r["error"] and (r["dtype"], r["n"]) not in self_ref]
    by = defaultdict(lambda: defaultdict(list))
    for r in mrows:
        band = _band_of(r["log10_kappa"])
        if band is None:
            continue
        floored = r["reference"] == REF_EXACT64 and r["grad_err"] <= r["ref_floor"]
        by[(r["dtype"], r["spectrum"], band)][r["method"]].append((r["ref_floor"] if floored else r["grad_err"],
                                                                   floored))
    out = []
    for d in ax["dtypes"]:
        for sp in ax["spectra"]:
            for band, _, _ in grid_mod.KAPPA_BANDS:
                ms = by.get((d, sp, band))
                if not ms:
                    continue
                stats = []
                for m, vals in ms.items():
                    med = statistics.median(v for v, _ in vals)
                    floored = sum(f for _, f in vals) * 2 >= len(vals)
                    stats.append((med, m, floored))
                stats.sort(key=lambda t: (t[0], ax["methods"].index(t[1]) if t[1] in ax["methods"] else 99))
                best, second = stats[0], stats[1] if len(stats) > 1 else None
                ties = [m for v, m, _ in stats if v <= 2 * best[0]] if math.isfinite(best[0]) else []
                out.append(dict(dtype=d, spectrum=sp, band=band, best=best[1], best_err=best[0],
                                best_floor=best[2], second=second[1] if second else "",
                                second_err=second[0] if second else math.nan, ties=ties,
                                worst=stats[-1][1], worst_err=stats[-1][0]))
    return out


def _e(x) -> str:
    if math.isnan(x):
        return "-"
    if math.isinf(x):
        return "non-finite"
    return f"{x:.1e}"


def _kappa_text(k) -> str:
    return "∞ (λ ≤ 0)" if math.isinf(k) else _e(k)


def _ratio(a, b) -> str:
    if not (math.isfinite(a) and a > 0):
        return "-"
    if math.isinf(b):
        return "∞"
    return f"{b / a:.3g}×"


def build(out: Path) -> Path:
    """Write REPORT.md and the figures into ``out`` from its results.csv / approx.csv / grid.json."""
    out = Path(out)
    rows = load(out)
    g = load_grid(out)
    approx = []
    if (out / APPROX).exists():
        approx = [{k: (v if k in ("kind", "degree") else float(v)) for k, v in r.items()}
                  for r in read_rows(out / APPROX, APPROX_COLUMNS)]
    if not any(r["study"] == "method" for r in rows):
        raise ValueError(f"{out / RESULTS} holds no method rows; nothing to report")
    ax = _axes(rows, g)
    cells = method_cells(rows)
    figs = {}
    for n in ax["sizes"]:
        figs[f"grad_{n}"] = f"grad_error_n{n}.png"
        fig_grad_error(cells, ax, n, out / figs[f"grad_{n}"])
    figs["nonfinite"], figs["blowup"] = "nonfinite.png", "blowup.png"
    fig_nonfinite_blowup(rows, ax, out / figs["nonfinite"], out / figs["blowup"])
    if approx:
        figs["approx"] = "taylor_pade.png"
        fig_approx(approx, out / figs["approx"])
    if fig_newton_schulz(rows, out / "newton_schulz.png"):
        figs["ns"] = "newton_schulz.png"
    figs["eig"] = "float32_eigenvalues.png"
    fig_eigenvalues(rows, ax, out / figs["eig"])
    runs = []
    if (out / RUNS).exists():
        import json

        runs = [json.loads(line) for line in (out / RUNS).read_text().splitlines() if line.strip()]
    text = _markdown(rows, approx, g, ax, cells, figs, runs)
    write_atomic(out / REPORT, text)
    return out / REPORT


def _markdown(rows, approx, g: Grid, ax, cells, figs, runs=()) -> str:
    L = []
    add = L.append
    mrows = [r for r in rows if r["study"] == "method"]
    n_err = sum(1 for r in rows if r["error"])
    refs = {n: _reference_of(cells, n) for n in ax["sizes"]}
    add("# Condition-number sweep of the sqrtm gradient")
    add("")
    add("*Generated by `svdgrad sweep` / `svdgrad report` from `results.csv` in this directory; "
        "no number in this file is typed by hand. Rebuild with `svdgrad report --out <this directory>`.*")
    add("")
    add("## Grid")
    add("")
    add(f"- methods: {', '.join(ax['methods'])}")
    add(f"- dtypes: {', '.join(ax['dtypes'])}; n ∈ {{{', '.join(map(str, ax['sizes']))}}}; "
        f"κ = {', '.join(grid_mod.kappa_label(k) for k in ax['kappas'])}")
    add(f"- spectra: {', '.join(ax['spectra'])}; seeds: {', '.join(map(str, ax['seeds']))} "
        f"(one matrix per seed and cell)")
    add(f"- {len(mrows)} method rows, {len(rows)} rows in all, {n_err} recorded errors.")
    add("")
    if runs:
        add("Runs that wrote `results.csv` (from `runs.jsonl`):")
        add("")
        add(_table(["finished (UTC)", "command", "jobs", "backend", "CPUs", "matrices", "rows written",
                    "wall time"],
                   [[r.get("finished_utc", ""), f"`{r.get('command', '')}`", r.get("jobs", ""), r.get("backend", ""),
                     r.get("cpus", ""), r.get("matrices", ""), r.get("rows_written", ""),
                     f"{r.get('seconds', math.nan):.0f} s"] for r in runs], True))
        add("")
    add("## How it is measured")
    add("")
    add("- **Matrices.** A = `svdgrad.testing.spd(n, κ, spectrum, seed=s)`, built in float64 as Q·diag(λ)·Qᵀ "
        "with Haar Q. The float32 input is that float64 matrix cast to float32; the float32 results are "
        "compared with the reference computed for the float64 matrix, so their error includes the rounding of "
        "the input.")
    add(f"- **Loss.** ⟨G, sqrtm(A)⟩ with G = `svdgrad.testing.gradients((n, n), seed={__import__('svdgrad.sweep.cells', fromlist=['GRAD_SEED']).GRAD_SEED} + s)`, "
        "a fixed non-symmetric random matrix per seed. Gradients are compared through their symmetric parts.")
    add(f"- **Reference.** n ≤ {g.mpmath_max_n}: mpmath at {g.mpmath_dps} digits "
        "(`svdgrad.testing.reference_sqrtm_grad`). Larger n: float64 `exact` (Daleckii–Krein). Where the "
        "reference is float64 `exact`, a gradient error below "
        f"{grid_mod.REFERENCE_FLOOR_FACTOR:g}·(κ + n)·eps64 is reported as **≤floor** (\"at the float64 floor\") "
        "and not as a number, and the float64 `exact` row itself is the reference (**ref**), never compared "
        "with itself. The mpmath cutoff was chosen by measurement (see `svdgrad/sweep/grid.py`, `MPMATH_MAX_N`).")
    add("- **rank_deficient.** n − r exact zero eigenvalues with r = ⌈n/2⌉: the covariance X·Xᵀ of r samples "
        "X = Q_r·diag(√λ), the small-feature-map case of covariance pooling; κ is that of the nonzero part. "
        "The true gradient is infinite there, so the reference is taken at the matrix floored at eps64·λmax "
        "(the float64 floor of the eigen methods), and gradient error and blow-up are measured on the finite "
        "part g − P₀gP₀ (P₀: projector on the null space, from float64 eigh). The forward error is on the "
        "whole Z.")
    add("- **Metrics per row.** forward error ‖Z − Z_ref‖/‖Z_ref‖; gradient error of sym(∂L/∂A); fraction of "
        "non-finite entries in Z and in the gradient; blow-up ‖g‖/‖g_ref‖; κ actually reached by the input "
        "in its dtype (λmax over the r-th largest eigenvalue, evaluated in float64; inf when it is ≤ 0); "
        f"median time of forward + backward over {g.timing_repeats} calls after a warm-up, one thread.")
    add("")
    add("## Summary: most accurate method per regime")
    add("")
    sizes_by_dtype = {d: sorted({r["n"] for r in mrows if r["dtype"] == d and r["reference"] != REF_SELF}
                                - {r["n"] for r in mrows if r["dtype"] == d and r["reference"] == REF_SELF})
                      for d in ax["dtypes"]}
    add("Median gradient error over n, κ in the band and seeds: "
        + "; ".join(f"{d} over n ∈ {{{', '.join(map(str, ns))}}}" for d, ns in sizes_by_dtype.items())
        + " (sizes where float64 `exact` is itself the reference are left out of the float64 ranking, "
        "since `exact` has no error there to rank). \"Within 2×\" lists the methods no worse than twice the best.")
    add("")
    body = []
    for s in summary_rows(rows, ax):
        best = s["best"] + (" (at the float64 floor)" if s["best_floor"] else "")
        body.append([s["dtype"], s["spectrum"], s["band"], best, _e(s["best_err"]),
                     f"{s['second']} ({_e(s['second_err'])})", _ratio(s["best_err"], s["second_err"]),
                     ", ".join(s["ties"]) or "-", f"{s['worst']} ({_e(s['worst_err'])})"])
    add(_table(["dtype", "spectrum", "regime", "best", "its error", "runner-up", "runner-up / best",
                "within 2×", "worst"], body, True))
    add("")
    add("## 1. Gradient error against κ")
    add("")
    add("Panels: dtype × spectrum. Dashed: the float64 floor κ·eps64 (dotted: κ·eps32). "
        "Crosses at the top: non-finite gradient. Hollow markers / grey band: at the floor of a float64 "
        "`exact` reference.")
    add("")
    for n in ax["sizes"]:
        add(f"### n = {n} (reference: {refs[n]})")
        add("")
        add(f"![gradient error n={n}]({figs[f'grad_{n}']})")
        add("")
        for sp in ax["spectra"]:
            add(f"<details><summary>n = {n}, {sp}: median gradient error</summary>")
            add("")
            add(_error_table(cells, ax, n, sp, markdown=True))
            add("")
            add("</details>")
            add("")
    add("## 2. Non-finite gradients and blow-up")
    add("")
    add(f"![non-finite]({figs['nonfinite']})")
    add("")
    add(f"![blow-up]({figs['blowup']})")
    add("")
    body = []
    for m in ax["methods"]:
        for d in ax["dtypes"]:
            rs = [r for r in mrows if r["method"] == m and r["dtype"] == d and not r["error"]
                  and r["reference"] != REF_SELF]
            if not rs:
                continue
            nf = [r for r in rs if r["nonfinite_grad"] > 0]
            body.append([m, d, f"{len(nf)}/{len(rs)}",
                         ", ".join(sorted({r["spectrum"] for r in nf})) or "-",
                         (grid_mod.kappa_label(min(r["log10_kappa"] for r in nf)) if nf else "-")])
    add(_table(["method", "dtype", "runs with a non-finite gradient", "spectra", "smallest κ"], body, True))
    add("")
    if approx:
        add("## 3. Taylor and Padé approximations of 1/(1 − x)")
        add("")
        add(f"![taylor and pade]({figs['approx']})")
        add("")
        add(_approx_text(approx))
        add("")
    if "ns" in figs:
        add("## 4. Newton–Schulz: iterations × κ")
        add("")
        add(f"![newton-schulz]({figs['ns']})")
        add("")
        add(_ns_text(rows))
        add("")
    add("## 5. The float32 precision effect on eigenvalues")
    add("")
    add(f"![eigenvalues]({figs['eig']})")
    add("")
    add(_eig_text(rows))
    add("")
    add("## Timing (median ms, forward + backward, one matrix, one thread)")
    add("")
    tg = _group([r for r in mrows if not r["error"]], "method", "dtype", "n")
    head = ["method"] + [f"n={n} {d}" for n in ax["sizes"] for d in ax["dtypes"]]
    body = [[m] + [f"{_median([r['time_ms'] for r in tg.get((m, d, n), [])]):.2f}" for n in ax["sizes"]
                   for d in ax["dtypes"]] for m in ax["methods"]]
    add(_table(head, body, True))
    add("")
    add("Timings come from a shared 2-core machine with two workers and are noisy; they are the only "
        "numbers here that change between runs.")
    add("")
    if n_err:
        add("## Recorded errors")
        add("")
        msgs = defaultdict(int)
        for r in rows:
            if r["error"]:
                msgs[(r["study"], r["method"], r["dtype"], r["error"][:160])] += 1
        add(_table(["study", "method", "dtype", "error", "rows"],
                   [[*k[:3], k[3].replace("|", "/"), v] for k, v in sorted(msgs.items())], True))
        add("")
    return "\n".join(L) + "\n"


def _approx_text(approx) -> str:
    g = _group(approx, "kind", "degree")
    lines = ["Relative error of each K-rule's 1/(1−x), by 1 − x (max over the x in each range):", ""]
    edges = [(1e-1, 1.0), (1e-3, 1e-1), (1e-6, 1e-3), (1e-9, 1e-6), (0.0, 1e-9)]
    head = ["rule"] + [f"1−x ∈ [{lo:.0e}, {hi:.0e})" if lo else f"1−x < {hi:.0e}" for lo, hi in edges]
    body = []
    for (kind, degree), rs in g.items():
        name = "1/(1−x) float64" if kind == "ordinary" else f"{kind} {degree}"
        row = [name]
        for lo, hi in edges:
            errs = [r["rel_err"] for r in rs if lo <= r["one_minus_x"] < hi]
            row.append(_e(max(errs)) if errs else "-")
        body.append(row)
    lines.append(_table(head, body, True))
    lines.append("")
    lines.append("The Taylor series of degree d misses x^(d+1)/(1−x): its relative error tends to 1 as x → 1 "
                 "(radius of convergence 1). Every Padé [M/N] with N ≥ 1 of 1/(1−x) reduces to 1/(1−x) itself "
                 "(svdgrad computes it in exact arithmetic), so its error stays at rounding level up to the pole: "
                 "the \"Padé\" gradient is the ordinary gradient.")
    return "\n".join(lines)


def _ns_text(rows) -> str:
    ns = [r for r in rows if r["study"] == "ns" and not r["error"]]
    g = defaultdict(list)
    for r in ns:
        nm, it = parse_ns_variant(r["variant"])
        g[(nm, it, r["log10_kappa"])].append(r["grad_err"])
    its = sorted({k[1] for k in g})
    ks = sorted({k[2] for k in g})
    norms = _ordered({k[0] for k in g}, ("trace", "frobenius"))
    head = ["normalization", "iterations"] + [grid_mod.kappa_label(k) for k in ks]
    body = [[nm, it] + [_e(_median(g.get((nm, it, k), []))) for k in ks] for nm in norms for it in its]
    return ("Median gradient error over n and seeds (float64, logspaced), against the gradient of the true "
            "square root: Newton–Schulz is an approximation, so this is its distance from A^{1/2}'s gradient.\n\n"
            + _table(head, body, True))


def _eig_text(rows) -> str:
    eig = [r for r in rows if r["study"] == "eig" and not r["error"]]
    g = _group(eig, "dtype", "n", "log10_kappa")
    sizes = sorted({r["n"] for r in eig})
    dts = _ordered({r["dtype"] for r in eig}, grid_mod.DTYPES)
    ks = sorted({r["log10_kappa"] for r in eig})
    head = ["κ"] + [f"{d} n={n}" for d in dts for n in sizes]
    body = []
    for k in ks:
        row = [grid_mod.kappa_label(k)]
        for d in dts:
            for n in sizes:
                rs = g.get((d, n, k), [])
                row.append(f"{_mean([r['frac_nonpositive'] for r in rs]):.2f} / "
                           f"{_mean([r['frac_wrong_magnitude'] for r in rs]):.2f} / "
                           f"{_kappa_text(_median([r['kappa_reached'] for r in rs]))}")
        body.append(row)
    return ("Per input dtype, the eigenvalues computed in that dtype are compared with the true λ > 0 "
            "(sorted, ascending). Table: fraction ≤ 0 / fraction off by ≥ 10× (or ≤ 0) / median κ actually "
            "reached by the input (∞: its r-th largest eigenvalue, computed in float64, is ≤ 0), over all spectra "
            "and seeds.\n\n" + _table(head, body, True))
