"""REPORT.md and figures of ``svdgrad study landscape``, computed from the saved run logs only.

Reading the logs (``load``), the tables and claims (``claims``), one function per figure, then the
Markdown writer (``write_report``).  Imports the grid (``landscape_grid``) and ``stats``, never the runner.
"""

from __future__ import annotations

import math
import os

from .._io import savefig_atomic, write_atomic
from . import stats
from .landscape_grid import LABELS, PARTS, SHARED, run_dir
from .report import _read_json, _read_log, mean_std, read_study


def _read_jsonl(path):
    """A finished run's log; probes.jsonl and landscape.jsonl may be missing (probes off)."""
    return _read_log(path) if os.path.exists(path) else []


def load(out: str, seeds: int) -> dict[tuple[str, str], list[dict]]:
    """(part, protocol) -> finished runs {seed, summary, history, probes, landscape}; shared protocols included."""
    keys = [(p, n) for p, ps in PARTS.items() for n in ps] + list(SHARED)
    runs = {}
    for part, name in keys:
        for seed in range(seeds):
            d = run_dir(out, part, name, seed)
            if not os.path.exists(os.path.join(d, "summary.json")):
                continue
            summary = _read_json(os.path.join(d, "summary.json"))
            runs.setdefault((part, name), []).append({
                "seed": seed, "summary": summary, "history": _read_jsonl(os.path.join(d, "log.jsonl")),
                "probes": _read_jsonl(os.path.join(d, "probes.jsonl")),
                "landscape": _read_jsonl(os.path.join(d, "landscape.jsonl"))})
    return runs


def _acc(rs):
    return [r["summary"]["final_val_acc"] for r in rs]


def _mean_range(r, key):
    """Mean over a run's probes of (max − min over η) of ``key`` (delta_l or delta_g)."""
    # (NaN if a probe's loss or gradient diverged: Python's max/min gave an answer that hung on where the NaN sat)
    v = [math.nan if any(math.isnan(x) for x in p[key]) else max(p[key]) - min(p[key]) for p in r["landscape"]]
    return sum(v) / len(v) if v else math.nan


def _mean_rel(r):
    v = [p["rel_err"] for p in r["probes"]]
    return sum(v) / len(v) if v else math.nan


def claims(runs) -> list[tuple[stats.Comparison, str, float, int]]:
    """Every claim of the report, judged together with Holm: (comparison, unit, scale, digits)."""
    g = lambda part, name: runs.get((part, name), [])  # noqa: E731
    out = []

    def welch(claim, a, b, unit="points", scale=100.0, digits=1):
        out.append((stats.welch(claim, a, b), unit, scale, digits))

    gap, ns, ex = g("probes", "gap"), g("probes", "gcp-ns"), g("probes", "gcp-exact")
    for key, what, unit in (("delta_l", "loss Lipschitzness: a smaller range of Δl over η (eq. 3)", "(loss)"),
                            ("delta_g", "gradient predictiveness: a smaller range of Δg over η (eq. 4)",
                             "(gradient norm)")):
        for name, rs in (("GCP-NS", ns), ("GCP-exact", ex)):
            welch(f"{name} has better {what} than GAP (CVPR20 Fig. 2; the difference is GAP's range minus "
                  f"GCP's, averaged over the probes)",
                  [_mean_range(r, key) for r in gap], [_mean_range(r, key) for r in rs], unit, 1.0, 4)
    welch("GCP-NS beats GAP in accuracy with the step schedule (LR_norm)", _acc(ns), _acc(gap))
    for s, lab in (("fast", "LR_fast"), ("adj", "LR_adj")):
        welch(f"GCP-NS beats GAP under {lab} (CVPR20 Table 3: GCP supports rapid lr decay)",
              _acc(g("schedules", f"gcp-ns-{s}")), _acc(g("schedules", f"gap-{s}")))
    for kind in ("noise", "blur", "contrast"):
        m = lambda rs: [sum(r["summary"]["robustness"][f"{kind}{k}"] for k in (1, 2, 3)) / 3 for rs_ in [rs]  # noqa
                        for r in rs_ if "robustness" in r["summary"]]
        welch(f"GCP-NS beats GAP on {kind}-corrupted validation images (CVPR20 sect. 4.2; mean over 3 severities)",
              m(ns), m(gap))
    welch("Σ in float64 beats Σ in float32 for GCP-exact (ICCV21: float32 loses small eigenvalues)",
          _acc(ex), _acc(g("precision", "sigma32")))
    welch("the features route in float32 beats Σ in float64 (issue 9: its SVD sees κ(X), not κ(X)²)",
          _acc(g("precision", "features32")), _acc(ex))
    for k in sorted({n.split("-k")[1] for n in PARTS["secondorder"]}, key=float):
        welch(f"GCP-NS beats GAP on the second-order dataset at κ {k} (classes differ only in correlations)",
              _acc(g("secondorder", f"gcp-ns-k{k}")), _acc(g("secondorder", f"gap-k{k}")))
    judged = stats.judge([c for c, *_ in out])
    return [(j, *rest) for j, (_, *rest) in zip(judged, out)]


