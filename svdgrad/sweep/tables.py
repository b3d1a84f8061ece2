"""Table computations of the sweep report: data from results.csv, no drawing, no prose.

Every function takes the loaded rows (``load``) and returns numbers or rows;
``figures`` draws them and ``markdown`` writes them out.  Each is testable on
a tiny results file.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from pathlib import Path

from . import grid as grid_mod
from .cells import FLOAT64_REFS, REF_EXACT64, REF_LIMIT64, REF_MPMATH, REF_SELF, parse_ns_variant
from .grid import Grid, default_grid, read_grid
from .runner import APPROX, APPROX_COLUMNS, GRID, GRID_FIX, RESULTS, RUNS, matrix_keys, read_runs
from .store import NUMERIC, read_rows, row_key, to_float

EPS64 = 2.0 ** -52
EPS32 = 2.0 ** -23

# ---------------------------------------------------------------------------
# Loading and aggregation.
# ---------------------------------------------------------------------------


def load(out: Path) -> list[dict]:
    rows = []
    for r in read_rows(Path(out) / RESULTS):
        t = dict(r)
        for k in ("n", "log10_kappa", "seed"):
            t[k] = int(t[k])
        for k in NUMERIC:
            t[k] = to_float(t[k])
        rows.append(t)
    return rows


def load_grid(out: Path) -> Grid:
    p = Path(out) / GRID
    return read_grid(p, fix=GRID_FIX) if p.exists() else default_grid()


def median(xs) -> float:
    xs = [x for x in xs if not math.isnan(x)]
    return statistics.median(xs) if xs else math.nan


def mean(xs) -> float:
    xs = [x for x in xs if not math.isnan(x)]
    return sum(xs) / len(xs) if xs else math.nan


def group(rows, *keys):
    g = defaultdict(list)
    for r in rows:
        g[tuple(r[k] for k in keys)].append(r)
    return g


def ordered(values, preferred):
    values = set(values)
    return [v for v in preferred if v in values] + sorted(values - set(preferred), key=str)


class Cell:
    """Aggregate of one (method, dtype, n, κ, spectrum) over seeds."""

    def __init__(self, rows):
        self.rows = rows
        ok = [r for r in rows if not r["error"] and r["reference"] != REF_SELF]
        self.is_reference = any(r["reference"] == REF_SELF for r in rows)
        self.errors = [r["error"] for r in rows if r["error"]]
        self.grad = median([r["grad_err"] for r in ok])
        self.fwd = median([r["fwd_err"] for r in ok])
        self.floor = median([r["ref_floor"] for r in ok])
        self.at_floor = bool(ok) and not math.isnan(self.floor) and self.grad <= self.floor
        self.nonfinite = mean([float(r["nonfinite_grad"] > 0) for r in ok])
        self.blowup = median([r["blowup"] for r in ok])
        self.time = median([r["time_ms"] for r in rows if not r["error"]])
        self.kappa_reached = median([r["kappa_reached"] for r in rows if not r["error"]])
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
    return {k: Cell(v) for k, v in group([r for r in rows if r["study"] == "method"],
                                          "method", "dtype", "n", "log10_kappa", "spectrum").items()}


def axes(rows, g: Grid):
    m = [r for r in rows if r["study"] == "method"]
    return dict(
        methods=ordered({r["method"] for r in m}, g.methods),
        dtypes=ordered({r["dtype"] for r in m}, grid_mod.DTYPES),
        sizes=sorted({r["n"] for r in m}),
        kappas=sorted({r["log10_kappa"] for r in m}),
        spectra=ordered({r["spectrum"] for r in m}, default_grid().spectra),
        seeds=sorted({r["seed"] for r in m}),
    )


# ---------------------------------------------------------------------------
# Tables.
# ---------------------------------------------------------------------------


def error_table(cells, ax, n, spectrum, markdown: bool) -> str:
    head = ["method", "dtype"] + [grid_mod.kappa_label(k) for k in ax["kappas"]]
    body = []
    for m in ax["methods"]:
        for d in ax["dtypes"]:
            body.append([m, d] + [cells[(m, d, n, k, spectrum)].text() if (m, d, n, k, spectrum) in cells else "-"
                                  for k in ax["kappas"]])
    return table(head, body, markdown)


def table(head, body, markdown: bool) -> str:
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(map(str, r)) + " |" for r in body]
        return "\n".join(lines)
    widths = [max(len(str(x)) for x in col) for col in zip(head, *body)]
    fmt = lambda r: "  ".join(str(x).rjust(w) if i > 1 else str(x).ljust(w) for i, (x, w) in enumerate(zip(r, widths)))  # noqa: E731
    return "\n".join([fmt(head), "  ".join("-" * w for w in widths)] + [fmt(r) for r in body])


def reference_of(cells, n, spectrum=None) -> str:
    """The reference of size n's tables (of one spectrum's, if given), in words."""
    refs = {c.reference for k, c in cells.items() if k[2] == n and (spectrum is None or k[4] == spectrum)
            and c.reference and c.reference != REF_SELF}
    if refs == {REF_MPMATH}:
        return "mpmath (50 digits)"
    said = {REF_EXACT64: "float64 exact", REF_LIMIT64: "float64 limit at the exact zero eigenvalues"}
    if refs and refs <= set(said):
        name = said[REF_EXACT64] + "; on rank_deficient the " + said[REF_LIMIT64] if len(refs) > 1 else \
            said[refs.pop()]
        return f"{name} (errors below the float64 floor shown as ≤floor)"
    return ", ".join(sorted(refs)) or "-"


def band_of(k):
    for label, lo, hi in grid_mod.KAPPA_BANDS:
        if lo <= k <= hi:
            return label
    return None


def summary_rows(rows, ax):
    """Per regime (dtype, spectrum, κ band): best method by median gradient error, runner-up, ratio.

    Columns (κ values) where a method is undefined by construction
    (``grid.undefined_by_construction``, e.g. ``ordinary`` at exact ties)
    do not enter the ranking: if that covers the whole regime the method is
    left out of it (``undefined``), otherwise those κ are left out for every
    method of the regime (``dropped_kappas``), so that all medians are over
    the same columns.
    """
    # Where float64 exact is the reference (large n), the float64 exact row is not compared; comparing
    # the others there against exact's n=16 numbers alone would be unfair, so such sizes are left out
    # of that dtype's regimes.
    self_ref = {(r["dtype"], r["n"]) for r in rows if r["study"] == "method" and r["reference"] == REF_SELF}
    mrows = [r for r in rows if r["study"] == "method" and not r["error"] and (r["dtype"], r["n"]) not in self_ref]
    by = defaultdict(lambda: defaultdict(list))
    for r in mrows:
        band = band_of(r["log10_kappa"])
        if band is None:
            continue
        floored = r["reference"] in FLOAT64_REFS and r["grad_err"] <= r["ref_floor"]
        by[(r["dtype"], r["spectrum"], band)][r["method"]].append(
            (r["ref_floor"] if floored else r["grad_err"], floored, r["log10_kappa"]))
    out = []
    for d in ax["dtypes"]:
        for sp in ax["spectra"]:
            for band, _, _ in grid_mod.KAPPA_BANDS:
                ms = by.get((d, sp, band))
                if not ms:
                    continue
                kappas = sorted({k for vals in ms.values() for _, _, k in vals})
                undefined, dropped = {}, set()
                for m in ms:
                    bad = [k for k in kappas if grid_mod.undefined_by_construction(m, sp, k)]
                    if len(bad) == len(kappas):
                        undefined[m] = grid_mod.undefined_by_construction(m, sp, kappas[0])
                    else:
                        dropped.update(bad)
                stats = []
                for m, vals in ms.items():
                    vals = [(v, f) for v, f, k in vals if k not in dropped]
                    if m in undefined or not vals:
                        continue
                    med = statistics.median(v for v, _ in vals)
                    floored = sum(f for _, f in vals) * 2 >= len(vals)
                    stats.append((med, m, floored))
                if not stats:
                    continue
                stats.sort(key=lambda t: (t[0], ax["methods"].index(t[1]) if t[1] in ax["methods"] else 99))
                best, second = stats[0], stats[1] if len(stats) > 1 else None
                ties = [m for v, m, _ in stats if v <= 2 * best[0]] if math.isfinite(best[0]) else []
                out.append(dict(dtype=d, spectrum=sp, band=band, best=best[1], best_err=best[0],
                                best_floor=best[2], second=second[1] if second else "",
                                second_err=second[0] if second else math.nan, ties=ties,
                                worst=stats[-1][1], worst_err=stats[-1][0],
                                dropped_kappas=sorted(dropped), undefined=undefined))
    return out


# ---------------------------------------------------------------------------
# The other tables of the report, as (head, body) of strings or numbers.
# ---------------------------------------------------------------------------


#: What to do about a damaged approx.csv, a row or its header: every sweep rewrites it whole.
APPROX_FIX = "Run `svdgrad sweep --resume` with the same options: it rewrites approx.csv."


def load_approx(out: Path) -> list[dict]:
    out = Path(out)
    if not (out / APPROX).exists():
        return []
    return [{k: (v if k in ("kind", "degree") else float(v)) for k, v in r.items()}
            for r in read_rows(out / APPROX, APPROX_COLUMNS, floats=APPROX_COLUMNS[2:], fix=APPROX_FIX,
                               header_fix=APPROX_FIX)]


def load_runs(out: Path) -> list[dict]:
    return read_runs(Path(out) / RUNS)


def missing_rows(all_rows, g: Grid, runs=()) -> tuple[int, int]:
    """(rows the grid defines that results.csv lacks, rows it defines): a sweep stopped midway lacks some.

    The baselines counted are those the sweep ran: which ones it runs depends on its torch
    (``grid.available_baselines``), and the report may be drawn under another.  So they are the
    baselines the rows hold, and those the last finished run (``runs``) did not skip.
    """
    baselines = {r["method"] for r in all_rows if r["study"] == "baseline"}
    if runs:
        skipped = runs[-1].get("skipped_baselines") or {}
        baselines |= {b for b in g.baselines if b not in skipped}
    baselines = [b for b in g.baselines if b in baselines]
    expected = {k for n, kk, sp, s in g.matrices() for k in matrix_keys(g, n, kk, sp, s, baselines=baselines)}
    return len(expected - {row_key(r) for r in all_rows}), len(expected)


def completeness_text(missing: int, expected: int) -> str:
    """One line on whether results.csv holds every row its grid defines (REPORT.md and ``svdgrad report``)."""
    if not missing:
        return f"all {expected} rows the grid defines are present (the sweep is complete)"
    return (f"**Incomplete: {missing} of the {expected} rows the grid defines are missing** (the sweep was stopped "
            f"before its end): the tables and figures below are drawn from the rows present. Run `svdgrad sweep` "
            f"again with the same options and --resume to compute the missing rows")


#: Ranges of 1 − x of the approximation table: [lo, hi).
APPROX_EDGES = ((1e-1, 1.0), (1e-3, 1e-1), (1e-6, 1e-3), (1e-9, 1e-6), (0.0, 1e-9))


def approx_table(approx) -> tuple[list, list]:
    """Max relative error of each K-rule's 1/(1−x) per range of 1 − x."""
    g = group(approx, "kind", "degree")
    head = ["rule"] + [f"1−x ∈ [{lo:.0e}, {hi:.0e})" if lo else f"1−x < {hi:.0e}" for lo, hi in APPROX_EDGES]
    body = []
    for (kind, degree), rs in g.items():
        row = ["1/(1−x) float64" if kind == "ordinary" else f"{kind} {degree}"]
        for lo, hi in APPROX_EDGES:
            errs = [r["rel_err"] for r in rs if lo <= r["one_minus_x"] < hi]
            row.append(max(errs) if errs else math.nan)
        body.append(row)
    return head, body


