"""REPORT.md and figures of the hybrid-protocol study, computed from the saved run logs only.

Reading the logs (``load_runs``), the tables and verdicts, one function per
figure family, then the Markdown writer (``write_report``).  Imports the
grid only, never the runner (``study`` imports this module).
"""

from __future__ import annotations

import json
import math
import os

from .._io import savefig_atomic, write_atomic
from . import stats
from .grid import EARLY, HYBRIDS, LABELS, PROTOCOLS

COV = [p for p in PROTOCOLS if p != "gap"]


def _run_folders(out: str, marker: str):
    """(protocol, run folder) for every run of the study in ``out`` whose folder holds ``marker``."""
    root = os.path.join(out, "runs")
    for name in PROTOCOLS:
        d = os.path.join(root, name)
        if not os.path.isdir(d):
            continue
        for sd in sorted(os.listdir(d)):
            if os.path.exists(os.path.join(d, sd, marker)):
                yield name, os.path.join(d, sd)


def _read_json(path: str):
    from .._io import read_json

    return read_json(path, fix="Delete that run's folder and run the study again with --resume (it re-runs that run).")


def read_study(out: str) -> dict:
    """``out``/study.json; a damaged one raises SvdgradError naming it and what to do (--report-only gave a
    traceback).  The one reader of study.json: the studies (``study``, ``landscape``) and both reports."""
    from .._io import read_json

    return read_json(os.path.join(out, "study.json"), fix=f"Delete it and run the study again with --resume: the "
                     f"runs in {out} are kept, and only the missing ones run.")


def _read_log(path: str) -> list[dict]:
    """The lines of a finished run's log (log.jsonl, probes.jsonl, ...); a damaged one (its last line too: the
    run finished, so nothing was torn by a kill) raises SvdgradError naming it (it was a traceback)."""
    from .._io import read_jsonl

    return read_jsonl(path, fix="Delete that run's folder and run the study again with --resume (it re-runs that "
                                "run).")


def load_runs(out: str) -> dict[str, list[dict]]:
    """protocol -> list of {seed, history, summary, config} read from the saved logs (finished runs)."""
    runs: dict[str, list[dict]] = {}
    for name, p in _run_folders(out, "summary.json"):
        history = _read_log(os.path.join(p, "log.jsonl"))
        summary = _read_json(os.path.join(p, "summary.json"))
        runs.setdefault(name, []).append({"seed": summary["seed"], "history": history, "summary": summary,
                                          "config": _read_json(os.path.join(p, "config.json"))})
    return runs


def load_stopped(out: str) -> dict[str, list[dict]]:
    """protocol -> [{seed, epoch, reason}] of the runs that stopped on their own (``runner.STOPPED``)."""
    stopped: dict[str, list[dict]] = {}
    for name, p in _run_folders(out, "stopped.json"):
        stopped.setdefault(name, []).append(_read_json(os.path.join(p, "stopped.json")))
    for v in stopped.values():
        v.sort(key=lambda r: r["seed"])
    return stopped


def mean_std(values) -> tuple[float, float]:
    v = [float(x) for x in values if x is not None]
    if not v:
        return math.nan, math.nan
    m = sum(v) / len(v)
    s = math.sqrt(sum((x - m) ** 2 for x in v) / (len(v) - 1)) if len(v) > 1 else math.nan
    return m, s


def _fmt(m, s, pct=True):
    if math.isnan(m):
        return "n/a"
    if pct:
        return f"{100 * m:.1f} ± {100 * s:.1f}" if not math.isnan(s) else f"{100 * m:.1f} (one seed)"
    return f"{m:.3f} ± {s:.3f}" if not math.isnan(s) else f"{m:.3f} (one seed)"


def _sci(x):
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.2e}"


def _geomean(vals):
    v = [x for x in vals if x is not None and x > 0]
    return math.exp(sum(math.log(x) for x in v) / len(v)) if v else math.nan


def _per_epoch(runs, key, agg="mean"):
    """epoch -> aggregate over seeds of history[key]."""
    epochs = sorted({h["epoch"] for r in runs for h in r["history"]})
    out = []
    for e in epochs:
        vals = [h[key] for r in runs for h in r["history"] if h["epoch"] == e and h[key] is not None]
        if not vals:
            out.append(math.nan)
        elif agg == "geo":
            out.append(_geomean(vals))
        else:
            out.append(sum(vals) / len(vals))
    return epochs, out