# ---------------------------------------------------------------------------
# Figures: one function each.
# ---------------------------------------------------------------------------

def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _by_step(rs, fn):
    """step -> list over seeds of fn(probe row)."""
    out = {}
    for r in rs:
        for p in r["landscape"] or r["probes"]:
            out.setdefault(p["step"], []).append(fn(p))
    return sorted(out), out


def landscape_figure(runs, path):
    """CVPR20 Fig. 2: per protocol, the range of Δl (left) and Δg (right) over η at each probe step
    (band: min and max over η, averaged over seeds), with L(X) (left) as a line."""
    plt = _plt()
    protos = [n for n in PARTS["probes"] if runs.get(("probes", n))]
    fig, axs = plt.subplots(1, 2, figsize=(13, 4.5))
    colors = {n: plt.get_cmap("tab10")(i) for i, n in enumerate(PARTS["probes"])}
    for n in protos:
        rs = runs[("probes", n)]
        for ax, key in zip(axs, ("delta_l", "delta_g")):
            steps, d = _by_step(rs, lambda p: (min(p[key]), max(p[key]), p["loss"]))
            lo = [sum(v[0] for v in d[s]) / len(d[s]) for s in steps]
            hi = [sum(v[1] for v in d[s]) / len(d[s]) for s in steps]
            ax.fill_between(steps, lo, hi, color=colors[n], alpha=0.3, lw=0)
            ax.plot(steps, hi, color=colors[n], lw=0.8, label=f"{LABELS[n]} ({len(rs)} seeds)")
            if key == "delta_l":
                ax.plot(steps, [sum(v[2] for v in d[s]) / len(d[s]) for s in steps], "--", color=colors[n], lw=1)
    axs[0].set(xlabel="training step", ylabel="Δl = L(X + η∇L), range over η", yscale="log",
               title="loss Lipschitzness (eq. 3); dashed: L(X)")
    axs[1].set(xlabel="training step", ylabel="Δg = ‖∇L(X) − ∇L(X + η∇L)‖, range over η", yscale="log",
               title="gradient predictiveness (eq. 4)")
    for ax in axs:
        ax.legend(fontsize=8)
    fig.tight_layout()
    savefig_atomic(fig, path, dpi=110)
    plt.close(fig)