def ns_table(rows) -> tuple[list, list]:
    """Median Newton–Schulz gradient error per (normalization, iterations) and κ."""
    ns = [r for r in rows if r["study"] == "ns" and not r["error"]]
    g = defaultdict(list)
    for r in ns:
        nm, it = parse_ns_variant(r["variant"])
        g[(nm, it, r["log10_kappa"])].append(r["grad_err"])
    its = sorted({k[1] for k in g})
    ks = sorted({k[2] for k in g})
    norms = ordered({k[0] for k in g}, ("trace", "frobenius"))
    head = ["normalization", "iterations"] + [grid_mod.kappa_label(k) for k in ks]
    body = [[nm, it] + [median(g.get((nm, it, k), [])) for k in ks] for nm in norms for it in its]
    return head, body


def eig_table(rows) -> tuple[list, list]:
    """Per κ and (dtype, n): (fraction ≤ 0, fraction off by ≥ 10×, median κ reached) of the computed eigenvalues."""
    eig = [r for r in rows if r["study"] == "eig" and not r["error"]]
    g = group(eig, "dtype", "n", "log10_kappa")
    sizes = sorted({r["n"] for r in eig})
    dts = ordered({r["dtype"] for r in eig}, grid_mod.DTYPES)
    ks = sorted({r["log10_kappa"] for r in eig})
    head = ["κ"] + [f"{d} n={n}" for d in dts for n in sizes]
    body = []
    for k in ks:
        row = [grid_mod.kappa_label(k)]
        for d in dts:
            for n in sizes:
                rs = g.get((d, n, k), [])
                row.append((mean([r["frac_nonpositive"] for r in rs]), mean([r["frac_wrong_magnitude"] for r in rs]),
                            median([r["kappa_reached"] for r in rs])))
        body.append(row)
    return head, body


