"""Run a grid: plan the pending rows, execute matrices in parallel, append results."""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from .cells import COLUMNS, CellTask, ns_variant, run_cell
from .grid import Grid
from .store import ResultStore, write_atomic, write_table

#: Files of an output directory.
RESULTS = "results.csv"
APPROX = "approx.csv"
GRID = "grid.json"
REPORT = "REPORT.md"
LOCK = ".lock"
RUNS = "runs.jsonl"

BACKENDS = ("loky", "ray")

#: Tasks per worker in one Ray chunk (see ``execute``).
RAY_CHUNK = 4

#: Environment for pool workers: one BLAS/OpenMP thread each (oversubscription
#: on a 2-core machine turned 0.1 s calls into 10-50 s ones).
THREAD_ENV = {k: "1" for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")}


def matrix_keys(grid: Grid, n: int, k: int, spectrum: str, seed: int) -> list[tuple]:
    """Every row key the grid defines on one matrix, in a fixed order."""
    keys = [("method", m, "", d, n, k, spectrum, seed) for m in grid.methods for d in grid.dtypes]
    if "newton_schulz" in grid.methods and "float64" in grid.dtypes and spectrum in grid.ns_spectra:
        keys += [("ns", "newton_schulz", ns_variant(norm, it), "float64", n, k, spectrum, seed)
                 for norm in grid.ns_normalizations for it in grid.ns_iterations]
    keys += [("eig", "eigvalsh", "", d, n, k, spectrum, seed) for d in grid.dtypes]
    return keys


def plan(grid: Grid, done: set[tuple] = frozenset()) -> list[CellTask]:
    """One task per matrix that still has rows missing from ``done``."""
    tasks = []
    for n, k, sp, s in grid.matrices():
        pending = tuple(key for key in matrix_keys(grid, n, k, sp, s) if key not in done)
        if pending:
            tasks.append(CellTask(n=n, log10_kappa=k, spectrum=sp, seed=s, pending=pending,
                                  timing_repeats=grid.timing_repeats, mpmath_max_n=grid.mpmath_max_n,
                                  mpmath_dps=grid.mpmath_dps))
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

def _init_ray(address: str | None):
    try:
        import ray
        from ray.util.joblib import register_ray
    except ImportError as exc:
        raise RuntimeError(
            "--backend ray needs Ray: pip install -e \".[cluster]\" (or pip install ray)") from exc
    register_ray()
    if not ray.is_initialized():
        kwargs = {"runtime_env": {"env_vars": dict(THREAD_ENV)}, "log_to_driver": False}
        address = address or os.environ.get("RAY_ADDRESS")
        if address:
            ray.init(address=address, **kwargs)
        else:
            ray.init(num_cpus=None, include_dashboard=False, **kwargs)
    return ray


def execute(tasks, *, jobs: int = 2, backend: str = "loky", ray_address: str | None = None):
    """Yield each task's rows as it finishes (in completion order)."""
    import joblib

    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; expected one of {', '.join(BACKENDS)}")
    # Worker environments get THREAD_ENV (loky: inner_max_num_threads=1 sets these variables in each
    # worker; ray: the runtime_env); this process's own environment is left alone.
    if backend == "ray":
        _init_ray(ray_address)
        config = joblib.parallel_config(backend="ray", n_jobs=jobs)
    else:
        config = joblib.parallel_config(backend="loky", n_jobs=jobs, inner_max_num_threads=1)
    with config:
        if backend == "ray":
            # Ray's joblib backend (a multiprocessing-pool backend) returns no generator, so tasks go
            # in chunks of RAY_CHUNK·jobs and each chunk's rows are written when the chunk ends: a
            # killed Ray run can lose the finished cells of its last chunk (--resume recomputes them;
            # nothing is duplicated).
            tasks = list(tasks)
            step = RAY_CHUNK * jobs
            for i in range(0, len(tasks), step):
                parallel = joblib.Parallel(batch_size=1)
                yield from parallel(joblib.delayed(run_cell)(t) for t in tasks[i : i + step])
        else:
            parallel = joblib.Parallel(return_as="generator_unordered", batch_size=1, pre_dispatch="2*n_jobs")
            yield from parallel(joblib.delayed(run_cell)(t) for t in tasks)


@dataclass
class SweepStats:
    planned_rows: int
    written_rows: int
    error_rows: int
    matrices: int
    seconds: float


def run_sweep(grid: Grid, out: Path, *, jobs: int = 2, backend: str = "loky", resume: bool = False,
              progress: bool = True, ray_address: str | None = None, command: str = "") -> SweepStats:
    """Run ``grid`` into ``out`` (results.csv, approx.csv, grid.json); returns counts.

    Without ``resume`` results.csv starts empty; with it, rows already
    there are kept and skipped.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with _exclusive(out):
        stats = _run_sweep(grid, out, jobs=jobs, backend=backend, resume=resume, progress=progress,
                           ray_address=ray_address)
        _log_run(out / RUNS, stats, resume=resume, command=command, jobs=jobs, backend=backend)
        return stats


def _log_run(path: Path, stats: "SweepStats", *, resume: bool, command: str, jobs: int, backend: str):
    """One JSON line per finished run (a fresh run starts the file again); the report lists them."""
    import datetime
    import json

    entry = {"finished_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S"),
             "command": command, "jobs": jobs, "backend": backend, "resume": resume,
             "cpus": os.cpu_count(), "matrices": stats.matrices, "rows_written": stats.written_rows,
             "error_rows": stats.error_rows, "seconds": round(stats.seconds, 1)}
    old = path.read_text() if (resume and path.exists()) else ""
    write_atomic(path, old + json.dumps(entry) + "\n")


class _exclusive:
    """Hold OUT/.lock for the run: two sweeps appending to one results.csv would mix their rows."""

    def __init__(self, out: Path):
        self.path = Path(out) / LOCK

    def __enter__(self):
        import fcntl

        self.f = open(self.path, "w")
        try:
            fcntl.flock(self.f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.f.close()
            raise RuntimeError(f"another sweep is writing to {self.path.parent} (it holds {self.path}); "
                               f"wait for it, or use --out for a different directory") from None
        return self

    def __exit__(self, *exc):
        self.path.unlink(missing_ok=True)
        self.f.close()


def _run_sweep(grid, out, *, jobs, backend, resume, progress, ray_address) -> SweepStats:
    t0 = time.perf_counter()
    store = ResultStore(out / RESULTS)
    if resume:
        store.repair()
    else:
        store.reset()
    done = store.done_keys()
    write_atomic(out / GRID, grid.to_json() + "\n")
    write_table(out / APPROX, approximation_rows(grid), APPROX_COLUMNS)
    tasks = plan(grid, done)
    planned = sum(len(t.pending) for t in tasks)
    written = errors = 0
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=planned, unit="row", desc="sweep", smoothing=0.05)
    try:
        for rows in execute(tasks, jobs=jobs, backend=backend, ray_address=ray_address):
            store.append(rows)
            written += len(rows)
            errors += sum(1 for r in rows if r.get("error"))
            if bar is not None:
                bar.update(len(rows))
    finally:
        if bar is not None:
            bar.close()
    return SweepStats(planned, written, errors, len(tasks), time.perf_counter() - t0)


__all__ = ["COLUMNS", "RESULTS", "APPROX", "GRID", "REPORT", "RUNS", "BACKENDS", "matrix_keys", "plan", "execute",
           "run_sweep", "approximation_rows"]