def _final(runs, p, key="final_val_acc") -> dict:
    """seed -> summary[key] of protocol p."""
    return {r["seed"]: r["summary"][key] for r in runs.get(p, [])}


def _compare(runs, a, b, claim, key="final_val_acc", paired=False) -> stats.Comparison:
    """mean(a) - mean(b) of ``key``: paired by seed (a hybrid and the NS run with the same seed share every
    epoch before the switch), or Welch's test between independent runs."""
    fa, fb = _final(runs, a, key), _final(runs, b, key)
    if paired:
        return stats.paired(claim, fa, fb)
    return stats.welch(claim, fa.values(), fb.values())


def _pp(x):
    return f"{100 * x:+.1f}" if not math.isnan(x) else "n/a"


#: Two protocols are drawn as one line when every logged value of every epoch of every seed agrees
#: to this relative tolerance (the hybrids after the switch: same forward, backwards equal up to rounding).
SAME_RTOL = 1e-6
_SAME_KEYS = ("train_loss", "val_loss", "val_acc")


def _same_runs(ra, rb, rtol=SAME_RTOL) -> bool:
    a = {r["seed"]: r["history"] for r in ra}
    b = {r["seed"]: r["history"] for r in rb}
    if set(a) != set(b):
        return False
    for seed in a:
        if [h["epoch"] for h in a[seed]] != [h["epoch"] for h in b[seed]]:
            return False
        for ha, hb in zip(a[seed], b[seed]):
            for k in _SAME_KEYS:
                x, y = ha[k], hb[k]
                if (x is None) != (y is None) or (x is not None and abs(x - y) > rtol * max(abs(x), abs(y))):
                    return False
    return True


def identical_groups(runs) -> list[list[str]]:
    """Protocols grouped by identical logs (``SAME_RTOL``), in report order."""
    groups: list[list[str]] = []
    for p in PROTOCOLS:
        if p not in runs:
            continue
        for g in groups:
            if _same_runs(runs[g[0]], runs[p]):
                g.append(p)
                break
        else:
            groups.append([p])
    return groups


def _group_label(g) -> str:
    if len(g) == 1:
        return LABELS[g[0]]
    if all(p.startswith("hybrid-") for p in g):
        return "NS → " + " = ".join(LABELS[p].split("→ ")[1] for p in g)
    return " = ".join(LABELS[p] for p in g)


def _band(runs, key):
    """epochs, mean, min, max over seeds of history[key]."""
    epochs = sorted({h["epoch"] for r in runs for h in r["history"]})
    mean, lo, hi = [], [], []
    for e in epochs:
        v = [h[key] for r in runs for h in r["history"] if h["epoch"] == e and h[key] is not None]
        mean.append(sum(v) / len(v) if v else math.nan)
        lo.append(min(v) if v else math.nan)
        hi.append(max(v) if v else math.nan)
    return epochs, mean, lo, hi


def _style(p):
    return "--" if p.startswith("hybrid") else ":" if p == "gap" else "-"


def switch_of(rs) -> int | None:
    """The switch epoch of a hybrid protocol's runs (the same for every seed), None for the others."""
    sws = {r["summary"]["switch_epoch"] for r in rs} - {None}
    return min(sws) if sws else None


