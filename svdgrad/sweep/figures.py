"""Figures of the sweep report: one function per figure family, drawn from ``tables``' data.

Each function takes loaded rows (or the cells of ``tables.method_cells``)
and a path, and writes one PNG; none computes a result.
"""

from __future__ import annotations

import math

from .._io import savefig_atomic
from . import grid as grid_mod
from .cells import REF_SELF, parse_ns_variant
from .grid import default_grid
from .tables import EPS32, EPS64, group, mean, median, ordered, reference_of

#: Gradient errors above this are drawn at it (non-finite ones with their own marker, never joined by lines).
PLOT_CEIL = 1e3

_MARKERS = "osD^v<>pP*hX"

#: How each function is named in titles.
FUNCTION_TITLES = {"sqrt": "sqrtm", "inv_sqrt": "inv_sqrtm", "log": "logm", "power": "powm"}


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
    # No bbox_inches="tight": it draws the figure twice; the margins are set by _layout.  Drawn in memory, then
    # written by write_atomic: a failed write leaves no temporary, a killed one NAME.HOST-PID.tmp that the next
    # sweep removes (remove_stale_temporaries).
    savefig_atomic(fig, path, metadata={"Software": None})


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


def fig_grad_error(cells, ax, n, path, function="sqrt"):
    plt = _plt()
    colors = _colors(ax["methods"])
    nd, ns = len(ax["dtypes"]), len(ax["spectra"])
    fig, axes = plt.subplots(nd, ns, figsize=(3.0 * ns + 0.7, 2.5 * nd + 1.3), squeeze=False, sharex=True, sharey=True)
    ks = ax["kappas"]
    kap = [10.0 ** k for k in ks]
    exact_ref = reference_of(cells, n).startswith("float64")
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
                        ys.append(max(min(c.grad, PLOT_CEIL), 1e-17))
                mk = _MARKERS[mi % len(_MARKERS)]
                a.plot(xs, ys, marker=mk, ms=3, lw=1, color=colors[m], label=m)
                a.plot(xf, yf, ls="none", marker=mk, ms=4, mfc="none", color=colors[m])
                a.plot(xi, [PLOT_CEIL] * len(xi), ls="none", marker="x", ms=5, color=colors[m])
            a.set_xscale("log")
            a.set_yscale("log")
            a.set_ylim(1e-17, PLOT_CEIL * 3)
            a.set_title(f"{d}, {sp}")
            if i == nd - 1:
                a.set_xlabel("κ")
            if j == 0:
                a.set_ylabel("rel. gradient error")
            a.grid(True, which="major", lw=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    _layout(fig, handles, labels, ncol=6, title=f"{FUNCTION_TITLES.get(function, function)}: gradient error vs κ, "
            f"n = {n} (median over seeds; × at the top "
            f"= non-finite; hollow = at the reference floor)")
    _save(fig, path)
    plt.close(fig)


def _panels(plt, ax, height=2.3):
    nd, ns = len(ax["dtypes"]), len(ax["spectra"])
    return plt.subplots(nd, ns, figsize=(3.0 * ns + 0.7, height * nd + 1.1), squeeze=False, sharex=True, sharey=True)


def _method_groups(rows):
    mrows = [r for r in rows if r["study"] == "method" and not r["error"] and r["reference"] != REF_SELF]
    return group(mrows, "method", "dtype", "spectrum", "log10_kappa")


def fig_nonfinite(rows, ax, path):
    """Fraction of runs (all n, seeds) with a non-finite gradient against κ, per dtype × spectrum."""
    plt = _plt()
    colors = _colors(ax["methods"])
    groups = _method_groups(rows)
    ks = ax["kappas"]
    kap = [10.0 ** k for k in ks]
    fig, axes = _panels(plt, ax)
    for i, d in enumerate(ax["dtypes"]):
        for j, sp in enumerate(ax["spectra"]):
            a = axes[i][j]
            for mi, m in enumerate(ax["methods"]):
                ys = [mean([float(r["nonfinite_grad"] > 0) for r in groups.get((m, d, sp, k), [])]) for k in ks]
                a.plot(kap, ys, marker=_MARKERS[mi % len(_MARKERS)], ms=3, lw=1, color=colors[m], label=m)
            a.set_xscale("log")
            a.set_ylim(-0.05, 1.05)
            a.set_title(f"{d}, {sp}")
            if i == len(ax["dtypes"]) - 1:
                a.set_xlabel("κ")
            if j == 0:
                a.set_ylabel("fraction non-finite")
            a.grid(True, lw=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    _layout(fig, handles, labels, ncol=7, title="Fraction of runs with a non-finite gradient (all n, seeds)")
    _save(fig, path)
    plt.close(fig)


def fig_blowup(rows, ax, path):
    """Median blow-up ‖g‖/‖g_ref‖ against κ.  Where the median run is non-finite, a ▲ on the top edge
    of the panel, not a made-up finite value joined to the real points."""
    plt = _plt()
    colors = _colors(ax["methods"])
    groups = _method_groups(rows)
    ks = ax["kappas"]
    kap = [10.0 ** k for k in ks]
    fig, axes = _panels(plt, ax)
    for i, d in enumerate(ax["dtypes"]):
        for j, sp in enumerate(ax["spectra"]):
            a = axes[i][j]
            edge = a.get_xaxis_transform()  # x in data, y in axes fraction: y = 1 is the top edge
            for mi, m in enumerate(ax["methods"]):
                ys = [median([r["blowup"] for r in groups.get((m, d, sp, k), [])]) for k in ks]
                mk = _MARKERS[mi % len(_MARKERS)]
                finite = [y if math.isfinite(y) else math.nan for y in ys]  # NaN breaks the line
                a.plot(kap, finite, marker=mk, ms=3, lw=1, color=colors[m], label=m)
                xi = [x for x, y in zip(kap, ys) if math.isinf(y)]
                a.plot(xi, [1.0] * len(xi), ls="none", marker="^", ms=5, color=colors[m], transform=edge,
                       clip_on=False)
            a.set_xscale("log")
            a.set_yscale("log")
            a.axhline(1.0, color="k", lw=0.6, ls="--")
            a.set_title(f"{d}, {sp}")
            if i == len(ax["dtypes"]) - 1:
                a.set_xlabel("κ")
            if j == 0:
                a.set_ylabel("blow-up ‖g‖ / ‖g_ref‖")
            a.grid(True, lw=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    _layout(fig, handles, labels, ncol=7, title="Blow-up ‖g‖/‖g_ref‖ of the gradient (median over n, seeds; "
            "▲ on the top edge = the median run is non-finite; dashed = 1)")
    _save(fig, path)
    plt.close(fig)


def fig_headline(cells, ax, n, path):
    """Every method, exact included, against the mpmath reference at size n: one panel per dtype,
    logspaced spectrum (the README's headline figure)."""
    plt = _plt()
    colors = _colors(ax["methods"])
    sp = "logspaced" if "logspaced" in ax["spectra"] else ax["spectra"][0]
    ks = ax["kappas"]
    kap = [10.0 ** k for k in ks]
    fig, axes = plt.subplots(1, len(ax["dtypes"]), figsize=(4.2 * len(ax["dtypes"]) + 0.8, 4.2), squeeze=False,
                             sharey=True)
    for j, d in enumerate(ax["dtypes"]):
        a = axes[0][j]
        a.plot(kap, [k * EPS64 for k in kap], "k--", lw=1, label="κ·eps64")
        if d == "float32":
            a.plot(kap, [k * EPS32 for k in kap], "k:", lw=1, label="κ·eps32")
        for mi, m in enumerate(ax["methods"]):
            mk = _MARKERS[mi % len(_MARKERS)]
            xs, ys, xi = [], [], []
            for k, kv in zip(ks, kap):
                c = cells.get((m, d, n, k, sp))
                if c is None or math.isnan(c.grad):
                    continue
                if math.isinf(c.grad):
                    xi.append(kv)
                    xs.append(kv)
                    ys.append(math.nan)  # break the line
                else:
                    xs.append(kv)
                    ys.append(max(c.grad, 1e-17))
            a.plot(xs, ys, marker=mk, ms=4, lw=1.2, color=colors[m], label=m)
            a.plot(xi, [1.0] * len(xi), ls="none", marker="^", ms=6, color=colors[m],
                   transform=a.get_xaxis_transform(), clip_on=False)
        a.set_xscale("log")
        a.set_yscale("log")
        a.set_xlabel("κ")
        a.set_title(f"{d} input")
        a.grid(True, which="major", lw=0.3)
    axes[0][0].set_ylabel("relative gradient error vs mpmath")
    handles, labels = axes[0][0].get_legend_handles_labels()
    _layout(fig, handles, labels, ncol=5, title=f"Gradient error vs mpmath (50 digits), n = {n}, {sp}; median over seeds; "
            f"▲ on top edge = non-finite")
    _save(fig, path)
    plt.close(fig)


def fig_approx(approx, path):
    plt = _plt()
    groups = group(approx, "kind", "degree")
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
    norms = ordered({r["_norm"] for r in ns}, ("trace", "frobenius"))
    sizes = sorted({r["n"] for r in ns})
    its = sorted({r["_it"] for r in ns})
    ks = sorted({r["log10_kappa"] for r in ns})
    g = group(ns, "_norm", "n", "_it", "log10_kappa")
    fig, axes = plt.subplots(len(norms), len(sizes), figsize=(max(3.4 * len(sizes) + 1.6, 7.5), 2.6 * len(norms) + 1.2), squeeze=False)
    im = None
    for i, nm in enumerate(norms):
        for j, n in enumerate(sizes):
            M = [[math.log10(max(median([r["grad_err"] for r in g.get((nm, n, it, k), [])]), 1e-16))
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
    g = group(eig, "dtype", "n", "spectrum", "log10_kappa")
    sizes = sorted({r["n"] for r in eig})
    dtypes = ordered({r["dtype"] for r in eig}, grid_mod.DTYPES)
    spectra = ordered({r["spectrum"] for r in eig}, default_grid().spectra)
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
                    ys = [mean([r[col] for r in g.get((d, n, sp, k), [])]) for k in ks]
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



def fig_gram(rows, path):
    """Features route: gradient error (w.r.t. X) against κ(X Xᵀ), one panel per n, a line per route × dtype."""
    from .cells import GRAM_ROUTE, GRAM_SVD, GRAM_VIA_SIGMA

    plt = _plt()
    gr = [r for r in rows if r["study"] == "gram" and not r["error"] and r["reference"] != REF_SELF]
    if not gr:
        return False
    sizes = sorted({r["n"] for r in gr})
    g = group(gr, "method", "dtype", "n", "log10_kappa")
    ks = sorted({r["log10_kappa"] for r in gr})
    kap = [10.0 ** k for k in ks]
    fig, axes = plt.subplots(1, len(sizes), figsize=(3.6 * len(sizes) + 0.8, 3.9), squeeze=False, sharey=True)
    styles = {(GRAM_ROUTE, "float32"): ("C0", "o-"), (GRAM_ROUTE, "float64"): ("C0", "s--"),
              (GRAM_SVD, "float32"): ("C2", "^-"),
              (GRAM_VIA_SIGMA, "float32"): ("C3", "o-"), (GRAM_VIA_SIGMA, "float64"): ("C3", "s--")}
    for j, n in enumerate(sizes):
        a = axes[0][j]
        a.plot(kap, [math.sqrt(k) * EPS32 for k in kap], "k:", lw=1, label="κ(X)·eps32")
        a.plot(kap, [k * EPS32 for k in kap], "k-.", lw=0.8, label="κ(X Xᵀ)·eps32")
        for (m, d), (c, st) in styles.items():
            ys = [median([r["grad_err"] for r in g.get((m, d, n, k), [])]) for k in ks]
            ys = [min(max(y, 1e-17), PLOT_CEIL) if math.isfinite(y) else math.nan for y in ys]
            a.plot(kap, ys, st, color=c, ms=3, lw=1, label=f"{m}, {d}")
        ref = {r["reference"] for r in gr if r["n"] == n}
        a.set_title(f"n = {n} (reference: {', '.join(sorted(ref))})", fontsize=8)
        a.set_xscale("log")
        a.set_yscale("log")
        a.set_xlabel("κ(X Xᵀ)")
        a.grid(True, lw=0.3)
    axes[0][0].set_ylabel("rel. error of ∂L/∂X")
    handles, labels = axes[0][0].get_legend_handles_labels()
    _layout(fig, handles, labels, ncol=3, title="Features route: gram_sqrtm(X) against sqrtm(X Xᵀ), median over seeds")
    _save(fig, path)
    plt.close(fig)
    return True


def fig_accuracy_cost(points, n, path):
    """Gradient error against time for every method setting (``tables.accuracy_cost``): rows = κ band,
    columns = dtype; one labelled point per setting, coloured by method."""
    plt = _plt()
    if not points:
        return False
    dtypes = ordered({p["dtype"] for p in points}, grid_mod.DTYPES)
    bands = [b for b, _, _ in grid_mod.KAPPA_BANDS]
    methods = list(dict.fromkeys(p["method"] for p in points))
    colors = _colors(methods)
    fig, axes = plt.subplots(len(bands), len(dtypes), figsize=(5.2 * len(dtypes) + 0.8, 3.3 * len(bands) + 1.2),
                             squeeze=False, sharex=True, sharey=True)
    for i, band in enumerate(bands):
        for j, d in enumerate(dtypes):
            a = axes[i][j]
            edge = a.get_xaxis_transform()
            for p in points:
                if p["dtype"] != d:
                    continue
                err, floored = p["err"].get(band, math.nan), p["floored"].get(band, False)
                mi = methods.index(p["method"])
                mk = _MARKERS[mi % len(_MARKERS)]
                if math.isnan(err):
                    continue
                if math.isinf(err):
                    a.plot([p["time"]], [1.0], ls="none", marker="^", ms=6, color=colors[p["method"]],
                           transform=edge, clip_on=False)
                    continue
                a.plot([p["time"]], [max(err, 1e-17)], ls="none", marker=mk, ms=5, color=colors[p["method"]],
                       mfc="none" if floored else colors[p["method"]])
                a.annotate(p["short"], (p["time"], max(err, 1e-17)), fontsize=5.5, xytext=(3, 2),
                           textcoords="offset points", color=colors[p["method"]])
            a.set_xscale("log")
            a.set_yscale("log")
            a.set_title(f"{d}, {band}", fontsize=8)
            if i == len(bands) - 1:
                a.set_xlabel("median ms, forward + backward (one matrix, one thread)")
            if j == 0:
                a.set_ylabel("median rel. gradient error")
            a.grid(True, which="major", lw=0.3)
    handles = [axes[0][0].plot([], [], ls="none", marker=_MARKERS[i % len(_MARKERS)], color=colors[m])[0]
               for i, m in enumerate(methods)]
    _layout(fig, handles, methods, ncol=5, title=f"sqrtm: gradient error against cost, every method setting, n = {n} "
            "(logspaced; hollow = at the float64 reference's floor; ▲ = non-finite)")
    _save(fig, path)
    plt.close(fig)
    return True
