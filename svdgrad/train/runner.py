"""Running the runs of a study grid: in this process, through joblib, or through Ray.

Every run is a plain ``svdgrad train`` run in its own folder, so

- a run with a complete ``summary.json`` is finished and skipped;
- an interrupted run resumes from its checkpoint (written atomically every epoch);
- the checkpoint is deleted once the run is complete, so a committed report stays small.

Workers use one torch thread each (``TrainConfig.threads = 1``; loky workers also get
OMP/MKL limits of 1), and ``jobs`` is bounded by the number of cores.  ``max_minutes``
stops launching runs after that much wall time: the caller's report then says which
part of the grid ran, and running the study again with ``--resume`` completes it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import signal
import time
from typing import Callable

from .._errors import SvdgradError, loky_worker_lost, ray_worker_lost

BACKENDS = ("joblib", "ray")


def check_device(device: str) -> None:
    """Refuse ``--device cuda`` on a machine without a usable GPU, before anything is written."""
    import torch

    if device not in ("auto", "cpu") and not (device == "cuda" or device.startswith("cuda:")):
        raise SvdgradError(f"Expected --device auto, cpu or cuda[:i]; received {device!r}.")
    if device.startswith("cuda") and not torch.cuda.is_available():
        why = ("this torch was built without CUDA" if torch.version.cuda is None else
               f"torch {torch.__version__} (CUDA {torch.version.cuda}) finds no GPU")
        raise SvdgradError(f"Expected a CUDA device for --device {device}; {why}. Use --device cpu (or auto, "
                           f"which picks cuda only where it is available).")


def check_study_options(*, seeds: int, jobs: int | None, backend: str, device: str, quick: bool,
                        max_minutes: float | None = None) -> int:
    """The options every study shares, checked; returns the number of jobs (1 for a quick study by default)."""
    if seeds < 1:
        raise SvdgradError(f"Expected --seeds >= 1; received {seeds}.")
    if max_minutes is not None and not (max_minutes >= 0 and math.isfinite(max_minutes)):  # (NaN, −1 passed)
        raise SvdgradError(f"Expected a finite --max-minutes >= 0 (0 plans the runs without starting any); "
                           f"received {max_minutes!r}.")
    jobs = 1 if (quick and jobs is None) else bounded_jobs(jobs)
    if backend not in BACKENDS:
        raise SvdgradError(f"Unknown --backend {backend!r}. Expected one of {', '.join(BACKENDS)}.")
    check_device(device)
    return jobs


def run_missing(todo: list, total: int, out: str, *, jobs: int, backend: str, echo, max_minutes, local_fn) -> None:
    """Run a study's missing runs ``todo`` (of ``total``): ``local_fn`` in this process for one joblib job, else
    ``run_one`` in workers; torch's thread count is restored afterwards."""
    import torch

    if not todo:
        return
    echo(f"[svdgrad study] {total - len(todo)} of {total} runs done; running {len(todo)} "
         f"with {jobs} job(s) ({backend}) into {out}")
    threads = torch.get_num_threads()
    try:
        run_all(todo, jobs=jobs, backend=backend, echo=echo, max_minutes=max_minutes,
                fn=local_fn if jobs == 1 and backend == "joblib" else run_one)
    finally:
        torch.set_num_threads(threads)


def redraw(out: str, write_report) -> str:
    """``--report-only``: rewrite the report of a study already in ``out`` from its logs."""
    study_path = os.path.join(out, "study.json")
    if not os.path.exists(study_path):
        raise SvdgradError(f"Expected {study_path} for --report-only (it redraws the report of a study "
                           f"already run); it does not exist. Run the study into {out} first.")
    from .._io import remove_stale_temporaries

    remove_stale_temporaries(out)  # (a killed report's REPORT.md or figure; only dead writers': no lock is needed)
    write_report(out)
    return out


#: Written into a run's folder when the run stopped on its own (``trainer.RunStopped``): its outcome, final.
STOPPED = "stopped.json"


def complete(cfg) -> bool:
    """Finished: a summary of all its epochs, or a record that it stopped (rerunning it would stop again)."""
    if os.path.exists(os.path.join(cfg.out, STOPPED)):
        return True
    path = os.path.join(cfg.out, "summary.json")
    if not os.path.exists(path):
        return False
    from .._io import read_json

    return read_json(path, fix=f"Delete the run's folder {cfg.out} and run the study again with --resume "
                               f"(it re-runs that run only).").get("epochs") == cfg.epochs


def run_one(cfg_dict: dict) -> dict:
    """Train one configuration (resuming it if it was interrupted) and drop its checkpoint.

    A run that stops on its own (every step of an epoch skipped, or a non-finite model: ``RunStopped``)
    is an outcome of its method, not a failure of the study: it is recorded in ``stopped.json`` (epoch
    and reason, written atomically) and the study goes on.  Its log keeps the epochs before.
    """
    from .._io import write_atomic
    from .trainer import RunStopped, TrainConfig, train

    cfg = TrainConfig(**cfg_dict)
    try:
        summary = train(cfg, echo=lambda msg: None)
    except RunStopped as exc:
        summary = {"stopped": True, "epoch": exc.epoch, "reason": str(exc), "seed": cfg.seed}
        write_atomic(os.path.join(cfg.out, STOPPED), json.dumps(summary, indent=1))
    ck = os.path.join(cfg.out, "checkpoint.pt")
    if os.path.exists(ck):
        os.remove(ck)
    return summary


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def bounded_jobs(jobs: int | None, default_max: int = 2) -> int:
    cores = os.cpu_count() or 1
    if jobs is None:
        return max(1, min(default_max, cores))
    if jobs < 1:
        raise SvdgradError(f"Expected --jobs >= 1; received {jobs}.")
    return min(jobs, cores)


