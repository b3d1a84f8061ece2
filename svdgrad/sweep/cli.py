"""``svdgrad sweep`` and ``svdgrad report``.

    svdgrad sweep [--quick] [--methods M,..] [--dtypes D,..] [--sizes N,..]
                  [--kappas K,..] [--spectra S,..] [--seeds S,..]
                  [--jobs J] [--backend loky|ray] [--ray-address ADDR]
                  [--resume] [--out DIR] [--no-progress] [--no-report]
    svdgrad report [--out DIR]

``--kappas`` takes decades (``0,6,12`` = κ 1e0, 1e6, 1e12) or ranges
(``0-12``, ``0-12:2``).  Every list narrows the default (or ``--quick``)
grid, and every value must belong to it.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .._errors import SvdgradError
from .grid import default_grid, quick_grid
from .runner import BACKENDS, RESULTS

#: Output directories.  ``--quick`` writes beside, not over, the committed full-grid report.
DEFAULT_OUT = Path("reports") / "condition_sweep"
QUICK_OUT = DEFAULT_OUT / "quick"


class UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise UsageError(f"{self.prog}: error: {message}")


def _split(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _ints(axis: str, text: str) -> list[int]:
    out = []
    for tok in _split(text):
        try:
            if "-" in tok[1:]:
                rng, _, step = tok.partition(":")
                lo, hi = rng.split("-", 1)
                out.extend(range(int(lo), int(hi) + 1, int(step or 1)))
            else:
                out.append(int(tok))
        except ValueError:
            raise UsageError(f"--{axis}: expected comma-separated integers or ranges like 0-12:2; "
                             f"received {tok!r}") from None
    if not out:
        raise UsageError(f"--{axis}: expected at least one value; received {text!r}")
    return out


def _names(axis: str, text: str, valid) -> list[str]:
    names = _split(text)
    if not names:
        raise UsageError(f"--{axis}: expected at least one of {', '.join(valid)}; received {text!r}")
    bad = [v for v in names if v not in valid]
    if bad:
        raise UsageError(f"--{axis}: unknown {', '.join(map(repr, bad))}; expected one or more of "
                         f"{', '.join(valid)} (comma-separated)")
    return names


def _sweep_parser() -> argparse.ArgumentParser:
    g = default_grid()
    p = _Parser(prog="svdgrad sweep", description=(
        "Condition-number sweep: gradient accuracy of every sqrtm method against a reference, "
        "float32 vs float64, over n, κ and spectrum shape. Writes results.csv, REPORT.md and figures."))
    p.add_argument("--quick", action="store_true",
                   help=f"small grid (n=16, κ=1e0,1e2,…,1e12; < 60 s on 2 cores), written to {QUICK_OUT}")
    p.add_argument("--methods", help=f"comma-separated subset of: {', '.join(g.methods)}")
    p.add_argument("--dtypes", help=f"subset of: {', '.join(g.dtypes)}")
    p.add_argument("--sizes", help=f"subset of n: {', '.join(map(str, g.sizes))}")
    p.add_argument("--kappas", help="subset of log10 κ, e.g. 0,6,12 or 0-12:2 (default 0-12)")
    p.add_argument("--spectra", help=f"subset of: {', '.join(g.spectra)}")
    p.add_argument("--seeds", help=f"subset of: {', '.join(map(str, g.seeds))}")
    p.add_argument("--jobs", type=int, default=2, help="parallel workers (default 2), one torch thread each")
    p.add_argument("--backend", default="loky", choices=BACKENDS,
                   help="joblib backend: loky (local processes, default) or ray (needs the cluster extra)")
    p.add_argument("--ray-address", default=None,
                   help="Ray cluster address for --backend ray (default: $RAY_ADDRESS, else a local instance)")
    p.add_argument("--resume", action="store_true",
                   help="keep rows already in OUT/results.csv and compute only the missing ones")
    p.add_argument("--out", type=Path, default=None,
                   help=f"output directory (default {DEFAULT_OUT}, or {QUICK_OUT} with --quick)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--no-report", action="store_true", help="write results.csv only; run `svdgrad report` later")
    return p


def _report_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="svdgrad report", description=(
        "Rebuild REPORT.md and the figures from a sweep's saved results.csv (nothing is recomputed)."))
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"sweep output directory (default {DEFAULT_OUT})")
    return p


def grid_from_args(args):
    base = quick_grid() if args.quick else default_grid()
    axes = {}
    # `is not None`: an empty list ("--seeds ''") is an error, not "no narrowing".
    if args.methods is not None:
        axes["methods"] = _names("methods", args.methods, base.methods)
    if args.dtypes is not None:
        axes["dtypes"] = _names("dtypes", args.dtypes, base.dtypes)
    if args.spectra is not None:
        axes["spectra"] = _names("spectra", args.spectra, base.spectra)
    for axis, field in (("sizes", "sizes"), ("kappas", "log10_kappas"), ("seeds", "seeds")):
        text = getattr(args, axis)
        if text is not None:
            axes[field] = _ints(axis, text)
    try:
        return base.narrow(**axes)
    except ValueError as exc:
        name = str(exc).split(":", 1)
        axis = {"log10_kappas": "kappas"}.get(name[0], name[0])
        raise UsageError(f"--{axis}:{name[1]}" + (" (the --quick grid)" if args.quick else "")) from None


def _sweep(argv) -> int:
    args = _sweep_parser().parse_args(argv)
    if args.jobs < 1:
        raise UsageError(f"--jobs: expected an integer >= 1; received {args.jobs}")
    grid = grid_from_args(args)
    out = args.out if args.out is not None else (QUICK_OUT if args.quick else DEFAULT_OUT)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out: expected a directory; {out} is a file")
    from .runner import run_sweep

    print(f"svdgrad sweep: {grid.n_cells()} cells ({len(grid.methods)} methods × {len(grid.dtypes)} dtypes × "
          f"{len(grid.matrices())} matrices) -> {out}/{RESULTS}  [jobs={args.jobs}, backend={args.backend}"
          f"{', resume' if args.resume else ''}]", flush=True)
    stats = run_sweep(grid, out, jobs=args.jobs, backend=args.backend, resume=args.resume,
                      progress=not args.no_progress, ray_address=args.ray_address,
                      command=" ".join(["svdgrad sweep", *argv]))
    print(f"svdgrad sweep: wrote {stats.written_rows} rows ({stats.error_rows} with errors) for "
          f"{stats.matrices} matrices in {stats.seconds:.1f} s", flush=True)
    from . import report

    print(report.console_table(out), flush=True)
    if not args.no_report:
        path = report.build(out)
        print(f"svdgrad sweep: report written to {path}", flush=True)
    return 0


def _report(argv) -> int:
    args = _report_parser().parse_args(argv)
    if not (args.out / RESULTS).is_file():
        raise UsageError(f"--out: expected a sweep output directory containing {RESULTS}; "
                         f"{args.out / RESULTS} does not exist (run `svdgrad sweep` first)")
    from . import report

    path = report.build(args.out)
    print(f"svdgrad report: rebuilt {path} from {args.out / RESULTS}")
    return 0


def main(command: str, argv: list[str]) -> int:
    """Entry point used by ``svdgrad/__main__.py``: ``command`` is ``sweep`` or ``report``."""
    os.environ.setdefault("MPLBACKEND", "Agg")
    try:
        if command == "sweep":
            return _sweep(list(argv))
        if command == "report":
            return _report(list(argv))
        raise UsageError(f"svdgrad: unknown command {command!r}; expected sweep or report")
    except UsageError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    except (SvdgradError, ValueError, RuntimeError, OSError) as exc:
        print(f"svdgrad {command}: error: {exc}", file=sys.stderr)
        return 1


__all__ = ["main", "grid_from_args", "DEFAULT_OUT", "QUICK_OUT"]