def gradient_figure(runs, path):
    """ICCV21 gradient smoothness: the method's gradient at the pooling input against exact (float64)."""
    plt = _plt()
    series = [(("probes", "gcp-ns"), "GCP, Newton-Schulz"), (("precision", "sigma32"), LABELS["sigma32"]),
              (("precision", "features32"), LABELS["features32"])]
    fig, axs = plt.subplots(1, 2, figsize=(13, 4.2))
    for i, (key, lab) in enumerate(series):
        rs = runs.get(key)
        if not rs:
            continue
        for ax, m in zip(axs, ("rel_err", "cosine")):
            # 1 − cosine on a log axis: the float32 routes sit within 1e-9 of 1, invisible on a linear one
            f = (lambda p: p["rel_err"]) if m == "rel_err" else (lambda p: max(1.0 - p["cosine"], 1e-16))
            steps, d = _by_step([{"landscape": [], "probes": r["probes"]} for r in rs], f)
            mean = [sum(d[s]) / len(d[s]) for s in steps]
            ax.plot(steps, mean, color=f"C{i}", label=f"{lab} ({len(rs)} seeds)")
            if len(rs) > 1:
                ax.fill_between(steps, [min(d[s]) for s in steps], [max(d[s]) for s in steps], color=f"C{i}",
                                alpha=0.2, lw=0)
    axs[0].set(xlabel="training step", ylabel="‖g − g_exact,64‖ / ‖g_exact,64‖", yscale="log",
               title="relative error of the gradient at the pooling input")
    axs[1].set(xlabel="training step", ylabel="1 − cosine(g, g_exact,64)", yscale="log",
               title="1 − cosine to the exact gradient (floored at 1e-16)")
    for ax in axs:
        ax.legend(fontsize=8)
    fig.tight_layout()
    savefig_atomic(fig, path, dpi=110)
    plt.close(fig)


