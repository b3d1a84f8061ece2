"""svdgrad's ``mpa`` against the FDMS reference code (Song, Sebe & Wang, ICLR 2022), on the same matrices.

The FDMS code is not part of svdgrad and is not copied here: pass your own
checkout of https://github.com/KingJamesSong/FastDifferentiableMatSqrt
(its ``torch_utils.py`` defines ``MPA_Lya``, the [5/5] Padé forward with a
Lyapunov backward of a fixed 8 sign iterations)::

    git clone https://github.com/KingJamesSong/FastDifferentiableMatSqrt /tmp/fdms-repo
    python tools/fdms_compare.py --fdms /tmp/fdms-repo/torch_utils.py --out reports/fdms/REPORT.md

What it measures (float64 for accuracy, float32 for time, threads pinned):

- the gradient error of each against ``exact`` (the same [5/5] forward, so
  the same approximation error is expected);
- the Lyapunov residual ‖Z X + X Z − sym(G)‖/‖sym(G)‖ at each one's own
  output Z and gradient X (the backward's own accuracy);
- forward + backward time, FDMS over svdgrad ``mpa`` and svdgrad ``mpa`` over
  ``newton_schulz`` (5 iterations), interleaved rounds, median of ratios.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch

import svdgrad
from svdgrad import testing as T


def load_fdms(path: str):
    spec = importlib.util.spec_from_file_location("fdms_torch_utils", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot import {path}")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    if not hasattr(mod, "MPA_Lya"):
        raise SystemExit(f"{path} has no MPA_Lya: pass the FDMS repository's torch_utils.py")
    return mod


def grad(fn, A, G):
    X = A.clone().requires_grad_()
    Z = fn(X)
    (g,) = torch.autograd.grad(Z, X, G)
    return Z.detach(), T.sym_part(g)


def accuracy_rows(fdms, n: int, kappas) -> list[str]:
    rows = []
    for kappa in kappas:
        A = T.spd(n, kappa, batch=(4,), seed=1)
        G = T.gradients(A.shape, seed=2)
        Gs = T.sym_part(G)
        _, ge = grad(lambda x: svdgrad.sqrtm(x, "exact"), A, G)
        zf, gf = grad(fdms.MPA_Lya.apply, A, G)
        zo, go = grad(lambda x: svdgrad.sqrtm(x, "mpa"), A, G)
        rows.append(f"| {kappa:g} | {T.rel_error(gf, ge):.2e} | {T.rel_error(go, ge):.2e} "
                    f"| {T.rel_error(zf @ gf + gf @ zf, Gs):.1e} | {T.rel_error(zo @ go + go @ zo, Gs):.1e} |")
    return rows


def timing_rows(fdms, sizes, batch: int, rounds: int) -> list[str]:
    rows = []
    for n in sizes:
        A = T.spd(n, 1e2, batch=(batch,), seed=3).float()
        G = T.gradients(A.shape, seed=4, dtype=torch.float32)
        fns = {"fdms": lambda: grad(fdms.MPA_Lya.apply, A, G),
               "mpa": lambda: grad(lambda x: svdgrad.sqrtm(x, "mpa"), A, G),
               "ns": lambda: grad(lambda x: svdgrad.sqrtm(x, "newton_schulz"), A, G)}
        try:
            for f in fns.values():
                f()
        except RuntimeError as exc:  # FDMS's LU solve (pytorch #142815) with more than one thread
            rows.append(f"| {n} | {batch} | — | FDMS failed: {str(exc).splitlines()[0]} | — |")
            continue
        times = {k: [] for k in fns}
        for _ in range(rounds):
            for k, f in fns.items():
                t0 = time.perf_counter()
                f()
                times[k].append(time.perf_counter() - t0)
        r_f = statistics.median(a / b for a, b in zip(times["fdms"], times["mpa"]))
        r_n = statistics.median(a / b for a, b in zip(times["mpa"], times["ns"]))
        rows.append(f"| {n} | {batch} | {1e3 * statistics.median(times['mpa']):.1f} | {r_f:.2f} | {r_n:.2f} |")
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--fdms", required=True, help="path to the FDMS repository's torch_utils.py")
    p.add_argument("--out", default=None, help="write the markdown report here (default: stdout)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (default 1: with 2, FDMS's LU solve fails from n of about 192 in torch 2.13)")
    p.add_argument("--rounds", type=int, default=7)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")  # FDMS's code and torch deprecations
    fdms = load_fdms(args.fdms)
    lines = [
        "# svdgrad `mpa` against the FDMS reference code",
        "",
        f"Written by `python tools/fdms_compare.py --fdms <torch_utils.py>` (torch {torch.__version__}, "
        f"{args.threads} thread(s)). Both are the [5/5] Padé forward with a Lyapunov backward; FDMS runs a fixed "
        f"8 sign iterations, svdgrad iterates each matrix to its tolerance.",
        "",
        "## Accuracy (float64, n = 32, 4 matrices)",
        "",
        "| κ(A) | gradient error vs exact, FDMS | svdgrad mpa | Lyapunov residual, FDMS | svdgrad mpa |",
        "|---|---|---|---|---|",
        *accuracy_rows(fdms, 32, (1e1, 1e2, 1e3, 1e4)),
        "",
        "The gradient error against `exact` is the Padé forward's own (the same in both); the residual is "
        "the backward's accuracy at each one's own output.",
        "",
        f"## Time (float32, κ = 100, forward + backward, {args.rounds} interleaved rounds, median of ratios)",
        "",
        "| n | batch | svdgrad mpa (ms) | FDMS / svdgrad mpa | svdgrad mpa / newton_schulz(5) |",
        "|---|---|---|---|---|",
        *timing_rows(fdms, (64, 256), 32, args.rounds),
        "",
    ]
    text = "\n".join(lines)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
