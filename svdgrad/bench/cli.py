"""``svdgrad bench``: run the benchmark and write a performance report.

The full profile regenerates ``reports/performance/`` (its purpose); the
quick profile, a smoke test, writes to a new folder under ``runs/`` unless
``--out`` is given.  Results already in OUT/raw/ for the same device are not
replaced without ``--overwrite`` (``--report-only`` only redraws the report
from them).  Ctrl-C stops with exit code 130 and one line saying how to
start again.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import sys
import time
from pathlib import Path

from .._errors import SvdgradError
from .._io import output_conflict, remove_stale_temporaries
from . import grid, report, runner

#: Where the full profile writes (relative to the working directory, like ``svdgrad sweep``).
DEFAULT_OUT = Path("reports") / "performance"
SCRATCH = Path("runs")
QUICK_PREFIX = "bench-quick-"
EXIT_INTERRUPTED = 130
LOCK = ".lock"
#: Where ``--overwrite`` measures before its files replace the earlier run's (``main``).
STAGING = ".overwrite"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="svdgrad bench",
        description="Time every sqrtm method (forward, forward + backward) against eigh and matmul "
                    "floors with pytest-benchmark, measure the speed targets interleaved, count "
                    "memory, and write REPORT.md with figures.")
    p.add_argument("--device", default="cpu", help="torch device to benchmark on (default cpu), e.g. cuda:0")
    p.add_argument("--threads", type=int, default=grid.THREADS,
                   help=f"torch intra-op threads to pin (default {grid.THREADS})")
    p.add_argument("--profile", choices=sorted(grid.PROFILES), default="full",
                   help="full grid (default) or a tiny quick one (smoke test, written to a new "
                        f"{SCRATCH}/{QUICK_PREFIX}<time> unless --out is given)")
    p.add_argument("--methods", default=None,
                   help="comma-separated methods or specs to time instead of the default variants, e.g. "
                        "exact,taylor:degree=9 (a spec is the method's label; targets are kept for the "
                        "default variants that remain)")
    p.add_argument("--out", type=Path, default=None,
                   help=f"output folder (default {DEFAULT_OUT}; with --profile quick a new "
                        f"{SCRATCH}/{QUICK_PREFIX}<time>)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace results already in OUT/raw/ for this device (refused without it)")
    p.add_argument("--omp-wait-policy", choices=("passive", "active", "default"), default="default",
                   help="OMP_WAIT_POLICY of the measuring processes (default: leave OpenMP's own setting). "
                        "'passive' is steadier on shared cores but makes torch.linalg.eigh several times "
                        "slower, which would flatter every ratio against the eigh floor")
    p.add_argument("--report-only", action="store_true", help="rebuild REPORT.md from the existing raw/ files")
    p.add_argument("--no-pytest", action="store_true",
                   help="skip the pytest-benchmark grid (reuse its existing JSON)")
    return p


def scratch_out() -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    out, k = SCRATCH / f"{QUICK_PREFIX}{stamp}", 1
    while out.exists():
        k += 1
        out = SCRATCH / f"{QUICK_PREFIX}{stamp}-{k}"
    return out


def existing_results(out: Path, device: str) -> list[Path]:
    """Raw result files in ``out`` that a run on ``device`` would replace."""
    tag = runner.device_tag(device)
    kinds = ("pytest_benchmark", "targets", "ratio_targets", "memory", "run")
    return [p for p in (out / "raw" / f"{k}_{tag}.json" for k in kinds)
            if p.exists()]


def remove_stale(out: Path) -> list[Path]:
    """Remove what a kill -9 of an earlier bench left mid-write: the ``write_atomic`` temporaries
    (``NAME.HOST-PID.tmp``) of dead processes of this host in OUT (REPORT.md) and OUT/raw (the measurements).  A live writer's
    is kept, so no lock is needed (``--report-only`` takes none).  Returns the paths removed."""
    return [p for folder in (out, out / "raw") for p in remove_stale_temporaries(folder)]


def again_command(argv, out: Path) -> str:
    """The command that starts this benchmark again into the same folder."""
    keep, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--out":
            skip = True
        elif not (a.startswith("--out=") or a == "--overwrite"):
            keep.append(a)
    return shlex.join(["svdgrad", "bench", *keep, "--out", str(out), "--overwrite"])


def _split_methods(text: str) -> list[str]:
    """Comma-separated specs; a ``key=value`` item without a name continues the previous spec
    (``newton_schulz:iterations=7,normalization=frobenius`` stays one spec)."""
    specs: list[str] = []
    for tok in (t.strip() for t in text.split(",")):
        if not tok:
            continue
        if specs and ":" not in tok and "=" in tok and ":" in specs[-1]:
            specs[-1] += "," + tok
        else:
            specs.append(tok)
    return specs


def _check_device_and_threads(device: str, threads: int) -> str | None:
    """Why --device/--threads cannot run here, or None (they failed inside the suite: a traceback, or 38
    failing benchmarks and 'suite failed (exit 1)' for cuda without a GPU, 'exit 2' for --threads 0)."""
    import torch

    if threads < 1:
        return f"expected --threads >= 1 (torch threads for the measurements); received {threads}."
    try:
        dev = torch.device(device)
    except RuntimeError:
        return f"expected a torch device for --device (cpu, cuda, cuda:1); received {device!r}."
    if dev.type == "cuda" and not torch.cuda.is_available():
        return f"--device {device}: this machine has no CUDA GPU (torch {torch.__version__}). Use --device cpu."
    if dev.type not in ("cpu", "cuda"):
        return f"expected --device cpu or cuda[:i]; received {device!r}."
    return None


def _out_problem(out: Path, report_only: bool, overwrite: bool) -> str | None:
    """Why --out cannot take this run, before anything is measured or written (a file there, or above it,
    ended in a traceback; --report-only of a folder without raw/ wrote an empty report over whatever was there,
    a sweep's REPORT.md included)."""
    if out.exists() and not out.is_dir():
        return f"--out: {out} is a file; expected a folder (new or one that `svdgrad bench` wrote)."
    above = out.parent
    while not above.exists() and above != above.parent:
        above = above.parent
    if not above.is_dir():
        return f"--out: {out} cannot be created: {above} is a file."
    conflict = output_conflict(out, "bench", overwrite=overwrite)
    if conflict:
        return f"--out: {conflict}"
    if report_only and not (out / "raw").is_dir():
        return (f"--report-only: {out} holds no measurements (no raw/ folder) to draw a report from. Run "
                f"`svdgrad bench --out {shlex.quote(str(out))}` first.")
    return None


def main(command: str, argv: list[str]) -> int:
    args = parser().parse_args(argv)
    start = time.perf_counter()
    methods = None
    if args.methods is not None:
        methods = _split_methods(args.methods)
        try:
            grid.variants(methods)
        except SvdgradError as exc:
            print(f"svdgrad bench: --methods: {exc}", file=sys.stderr)
            return 2
        if not methods:
            print("svdgrad bench: --methods: expected at least one method", file=sys.stderr)
            return 2
    problem = _check_device_and_threads(args.device, args.threads)
    if problem and not args.report_only:
        print(f"svdgrad bench: error: {problem}", file=sys.stderr)
        return 2
    out = args.out if args.out is not None else (scratch_out() if args.profile == "quick" else DEFAULT_OUT)
    problem = _out_problem(out, args.report_only, args.overwrite)
    if problem:
        print(f"svdgrad bench: error: {problem}", file=sys.stderr)
        return 2
    if not args.report_only:
        found = existing_results(out, args.device)
        if found and not args.overwrite:
            print(f"svdgrad bench: {out} already holds results for {runner.device_tag(args.device)} "
                  f"({', '.join(p.name for p in found)}); refusing to replace them.\n"
                  f"  measure again into it:  {again_command(argv, out)}\n"
                  f"  or write elsewhere:     --out DIR\n"
                  f"  redraw the report only: svdgrad bench --report-only --out {shlex.quote(str(out))}",
                  file=sys.stderr)
            return 2
        if not args.no_pytest:
            missing = runner.missing_pytest_benchmark()
            if missing:
                print(missing, file=sys.stderr)
                return 2
        from filelock import FileLock, Timeout

        out.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(out / LOCK), timeout=0)
        try:
            lock.acquire()
        except Timeout:
            print(f"svdgrad bench: error: another benchmark is writing to {out} (it holds {out / LOCK}); "
                  f"wait for it, or choose another --out", file=sys.stderr)
            return 1
        remove_stale(out)
        print(f"svdgrad bench: profile {args.profile}, device {args.device} -> {out}", flush=True)
        # --overwrite measures into a staging folder and moves the new raw files in only when the run has
        # finished: an interrupted overwrite left new pytest JSON beside the old targets, which --report-only
        # then drew as one run.  Interrupted, the old results stay as they were.
        run_dir = out / STAGING if found else out
        shutil.rmtree(out / STAGING, ignore_errors=True)
        try:
            policy = None if args.omp_wait_policy == "default" else args.omp_wait_policy
            rc = runner.run(args.device, args.threads, grid.PROFILES[args.profile], run_dir,
                            pytest=not args.no_pytest, wait_policy=policy, methods=methods)
            if rc == 0 and found:
                for f in sorted((run_dir / "raw").iterdir()):
                    os.replace(f, out / "raw" / f.name)
        except KeyboardInterrupt:
            print(f"svdgrad bench: interrupted; start again with: {again_command(argv, out)}"
                  + (" (the earlier results are kept as they were)" if found else ""), file=sys.stderr, flush=True)
            return EXIT_INTERRUPTED
        finally:
            if found:
                shutil.rmtree(out / STAGING, ignore_errors=True)
            lock.release()
        if rc:
            return rc
    if args.report_only:
        remove_stale(out)
    try:
        path = report.build(out)
    except KeyboardInterrupt:
        print(f"svdgrad bench: interrupted; redraw with: svdgrad bench --report-only --out {shlex.quote(str(out))}",
              file=sys.stderr)
        return EXIT_INTERRUPTED
    print(f"svdgrad bench: wrote {path} ({time.perf_counter() - start:.0f} s)")
    return 0