def nonfinite_table(rows, ax) -> tuple[list, list]:
    """Per (method, dtype): runs with a non-finite gradient, in which spectra, from which κ."""
    mrows = [r for r in rows if r["study"] == "method"]
    body = []
    for m in ax["methods"]:
        for d in ax["dtypes"]:
            rs = [r for r in mrows if r["method"] == m and r["dtype"] == d and not r["error"]
                  and r["reference"] != REF_SELF]
            if not rs:
                continue
            nf = [r for r in rs if r["nonfinite_grad"] > 0]
            body.append([m, d, f"{len(nf)}/{len(rs)}", ", ".join(sorted({r["spectrum"] for r in nf})) or "-",
                         (grid_mod.kappa_label(min(r["log10_kappa"] for r in nf)) if nf else "-")])
    return ["method", "dtype", "runs with a non-finite gradient", "spectra", "smallest κ"], body


def timing_table(rows, ax) -> tuple[list, list]:
    """Median ms of forward + backward per method and (n, dtype)."""
    tg = group([r for r in rows if r["study"] == "method" and not r["error"]], "method", "dtype", "n")
    head = ["method"] + [f"n={n} {d}" for n in ax["sizes"] for d in ax["dtypes"]]
    body = [[m] + [median([r["time_ms"] for r in tg.get((m, d, n), [])]) for n in ax["sizes"] for d in ax["dtypes"]]
            for m in ax["methods"]]
    return head, body


