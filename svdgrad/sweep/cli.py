"""``svdgrad sweep`` and ``svdgrad report``.

    svdgrad sweep [--quick] [--methods M,..] [--functions F,..] [--dtypes D,..] [--sizes N,..]
                  [--kappas K,..] [--spectra S,..] [--seeds S,..]
                  [--jobs J] [--backend loky|ray] [--ray-address ADDR]
                  [--resume | --overwrite] [--out DIR] [--no-progress] [--no-report]
    svdgrad report [--out DIR]

``--kappas`` takes decades (``0,6,12`` = κ 1e0, 1e6, 1e12) or ranges
(``0-12``, ``0-12:2``).  Every list narrows the default (or ``--quick``)
grid, and every value must belong to it; ``--methods`` also takes method
specs with options (``taylor:degree=9``), which become the method's label.

Nothing finished is replaced without being asked: a sweep into a directory
whose results.csv holds rows refuses unless ``--resume`` (keep them, add
the missing ones) or ``--overwrite`` (start again) is given.  ``--quick``,
the smoke test, writes to a new folder under ``runs/`` unless ``--out`` is
given.  Ctrl-C stops with exit code 130 and prints the command that resumes.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
import warnings
from pathlib import Path

from .._errors import SvdgradError
from .._io import output_conflict
from .grid import default_grid, quick_grid
from .runner import APPROX, BACKENDS, GRID, LOCK, REPORT, RESULTS, RUNS

#: Output directories.  The full grid regenerates the committed report; ``--quick`` (the smoke
#: test) writes to a new scratch folder under SCRATCH each time, never into reports/.
DEFAULT_OUT = Path("reports") / "condition_sweep"
SCRATCH = Path("runs")
QUICK_PREFIX = "sweep-quick-"

#: Exit status after Ctrl-C (128 + SIGINT), as a shell reports it.
EXIT_INTERRUPTED = 130


class UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise UsageError(f"{self.prog}: error: {message}")


def _split(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


#: The most values one axis may list (``--kappas 0-1000000000`` built the whole list and was OOM-killed).
MAX_AXIS_VALUES = 10_000


def _ints(axis: str, text: str) -> list[int]:
    out = []
    for tok in _split(text):
        try:
            if "-" in tok[1:]:
                rng, _, step = tok.partition(":")
                lo, hi = rng.split("-", 1)
                values = range(int(lo), int(hi) + 1, int(step or 1))
                if len(out) + len(values) > MAX_AXIS_VALUES:
                    raise UsageError(f"--{axis}: expected at most {MAX_AXIS_VALUES} values; {tok!r} alone lists "
                                     f"{len(values)}. Give a step (e.g. 0-12:2) or a shorter range.")
                out.extend(values)
            else:
                out.append(int(tok))
        except ValueError:
            raise UsageError(f"--{axis}: expected comma-separated integers or ranges like 0-12:2; "
                             f"received {tok!r}") from None
    if not out:
        raise UsageError(f"--{axis}: expected at least one value; received {text!r}")
    return out


def split_specs(text: str) -> list[str]:
    """Comma-separated method specs; a ``key=value`` item without a name continues the previous spec.

    ``exact,newton_schulz:iterations=7,normalization=frobenius,pade`` ->
    ``exact``, ``newton_schulz:iterations=7,normalization=frobenius``, ``pade``.
    """
    specs: list[str] = []
    for tok in _split(text):
        if specs and ":" not in tok and "=" in tok and ":" in specs[-1]:
            specs[-1] += "," + tok
        else:
            specs.append(tok)
    return specs


def quick_out() -> Path:
    """A new scratch folder for a --quick run: runs/sweep-quick-<UTC time>[-k]."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    out = SCRATCH / f"{QUICK_PREFIX}{stamp}"
    k = 1
    while out.exists():
        k += 1
        out = SCRATCH / f"{QUICK_PREFIX}{stamp}-{k}"
    return out


def resume_command(argv, out: Path) -> str:
    """The command line that resumes this sweep: same options, ``--out OUT --resume``, no ``--overwrite``."""
    keep, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        if a == "--out":
            skip = True
            continue
        if a.startswith("--out=") or a in ("--overwrite", "--resume"):
            continue
        keep.append(a)
    return shlex.join(["svdgrad", "sweep", *keep, "--out", str(out), "--resume"])