def _curves_figure(runs, out, switch, plt):
    """Curves with the seed range as a band, split into two families so that no panel has more than
    four lines; identical protocols as one line; final values per seed on the right."""
    cmap = plt.get_cmap("tab10")
    colors = {p: cmap(i % 10) for i, p in enumerate(PROTOCOLS)}
    groups = identical_groups(runs)
    lead = {g[0]: g for g in groups}
    families = (("GAP, NS and the hybrids", [p for p in lead if p in ("gap", "ns") or p.startswith("hybrid")]),
                ("SVD methods throughout (grey: NS)", [p for p in lead if p.startswith("svd")]))
    n_seeds = max(len(rs) for rs in runs.values())
    fig, axs = plt.subplots(2, 3, figsize=(16, 8.5), gridspec_kw={"width_ratios": [1, 1, 0.9]})
    for row, (key, name) in enumerate((("val_acc", "validation accuracy"), ("train_loss", "training loss"))):
        for col, (title, members) in enumerate(families):
            ax = axs[row, col]
            if col == 1 and "ns" in runs:
                e, m, _, _ = _band(runs["ns"], key)
                ax.plot(e, m, color="0.6", lw=1, label=LABELS["ns"])
            for p in members:
                e, m, lo, hi = _band(runs[p], key)
                sw = switch_of(runs[p])
                if sw is not None:  # before its switch a hybrid is the NS run
                    keep = [i for i, x in enumerate(e) if x >= sw - 1]
                    e, m, lo, hi = ([seq[i] for i in keep] for seq in (e, m, lo, hi))
                ax.plot(e, m, _style(p), color=colors[p], marker=".", label=_group_label(lead[p]))
                if n_seeds > 1:
                    ax.fill_between(e, lo, hi, color=colors[p], alpha=0.15, lw=0)
            for sw in sorted({switch_of(runs[p]) for p in members} - {None}):
                ax.axvline(sw - 0.5, color="k", lw=0.8, alpha=0.6)
                ax.text(sw - 0.45, 1, " switch", va="top", fontsize=8, transform=ax.get_xaxis_transform())
            ax.set_xlabel("epoch")
            ax.set_ylabel(name)
            ax.set_title(f"{title}", fontsize=10)
            if key == "train_loss":
                ax.set_yscale("log")
            ax.legend(fontsize=7, loc="lower right" if key == "val_acc" else "lower left")
        # Right column: the final value of every seed, so the spread behind each mean is visible.
        ax = axs[row, 2]
        names = list(lead)
        for i, p in enumerate(names):
            vals = [r["history"][-1][key] for r in runs[p] if r["history"][-1][key] is not None]
            ax.scatter([i] * len(vals), vals, color=colors[p], s=18, zorder=3)
            if vals:
                ax.hlines(sum(vals) / len(vals), i - 0.3, i + 0.3, color=colors[p], lw=1.5)
        ax.set_xticks(range(len(names)), [_group_label(lead[p]) for p in names], rotation=35, ha="right",
                      fontsize=7)
        ax.set_ylabel(f"final {name}")
        ax.set_title(f"final {name}: each dot a seed, bar = mean", fontsize=10)
        if key == "train_loss":
            ax.set_yscale("log")
    merged = [g for g in groups if len(g) > 1]
    note = (f"Lines: mean over {n_seeds} seed(s)" + ("; bands: range over the seeds" if n_seeds > 1 else "")
            + ". Dashed hybrid lines start at the epoch before the switch (before it they are the NS runs).")
    if merged:
        note += " " + "; ".join(" and ".join(LABELS[p] for p in g) for g in merged) + (
            f" agree to {SAME_RTOL:g} (relative) in every logged value of every epoch and seed, so each such group "
            f"is one line.")
    fig.text(0.01, 0.005, note, fontsize=8, wrap=True, va="bottom")
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    savefig_atomic(fig, os.path.join(out, "curves.png"), dpi=110)
    plt.close(fig)
    return groups