def run_all(todo: list[tuple[str, object]], *, jobs: int = 1, backend: str = "joblib",
            echo: Callable[[str], None] = print, max_minutes: float | None = None,
            fn: Callable[[dict], dict] = run_one) -> list[str]:
    """Run ``todo`` = [(label, TrainConfig)]; returns the labels finished (all of them unless ``max_minutes``)."""
    if backend not in BACKENDS:
        raise SvdgradError(f"Unknown backend {backend!r}. Expected one of {', '.join(BACKENDS)}.")
    t0 = time.perf_counter()
    deadline = None if max_minutes is None else t0 + 60 * max_minutes
    done: list[str] = []

    def note(label):
        done.append(label)
        echo(f"[svdgrad study] {len(done)}/{len(todo)} {label} done ({time.perf_counter() - t0:.0f}s)")

    def out_of_time():
        return deadline is not None and time.perf_counter() >= deadline

    items = [(label, dataclasses.asdict(c)) for label, c in todo]
    if backend == "ray":
        _run_ray(items, jobs, note, out_of_time)
        return done
    if jobs == 1:
        for label, d in items:
            if out_of_time():
                break
            note(_outcome(label, fn(d)))
        return done
    from joblib import Parallel, delayed

    def launches():
        for label, d in items:
            if out_of_time():
                return
            yield delayed(_labelled)(fn, label, d)

    # A run is launched when a worker is free (pre_dispatch = jobs, one run per batch), so the time budget is
    # checked at each launch and no worker waits for the slowest run of a wave.
    from joblib.externals.loky.process_executor import TerminatedWorkerError

    try:
        with Parallel(n_jobs=jobs, backend="loky", return_as="generator_unordered", inner_max_num_threads=1,
                      pre_dispatch="n_jobs", batch_size=1) as par:
            for label in par(launches()):
                note(label)
    except TerminatedWorkerError as exc:  # (a worker killed: joblib stops the others, mid-run)
        raise loky_worker_lost(exc, KEPT) from None
    return done


#: What a study keeps when a worker dies (``WorkerLost``).
KEPT = "the finished runs are kept, and an unfinished one resumes from its last epoch"


def _outcome(label: str, out) -> str:
    """The label, with the epoch where the run stopped if it stopped on its own (``run_one``)."""
    if isinstance(out, dict) and out.get("stopped"):
        return f"{label} (stopped in epoch {out['epoch']})"
    return label


def _labelled(fn, label, d):
    _ignore_sigint()
    return _outcome(label, fn(d))


def _import_ray():
    try:
        import ray
    except ImportError as exc:
        raise SvdgradError("Expected Ray for --backend ray (pip install -e '.[cluster]'); importing it failed: "
                           f"{exc}.") from None
    return ray


def _start_ray(jobs: int) -> bool:
    """Connect to the cluster in RAY_ADDRESS, or start a local Ray with ``jobs`` CPUs, unless Ray runs already;
    True where this call started it (its caller shuts it down)."""
    import logging

    ray = _import_ray()
    if ray.is_initialized():
        return False
    address = os.environ.get("RAY_ADDRESS")
    kw = dict(logging_level=logging.ERROR, log_to_driver=False, include_dashboard=False)
    if address:
        from .._ray import connect

        connect(address, "RAY_ADDRESS", **kw)  # (SvdgradError where no cluster answers: Ray waits for good)
    else:
        ray.init(num_cpus=jobs, **kw)
    return True


@contextlib.contextmanager
def ray_session(backend: str, jobs: int, needed: bool = True):
    """With --backend ray (and runs ``needed``): Ray connected or started on entry, shut down on exit if
    started here.  A study enters it before it writes study.json, so an address where no cluster answers
    stops it with the folder as it was (the rerun with the address corrected was refused: the folder held
    "this study with 0 of N runs finished")."""
    started = backend == "ray" and needed and _start_ray(jobs)
    try:
        yield
    finally:
        if started:
            _import_ray().shutdown()


def _run_ray(items, jobs, note, out_of_time) -> None:
    ray = _import_ray()
    from ray.exceptions import RayError, RayTaskError

    started = _start_ray(jobs)
    try:
        remote = ray.remote(num_cpus=1)(_labelled)
        pending, queue = [], list(items)
        while queue or pending:
            while queue and len(pending) < jobs and not out_of_time():
                label, d = queue.pop(0)
                pending.append(remote.remote(run_one, label, d))
            if not pending:
                break
            ready, pending = ray.wait(pending, num_returns=1)
            try:
                note(ray.get(ready[0]))
            except RayTaskError as exc:  # the run raised: its own error (an SvdgradError: the study's message)
                if isinstance(exc.cause, Exception):
                    raise exc.cause from None
                raise
            except RayError as exc:  # its worker died, after Ray's retries
                raise ray_worker_lost(exc, KEPT) from None
            if out_of_time():
                queue.clear()
    finally:
        if started:
            ray.shutdown()