def refuse_directories(out: Path, names, *, figures: bool, command: str) -> None:
    """Raise UsageError if a directory stands where ``command`` reads or writes one of its files in ``out``:
    ``names``, and with ``figures`` every OUT/*.png (the report's figures are all the PNGs of a sweep folder).
    It failed deep inside with '[Errno 21] Is a directory' and exit 1, after the work."""
    paths = [out / n for n in names] + (sorted(out.glob("*.png")) if figures and out.is_dir() else [])
    for path in paths:
        if path.is_dir():
            raise UsageError(f"--out: expected {path} to be a file, which `svdgrad {command}` "
                             f"{'writes' if command == 'sweep' else 'reads or writes'}; it is a directory. Move or "
                             f"rename it, or choose another --out.")


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
        "Condition-number sweep: gradient accuracy of every method of every matrix function (sqrt, "
        "inverse sqrt, log, power, the features route) against a reference, "
        "float32 vs float64, over n, κ and spectrum shape. Writes results.csv, REPORT.md and figures."))
    p.add_argument("--quick", action="store_true",
                   help=f"small grid (n=16, κ=1e0,1e2,…,1e12; < 60 s on 2 cores), the smoke test; written to "
                        f"a new folder {SCRATCH}/{QUICK_PREFIX}<time> unless --out is given")
    p.add_argument("--methods", help=f"comma-separated methods from: {', '.join(g.methods)}; a method may carry "
                                     "options as a spec, e.g. taylor:degree=9 or "
                                     "newton_schulz:iterations=7,normalization=frobenius (the spec is its label)")
    p.add_argument("--functions", help=f"subset of: {', '.join(g.functions)} (each with the methods valid for it)")
    p.add_argument("--dtypes", help=f"subset of: {', '.join(g.dtypes)}")
    p.add_argument("--sizes", help=f"subset of n: {', '.join(map(str, g.sizes))}")
    p.add_argument("--kappas", help="subset of log10 κ, e.g. 0,6,12 or 0-12:2 (default 0-12)")
    p.add_argument("--spectra", help=f"subset of: {', '.join(g.spectra)}")
    p.add_argument("--seeds", help=f"subset of: {', '.join(map(str, g.seeds))}")
    p.add_argument("--jobs", type=int, default=2,
                   help="parallel workers (default 2), one torch thread each; reduced, with a note, to the "
                        "matrices to compute and (local backend) the usable cores")
    p.add_argument("--backend", default="loky", choices=BACKENDS,
                   help="joblib backend: loky (local processes, default) or ray (needs the cluster extra)")
    p.add_argument("--ray-address", default=None,
                   help="Ray cluster address for --backend ray (default: $RAY_ADDRESS, else a local instance)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--resume", action="store_true",
                      help="keep rows already in OUT/results.csv and compute only the missing ones")
    mode.add_argument("--overwrite", action="store_true",
                      help="discard the rows already in OUT/results.csv and start again (without --resume "
                           "or --overwrite, a directory with results is refused)")
    p.add_argument("--out", type=Path, default=None,
                   help=f"output directory (default {DEFAULT_OUT}; with --quick a new {SCRATCH}/{QUICK_PREFIX}<time>)")
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
    methods = None
    if args.methods is not None:
        methods = split_specs(args.methods)
        if not methods:
            raise UsageError(f"--methods: expected at least one of {', '.join(base.methods)}; "
                             f"received {args.methods!r}")
    if args.functions is not None:
        axes["functions"] = _names("functions", args.functions, base.functions)
    if args.dtypes is not None:
        axes["dtypes"] = _names("dtypes", args.dtypes, base.dtypes)
    if args.spectra is not None:
        axes["spectra"] = _names("spectra", args.spectra, base.spectra)
    for axis, field in (("sizes", "sizes"), ("kappas", "log10_kappas"), ("seeds", "seeds")):
        text = getattr(args, axis)
        if text is not None:
            axes[field] = _ints(axis, text)
    if methods is not None:
        try:
            base = base.with_methods(methods)
        except SvdgradError as exc:
            raise UsageError(f"--methods: {exc}") from None
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
    if args.out is not None:
        out = args.out
    elif args.quick:
        if args.resume:
            raise UsageError("--resume with --quick: name the folder to resume with --out DIR "
                             f"(each --quick run without --out writes a new {SCRATCH}/{QUICK_PREFIX}<time>)")
        out = quick_out()
    else:
        out = DEFAULT_OUT
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out: expected a directory; {out} is a file")
    # Before anything runs, and without creating anything (a refused sweep writes nothing): a folder under a
    # file, or on a read-only mount, failed inside with an Errno.
    base = out.absolute()
    while not base.exists():
        base = base.parent
    if not base.is_dir():
        raise UsageError(f"--out: {out} cannot be created: {base} is a file; choose another --out")
    if not os.access(base, os.W_OK | os.X_OK):
        raise UsageError(f"--out: {out} cannot be created or written: {base} is not writable; choose another --out")
    refuse_directories(out, (RESULTS, APPROX, GRID, RUNS, LOCK) + (() if args.no_report else (REPORT,)),
                       figures=not args.no_report, command="sweep")
    conflict = output_conflict(out, "sweep", overwrite=args.overwrite)
    if conflict:
        raise UsageError(f"--out: {conflict}")
    from .runner import SweepLocked, WorkerLost, run_sweep
    from .store import ResultStore

    store = ResultStore(out / RESULTS)
    if not (args.resume or args.overwrite) and store.has_rows():
        try:
            store.load()
        except SvdgradError as exc:  # not a results table (or a damaged one): --resume would fail on it too
            print(f"svdgrad sweep: error: {exc}", file=sys.stderr)
            return 2
        print(f"svdgrad sweep: {out / RESULTS} already holds results; refusing to replace them.\n"
              f"  keep them and add what this grid lacks:  {resume_command(argv, out)}\n"
              f"  replace them:                            add --overwrite\n"
              f"  write elsewhere:                         --out DIR", file=sys.stderr)
        return 2

    # After Ctrl-C joblib warns that the cells in flight were cancelled; the one-line message says it all.
    warnings.filterwarnings("ignore", message=r"\d+ tasks which were still being processed", category=UserWarning)
    # loky's resource tracker is a child process that shares stderr and is started with this
    # environment; after Ctrl-C it reports the killed workers' semaphores as "leaked" at its own
    # shutdown (seen in CI: four lines after the one-line message). Nothing is lost; silence it.
    os.environ["PYTHONWARNINGS"] = ",".join(
        w for w in (os.environ.get("PYTHONWARNINGS"), "ignore:resource_tracker:UserWarning") if w)
    print(f"svdgrad sweep: {grid.n_cells()} main cells ({len(grid.functions)} functions × {len(grid.methods)} "
          f"methods where valid × {len(grid.dtypes)} dtypes on {len(grid.matrices())} matrices) -> {out}/{RESULTS}  [jobs={args.jobs}, backend={args.backend}"
          f"{', resume' if args.resume else ''}{', overwrite' if args.overwrite else ''}]", flush=True)
    try:
        stats = run_sweep(grid, out, jobs=args.jobs, backend=args.backend, resume=args.resume,
                          progress=not args.no_progress, ray_address=args.ray_address,
                          command=shlex.join(["svdgrad", "sweep", *argv]),
                          log=lambda m: print(m, flush=True))
    except SweepLocked as exc:
        print(f"svdgrad sweep: error: {exc}", file=sys.stderr)
        return 1
    except WorkerLost as exc:
        print(f"svdgrad sweep: error: {exc}; resume with: {resume_command(argv, out)}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        print(f"svdgrad sweep: interrupted; resume with: {resume_command(argv, out)}", file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED
    print(f"svdgrad sweep: wrote {stats.written_rows} rows ({stats.error_rows} with errors) for "
          f"{stats.matrices} matrices in {stats.seconds:.1f} s", flush=True)
    from . import report

    print(report.console_table(out), flush=True)
    if not args.no_report:
        path = report.build(out)
        print(f"svdgrad sweep: report written to {path}", flush=True)
    print(f"svdgrad sweep: results in {out}", flush=True)
    return 0


def _report(argv) -> int:
    args = _report_parser().parse_args(argv)
    if not (args.out / RESULTS).is_file():
        what = "is not a file" if (args.out / RESULTS).exists() else "does not exist (run `svdgrad sweep` first)"
        raise UsageError(f"--out: expected a sweep output directory containing {RESULTS}; "
                         f"{args.out / RESULTS} {what}")
    refuse_directories(args.out, (APPROX, GRID, RUNS, REPORT), figures=True, command="report")
    from . import report

    path = report.build(args.out, note=lambda m: print(f"svdgrad report: note: {m}", file=sys.stderr))
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
    except KeyboardInterrupt:  # outside the run itself (report drawing): nothing to resume
        print(f"svdgrad {command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except SvdgradError as exc:  # bad input, a damaged file: as the other commands (svdgrad train, study)
        print(f"svdgrad {command}: error: {exc}", file=sys.stderr)
        return 2
    except (ValueError, RuntimeError, OSError) as exc:
        print(f"svdgrad {command}: error: {exc}", file=sys.stderr)
        return 1


__all__ = ["main", "grid_from_args", "split_specs", "resume_command", "DEFAULT_OUT", "SCRATCH"]
