"""Run a grid: plan the pending rows, execute matrices in parallel, append results."""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from .._errors import WorkerLost, loky_worker_lost, ray_worker_lost
from .._io import remove_stale_temporaries
from .cells import COLUMNS, GRAM_ROUTE, GRAM_SVD, GRAM_VIA_SIGMA, CellTask, ns_variant, run_cell
from .grid import Grid, available_baselines, read_grid
from .store import ResultStore, write_atomic, write_table

#: Files of an output directory.
RESULTS = "results.csv"
APPROX = "approx.csv"
GRID = "grid.json"
REPORT = "REPORT.md"
LOCK = ".lock"
RUNS = "runs.jsonl"

#: What to do about a damaged grid.json / runs.jsonl (the messages name the file and the damage).
GRID_FIX = ("Delete it and run again: `svdgrad sweep --resume` then records its own grid (the rows in results.csv "
            "are kept), and `svdgrad report` orders the methods by the default grid.")
RUNS_FIX = ("It only lists the finished runs for REPORT.md: delete that line (or the file) and run again; "
            "results.csv is not affected.")

BACKENDS = ("loky", "ray")

#: Tasks per worker in one Ray chunk (see ``execute``).
RAY_CHUNK = 4

#: Environment for pool workers: one BLAS/OpenMP thread each (oversubscription
#: on a 2-core machine turned 0.1 s calls into 10-50 s ones).
THREAD_ENV = {k: "1" for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")}


def matrix_keys(grid: Grid, n: int, k: int, spectrum: str, seed: int, baselines=None) -> list[tuple]:
    """Every row key the grid defines on one matrix, in a fixed order.

    ``baselines``: the baselines to run (default: those of ``grid.baselines`` the installed torch has).
    """
    if baselines is None:
        baselines = [b for b in available_baselines()[0] if b in grid.baselines]
    keys = [("method", f, m, "", d, n, k, spectrum, seed) for f, m in grid.pairs(n, spectrum, seed)
            for d in grid.dtypes]
    if "sqrt" in grid.functions:
        keys += [("baseline", "sqrt", b, "", d, n, k, spectrum, seed) for b in baselines for d in grid.dtypes]
        keys += [("option", "sqrt", o, "", d, n, k, spectrum, seed) for o in grid.options(n, spectrum, seed)
                 for d in grid.dtypes]
        if grid.gram(n, spectrum, seed):
            keys += [("gram", "sqrt", m, "", d, n, k, spectrum, seed) for m in (GRAM_ROUTE, GRAM_VIA_SIGMA)
                     for d in grid.dtypes]
            keys += [("gram", "sqrt", GRAM_SVD, "", "float32", n, k, spectrum, seed)] * ("float32" in grid.dtypes)
        if "newton_schulz" in grid.methods and "float64" in grid.dtypes and spectrum in grid.ns_spectra:
            keys += [("ns", "sqrt", "newton_schulz", ns_variant(norm, it), "float64", n, k, spectrum, seed)
                     for norm in grid.ns_normalizations for it in grid.ns_iterations]
    keys += [("eig", "", "eigvalsh", "", d, n, k, spectrum, seed) for d in grid.dtypes]
    return keys


def plan(grid: Grid, done: set[tuple] = frozenset()) -> list[CellTask]:
    """One task per matrix that still has rows missing from ``done``."""
    baselines = [b for b in available_baselines()[0] if b in grid.baselines]
    tasks = []
    for n, k, sp, s in grid.matrices():
        pending = tuple(key for key in matrix_keys(grid, n, k, sp, s, baselines) if key not in done)
        if pending:
            tasks.append(CellTask(n=n, log10_kappa=k, spectrum=sp, seed=s, pending=pending,
                                  timing_repeats=grid.timing_repeats, mpmath_max_n=grid.mpmath_max_n,
                                  mpmath_dps=grid.mpmath_dps, power_p=grid.power_p,
                                  gram_columns=grid.gram_columns))
    return tasks


# ---------------------------------------------------------------------------
# Side study that needs no matrices: 1/(1-x) by Taylor and Padé.
# ---------------------------------------------------------------------------

APPROX_COLUMNS = ("kind", "degree", "x", "one_minus_x", "value", "exact", "rel_err")


def approximation_rows(grid: Grid) -> list[dict]:
    """Relative error of the library's K-rules for 1/(1-x), x = λmin/λmax up to 1 - 1e-12.

    Evaluated through the methods' own ``K`` on the eigenvalue pair
    (x, 1), where K_10 = 1/(1-x) approximated, against mpmath at 50 digits
    of 1/(1-x) for the same float64 x.
    """
    import mpmath

    from .. import Ordinary, Pade, Taylor

    gaps = torch.logspace(-12, math.log10(0.9), 133, dtype=torch.float64)
    rules = [("ordinary", "exact", Ordinary())]
    rules += [("taylor", str(d), Taylor(degree=d)) for d in grid.approx_taylor_degrees]
    rules += [("pade", f"{p}/{q}", Pade(num_degree=p, den_degree=q)) for p, q in grid.approx_pade_degrees]
    rows = []
    with mpmath.workdps(50):
        for g in gaps.tolist():
            x = 1.0 - g
            d = 1 - mpmath.mpf(x)
            exact = 1 / d
            L = torch.tensor([x, 1.0], dtype=torch.float64)
            for kind, degree, rule in rules:
                v = float(rule.K(L)[1, 0])
                err = float(abs(mpmath.mpf(v) - exact) / exact) if math.isfinite(v) else math.inf
                rows.append({"kind": kind, "degree": degree, "x": x, "one_minus_x": float(d),
                             "value": v, "exact": float(exact), "rel_err": err})
    return rows


# ---------------------------------------------------------------------------
# Execution.
# ---------------------------------------------------------------------------

def require_backend(backend: str) -> None:
    """Raise RuntimeError naming the extra if ``backend`` cannot run here (checked before anything is written)."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; expected one of {', '.join(BACKENDS)}")
    if backend == "ray":
        try:
            import ray  # noqa: F401
            from ray.util.joblib import register_ray  # noqa: F401
        except ImportError:
            raise RuntimeError("--backend ray needs Ray, which is not installed; "
                               "pip install \"svdgrad[cluster]\"") from None


def _init_ray(address: str | None) -> bool:
    """Connect to (or start) Ray and register its joblib backend; True if this call started it (then
    ``run_sweep`` shuts it down).

    Ray's own log lines (local instance started, token set-up, the joblib pool's
    unsupported 'context' argument, workers stopped at shutdown) are not the
    sweep's business on success: its loggers are set to ERROR.
    """
    import logging

    try:
        import ray
        from ray.util.joblib import register_ray
    except ImportError as exc:
        raise RuntimeError(
            "--backend ray needs Ray, which is not installed; pip install \"svdgrad[cluster]\"") from exc
    register_ray()
    logging.getLogger("ray").setLevel(logging.ERROR)
    if ray.is_initialized():
        return False
    kwargs = {"runtime_env": {"env_vars": dict(THREAD_ENV)}, "log_to_driver": False,
              "logging_level": logging.ERROR}
    source = "--ray-address" if address else "RAY_ADDRESS"
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        from .._ray import connect

        connect(address, source, **kwargs)  # (SvdgradError where no cluster answers: Ray itself waits for good)
    else:
        ray.init(num_cpus=None, include_dashboard=False, **kwargs)
    logging.getLogger("ray").setLevel(logging.ERROR)  # ray.init configures its logger again
    return True


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        return os.cpu_count() or 1


def effective_jobs(jobs: int, tasks: int, backend: str) -> tuple[int, str]:
    """(workers to start, why fewer than asked or '').

    More workers than matrices only start idle processes; on the local
    backend, more than the usable cores only oversubscribe them (each worker
    is one process with one torch thread).  Ray schedules on the cluster, so
    only the matrix bound applies there.
    """
    bounds = [(max(tasks, 1), f"{tasks} {'matrix' if tasks == 1 else 'matrices'} to compute")]
    if backend != "ray":
        cores = usable_cores()
        bounds.append((cores, f"{cores} usable {'core' if cores == 1 else 'cores'}"))
    eff, why = jobs, ""
    for bound, reason in bounds:
        if bound < eff:
            eff, why = bound, reason
    return eff, why


#: Seconds between two checks of a worker that its parent still lives.
WATCHDOG_PERIOD_S = 0.5

#: Started in every loky worker by the executor's initializer: exit as soon as the sweep is gone.
#: A worker busy with a cell would otherwise finish it, and may linger idle for good, after a
#: ``kill -9`` of the sweep.  Loky workers are children of the sweep process, so a changed
#: ``getppid()`` means the sweep died (the worker was re-parented).  Polling works on every POSIX
#: system, unlike PR_SET_PDEATHSIG, which also fires when the *thread* that started the worker ends.
#: It runs through ``exec`` (a builtin, so unpickling it imports nothing): the watchdog starts
#: before the worker spends seconds importing torch and svdgrad.  The worker also ignores SIGINT:
#: a terminal's Ctrl-C reaches the whole process group, the sweep itself handles it (one line with
#: the command that resumes, then the pool is shut down), and a worker that took it while idle
#: would print "Process LokyProcess-N:" and a traceback (seen once in CI, a timing race).
WATCHDOG_SOURCE = """
import os, signal, threading, time

