"""Does the power-iteration gradient equal the Taylor gradient of the same degree? (Wang et al., TPAMI 2021)

For each matrix (n = 16, float64; κ and spectrum from the grid below) and
each number of power steps K, the symmetric gradient of ⟨G, sqrtm(A)⟩ from
``power_iteration`` (iterations=K) is compared with ``taylor`` of degree
K − 1 and K, and both with ``exact`` (a 50-digit-accurate reference at
these sizes, see reports/condition_sweep).  Writes
reports/power_iteration/REPORT.md.

    python studies/power_iteration_vs_taylor.py [--out reports/power_iteration]

Why K − 1: one power step on the deflated matrix scales the component of
the i-th vector along u_j by λj/λi, so K steps give the partial sum
(1/λi)·Σ_{k<K} (λj/λi)^k of 1/(λi − λj): Taylor of degree K − 1 in x = λj/λi.
"""

from __future__ import annotations

import argparse
import os
import statistics
from pathlib import Path

import torch

import svdgrad
from svdgrad import testing as T

KAPPAS = (1e1, 1e2, 1e4, 1e6)
SPECTRA = ("logspaced", "clustered")
STEPS = (3, 9, 19, 49)
SEEDS = (0, 1, 2)
N = 16


def sym_grad(A, G, method, **options):
    A1 = A.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(svdgrad.sqrtm(A1, method, **options), A1, G)
    return 0.5 * (g + g.mT)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "reports" / "power_iteration"))
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    rows = []
    for spectrum in SPECTRA:
        for kappa in KAPPAS:
            for K in STEPS:
                d_prev, d_same, e_pi, e_tay = [], [], [], []
                for seed in SEEDS:
                    A = T.spd(N, kappa, spectrum, seed=seed)
                    G = T.gradients(A.shape, seed=100 + seed)
                    g_ex = sym_grad(A, G, "exact")
                    g_pi = sym_grad(A, G, "power_iteration", iterations=K)
                    g_t1 = sym_grad(A, G, "taylor", degree=K - 1)
                    g_t = sym_grad(A, G, "taylor", degree=K)
                    d_prev.append(T.rel_error(g_pi, g_t1))
                    d_same.append(T.rel_error(g_pi, g_t))
                    e_pi.append(T.rel_error(g_pi, g_ex))
                    e_tay.append(T.rel_error(g_t1, g_ex))
                rows.append((spectrum, kappa, K, max(d_prev), max(d_same), statistics.median(e_pi),
                             statistics.median(e_tay)))
                print(rows[-1], flush=True)
    agree = [r for r in rows if min(r[3], r[4]) <= 1e-8]
    sep = [r for r in rows if r[0] == "logspaced"]
    ratio = [r[5] / r[6] for r in sep if r[6] > 1e-12]
    gap = [min(r[3], r[4]) / max(r[5], r[6]) for r in sep if max(r[5], r[6]) > 1e-12]
    clu = [r for r in rows if r[0] == "clustered"]
    lines = [
        "# Power-iteration gradient against Taylor of the same degree",
        "",
        "Written by `python studies/power_iteration_vs_taylor.py`. n = 16, float64, seeds "
        f"{', '.join(map(str, SEEDS))} (max over seeds for the differences, median for the errors).",
        "PI(K) = `power_iteration` with K steps; T(d) = `taylor` of degree d; errors are relative Frobenius",
        "errors of the symmetric gradient of ⟨G, sqrtm(A)⟩ against `exact`.",
        "",
        "## What holds and what does not",
        "",
        f"- **As an identity, the claim does not hold.** PI(K) equals T(K − 1) or T(K) to ≤ 1e-8 in "
        f"{len(agree)} of {len(rows)} cells, and only where both are already within 1e-8 of `exact`.",
        f"- **On separated (logspaced) spectra PI(K) and T(K − 1) are alike in size of error, not in value.** "
        f"PI's error is {min(ratio):.2f}–{max(ratio):.2f}× Taylor's (median {statistics.median(ratio):.2f}); "
        f"their distance from each other is {min(gap):.1f}–{max(gap):.1f}× the larger of the two errors, so they "
        "err in different directions. Both converge to `exact` at the same geometric rate in K.",
        f"- **On clustered spectra neither converges:** errors stay at {min(min(r[5], r[6]) for r in clu):.2f}–"
        f"{max(max(r[5], r[6]) for r in clu):.2f} for every K, and PI(K) stays "
        f"{min(r[4] for r in clu):.2f}–{max(r[4] for r in clu):.2f} away from T(K).",
        "- A likely reason (derived by hand, not measured here): K power steps give the larger vector of a pair the partial sum 1 − x^K of",
        "  1/(λi − λj) (x = λj/λi), but the smaller vector inherits its component through the deflation",
        "  λi·vi·viᵀ, which carries 1 − x^(K−1); PI's K is not antisymmetric, so no single Taylor degree matches.",
        "",
        "| spectrum | κ | K | ‖PI(K) − T(K−1)‖/‖T‖ | ‖PI(K) − T(K)‖/‖T‖ | PI(K) vs exact | T(K−1) vs exact |",
        "|---|---|---|---|---|---|---|",
    ]
    for spectrum, kappa, K, dp, ds, ep, et in rows:
        lines.append(f"| {spectrum} | {kappa:.0e} | {K} | {dp:.1e} | {ds:.1e} | {ep:.1e} | {et:.1e} |")
    lines.append("")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / "REPORT.md.tmp"
    tmp.write_text("\n".join(lines))
    os.replace(tmp, out / "REPORT.md")
    print(f"wrote {out / 'REPORT.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