def error_messages(rows) -> list[list]:
    """(study, function, method, dtype, message, count) of the recorded errors."""
    msgs = defaultdict(int)
    for r in rows:
        if r["error"]:
            msgs[(r["study"], r["function"], r["method"], r["dtype"], r["error"][:160])] += 1
    return [[*k, v] for k, v in sorted(msgs.items())]


def headline_size(ax, g: Grid):
    """The largest n whose reference is mpmath (every method, exact included, is measured there), or None."""
    sizes = [n for n in ax["sizes"] if n <= g.mpmath_max_n]
    return max(sizes) if sizes else None


# ---------------------------------------------------------------------------
# The function axis, the features route, the options study, the baselines.
# ---------------------------------------------------------------------------


def sqrt_rows(rows) -> list[dict]:
    """The rows of the sqrt study (main, Newton–Schulz side study, eigenvalue probe): sections 1–5 of the report."""
    return [r for r in rows if (r["study"] in ("method", "ns") and r["function"] == "sqrt") or r["study"] == "eig"]


def function_rows(rows, function: str) -> list[dict]:
    """Main-study rows of one function."""
    return [r for r in rows if r["study"] == "method" and r["function"] == function]


def functions_present(rows, g: Grid) -> list[str]:
    return ordered({r["function"] for r in rows if r["study"] == "method"}, g.functions)


