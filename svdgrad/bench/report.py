"""Build ``reports/performance/REPORT.md`` and its figures from the raw results.

Every number in the report is computed here from the files in ``raw/``;
rebuild with ``svdgrad bench --report-only``.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import torch

import svdgrad
from svdgrad._io import savefig_atomic, write_atomic

from . import grid

DEVICE_SECTIONS = (("cpu", "CPU"), ("cuda", "GPU (CUDA)"))


# ---------------------------------------------------------------------------
# Ratios from the interleaved target run.
# ---------------------------------------------------------------------------

def _unit_rounds(times: dict) -> list[float]:
    keys = [k for k in times if k.startswith("matmul#")]
    return [statistics.median(times[k][i] for k in keys) for i in range(len(times[keys[0]]))]


def _unit_min(times: dict) -> float:
    """The unit's fastest round (its per-round median of three matmuls), as every case's own fastest round."""
    return min(_unit_rounds(times))


def _quartiles(xs) -> tuple[float, float]:
    if len(xs) < 2:
        return xs[0], xs[0]
    # "inclusive": the quartiles lie within the rounds measured (the default extrapolates beyond them with
    # few rounds: two rounds at 9.5 and 11.5 would give 9.0-12.0)
    q = statistics.quantiles(xs, n=4, method="inclusive")
    return q[0], q[2]


def per_round_ratio(times: dict, label: str, floor: str) -> list[float]:
    unit = _unit_rounds(times)
    t = times[label]
    if floor == "eigh":
        e = times["eigh_forward"]
        return [(t[i] - e[i]) / unit[i] for i in range(len(t))]
    return [t[i] / unit[i] for i in range(len(t))]


def floor_ratio(times: dict, label: str, floor: str) -> tuple[float, float]:
    """(median over rounds of the per-round ratio, ratio of the per-case minima)."""
    unit = _unit_rounds(times)
    t = times[label]
    if floor == "eigh":
        e = times["eigh_forward"]
        per = [(t[i] - e[i]) / unit[i] for i in range(len(t))]
        by_min = (min(t) - min(e)) / _unit_min(times)
    elif floor == "matmul":
        per = [t[i] / unit[i] for i in range(len(t))]
        by_min = min(t) / _unit_min(times)
    else:
        raise ValueError(floor)
    return statistics.median(per), by_min


def round_ratios(times: dict, a: str, b: str) -> list[float]:
    """t_a / t_b of each round (both measured in it)."""
    return [x / y for x, y in zip(times[a], times[b])]


def relative(times: dict, a: str, b: str) -> tuple[float, float]:
    """t_a / t_b: (median of per-round ratios, ratio of minima)."""
    per = round_ratios(times, a, b)
    return statistics.median(per), min(times[a]) / min(times[b])


def measured_targets(targets: dict) -> list[grid.Target]:
    """The targets measured in this run (``--methods`` may leave some variants out)."""
    times = next(iter(targets["dtypes"].values()))["times"]
    return [t for t in grid.TARGETS if t.variant in times]


def target_rows(targets: dict) -> list[dict]:
    rows = []
    for t in measured_targets(targets):
        for dtype, res in targets["dtypes"].items():
            times = res["times"]
            med, by_min = floor_ratio(times, t.variant, t.floor)
            med_nc, _ = floor_ratio(times, t.variant + "|check=False", t.floor)
            q1, q3 = _quartiles(per_round_ratio(times, t.variant, t.floor))
            row = {"variant": t.variant, "dtype": dtype, "floor": t.floor, "limit": t.limit,
                   "ratio": med, "ratio_min": by_min, "ratio_nocheck": med_nc, "q1": q1, "q3": q3,
                   "met": med <= t.limit, "rounds": len(times[t.variant])}
            # A miss is within the round-to-round spread when every condition it misses has its limit at or
            # above the lower quartile of that condition's per-round ratios.
            row["within_spread"] = med <= t.limit or q1 <= t.limit
            if t.not_slower_than:
                rel, rel_min = relative(times, t.variant, t.not_slower_than)
                vs_q1, _ = _quartiles(round_ratios(times, t.variant, t.not_slower_than))
                row.update(vs=t.not_slower_than, vs_ratio=rel, vs_ratio_min=rel_min, vs_q1=vs_q1)
                row["met"] = row["met"] and rel <= 1.0
                row["within_spread"] = row["within_spread"] and (rel <= 1.0 or vs_q1 <= 1.0)
            rows.append(row)
    return rows


def ratio_target_rows(ratio: dict) -> list[dict]:
    """Each ratio target (issues 9 and 10): t_case / t_baseline, median of per-round ratios, IQR, ratio of minima."""
    rows = []
    for grp in ratio.get("groups", []):
        times = grp["times"]
        for t in grp["targets"]:
            per = round_ratios(times, t["case"], t["baseline"])
            med, by_min = relative(times, t["case"], t["baseline"])
            q1, q3 = _quartiles(per)
            # check=False on both sides where the side is an svdgrad.sqrtm case (runs without it: None)
            nc = [x + grid.NO_CHECK if x + grid.NO_CHECK in times else x for x in (t["case"], t["baseline"])]
            med_nc = relative(times, *nc)[0] if nc[0] != t["case"] else None
            rows.append({**t, "n": grp["n"], "batch": grp["batch"], "dtype": grp["dtype"], "ratio": med,
                         "ratio_min": by_min, "ratio_nocheck": med_nc, "q1": q1, "q3": q3,
                         "met": med <= t["limit"], "rounds": len(per),
                         "t_case": statistics.median(times[t["case"]]),
                         "t_baseline": statistics.median(times[t["baseline"]]),
                         "load_before": grp.get("load_before"), "load_after": grp.get("load_after")})
    return rows


# ---------------------------------------------------------------------------
# Formatting helpers.
# ---------------------------------------------------------------------------

def _f(x, digits=2):
    if x is None:
        return "n/a"
    return f"{x:.{digits}f}"


def _ms(seconds):
    return f"{seconds * 1e3:.1f}" if seconds >= 0.01 else f"{seconds * 1e3:.2f}"


def _load(x):
    return "n/a" if x is None else " / ".join(f"{v:.2f}" for v in x)


def _table(header, rows):
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return out


def _floor_text(floor):
    return "(t − t_eigh) / t_matmul" if floor == "eigh" else "t / t_matmul"


# ---------------------------------------------------------------------------
# Figures.
# ---------------------------------------------------------------------------

def _benchmarks(pyjson: dict) -> list[dict]:
    rows = []
    for b in pyjson["benchmarks"]:
        e = b["extra_info"]
        rows.append(dict(kind=e["kind"], label=e["label"], mode=e["mode"], n=e["n"], dtype=e["dtype"],
                         median=b["stats"]["median"], min=b["stats"]["min"], rounds=b["stats"]["rounds"]))
    return rows


#: Facets of the time-against-n figure: eigen-based methods with the eigh floors, and the
#: iterative ones with the matmul unit (eigh forward repeated there for scale).
_ITERATIVE = ("newton_schulz", "mpa", "mtp", "power_iteration", "pooling[")
_FACETS = (("eigen methods", lambda label: not label.startswith(_ITERATIVE) and label != "matmul"),
           ("matmul-only methods and pooling", lambda label: label.startswith(_ITERATIVE)
            or label in ("matmul", "eigh_forward")))


def figure_time_vs_n(rows, path: Path, title: str) -> None:
    """Median time per call against n: one row per dtype, one column per facet, legend beside the panels."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in rows if r["kind"] in ("sqrtm", "baseline", "pooling")]
    dtypes = sorted({r["dtype"] for r in rows})
    sel = [r for r in rows if r["mode"] == "forward_backward" or r["kind"] == "baseline"]
    labels = list(dict.fromkeys(r["label"] for r in sel))
    colors = dict(zip(labels, (plt.get_cmap("tab10").colors * 3)))
    markers = dict(zip(labels, "osD^v<>ph*XP" * 3))
    fig, axes = plt.subplots(len(dtypes), len(_FACETS), figsize=(10.5, 3.6 * len(dtypes)), squeeze=False,
                             sharex=True)
    handles = {}
    for i, dtype in enumerate(dtypes):
        for j, (facet, member) in enumerate(_FACETS):
            ax = axes[i][j]
            for label in labels:
                if not member(label):
                    continue
                pts = sorted((r["n"], r["median"]) for r in sel if r["label"] == label and r["dtype"] == dtype)
                if not pts:
                    continue
                (h,) = ax.plot([p[0] for p in pts], [p[1] * 1e3 for p in pts],
                               "--" if label in grid.BASELINES else "-", marker=markers[label], color=colors[label],
                               lw=1.4, ms=5)
                handles[label] = h
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xticks(sorted({r["n"] for r in sel}))
            ax.set_xticklabels([str(n) for n in sorted({r["n"] for r in sel})])
            ax.set_title(f"{dtype}: {facet}", fontsize=10)
            if i == len(dtypes) - 1:
                ax.set_xlabel("n")
            if j == 0:
                ax.set_ylabel("median ms per call (fwd + bwd)")
            ax.grid(True, which="both", alpha=0.3)
    fig.legend(list(handles.values()), list(handles), loc="center left", bbox_to_anchor=(0.8, 0.5), fontsize=8,
               title="dashed: baselines", title_fontsize=8, frameon=False)
    fig.suptitle(f"{title}: time per call against n", fontsize=11)
    fig.tight_layout(rect=(0, 0, 0.8, 0.97))
    savefig_atomic(fig, path, dpi=110)
    plt.close(fig)