def _figures(runs, out, switch):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cmap = plt.get_cmap("tab10")
    colors = {p: cmap(i % 10) for i, p in enumerate(PROTOCOLS)}
    styles = {p: _style(p) for p in PROTOCOLS}
    groups = _curves_figure(runs, out, switch, plt)
    lead = {g[0]: g for g in groups}

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    for i, p in enumerate(c for c in COV if c in runs):
        if p in lead:  # identical protocols: one line
            e, k = _per_epoch(runs[p], "kappa_median", "geo")
            _, small = _per_epoch(runs[p], "small_eig_fraction")
            axes[0].plot(e, k, styles[p], color=colors[p], marker=".", label=_group_label(lead[p]))
            axes[1].plot(e, small, styles[p], color=colors[p], marker=".", label=_group_label(lead[p]))
        # every (seed, epoch) as a point; a small horizontal offset per protocol keeps them apart
        pts = [(h["lr"] * 1.06 ** (i - 4), h["kappa_median"]) for r in runs[p] for h in r["history"]
               if h["kappa_median"] is not None]
        axes[2].scatter([a for a, _ in pts], [b for _, b in pts], s=9, color=colors[p], label=LABELS[p],
                        marker="^" if p.startswith("hybrid") else "o")
    axes[0].set_yscale("log")
    axes[2].set_yscale("log")
    if switch is not None:
        for ax in axes[:2]:
            ax.axvline(switch - 0.5, color="k", lw=0.8, alpha=0.6)
    axes[0].set(xlabel="epoch", ylabel="median κ(Σ) over the epoch's samples", title="κ of the pooled covariance")
    axes[1].set(xlabel="epoch", ylabel="fraction of eigenvalues < eps·λmax",
                title="numerically zero eigenvalues (eps of float32)")
    axes[2].set(xlabel="learning rate of the epoch", ylabel="median κ(Σ) of one epoch of one seed",
                title="κ against lr")
    axes[2].set_xscale("log")
    axes[2].invert_xaxis()
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    savefig_atomic(fig, os.path.join(out, "kappa.png"), dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(9, 3.8))
    names = [p for p in PROTOCOLS if p in runs]
    tot = [sum(r["summary"]["skipped_steps"] for r in runs[p]) for p in names]
    ax.bar(range(len(names)), tot, color=[colors[p] for p in names])
    ax.set_xticks(range(len(names)), [LABELS[p] for p in names], rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("skipped steps, all seeds")
    ax.set_title("steps skipped because the loss or a gradient was not finite")
    fig.tight_layout()
    savefig_atomic(fig, os.path.join(out, "skipped.png"), dpi=110)
    plt.close(fig)


#: Each claim's CI half-width target (issue 11): resolved, or known to within half a point.
TARGET_HALF_WIDTH = 0.005


def claims(runs, switch) -> list[tuple[stats.Comparison, str, float, int]]:
    """The family of claims, judged together (Holm): (comparison, unit, scale, digits)."""
    out = [(_compare(runs, "ns", "svd-ordinary", "NS beats the ordinary SVD gradient throughout (ICCV21: "
                     "iSQRT-COV over MPN-COV)"), "points", 100.0, 1)]
    for x in ("ordinary", "pade", "exact"):
        out.append((_compare(runs, f"hybrid-{x}", f"svd-{x}", f"NS → {x} beats {x} alone (ICCV21: every SVD "
                             f"method gains from the hybrid protocol)"), "points", 100.0, 1))
    # Hybrids with identical logs (the eigen methods after the switch) are one claim, not three.
    for g in identical_groups({p: runs[p] for p in ("hybrid-ordinary", "hybrid-pade", "hybrid-exact") if p in runs}):
        out.append((_compare(runs, g[0], "ns", f"{_group_label(g)} beats NS alone (ICCV21's hybrid table; "
                             f"paired by seed, the runs are the same until the switch)", paired=True),
                    "points", 100.0, 1))
    if EARLY in runs and "hybrid-exact" in runs:
        early = switch_of(runs[EARLY])
        out.append((_compare(runs, "hybrid-exact", EARLY, f"switching to exact at the last lr decay (epoch {switch}) "
                             f"beats switching at the first (epoch {early}) (ICCV21: switch once the lr is small and "
                             f"Σ better conditioned; paired by seed, the runs are the same until epoch {early})",
                             paired=True), "points", 100.0, 1))
    out.append((_compare(runs, "ns", "gap", "covariance pooling beats global average pooling (CVPR20)"),
                "points", 100.0, 1))
    if switch is not None and "ns" in runs:
        first, at = {}, {}
        for r in runs["ns"]:
            k = {h["epoch"]: h["kappa_median"] for h in r["history"]}
            if k.get(1) and k.get(switch):
                first[r["seed"]], at[r["seed"]] = math.log10(k[1]), math.log10(k[switch])
        out.append((stats.paired(f"κ of the pooled covariance falls from epoch 1 to the switch (epoch {switch}; "
                                 f"ICCV21's evidence for switching late; NS runs, log10 κ paired by seed)",
                                 first, at), "decades", 1.0, 2))
    judged = stats.judge([c for c, *_ in out])
    return [(j, *rest) for j, (_, *rest) in zip(judged, out)]


def _seed_advice(runs) -> str:
    """How many seeds the measured spread asks for (CI half-width <= TARGET_HALF_WIDTH)."""
    sds = [mean_std(_final(runs, p).values())[1] for p in PROTOCOLS if len(runs.get(p, [])) > 1]
    diffs = []
    for h in ("hybrid-ordinary", "hybrid-pade", "hybrid-exact"):
        a, b = _final(runs, h), _final(runs, "ns")
        d = [a[k] - b[k] for k in set(a) & set(b)]
        if len(d) > 1:
            diffs.append(mean_std(d)[1])
    if not sds:
        return ""
    sd, sdd = max(sds), (max(diffs) if diffs else math.nan)
    nw = stats.seeds_needed(sd, TARGET_HALF_WIDTH, paired=False)
    txt = (f"Seeds: the largest seed-to-seed standard deviation of a protocol's final accuracy is "
           f"{100 * sd:.2f} points, so a Welch interval of ±{100 * TARGET_HALF_WIDTH:.1f} points needs "
           f"{nw if nw else 'more than 1000'} seeds per protocol")
    if not math.isnan(sdd):
        npd = stats.seeds_needed(sdd, TARGET_HALF_WIDTH, paired=True)
        txt += (f"; the paired hybrid − NS differences spread by {100 * sdd:.2f} points, so ±"
                f"{100 * TARGET_HALF_WIDTH:.1f} needs {npd if npd else 'more than 1000'} seeds")
    n_min, n_max = min(len(rs) for rs in runs.values()), max(len(rs) for rs in runs.values())
    return txt + (f". This report has {n_min} seeds per protocol." if n_min == n_max else
                  f". This report has {n_min} to {n_max} seeds per protocol.")


def _findings(runs, switch, judged):
    """The summary of the verdicts and the seed advice (each claim is stated under its figure)."""
    by = {v: [c.claim.split(' (')[0] for c, *_ in judged if c.verdict == v]
          for v in (stats.HOLDS, stats.OTHER_WAY, stats.UNRESOLVED)}
    summary = (f"In short, of {len(judged)} claims (Holm-corrected as one family at 5%), {len(by[stats.HOLDS])} "
               f"{'holds' if len(by[stats.HOLDS]) == 1 else 'hold'}" + (f" ({'; '.join(by[stats.HOLDS])})" if by[stats.HOLDS] else "")
               + f", {len(by[stats.OTHER_WAY])} {'goes' if len(by[stats.OTHER_WAY]) == 1 else 'go'} the other way"
               + (f" ({'; '.join(by[stats.OTHER_WAY])})" if by[stats.OTHER_WAY] else "")
               + f", and {len(by[stats.UNRESOLVED])} {'is' if len(by[stats.UNRESOLVED]) == 1 else 'are'} not resolved.")
    wide = [c for c, unit, *_ in judged if c.verdict == stats.UNRESOLVED and unit == "points"
            and not math.isnan(c.low) and (c.high - c.low) / 2 > TARGET_HALF_WIDTH]
    if wide:
        one = len(wide) == 1
        summary += (f" {len(wide)} unresolved accuracy claim{'' if one else 's'} {'has' if one else 'have'} a 95% "
                    f"interval wider than ±{100 * TARGET_HALF_WIDTH:.1f} points: more seeds would narrow "
                    f"{'it' if one else 'them'}.")
    return [summary, "", _seed_advice(runs)]


def _claim_lines(judged, accuracy: bool):
    return [f"- *{c.claim}*: {stats.describe(c, unit, scale, digits)}."
            for c, unit, scale, digits in judged if (unit == "points") == accuracy]


def seed_plan_of(study) -> dict[str, int]:
    """protocol -> seeds planned, from study.json (older studies planned one number for every protocol)."""
    return study.get("seeds_by_protocol") or {p: int(study["seeds"]) for p in PROTOCOLS}


def _first_skipped_epoch(history: list[dict]) -> float:
    """The first epoch of a run's log with a skipped step (inf if none)."""
    return min([h["epoch"] for h in history if h["skipped_steps"]] or [math.inf])


def describe_plan(plan: dict[str, int]) -> str:
    """'8 seeds × 10 protocols', or '30 seeds of ns, svd-exact; 8 of gap' where the plan differs by protocol."""
    by: dict[int, list[str]] = {}
    for p, n in plan.items():
        by.setdefault(n, []).append(p)
    if len(by) == 1:
        (n, ps), = by.items()
        return f"{_seeds(n)} × {len(ps)} protocol{'s' if len(ps) != 1 else ''}"
    return "; ".join(f"{_seeds(n)} of {', '.join(ps)}" for n, ps in sorted(by.items(), reverse=True))


def _seeds(n: int) -> str:
    return f"{n} seed{'s' if n != 1 else ''}"


def _what_ran(runs, study, stopped=None) -> list[str]:
    """Finished against planned runs, the runs that stopped on their own, and the command that completes the grid."""
    plan = seed_plan_of(study)
    planned = sum(plan.values())
    stopped = {p: [r for r in rs if r["seed"] < plan.get(p, 0)] for p, rs in (stopped or {}).items()}
    n_stopped = sum(len(v) for v in stopped.values())
    done = sum(len([r for r in runs.get(p, []) if r["seed"] < n]) for p, n in plan.items())
    lines = [f"{done} of the {planned} planned runs ({describe_plan(plan)}) are finished."]
    if n_stopped:
        what = "; ".join(f"{LABELS[p]} seed {r['seed']}, in epoch {r['epoch']}: {r['reason'].split('. ')[0]}"
                         for p in PROTOCOLS for r in stopped.get(p, []))
        one = n_stopped == 1
        lines[0] += (f" {n_stopped} more stopped on {'its' if one else 'their'} own before {'its' if one else 'their'} "
                     f"last epoch and {'is' if one else 'are'} left out of every statistic below, which therefore "
                     f"describes the runs that finished ({what}). Rerunning {'it' if one else 'them'} would stop "
                     f"{'it' if one else 'them'} again: the steps are deterministic.")
    if done + n_stopped < planned:
        missing = []
        for p, n in plan.items():
            have = {r["seed"] for r in runs.get(p, [])} | {r["seed"] for r in stopped.get(p, [])}
            lack = [k for k in range(n) if k not in have]
            if lack:
                missing.append(f"{p}: seeds {', '.join(map(str, lack))}")
        dataset = study.get("settings", {}).get("dataset", "textures")
        cmd = ("svdgrad study hybrid" + (" --quick" if study.get("quick") else "")
               + (f" --dataset {dataset}" if dataset != "textures" else "") + " --resume")
        lines += ["", "**This report covers part of the grid.** Missing: " + "; ".join(missing) + f". Complete it "
                  f"with `{cmd}` (the plan is kept in study.json; finished runs are kept, an interrupted run "
                  f"continues from its last epoch, and this report is rewritten)."]
    return lines


def _other_findings(runs, switch, d):
    lines = []
    # Skipped steps: where the non-finite gradients were, and at which lr.
    base_lr = None
    per = {}
    for p, rs in runs.items():
        for r in rs:
            for h in r["history"]:
                base_lr = h["lr"] if h["epoch"] == 1 else base_lr
                if h["skipped_steps"]:
                    per.setdefault(p, []).append((h["epoch"], h["lr"], h["method"], h["skipped_steps"]))
    total = sum(c for v in per.values() for *_, c in v)
    if total == 0:
        lines.append(f"- No step had a non-finite loss or gradient in any run: with {d}×{d} covariances "
                     f"computed in float64 the eigen-gradients never produced inf or NaN here, so the "
                     f"instability the paper describes can show up only as a difference in accuracy, not as "
                     f"failed steps.")
    else:
        at_base = sum(c for v in per.values() for e, lr, m, c in v if base_lr is not None and lr >= base_lr)
        parts = "; ".join(
            f"{LABELS[p]}: " + ", ".join(f"{c} in epoch {e} ({m}, lr {lr:g})" for e, lr, m, c in v)
            for p, v in per.items())
        lines.append(f"- {total} steps were skipped because the loss or a gradient was not finite ({parts}). "
                     f"{at_base} of them were taken at the initial lr, before the first decay; the paper's "
                     f"account (SVD gradients fail mainly while the lr is large) "
                     f"{'agrees' if 2 * at_base > total else 'does not agree'} with where they happened here.")
    # Padé in svdgrad is ordinary outside its pole gap, bit for bit (``_kernels.pade_K``); the eigen methods share
    # the forward, so paired runs agree exactly until one of them meets a pair inside the gap (or skips a step).
    if "svd-pade" in runs and "svd-ordinary" in runs:
        n_seeds, parted = 0, {}  # seed -> largest training-loss difference before the first skipped step
        first = {"ordinary": 0, "pade": 0, "both": 0}  # seeds by which run skipped a step first
        po = {r["seed"]: r for r in runs["svd-ordinary"]}
        for r in runs["svd-pade"]:
            o = po.get(r["seed"])
            if not o:
                continue
            n_seeds += 1
            o_skip, p_skip = _first_skipped_epoch(o["history"]), _first_skipped_epoch(r["history"])
            first_skip = min(o_skip, p_skip)
            if first_skip < math.inf:
                first["both" if o_skip == p_skip else "ordinary" if o_skip < p_skip else "pade"] += 1
            before = [abs(a["train_loss"] - b["train_loss"]) for a, b in zip(r["history"], o["history"])
                      if a["epoch"] < first_skip]
            if any(d != 0 for d in before):
                parted[r["seed"]] = max(before)
        if n_seeds:
            agree = (f"the two runs' training losses agree exactly in every epoch before the first skipped step "
                     f"in {n_seeds - len(parted)} of {n_seeds} seeds")
            if parted:
                agree += (f"; in {len(parted)} (seed{'s' if len(parted) > 1 else ''} "
                          f"{', '.join(str(s) for s in sorted(parted))}) they part before any skip, by up to "
                          f"{_sci(max(parted.values()))} in training loss")
            who = [f"in {first['ordinary']} of {n_seeds} seeds `ordinary` hit a non-finite gradient "
                   f"(1/(λi − λj) overflows only at tied or nearly tied eigenvalues) where `pade` stayed finite"]
            if first["pade"]:
                who.append(f"in {first['pade']} `pade` skipped a step where `ordinary` stayed finite")
            if first["both"]:
                who.append(f"in {first['both']} both first skipped a step in the same epoch")
            lines.append(f"- `pade` ([50/50] Padé of 1/(1−x)) is `ordinary` wherever no two eigenvalues lie within "
                         f"its pole gap (eps·λmax), bit for bit. Paired by seed, " + agree + "; " + "; ".join(who)
                         + ", and from that epoch on the two runs differ.")
    hyb = [p for p in ("hybrid-ordinary", "hybrid-pade", "hybrid-exact") if p in runs]
    if len(hyb) > 1:
        by_seed = {}
        for p in hyb:
            for r in runs[p]:
                by_seed.setdefault(r["seed"], []).append(r["summary"]["final_val_acc"])
        spread = max(max(v) - min(v) for v in by_seed.values())
        lines.append(f"- After the switch the eigen methods share the forward (an exact square root) and their "
                     f"backwards agree up to rounding unless eigenvalues tie; with the same seed the hybrids "
                     f"{', '.join('`' + h + '`' for h in hyb)} end with final validation accuracies at most {100 * spread:.2f} points "
                     f"apart.")
    return lines


def _identical_sentence(runs) -> str:
    merged = [g for g in identical_groups(runs) if len(g) > 1]
    if not merged:
        return "No two protocols have identical logs, so each has its own line."
    return ("; ".join(", ".join(LABELS[p] for p in g) for g in merged)
            + f" have identical logs (every loss and accuracy of every epoch and seed agrees to {SAME_RTOL:g}, "
              f"relative), so each such group is drawn as one line; their differences cannot rank them.")


def _data_line(s) -> str:
    if s["dataset"] == "elpv":
        return (f"- Data: `elpv` (the elpv-dataset package: 2,624 electroluminescence images of solar cells, 4 "
                f"classes of defect probability, CC BY-NC-SA 4.0), resized to {s['image_size']} px, stratified "
                f"80/20 split into training and validation images.")
    return (f"- Data: `{s['dataset']}`, {s['image_size']} px grayscale patches, {s['train_per_class']} training "
            f"and {s['val_per_class']} validation patches per class; training and validation patches come from "
            f"disjoint parts of each photograph.")


def write_report(out: str) -> str:
    runs = load_runs(out)
    stopped = load_stopped(out)
    study = read_study(out)
    settings = study["settings"]
    switches = {switch_of(rs) for p, rs in runs.items() if p in HYBRIDS} - {None}
    switch = min(switches) if switches else None
    if runs:
        _figures(runs, out, switch)

    rows = ["| protocol | runs | final val acc % | best val acc % | final val loss | skipped steps (all seeds) "
            "| median κ, epoch 1 → last | time per run (s) |",
            "|---|---|---|---|---|---|---|---|"]
    for p in PROTOCOLS:
        rs = runs.get(p, [])
        if not rs:
            rows.append(f"| {LABELS[p]} | 0 | | | | | | |")
            continue
        fa = mean_std([r["summary"]["final_val_acc"] for r in rs])
        ba = mean_std([r["summary"]["best_val_acc"] for r in rs])
        fl = mean_std([r["summary"]["final_val_loss"] for r in rs])
        sk = sum(r["summary"]["skipped_steps"] for r in rs)
        e, k = _per_epoch(rs, "kappa_median", "geo")
        kk = f"{_sci(k[0])} → {_sci(k[-1])}" if p != "gap" else "—"
        tm = mean_std([r["summary"]["elapsed_s"] for r in rs])[0]
        n_stop = len(stopped.get(p, []))
        rows.append(f"| {LABELS[p]} | {len(rs)}{f' (+{n_stop} stopped)' if n_stop else ''} | {_fmt(*fa)} | {_fmt(*ba)} | {_fmt(*fl, pct=False)} | {sk} "
                    f"| {kk} | {tm:.0f} |")
    judged = claims(runs, switch)
    total_time = sum(r["summary"]["elapsed_s"] for rs in runs.values() for r in rs)
    n_runs = sum(len(rs) for rs in runs.values())
    s = settings
    lines = [
        "# Hybrid protocol study: Newton-Schulz, SVD, and NS → SVD",
        "",
        "Written by `svdgrad study hybrid" + (" --quick" if study["quick"] else "")
        + (f" --dataset {s['dataset']}" if s["dataset"] != "textures" else "") + "` from the run logs in "
        "`runs/`; every number below is computed from those logs. Run the command again to regenerate "
        "(finished runs are reused; `--report-only` only redraws).",
        "",
        "## Setup",
        "",
        _data_line(s),
        f"- Network: `svdgrad.nn.SmallResNet`, widths {tuple(s['widths'])}, last stage without stride, head "
        f"`CovariancePooling` with d = {s['reduced_channels']} (so Σ is {s['reduced_channels']}×"
        f"{s['reduced_channels']}) or `GlobalAveragePooling`.",
        f"- Training: SGD, lr {s['lr']}, momentum {s['momentum']}, weight decay {s['weight_decay']}, batch "
        f"{s['batch_size']}, {s['epochs']} epochs, `{s['schedule']}` schedule with the default milestones"
        + (f"; the hybrid runs switch at the last lr decay, epoch {switch}" if switch is not None else "")
        + (f", and `{EARLY}` at the first, epoch {switch_of(runs[EARLY])} (`--switch-lr "
           f"{PROTOCOLS[EARLY]['switch_lr']:g}`)" if runs.get(EARLY) else "") + f". Newton-Schulz: {s['ns_iterations']} "
        f"iterations; eigen methods computed in float64.",
        f"- Planned: {describe_plan(seed_plan_of(study))}; {n_runs} runs finished (see What ran), {total_time / 60:.1f} minutes of run time in "
        f"all, so about {total_time / 60 / study['jobs']:.0f} minutes of wall time with {study['jobs']} parallel "
        f"job(s) of one thread each ({study['cpu_count']} cores shared with other work, torch {study['torch']}).",
        "",
        "## Results",
        "",
        "Validation accuracy as mean ± standard deviation over seeds (percent). κ = λmax/λmin of the pooled "
        "covariance Σ (before the layer's floor), median over the epoch's training samples, then the geometric "
        "mean over seeds; it saturates at 1/eps(float64).",
        "",
        *rows,
        "",
        "## What ran",
        "",
        *_what_ran(runs, study, stopped),
        "",
        "## Do the papers' findings hold here?",
        "",
        "Each claim is tested on the final validation accuracy with scipy.stats: a paired t-test by seed where "
        "the two protocols share their runs up to the switch (a hybrid against NS), Welch's test otherwise; "
        "95% confidence intervals for every difference; Holm's correction across the family of claims. A claim "
        "holds or goes the other way when its Holm-adjusted p-value is below 0.05, and is otherwise not "
        "resolved, with its interval.",
        "",
        *_findings(runs, switch, judged),
        "",
        "![accuracy and loss curves](curves.png)",
        "",
        "Left and middle: mean over seeds, with the range over the seeds as a band; a vertical line marks a "
        "switch of the hybrid runs (NS before it, the SVD method from it on), and each hybrid line starts just "
        "before its switch, since until then it is the NS run. Right: the final value of every seed. "
        + _identical_sentence(runs),
        "",
        *_claim_lines(judged, accuracy=True),
        "",
        "![condition number against epoch and lr](kappa.png)",
        "",
        *_claim_lines(judged, accuracy=False),
        "",
        "![skipped steps](skipped.png)",
        "",
        *_other_findings(runs, switch, s['reduced_channels']),
        "",
        "This is a small network on a small image problem trained for a few epochs on a CPU, not ResNet-50 on "
        "ImageNet: agreement or disagreement here is evidence about this setting only.",
        "",
        "## Files",
        "",
        "- `runs/<protocol>/seed<k>/log.jsonl`: one line per epoch (lr, method, losses, accuracies, κ "
        "statistics, skipped steps, wall time); `summary.json`, `config.json` next to it.",
        "- `study.json`: the grid and settings of this study.",
        "",
    ]
    path = os.path.join(out, "REPORT.md")
    write_atomic(path, "\n".join(lines))
    return path