def gram_table(rows) -> tuple[list, list]:
    """Features route: median gradient error (w.r.t. X) per (route, dtype, n) and κ(X Xᵀ); cells are numbers,
    ``"ref"`` where the row is the reference, or ``("floor", value)`` at the float64 reference's floor."""
    from .cells import GRAM_ROUTE, GRAM_SVD, GRAM_VIA_SIGMA

    gr = [r for r in rows if r["study"] == "gram" and not r["error"]]
    g = group(gr, "method", "dtype", "n", "log10_kappa")
    ks = sorted({r["log10_kappa"] for r in gr})
    head = ["route", "dtype", "n"] + [grid_mod.kappa_label(k) for k in ks]
    body = []
    for m in ordered({r["method"] for r in gr}, (GRAM_ROUTE, GRAM_SVD, GRAM_VIA_SIGMA)):
        for d in ordered({r["dtype"] for r in gr if r["method"] == m}, grid_mod.DTYPES):
            for n in sorted({r["n"] for r in gr}):
                cells = []
                for k in ks:
                    rs = g.get((m, d, n, k), [])
                    if any(r["reference"] == REF_SELF for r in rs):
                        cells.append("ref")
                    else:
                        c = Cell(rs) if rs else None
                        cells.append(("floor", c.floor) if c is not None and c.at_floor
                                     else (c.grad if c is not None else math.nan))
                body.append([m, d, n] + cells)
    return head, body


def gram_ratio(rows) -> list[dict]:
    """Per (dtype, n, κ): median gradient errors of gram_sqrtm, its SVD route (float32) and sqrtm(X Xᵀ)."""
    from .cells import GRAM_ROUTE, GRAM_SVD, GRAM_VIA_SIGMA

    gr = [r for r in rows if r["study"] == "gram" and not r["error"] and r["reference"] != REF_SELF]
    g = group(gr, "method", "dtype", "n", "log10_kappa")
    out = []
    for d, n, k in sorted({(r["dtype"], r["n"], r["log10_kappa"]) for r in gr}):
        a = median([r["grad_err"] for r in g.get((GRAM_ROUTE, d, n, k), [])])
        b = median([r["grad_err"] for r in g.get((GRAM_VIA_SIGMA, d, n, k), [])])
        c = median([r["grad_err"] for r in g.get((GRAM_SVD, d, n, k), [])])
        out.append(dict(dtype=d, n=n, log10_kappa=k, route=a, via_sigma=b, svd=c))
    return out


def _short(label: str) -> str:
    """'newton_schulz:iterations=3,backward=lyapunov' -> 'NS it=3 lya' (figure annotations)."""
    name, _, opts = label.partition(":")
    abbrev = {"newton_schulz": "NS", "power_iteration": "PI", "iterations": "it", "num_degree": "p",
              "den_degree": "q", "degree": "deg", "backward": "", "lyapunov": "lya", "manual": "man"}
    parts = [abbrev.get(name, name)]
    for kv in filter(None, opts.split(",")):
        k, _, v = kv.partition("=")
        k, v = abbrev.get(k, k), abbrev.get(v, v)
        parts.append(f"{k}={v}" if k else v)
    return " ".join(parts)


def accuracy_cost(rows, n: int) -> list[dict]:
    """One point per (setting, dtype) of the options study at size n: median time over every κ, and per κ
    band the median gradient error (a float64-exact reference's floor where the median row is below it)."""
    orows = [r for r in rows if r["study"] == "option" and r["n"] == n and not r["error"]]
    out = []
    for (label, d), rs in group(orows, "method", "dtype").items():
        measured = [r for r in rs if r["reference"] != REF_SELF]
        err, floored = {}, {}
        for band, lo, hi in grid_mod.KAPPA_BANDS:
            b = [r for r in measured if lo <= r["log10_kappa"] <= hi]
            if not b:
                continue
            vals = [(r["ref_floor"] if r["reference"] in FLOAT64_REFS and r["grad_err"] <= r["ref_floor"]
                     else r["grad_err"]) for r in b]
            err[band] = median(vals)
            floored[band] = sum(r["reference"] in FLOAT64_REFS and r["grad_err"] <= r["ref_floor"] for r in b) * 2 \
                >= len(b)
        out.append(dict(label=label, method=label.partition(":")[0], short=_short(label), dtype=d, n=n,
                        time=median([r["time_ms"] for r in rs]), err=err, floored=floored,
                        is_reference=not measured,
                        nonfinite=mean([float(r["nonfinite_grad"] > 0) for r in measured])))
    return out


def option_sizes(rows) -> list[int]:
    return sorted({r["n"] for r in rows if r["study"] == "option"})


def baseline_rows(rows) -> list[dict]:
    return [r for r in rows if r["study"] == "baseline"]


def skipped_baselines(runs) -> dict:
    """{baseline: why} recorded by the runs that wrote results.csv (the latest run's word wins)."""
    out = {}
    for r in runs:
        out.update(r.get("skipped_baselines") or {})
    return out