def _watch():
    while True:
        if os.getppid() != PARENT:
            os._exit(1)
        time.sleep(PERIOD)

if os.getpid() != PARENT:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_watch, name="svdgrad-parent-watchdog", daemon=True).start()
"""


def watchdog_initializer(parent: int | None = None) -> tuple:
    """(initializer, initargs) for a process pool whose workers must die with ``parent`` (default: this process)."""
    return exec, (WATCHDOG_SOURCE, {"PARENT": os.getpid() if parent is None else parent,
                                    "PERIOD": WATCHDOG_PERIOD_S})


def execute(tasks, *, jobs: int = 2, backend: str = "loky"):
    """Yield each task's rows as it finishes (in completion order).

    Ray: the caller has connected it and registered its joblib backend (``_init_ray``); ``run_sweep`` does
    that before it writes a file, and shuts down what it started.
    """
    import joblib

    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; expected one of {', '.join(BACKENDS)}")
    # Worker environments get THREAD_ENV (loky: inner_max_num_threads=1 sets these variables in each
    # worker; ray: the runtime_env); this process's own environment is left alone.
    if backend == "ray":
        with joblib.parallel_config(backend="ray", n_jobs=jobs):
            yield from _execute_ray(tasks, jobs)
        return
    from joblib.externals.loky.process_executor import TerminatedWorkerError

    # Each loky worker starts a watchdog first thing (the executor's initializer), so that it
    # exits with the sweep even while importing or inside a long cell.
    init, initargs = watchdog_initializer()
    with joblib.parallel_config(backend="loky", n_jobs=jobs, inner_max_num_threads=1, initializer=init,
                                initargs=initargs):
        parallel = joblib.Parallel(return_as="generator_unordered", batch_size=1, pre_dispatch="2*n_jobs")
        try:
            yield from parallel(joblib.delayed(run_cell)(t) for t in tasks)
        except TerminatedWorkerError as exc:  # (a worker killed: joblib stops the others)
            raise loky_worker_lost(exc, f"the rows of the matrices finished before are kept in {RESULTS}") from None


def _execute_ray(tasks, jobs: int):
    """``execute`` on joblib's Ray backend (already configured).

    Ray's joblib backend (a multiprocessing-pool backend) returns no generator, so tasks go in chunks of
    RAY_CHUNK·jobs and each chunk's rows are written when the chunk ends: a killed Ray run can lose the
    finished cells of its last chunk (--resume recomputes them; nothing is duplicated).  Ray owns its
    workers' lifetimes: no watchdog.  A dead worker fails its chunk with one of Ray's own errors (its pool
    does not retry), raised here as WorkerLost: the CLI's one line with the command that resumes, not a
    traceback.
    """
    import joblib
    from ray.exceptions import RayError

    tasks = list(tasks)
    step = RAY_CHUNK * jobs
    for i in range(0, len(tasks), step):
        parallel = joblib.Parallel(batch_size=1)
        try:
            rows = parallel(joblib.delayed(run_cell)(t) for t in tasks[i : i + step])
        except RayError as exc:
            raise ray_worker_lost(exc, f"the rows of the chunks finished before are kept in {RESULTS}") from None
        yield from rows


@dataclass
class SweepStats:
    planned_rows: int
    written_rows: int
    error_rows: int
    matrices: int
    seconds: float
    jobs: int = 1


class SweepLocked(RuntimeError):
    """Another sweep holds the output directory."""


def run_sweep(grid: Grid, out: Path, *, jobs: int = 2, backend: str = "loky", resume: bool = False,
              progress: bool = True, ray_address: str | None = None, command: str = "",
              log=print) -> SweepStats:
    """Run ``grid`` into ``out`` (results.csv, approx.csv, grid.json); returns counts.

    Without ``resume`` results.csv starts empty; with it, rows already
    there are kept and skipped.  (Whether an existing results.csv may be
    replaced is the caller's decision: the CLI refuses without --overwrite.)
    ``jobs`` is bounded by the pending matrices and, locally, the usable
    cores; ``log`` gets a note when it is.
    """
    from filelock import FileLock, Timeout

    require_backend(backend)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    # filelock: flock on a lock file that is never unlinked, so no two writers can hold it.
    lock = FileLock(str(out / LOCK), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise SweepLocked(f"another sweep is writing to {out} (it holds the lock {out / LOCK}); "
                          f"wait for it to finish, or choose a different directory with --out") from None
    try:
        remove_stale_temporaries(out)  # (a killed sweep's half-written grid.json, runs.jsonl, ...)
        runs = read_runs(out / RUNS) if resume else []  # (damage found before hours of work, not after)
        # Ray connected (or started) before a file is written: an address where no cluster answers leaves the
        # folder as it was (with --overwrite it emptied the finished results.csv first). ``execute`` uses it.
        started_ray = _init_ray(ray_address) if backend == "ray" else False
        try:
            stats = _run_sweep(grid, out, jobs=jobs, backend=backend, resume=resume, progress=progress, log=log)
        finally:
            if started_ray:  # (the Ray this sweep started: shut down after a failure or Ctrl-C too)
                import ray

                ray.shutdown()
        _log_run(out / RUNS, stats, resume=resume, command=command, jobs=stats.jobs, backend=backend, runs=runs)
        return stats
    finally:
        lock.release()


def read_runs(path: Path) -> list[dict]:
    """The entries of runs.jsonl (none if it is missing).  A torn last line (the file is rewritten whole,
    atomically, but may come from elsewhere) is ignored, and dropped by the next run; other damage raises
    SvdgradError naming the file and the line."""
    from .._io import read_jsonl

    return read_jsonl(path, fix=RUNS_FIX, torn_tail=True) if Path(path).exists() else []


def _log_run(path: Path, stats: "SweepStats", *, resume: bool, command: str, jobs: int, backend: str,
             runs: list[dict]):
    """One JSON line per finished run after ``runs`` (the earlier ones; none: a fresh run starts the file
    again); the report lists them."""
    import datetime
    import json

    from .._io import provenance

    skipped = available_baselines()[1]
    entry = {"finished_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S"),
             "command": command, "jobs": jobs, "backend": backend, "resume": resume,
             "torch": torch.__version__, "skipped_baselines": skipped,
             "cpus": os.cpu_count(), "matrices": stats.matrices, "rows_written": stats.written_rows,
             "error_rows": stats.error_rows, "seconds": round(stats.seconds, 1), "host": provenance()}
    write_atomic(path, "".join(json.dumps(r) + "\n" for r in runs + [entry]))


class _Progress:
    """A tqdm bar on a terminal; elsewhere (logs, pipes) a short plain line every ~5% of the rows."""

    def __init__(self, total: int, enabled: bool, log):
        import sys

        self.total, self.done, self.log, self.bar = total, 0, log, None
        self.enabled = enabled and total > 0
        self.t0 = time.perf_counter()
        self.step = max(1, total // 20)
        self.next = self.step
        if self.enabled and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="row", desc="sweep", smoothing=0.05)

    def update(self, rows: int) -> None:
        self.done += rows
        if self.bar is not None:
            self.bar.update(rows)
        elif self.enabled and (self.done >= self.next or self.done == self.total):
            self.next = self.done + self.step
            self.log(f"sweep: {self.done}/{self.total} rows, {time.perf_counter() - self.t0:.0f} s")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _run_sweep(grid, out, *, jobs, backend, resume, progress, log=print) -> SweepStats:
    t0 = time.perf_counter()
    store = ResultStore(out / RESULTS)
    covered = grid
    if resume:
        done = store.done_keys()  # (read first: a damaged table is an error, and is left as it is)
        if (out / GRID).exists():
            # grid.json describes what results.csv covers: a narrower grid resumed into a folder adds to it.
            covered = read_grid(out / GRID, fix=GRID_FIX).union(grid)
        store.repair()
    else:
        store.reset()
        done = set()
    write_atomic(out / GRID, covered.to_json() + "\n")
    write_table(out / APPROX, approximation_rows(grid), APPROX_COLUMNS)
    tasks = plan(grid, done)
    planned = sum(len(t.pending) for t in tasks)
    eff, why = effective_jobs(jobs, len(tasks), backend)
    if eff < jobs:
        log(f"svdgrad sweep: note: --jobs {jobs} reduced to {eff} ({why})")
    written = errors = 0
    bar = _Progress(planned, progress, log)
    try:
        for rows in execute(tasks, jobs=eff, backend=backend):
            store.append(rows)
            written += len(rows)
            errors += sum(1 for r in rows if r.get("error"))
            bar.update(len(rows))
    finally:
        bar.close()
    return SweepStats(planned, written, errors, len(tasks), time.perf_counter() - t0, eff)


__all__ = ["COLUMNS", "RESULTS", "APPROX", "GRID", "REPORT", "RUNS", "BACKENDS", "matrix_keys", "plan", "execute",
           "run_sweep", "approximation_rows", "effective_jobs", "usable_cores",
           "SweepLocked", "WorkerLost"]