def accuracy_figure(runs, path):
    """Final accuracy of every seed (dots) and the mean (bar) for each protocol, grouped by part."""
    plt = _plt()
    keys = [k for k in [("probes", n) for n in PARTS["probes"]] + [("precision", n) for n in PARTS["precision"]]
            + [("schedules", n) for n in PARTS["schedules"]] + [("secondorder", n) for n in PARTS["secondorder"]]
            if runs.get(k)]
    fig, ax = plt.subplots(figsize=(13, 4.2))
    for i, k in enumerate(keys):
        v = [100 * a for a in _acc(runs[k])]
        ax.scatter([i] * len(v), v, s=16, color=f"C{list(PARTS).index(k[0])}", zorder=3)
        ax.hlines(sum(v) / len(v), i - 0.3, i + 0.3, color=f"C{list(PARTS).index(k[0])}")
    ax.set_xticks(range(len(keys)), [LABELS[k[1]] for k in keys], rotation=35, ha="right", fontsize=8)
    ax.set_ylabel("final validation accuracy %")
    ax.set_title("each dot a seed, bar = mean; colour = part (probes, precision, schedules, second-order)")
    fig.tight_layout()
    savefig_atomic(fig, path, dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------------------
# Markdown.
# ---------------------------------------------------------------------------

def _row(runs, key):
    rs = runs.get(key, [])
    if not rs:
        return None
    acc = mean_std(_acc(rs))
    kap = [r["history"][-1]["kappa_median"] for r in rs if r["history"] and r["history"][-1].get("kappa_median")]
    kg = math.exp(sum(math.log(k) for k in kap) / len(kap)) if kap else math.nan
    skipped = sum(r["summary"]["skipped_steps"] for r in rs)
    t = mean_std([r["summary"]["elapsed_s"] for r in rs])[0]
    rel = mean_std([_mean_rel(r) for r in rs if r["probes"]])[0] if any(r["probes"] for r in rs) else math.nan
    pm = "n/a" if math.isnan(acc[1]) else f"{100 * acc[1]:.1f}"
    return (f"| {LABELS[key[1]]} | {len(rs)} | {100 * acc[0]:.1f} ± {pm} | "
            f"{'—' if math.isnan(kg) else f'{kg:.2e}'} | {skipped} | {'—' if math.isnan(rel) else f'{rel:.2e}'} | {t:.0f} |")


def robustness_table(runs) -> list[str]:
    """Mean accuracy (%) over seeds on the clean and on every corrupted validation set."""
    keys = [("probes", n) for n in PARTS["probes"] if runs.get(("probes", n))]
    cols = None
    rows = []
    for k in keys:
        rob = [r["summary"]["robustness"] for r in runs[k] if "robustness" in r["summary"]]
        if not rob:
            continue
        cols = cols or list(rob[0])
        rows.append(f"| {LABELS[k[1]]} | " + " | ".join(f"{100 * sum(x[c] for x in rob) / len(rob):.1f}"
                                                      for c in cols) + " |")
    if not rows:
        return []
    return ["| protocol | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols), *rows, "",
            "Accuracy % on the validation images, mean over seeds; severities 1-3 of each corruption as in "
            "`svdgrad.train.corruptions.SEVERITIES` (5 texture classes: chance is 20%)."]


def gradient_predicts(runs) -> str:
    """Does a run's mean gradient error predict its accuracy?  Spearman's rank correlation over the GCP runs
    of the probes and precision parts (GCP-exact counts with error 0, the reference itself)."""
    from scipy import stats as sps

    pts = []
    for key in (("probes", "gcp-ns"), ("probes", "gcp-exact"), ("precision", "sigma32"), ("precision", "features32")):
        for r in runs.get(key, []):
            rel = 0.0 if key[1] == "gcp-exact" else _mean_rel(r)
            if not math.isnan(rel):
                pts.append((rel, r["summary"]["final_val_acc"]))
    if len(pts) < 4 or len({p[0] for p in pts}) < 2 or len({p[1] for p in pts}) < 2:
        return "Too few probed runs to relate gradient error to accuracy."
    rho, p = sps.spearmanr([a for a, _ in pts], [b for _, b in pts])
    verdict = ("a larger gradient error goes with a lower accuracy" if p < 0.05 and rho < 0 else
               "a larger gradient error goes with a higher accuracy" if p < 0.05 else
               "the gradient error does not predict the accuracy at the 5% level")
    return (f"Across the {len(pts)} probed GCP runs, Spearman's rank correlation between a run's mean relative "
            f"gradient error and its final accuracy is {rho:+.2f} (p = {p:.2g}): {verdict}.")


def _what_ran(runs, study) -> list[str]:
    seeds = study["seeds"]
    planned = study["planned_runs"]
    done = sum(len(v) for k, v in runs.items() if k not in SHARED)
    lines = [f"{done} of the {planned} planned runs ({seeds} seeds × {planned // seeds} configurations) are "
             f"finished."]
    if done < planned:
        missing = []
        for part, ps in PARTS.items():
            for n in ps:
                have = {r["seed"] for r in runs.get((part, n), [])}
                lack = [s for s in range(seeds) if s not in have]
                if lack:
                    missing.append(f"{part}/{n}: seeds {', '.join(map(str, lack))}")
        lines += ["", "**This report covers part of the grid.** Missing: " + "; ".join(missing) + ". Complete it "
                  f"with `{study['command']} --resume` (finished runs are kept; the report is rewritten)."]
    return lines


def write_report(out: str) -> str:
    study = read_study(out)
    runs = load(out, study["seeds"])
    base = study["grid"]["base"]
    if runs.get(("probes", "gap")) or runs.get(("probes", "gcp-ns")):
        landscape_figure(runs, os.path.join(out, "landscape.png"))
    if any(runs.get(k) for k in (("probes", "gcp-ns"), ("precision", "sigma32"))):
        gradient_figure(runs, os.path.join(out, "gradients.png"))
    if runs:
        accuracy_figure(runs, os.path.join(out, "accuracy.png"))
    judged = claims(runs)

    def said(prefix):
        return [f"- *{c.claim}*: {stats.describe(c, unit, scale, digits)}."
                for c, unit, scale, digits in judged if c.claim.startswith(prefix) or prefix in c.claim]

    def table(keys):
        rows = ["| protocol | seeds | final val acc % (mean ± sd) | median κ(Σ), last epoch | skipped steps | "
                "mean rel. error of the pooling-input gradient vs exact/float64 | time per run (s) |",
                "|---|---|---|---|---|---|---|"]
        return rows + [r for r in (_row(runs, k) for k in keys) if r]

    n_hold = sum(c.verdict == stats.HOLDS for c, *_ in judged)
    n_other = sum(c.verdict == stats.OTHER_WAY for c, *_ in judged)
    lines = [
        "# Landscape study: what covariance pooling changes in training",
        "",
        f"Written by `{study['command']}` from the run logs in `runs/`; every number below is computed from "
        "those logs (`--report-only` redraws it).",
        "",
        "## Setup",
        "",
        f"- Data: `{base['dataset']}` ({base['image_size']} px, {base['train_per_class']} training and "
        f"{base['val_per_class']} validation patches per class) and the synthetic `secondorder` dataset. "
        f"Network: `SmallResNet` widths {tuple(base['widths'])}, d = {base['reduced_channels']}; SGD lr "
        f"{base['lr']}, batch {base['batch_size']}, {base['epochs']} epochs with the step schedule unless stated.",
        "- Probes every few steps on a fixed batch of training images (`landscape.jsonl`, `probes.jsonl` in each "
        "run), in training mode, restoring every buffer afterwards (a probed run trains exactly as an unprobed "
        "one; tested).",
        f"- {study['jobs']} job(s), backend {study['backend']}, device {study['device']}, torch {study['torch']}, "
        f"{study['cpu_count']} cores shared with other work.",
        "",
        "## What ran",
        "",
        *_what_ran(runs, study),
        "",
        "## Verdicts",
        "",
        f"All claims below form one family: Welch's t-test across seeds, 95% confidence intervals, Holm's "
        f"correction; {n_hold} {'holds' if n_hold == 1 else 'hold'}, {n_other} "
        f"{'goes' if n_other == 1 else 'go'} the other way, {len(judged) - n_hold - n_other} "
        f"{'is' if len(judged) - n_hold - n_other == 1 else 'are'} not resolved.",
        "",
        "## Loss Lipschitzness and gradient predictiveness (CVPR20 eqs. 3-4)",
        "",
        "![landscape](landscape.png)",
        "",
        "X is the output of the first convolution (CVPR20 supplementary A1-A2); at each probe, Δl(η) = "
        "L(X + η∇L(X)) and Δg(η) = ‖∇L(X) − ∇L(X + η∇L(X))‖ for η in "
        f"{', '.join(f'{e:g}' for e in (runs.get(('probes', 'gap')) or [{'landscape': [{'etas': []}]}])[0]['landscape'][0]['etas']) if runs.get(('probes', 'gap')) and runs[('probes', 'gap')][0]['landscape'] else 'the grid'}"
        "; bands span min to max over η (the paper's Fig. 2), averaged over seeds.",
        "",
        *said("has better"),
        "",
        "## Gradient smoothness and data precision (ICCV21)",
        "",
        "![gradient error](gradients.png)",
        "",
        "Each probe compares the gradient at the pooling layer's input under the run's method with the gradient "
        "of `exact` on Σ in float64, at the same weights. Lines: mean over seeds; bands: min to max over seeds. "
        "GCP exact with Σ in float64 is the reference itself (its error is zero by construction), so it is not "
        "drawn; its accuracy is the probes part's GCP-exact run (the same configuration, run once).",
        "",
        *table([("probes", "gcp-exact"), ("precision", "sigma32"), ("precision", "features32"),
                ("probes", "gcp-ns")]),
        "",
        *said("float"),
        "",
        gradient_predicts(runs),
        "",
        "## Fast learning-rate schedules (CVPR20 Table 3) and corrupted images",
        "",
        "LR_norm is the step schedule of the probes part (the same runs); LR_fast and LR_adj are Table 3's "
        "polynomial schedules scaled to this run length.",
        "",
        *table([("probes", "gap"), ("probes", "gcp-ns")] + [("schedules", n) for n in PARTS["schedules"]]),
        "",
        *said("LR_"),
        "",
        *robustness_table(runs),
        "",
        *said("corrupted"),
        "",
        "## The second-order dataset",
        "",
        "Classes share channel means and variances and differ only in channel correlations; κ is the knob "
        "on the correlation spectrum.",
        "",
        *table([("secondorder", n) for n in PARTS["secondorder"]]),
        "",
        *said("second-order"),
        "",
        "![accuracy of every run](accuracy.png)",
        "",
        "A small network on small problems trained for minutes on a CPU: evidence about this setting only.",
        "",
    ]
    path = os.path.join(out, "REPORT.md")
    write_atomic(path, "\n".join(lines))
    return path