def figure_ratios(rows, times_by_dtype: dict, path: Path, title: str) -> None:
    """Top: each target's measured ratio (bars) and limit (dashed). Bottom: the absolute median times
    of the same interleaved run, the methods and their floors, so a ratio can be read against them."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(12, 8))
    gs = fig.add_gridspec(2, 2, width_ratios=[3, 1], height_ratios=[1, 1])
    dtypes = list(dict.fromkeys(r["dtype"] for r in rows)) or list(times_by_dtype)
    w = 0.8 / max(len(dtypes), 1)
    for col, floor in enumerate(("eigh", "matmul")):
        ax = fig.add_subplot(gs[0, col])
        sel = [r for r in rows if r["floor"] == floor]
        variants = list(dict.fromkeys(r["variant"] for r in sel))
        for j, dtype in enumerate(dtypes):
            xs = [i + (j - (len(dtypes) - 1) / 2) * w for i in range(len(variants))]
            ys = [next(r["ratio"] for r in sel if r["variant"] == v and r["dtype"] == dtype) for v in variants]
            ax.bar(xs, ys, w, label=dtype)
        for i, v in enumerate(variants):
            limit = next(r["limit"] for r in sel if r["variant"] == v)
            ax.hlines(limit, i - 0.45, i + 0.45, colors="k", linestyles="--")
        ax.set_xticks(range(len(variants)))
        ax.set_xticklabels(variants, rotation=20, ha="right", fontsize=8)
        ax.set_ylabel(_floor_text(floor))
        ax.set_title("eigen methods: matmuls added to eigh" if floor == "eigh" else "Newton–Schulz: matmuls",
                     fontsize=10)
    # Absolute times of the same run: every case that enters a ratio.
    ax = fig.add_subplot(gs[1, :])
    cases = ["eigh_forward", "matmul", "eigh_autograd"] + list(dict.fromkeys(r["variant"] for r in rows))
    for j, dtype in enumerate(times_by_dtype):
        times = times_by_dtype[dtype]
        med = {"matmul": statistics.median(_unit_rounds(times))}
        med.update({k: statistics.median(v) for k, v in times.items() if not k.startswith("matmul#")})
        xs = [i + (j - (len(times_by_dtype) - 1) / 2) * w for i in range(len(cases))]
        ax.bar(xs, [med[c] * 1e3 for c in cases], w, label=dtype)
    ax.set_yscale("log")
    ax.set_xticks(range(len(cases)))
    ax.set_xticklabels(cases, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("median ms per call")
    ax.set_title("absolute times in the same interleaved run (first three: the floors)", fontsize=10)
    ax.grid(True, axis="y", which="both", alpha=0.3)
    ax.legend(fontsize=8, title="bar colours (all panels)", title_fontsize=8)
    fig.suptitle(f"{title}: measured ratio (bars) against target (dashed), and the times behind it", fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    savefig_atomic(fig, path, dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------------------
# The report.
# ---------------------------------------------------------------------------

def _contended(run: dict) -> tuple[bool, float]:
    samples = [s for s in run["load"].values() if s]  # noqa: the run's own threads add about torch_threads
    peak = max((s[0] for s in samples), default=0.0)
    return peak > (run.get("cpu_count") or 1) + 1.0, peak


def device_section(out: Path, tag: str, title: str) -> list[str]:
    raw = out / "raw"
    paths = {k: raw / f"{k}_{tag}.json" for k in ("pytest_benchmark", "targets", "memory", "run")}
    if not all(p.exists() for p in paths.values()):
        if tag == "cuda" and not torch.cuda.is_available():
            why = "no CUDA device was available where the report was built (no GPU lent to this run)"
        else:
            why = f"no results in raw/ (run `svdgrad bench --device {tag}`)"
        return [f"## {title}", "", f"Not run: {why}. The benchmark is device-agnostic; "
                f"`svdgrad bench --device {tag}` adds this section.", ""]
    py = json.loads(paths["pytest_benchmark"].read_text())
    targets = json.loads(paths["targets"].read_text())
    mem = json.loads(paths["memory"].read_text())
    run = json.loads(paths["run"].read_text())
    figs = out / "figures"
    figs.mkdir(exist_ok=True)
    rows = _benchmarks(py)
    trows = target_rows(targets)
    figure_time_vs_n(rows, figs / f"time_vs_n_{tag}.png", title)
    figure_ratios(trows, {d: r["times"] for d, r in targets["dtypes"].items()}, figs / f"ratios_{tag}.png", title)
    contended, peak_load = _contended(run)
    n, B = targets["size"], targets["batch"]

    L = [f"## {title}", ""]
    L += [f"- Device: {run['device']} ({run['device_name']}); host CPU {run['cpu']}, {run['cpu_count']} cores.",
          f"- torch {run['torch']} ({run['blas']}), svdgrad {run['svdgrad']}, Python {run['python']}, {run['platform']}.",
          f"- Threads: torch intra-op threads pinned to {run['torch_threads']} "
          f"(pytest-benchmark run: {py['machine_info'].get('torch_threads')}); "
          f"OMP_WAIT_POLICY={run.get('omp_wait_policy')}.",
          f"- Run {run['started']} → {run['finished']} (UTC), profile `{run['profile']}`.",
          "- Load average (1 / 5 / 15 min): " + "; ".join(f"{k} {_load(v)}" for k, v in run["load"].items()) + ".",
          f"- Contended: **{'yes' if contended else 'no'}** (highest 1-min load {peak_load:.2f} "
          f"against {run['cpu_count']} cores). "
          + ("Other processes shared the cores, so absolute times are inflated and noisy; the ratios "
             "below are measured interleaved and are the numbers to trust." if contended else ""),
          ""]

    # Targets.
    L += [f"### Targets (B = {B}, n = {n}, forward + backward, measured interleaved in one process)", ""]
    L += ["Ratio = median over rounds of the per-round ratio; each round runs every case once in a "
          "shuffled order, and the unit t_matmul is the median of three matmuls timed in that round. "
          "'ratio of minima' uses each case's fastest round instead; 'check=False' skips the value "
          "checks that `svdgrad.sqrtm` runs by default. A target is met when the default-settings "
          "ratio is within its limit.", ""]
    trs = []
    for r in trows:
        extra = ""
        if "vs" in r:
            extra = f"t / t_{r['vs']} = {_f(r['vs_ratio'])} (minima {_f(r['vs_ratio_min'])}), must be ≤ 1"
        trs.append([f"`{r['variant']}`", r["dtype"], _floor_text(r["floor"]), f"≤ {r['limit']:g}",
                    f"**{_f(r['ratio'])}**", f"{_f(r['q1'])}–{_f(r['q3'])}", _f(r["ratio_min"]),
                    _f(r["ratio_nocheck"]), extra or "", "met" if r["met"] else "**not met**", r["rounds"]])
    L += _table(["method", "dtype", "ratio", "limit", "measured", "per-round IQR", "ratio of minima",
                 "check=False", "also", "status", "rounds"], trs)
    met = sum(r["met"] for r in trows)
    L += ["", f"{met} of {len(trows)} targets met."]
    missed = [r for r in trows if not r["met"]]
    noisy = [r for r in missed if r["within_spread"]]
    if missed:
        L += ["", "Not met: " + "; ".join(
            f"`{r['variant']}` {r['dtype']} ({_f(r['ratio'])} against ≤ {r['limit']:g}"
            + (f", t/t_{r['vs']} = {_f(r['vs_ratio'])}" if "vs" in r else "") + ")" for r in missed) + "."]
    if noisy:
        L += ["", "Of these, " + ", ".join(f"`{r['variant']}` {r['dtype']}" for r in noisy)
              + " have each limit they miss at or above the lower quartile of that ratio's per-round values: "
                "the miss is within the round-to-round spread of this machine rather than a structural excess."]
    L += ["", f"![ratios](figures/ratios_{tag}.png)", ""]

    # Ratio targets of issues 9 and 10.
    ratio_path = raw / f"ratio_targets_{tag}.json"
    if ratio_path.exists():
        rrows = ratio_target_rows(json.loads(ratio_path.read_text()))
        L += ["### Speed targets of the function family (issues 9 and 10)", "",
              "Each shape's cases run interleaved in one process (shuffled order every round); ratio = median over "
              "rounds of t_case / t_baseline in the same round, with its interquartile range and the ratio of "
              "the fastest rounds; 'check=False' is the same ratio with the value checks skipped on each "
              "`svdgrad.sqrtm` side (the target is judged with them). Load average (1 / 5 / 15 min) before and "
              "after each shape's run.", ""]
        rr = [[r["name"], r["dtype"], r["n"], r["batch"], f"`{r['case']}`", f"`{r['baseline']}`",
               _ms(r["t_case"]), _ms(r["t_baseline"]), f"≤ {r['limit']:g}", f"**{_f(r['ratio'])}**",
               f"{_f(r['q1'])}–{_f(r['q3'])}", _f(r["ratio_min"]), _f(r.get("ratio_nocheck")),
               "met" if r["met"] else "**not met**",
               r["rounds"], f"{_load(r['load_before'])} → {_load(r['load_after'])}"] for r in rrows]
        L += _table(["target", "dtype", "n", "B", "case", "baseline", "case ms", "baseline ms", "limit",
                     "measured", "per-round IQR", "ratio of minima", "check=False", "status", "rounds", "load"], rr)
        L += ["", f"{sum(r['met'] for r in rrows)} of {len(rrows)} met."]
        if contended:
            L += ["", "The machine was contended during this run (see the load column): the ratios are "
                      "interleaved and so comparable, the absolute times are not."]
        L += [""]

    # Absolute times of the target run.
    L += ["Median time per call in the interleaved target run (ms):", ""]
    tt = []
    for dtype, res in targets["dtypes"].items():
        times = res["times"]
        unit = statistics.median(_unit_rounds(times))
        tt.append([dtype, _ms(statistics.median(times["eigh_forward"])), _ms(unit),
                   _ms(statistics.median(times["eigh_autograd"]))]
                  + [_ms(statistics.median(times[t.variant])) for t in measured_targets(targets)])
    L += _table(["dtype", "eigh forward", "matmul", "eigh autograd"]
                + [f"`{t.variant}`" for t in measured_targets(targets)], tt)
    L += [""]

    # Newton–Schulz backward choice (when both backwards were measured).
    ns_pair = {"newton_schulz[manual]", "newton_schulz[autograd]"} <= {t.variant for t in measured_targets(targets)}
    if ns_pair:
        L += ["### Newton–Schulz: hand-written backward against autograd", ""]
        ns = []
        for dtype, res in targets["dtypes"].items():
            rel, rel_min = relative(res["times"], "newton_schulz[manual]", "newton_schulz[autograd]")
            ns.append([dtype, _f(floor_ratio(res["times"], "newton_schulz[manual]", "matmul")[0]),
                       _f(floor_ratio(res["times"], "newton_schulz[autograd]", "matmul")[0]),
                       _f(rel), _f(rel_min), "manual" if rel < 1 else "autograd"])
        L += _table(["dtype", "manual, t/t_matmul", "autograd, t/t_matmul", "t_manual / t_autograd",
                     "ratio of minima", "faster"], ns)
        L += ["", f"Library default: `backward=\"{run['newton_schulz_default_backward']}\"`."]
        pcs = {lab: mem["dtypes"][d]["rows"].get(lab, {}).get("products")
               for d in mem["dtypes"] for lab in ("newton_schulz[manual]", "newton_schulz[autograd]")}
        if all(pcs.values()):
            L += ["", "Both dispatch " + " and ".join(f"{pcs[k]['matmul']} (`{k}`)" for k in pcs)
                  + " batched matmuls per forward + backward (next section); the rest of the ratio is "
                    "elementwise work, the normalization and, by default, the PSD check (one batched "
                    "Cholesky plus the finite/symmetry checks)."]
        L += [""]

    # Check overhead.
    L += ["### Cost of the default value checks", "",
          "(t_default − t_check=False) / t_matmul, median of per-round differences:", ""]
    co = []
    for t in measured_targets(targets):
        cells = []
        for dtype, res in targets["dtypes"].items():
            times = res["times"]
            unit = _unit_rounds(times)
            d = [(a - b) / u for a, b, u in zip(times[t.variant], times[t.variant + "|check=False"], unit)]
            cells.append(_f(statistics.median(d)))
        co.append([f"`{t.variant}`"] + cells)
    L += _table(["method"] + list(targets["dtypes"]), co)
    L += [""]

    # Memory.
    L += [f"### Work and memory of one forward + backward (B = {mem['batch']}, n = {mem['size']})", "",
          "'products' = batched matmuls (bmm/baddbmm/mm/addmm, autograd's included) and eigh / "
          "Cholesky calls dispatched with default settings, counted at the ATen level. "
          "Memory in units of one (B, n, n) matrix of the dtype, with `check=False` (the method itself). "
          "'saved' = distinct storages autograd keeps for the backward once the forward has returned "
          "(input excluded; deterministic). 'peak' = peak of live tensor bytes during forward + "
          "backward above the level at the start (CPU: torch profiler memory timeline; CUDA: "
          "max_memory_allocated).", ""]
    dts = list(mem["dtypes"])
    mr = []
    for label in mem["dtypes"][dts[0]]["rows"]:
        pc = mem["dtypes"][dts[0]]["rows"][label].get("products")
        cells = [f"`{label}`", "n/a" if pc is None else
                 f"{pc['matmul']} matmul" + "".join(f" + {pc[k]} {k}" for k in ("eigh", "cholesky") if pc[k])]
        for dt in dts:
            d = mem["dtypes"][dt]
            r = d["rows"][label]
            mb = d["matrix_bytes"]
            cells += [_f(r["saved_bytes"] / mb, 1),
                      "n/a" if r["peak_bytes"] is None else _f(r["peak_bytes"] / mb, 1),
                      "n/a" if r["peak_bytes"] is None else f"{r['peak_bytes'] / 2**20:.0f}"]
        mr.append(cells)
    hdr = ["method", "products"]
    for dt in dts:
        hdr += [f"saved ({dt})", f"peak ({dt})", f"peak MiB ({dt})"]
    L += _table(hdr, mr)
    J = svdgrad.NewtonSchulz().iterations
    for label in ("newton_schulz[autograd]", "newton_schulz[manual]"):
        r = mem["dtypes"][dts[0]]["rows"].get(label)
        if r:
            L += ["", f"`{label}` saves {_f(r['saved_bytes'] / mem['dtypes'][dts[0]]['matrix_bytes'], 1)} "
                      f"matrices for {J} iterations, i.e. "
                      f"{_f(r['saved_bytes'] / mem['dtypes'][dts[0]]['matrix_bytes'] / J, 2)}·iterations·B·n² "
                      f"entries: O(iterations·B·n²)."]
    L += [""]

    # Full grid.
    L += ["### Full grid (pytest-benchmark, median ms per call)", "",
          f"Raw data: [`raw/pytest_benchmark_{tag}.json`](raw/pytest_benchmark_{tag}.json). These runs are "
          "sequential, not interleaved, so under load the ratios above are more reliable than ratios "
          "taken from this table.", ""]
    cols = sorted({(r["n"], r["dtype"]) for r in rows})
    keyed = {(r["label"], r["mode"], r["n"], r["dtype"]): r for r in rows}
    labels = list(dict.fromkeys((r["label"], r["mode"]) for r in rows))
    gr = []
    for label, mode in labels:
        gr.append([f"`{label}`", mode.replace("_", " + ")]
                  + [_ms(keyed[(label, mode, c[0], c[1])]["median"]) if (label, mode, c[0], c[1]) in keyed else ""
                     for c in cols])
    L += _table(["case", "mode"] + [f"n={c[0]} {c[1]}" for c in cols], gr)
    L += ["", f"![time against n](figures/time_vs_n_{tag}.png)", ""]
    return L


def build(out: Path) -> Path:
    out = Path(out)
    L = ["# Performance report", "",
         "Written by `svdgrad bench` (`make bench`); every number and figure here is computed from the "
         "files in `raw/` by `svdgrad/bench/report.py`. Do not edit by hand.", "",
         "Floors: `torch.linalg.eigh` forward alone is the floor of every eigen-based method; one batched "
         "n×n×n matmul is the unit. An eigen method's cost is stated as the number of matmuls it adds to "
         "eigh, (t − t_eigh)/t_matmul; Newton–Schulz's as t/t_matmul. 'eigh autograd' is "
         "U diag(√λ) Uᵀ through `torch.linalg.eigh`'s own backward, what a user writes today.", ""]
    for tag, title in DEVICE_SECTIONS:
        L += device_section(out, tag, title)
    path = out / "REPORT.md"
    write_atomic(path, "\n".join(L) + "\n")
    return path
