"""Write the README's "Which method should I use?" block from the committed reports' data.

    python studies/which_method.py            # rewrite the block between the README's markers
    python studies/which_method.py --check    # exit 1 if the block differs from what the data gives

Every number comes from ``reports/condition_sweep/results.csv`` (accuracy, failures: read with
``svdgrad.sweep.tables``) and ``reports/performance/raw/*.json`` (cost: read with
``svdgrad.bench.report``).  Nothing here is typed by hand; ``tests/test_sweep_which_method.py`` checks that
the committed README block is what this script produces from the committed data.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SWEEP = Path("reports") / "condition_sweep"
PERF = Path("reports") / "performance"
README = Path("README.md")
START = "<!-- which-method:start"
END = "<!-- which-method:end -->"

#: How each function is named.
ENTRY = {"sqrt": "sqrtm", "inv_sqrt": "inv_sqrtm", "log": "logm", "power": "powm"}

#: Above this median relative gradient error a method is said to have lost the gradient.
LOST = 0.5
#: "Within this factor of the best" counts as a tie in the recommendations.
TIE = 2.0


def _e(x) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    if math.isinf(x):
        return "non-finite"
    return f"{x:.0e}" if x < 1e-3 or x >= 10 else f"{x:.2g}"


def _pct(x) -> str:
    return f"{100 * x:.0f}%"


# ---------------------------------------------------------------------------
# Accuracy and failures: the sweep.
# ---------------------------------------------------------------------------


def _mpmath_rows(rows, function):
    """Main-study rows of ``function`` measured against mpmath (every method, exact included)."""
    from svdgrad.sweep.cells import REF_MPMATH

    return [r for r in rows if r["study"] == "method" and r["function"] == function and not r["error"]
            and r["reference"] == REF_MPMATH]


def accuracy(rows, function, g):
    """{(method, dtype, band): (median gradient error, fraction non-finite)} against mpmath, leaving out the
    columns (spectrum, κ) where some method is undefined by construction (``grid.undefined_by_construction``)
    for every method, as ``tables.summary_rows`` does, so that all medians are over the same columns.  (Leaving
    them out for that method alone compared exact's median, ties included, with ordinary's, ties excluded.)"""
    from svdgrad.sweep import grid as grid_mod
    from svdgrad.sweep.tables import group

    out = {}
    mine = _mpmath_rows(rows, function)
    undefined = {(r["spectrum"], r["log10_kappa"]) for r in mine
                 if grid_mod.undefined_by_construction(r["method"], r["spectrum"], r["log10_kappa"])}
    sel = [r for r in mine if (r["spectrum"], r["log10_kappa"]) not in undefined]
    for band, lo, hi in grid_mod.KAPPA_BANDS:
        b = [r for r in sel if lo <= r["log10_kappa"] <= hi]
        for (m, d), rs in group(b, "method", "dtype").items():
            errs = [r["grad_err"] for r in rs if not math.isnan(r["grad_err"])]
            nf = sum(r["nonfinite_grad"] > 0 for r in rs) / len(rs)
            out[(m, d, band)] = (statistics.median(errs) if errs else math.nan, nf)
    return out


def accuracy_section(rows, g) -> list[str]:
    from svdgrad.sweep import grid as grid_mod
    from svdgrad.sweep.tables import functions_present, ordered

    bands = [b for b, _, _ in grid_mod.KAPPA_BANDS]
    L = ["### Accuracy against κ and dtype", ""]
    sizes = sorted({r["n"] for r in rows if r["study"] == "method" and r["reference"] == "mpmath"})
    L += [f"Median relative error of the gradient against the 50-digit mpmath reference (n ∈ "
          f"{{{', '.join(map(str, sizes))}}}, every seed of the sweep). Where `ordinary` divides by an exact tie "
          "(κ = 1, and the repeated and rank-deficient spectra) the column is left out for every method, so that "
          "all medians are over the same columns; how each method fails there is in the failure table below. "
          "From `reports/condition_sweep/results.csv`.", ""]
    recs = []
    for f in functions_present(rows, g):
        acc = accuracy(rows, f, g)
        if not acc:
            continue
        methods = ordered({k[0] for k in acc}, g.methods)
        dtypes = ordered({k[1] for k in acc}, grid_mod.DTYPES)
        head = ["method"] + [f"{d}, {b.split(' (')[0]}" for d in dtypes for b in bands]
        body = []
        for m in methods:
            cells = []
            for d in dtypes:
                for b in bands:
                    err, nf = acc.get((m, d, b), (math.nan, 0.0))
                    cells.append(_e(err) + (f" ({_pct(nf)} non-finite)" if nf > 0 else ""))
            body.append([f"`{m}`"] + cells)
        table = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)] + \
                ["| " + " | ".join(r) + " |" for r in body]
        kappa_ranges = ", ".join(b for b in bands)
        if f == "sqrt":
            L += [f"`{ENTRY[f]}` (bands: {kappa_ranges}):", ""] + table + [""]
        else:
            L += [f"<details><summary><code>{ENTRY[f]}</code></summary>", ""] + table + ["", "</details>", ""]
        for d in dtypes:
            for b in bands:
                cand = [(acc[(m, d, b)][0], m) for m in methods if (m, d, b) in acc
                        and acc[(m, d, b)][1] == 0 and math.isfinite(acc[(m, d, b)][0])]
                if not cand:
                    continue
                best, bm = min(cand)
                ties = [m for v, m in sorted(cand) if v <= TIE * best and m != bm]
                lost = best > LOST
                recs.append((f, d, b, bm, best, ties, lost))
    L += ["Most accurate finite method per function, dtype and band (ties: within "
          f"{TIE:g}× of the best; \"lost\": even the best is above {LOST:g} relative error):", ""]
    L += ["| function | dtype | κ band | best | its error | also within 2× |", "|---|---|---|---|---|---|"]
    for f, d, b, bm, best, ties, lost in recs:
        L.append(f"| `{ENTRY[f]}` | {d} | {b} | `{bm}` | {_e(best)}{' (lost)' if lost else ''} | "
                 f"{', '.join(f'`{t}`' for t in ties) or '-'} |")
    L += [""]
    return L


def features_section(rows) -> list[str]:
    from svdgrad.sweep.tables import gram_ratio

    pts = [p for p in gram_ratio(rows) if p["dtype"] == "float32" and p["n"] <= 32]
    if not pts:
        return []
    worst = max(pts, key=lambda p: p["log10_kappa"])
    return ["### Covariance of features: use `gram_sqrtm(X)`", "",
            f"In float32 at κ(X Xᵀ) = 1e{worst['log10_kappa']} (n = {worst['n']}, against mpmath), "
            f"`gram_sqrtm(X)` has a median gradient error of {_e(worst['route'])}, `sqrtm(X @ X.mT)` "
            f"{_e(worst['via_sigma'])}: forming Σ in float32 squares the condition number. "
            + (f"Its SVD route (`algorithm=\"svd\"`, float32 throughout) has {_e(worst['svd'])}. "
               if math.isfinite(worst.get("svd", math.nan)) else "")
            + "Section \"features route\" of the sweep report has every κ and n.", ""]


def failure_section(rows, g) -> list[str]:
    from svdgrad.sweep import grid as grid_mod
    from svdgrad.sweep.tables import group, ordered

    mrows = [r for r in rows if r["study"] == "method" and r["reference"] != "is-reference"]
    L = ["### Failure modes", "",
         "Runs of the sweep (every function, n, spectrum, seed) with a non-finite gradient, a gradient blown "
         f"up beyond 10× the reference's norm, or an error raised; `ordinary` at exact ties is left out (it is "
         "undefined there by construction).", ""]
    L += ["| function | method | dtype | non-finite | blow-up > 10× | raised | from κ |", "|---|---|---|---|---|---|---|"]
    n_rows = 0
    for (f, m, d), rs in sorted(group(mrows, "function", "method", "dtype").items(),
                                key=lambda kv: (g.functions.index(kv[0][0]) if kv[0][0] in g.functions else 99,
                                                ordered([kv[0][1]], g.methods), kv[0][2])):
        rs = [r for r in rs if not grid_mod.undefined_by_construction(m, r["spectrum"], r["log10_kappa"])]
        if not rs:
            continue
        ok = [r for r in rs if not r["error"]]
        nf = [r for r in ok if r["nonfinite_grad"] > 0]
        bl = [r for r in ok if math.isfinite(r["blowup"]) and r["blowup"] > 10]
        er = [r for r in rs if r["error"]]
        bad = nf + bl + er
        if not bad:
            continue
        n_rows += 1
        L.append(f"| `{ENTRY.get(f, f)}` | `{m}` | {d} | {len(nf)}/{len(rs)} | {len(bl)}/{len(rs)} | "
                 f"{len(er)}/{len(rs)} | 1e{min(r['log10_kappa'] for r in bad)} |")
    if not n_rows:
        L.append("| - | - | - | none | none | none | - |")
    msgs = {}
    for r in rows:
        if r["error"]:
            msgs.setdefault(r["error"].split(":")[0], 0)
            msgs[r["error"].split(":")[0]] += 1
    if msgs:
        L += ["", "Errors raised, by type: " + ", ".join(f"{k} ×{v}" for k, v in sorted(msgs.items())) + "."]
    L += [""]
    return L


# ---------------------------------------------------------------------------
# Cost: the bench.
# ---------------------------------------------------------------------------


def cost_section(perf: Path) -> list[str]:
    from svdgrad.bench import report as bench_report

    raw = perf / "raw"
    L = ["### Cost against eigh", ""]
    tpath, rpath, run_path = raw / "targets_cpu.json", raw / "ratio_targets_cpu.json", raw / "run_cpu.json"
    if not tpath.exists():
        return L + ["Not measured yet (`svdgrad bench`).", ""]
    run = json.loads(run_path.read_text()) if run_path.exists() else {}
    targets = json.loads(tpath.read_text())
    loads = [v[0] for v in run.get("load", {}).values() if v]
    L += [f"CPU, {run.get('torch_threads', '?')} threads, B = {targets['batch']}, n = {targets['size']}, "
          f"forward + backward, interleaved (`reports/performance/`; highest 1-min load during the run "
          f"{max(loads):.2f} on {run.get('cpu_count', '?')} cores). t / t(eigh autograd) is the cost "
          "relative to `U diag(f(λ)) Uᵀ` through `torch.linalg.eigh`'s own backward:" if loads else "", ""]
    head = ["method"] + [f"t / t(eigh autograd), {d}" for d in targets["dtypes"]]
    from svdgrad.bench import grid as bench_grid

    timed = next(iter(targets["dtypes"].values()))["times"]
    variants = [v.label for v in bench_grid.VARIANTS if v.label in timed]
    body = []
    for v in variants:
        cells = []
        for d, res in targets["dtypes"].items():
            med, _ = bench_report.relative(res["times"], v, "eigh_autograd")
            cells.append(f"{med:.2f}")
        body.append([f"`{v}`"] + cells)
    L += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)] + ["| " + " | ".join(r) + " |" for r in body]
    L += [""]
    pypath = raw / "pytest_benchmark_cpu.json"
    if pypath.exists():
        pyjson = json.loads(pypath.read_text())
        bench = bench_report._benchmarks(pyjson)
        eigh = {(r["n"], r["dtype"]): r["median"] for r in bench if r["label"] == "eigh_autograd"}
        others = [r for r in bench if r["kind"] in ("function", "gram", "jvp") and (r["n"], r["dtype"]) in eigh]
        if others:
            sizes = sorted({r["n"] for r in others})
            dts = sorted({r["dtype"] for r in others})
            cols = [(n, d) for n in sizes for d in dts]
            by = {(r["label"], r["n"], r["dtype"]): r["median"] / eigh[(r["n"], r["dtype"])] for r in others}
            labels = list(dict.fromkeys(r["label"] for r in others))
            when, finished = str(pyjson.get("datetime", "?"))[:16], str(run.get("finished", "?"))[:16]
            # the same run when the grid was written between the run's start and finish (ISO times sort as text)
            same = str(run.get("started", "~"))[:16] <= when <= finished
            L += ["The other functions, the features route and forward mode, from the sequential pytest-benchmark "
                  + ("grid of the same run" if same else f"grid of {when} UTC (the interleaved measurements here "
                     f"are from {finished} UTC; `svdgrad bench --no-pytest` keeps the older grid, and the code "
                     f"has changed in between)")
                  + " (median time over eigh autograd's at the same n and dtype; the "
                  "features route's X has twice as many columns as rows):", "",
                  "| case | " + " | ".join(f"n={n} {d}" for n, d in cols) + " |", "|---|" + "---|" * len(cols)]
            for lab in labels:
                L.append(f"| `{lab}` | " + " | ".join(f"{by[(lab, n, d)]:.2f}" if (lab, n, d) in by else "-"
                                                    for n, d in cols) + " |")
            L += [""]
    if rpath.exists():
        rows = bench_report.ratio_target_rows(json.loads(rpath.read_text()))
        L += ["Speed targets (float32, interleaved):", "",
              "| target | n | B | measured | limit | status |", "|---|---|---|---|---|---|"]
        for r in rows:
            L.append(f"| {r['name']} | {r['n']} | {r['batch']} | {r['ratio']:.2f} | ≤ {r['limit']:g} | "
                     f"{'met' if r['met'] else 'not met'} |")
        L += [""]
    else:
        L += ["The speed targets of the function family were not in this bench run.", ""]
    return L


# ---------------------------------------------------------------------------
# The block.
# ---------------------------------------------------------------------------


def render(root: Path = ROOT) -> str:
    """The Markdown between the README's markers, from the data under ``root``."""
    sys.path.insert(0, str(root))
    from svdgrad.sweep import tables

    out = root / SWEEP
    rows = tables.load(out)
    g = tables.load_grid(out)
    L = ["Measured, not argued: the numbers below are computed by `studies/which_method.py` from the "
         "committed sweep (`reports/condition_sweep/`) and bench (`reports/performance/`) results.", ""]
    L += accuracy_section(rows, g)
    L += features_section(rows)
    L += cost_section(root / PERF)
    L += failure_section(rows, g)
    return "\n".join(L).rstrip("\n") + "\n"


def replace_block(readme: str, block: str) -> str:
    i = readme.index(START)
    i = readme.index("\n", i) + 1  # keep the start marker's line
    j = readme.index(END)
    return readme[:i] + block + readme[j:]


def current_block(readme: str) -> str:
    i = readme.index(START)
    i = readme.index("\n", i) + 1
    return readme[i:readme.index(END)]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="exit 1 if the README block is not what the data gives")
    p.add_argument("--root", type=Path, default=ROOT)
    args = p.parse_args(argv)
    path = args.root / README
    text = path.read_text()
    block = render(args.root)
    if args.check:
        if current_block(text) != block:
            print(f"{path}: the which-method block is stale; run python studies/which_method.py", file=sys.stderr)
            return 1
        return 0
    path.write_text(replace_block(text, block))
    print(f"wrote the which-method block of {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
