"""``svdgrad study hybrid``: the ICCV21 hybrid protocol, measured on the bundled textures.

The grid is declared once, in ``grid`` (``PROTOCOLS``, ``FULL``, ``QUICK``);
the runner (here), the report and the tests read it from there.  Each run is a normal
``svdgrad train`` run in ``OUT/runs/<protocol>/seed<k>/`` (log.jsonl,
summary.json, config.json).  A run with a complete summary is skipped, an
interrupted one resumes from its checkpoint, and the checkpoint is deleted
once the run is complete, so the committed output stays small.  The
report (REPORT.md and figures) is computed from those logs only.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import shutil
import signal
import tempfile
import time

from .._errors import SvdgradError
from .._io import write_atomic
from .grid import DEFAULT_OUT, FULL, FULL_SEEDS, LABELS, PROTOCOLS, QUICK, QUICK_SEEDS  # noqa: F401 (re-exported)
from .report import load_runs, mean_std, write_report  # noqa: F401 (re-exported)


def configs(settings: dict, seeds: int, out: str):
    """(protocol, seed, TrainConfig) for every run of the grid, seed by seed."""
    from .trainer import TrainConfig

    # Seed-major: an interrupted study has whole seeds of every protocol, so its report can compare them.
    for seed in range(seeds):
        for name, over in PROTOCOLS.items():
            yield name, seed, TrainConfig(**settings, **over, seed=seed, threads=1, progress=False, resume=True,
                                          out=os.path.join(out, "runs", name, f"seed{seed}"))


def _complete(cfg) -> bool:
    path = os.path.join(cfg.out, "summary.json")
    if not os.path.exists(path):
        return False
    with open(path) as f:
        return json.load(f).get("epochs") == cfg.epochs


def default_out(quick: bool) -> str:
    """reports/hybrid_protocol for the full study; a new scratch folder for the quick smoke test."""
    if quick:
        return os.path.join(tempfile.mkdtemp(prefix="svdgrad-study-"), "hybrid_protocol_quick")
    return DEFAULT_OUT


def _ignore_sigint() -> None:
    # Workers leave Ctrl-C to the parent, which terminates them: no traceback per worker.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _run_one(cfg_dict: dict) -> dict:
    from .trainer import TrainConfig, train

    cfg = TrainConfig(**cfg_dict)
    summary = train(cfg, echo=lambda msg: None)
    ck = os.path.join(cfg.out, "checkpoint.pt")
    if os.path.exists(ck):
        os.remove(ck)
    return summary


def run(quick: bool = False, out: str | None = None, seeds: int | None = None, jobs: int | None = None,
        report_only: bool = False, echo=print) -> str:
    """Run the missing runs of the grid, then write the report.  Returns the output folder."""
    import torch

    settings = QUICK if quick else FULL
    seeds = seeds if seeds is not None else (QUICK_SEEDS if quick else FULL_SEEDS)
    if seeds < 1:
        raise SvdgradError(f"Expected --seeds >= 1; received {seeds}.")
    if out is None:
        out = default_out(quick)
    jobs = jobs if jobs is not None else (1 if quick else max(1, min(2, os.cpu_count() or 1)))
    if jobs < 1:
        raise SvdgradError(f"Expected --jobs >= 1; received {jobs}.")
    study_path = os.path.join(out, "study.json")
    if report_only:
        if not os.path.exists(study_path):
            raise SvdgradError(f"Expected {study_path} for --report-only (it redraws the report of a study "
                               f"already run); it does not exist. Run the study into {out} first.")
        write_report(out)
        return out
    study_settings = {k: list(v) if isinstance(v, tuple) else v for k, v in settings.items()}
    if os.path.exists(study_path):
        with open(study_path) as f:
            before = json.load(f)
        if before.get("settings") != study_settings or before.get("protocols") != PROTOCOLS:
            changed = sorted(k for k in set(study_settings) | set(before.get("settings", {}))
                             if before.get("settings", {}).get(k) != study_settings.get(k))
            raise SvdgradError(
                f"{out} holds a study with other settings ({', '.join(changed) or 'protocols'} differ"
                f"{'; it is a --quick study' if before.get('quick') else ''}{'; this is --quick' if quick else ''}). "
                f"Its runs would be mixed with these. Pass a new --out, or delete {out} to start over.")
        seeds = max(seeds, int(before.get("seeds", seeds)))  # the report reads every seed in runs/
    os.makedirs(out, exist_ok=True)
    grid = list(configs(settings, seeds, out))
    todo = [(n, s, c) for n, s, c in grid if not _complete(c)]
    t0 = time.perf_counter()
    if todo:
        echo(f"[svdgrad study] {len(grid) - len(todo)} of {len(grid)} runs done; running {len(todo)} "
             f"with {jobs} job(s) into {out}")
        threads = torch.get_num_threads()
        try:
            if jobs == 1:
                for k, (n, s, c) in enumerate(todo):
                    _run_one(dataclasses.asdict(c))
                    echo(f"[svdgrad study] {k + 1}/{len(todo)} {n} seed {s} done ({time.perf_counter() - t0:.0f}s)")
            else:
                import multiprocessing as mp

                pool = mp.get_context("spawn").Pool(jobs, initializer=_ignore_sigint)
                try:
                    names = [(n, s) for n, s, _ in todo]
                    results = pool.imap_unordered(_run_indexed, list(enumerate(dataclasses.asdict(c)
                                                                              for _, _, c in todo)))
                    for k, i in enumerate(results):
                        n, s = names[i]
                        echo(f"[svdgrad study] {k + 1}/{len(todo)} {n} seed {s} done "
                             f"({time.perf_counter() - t0:.0f}s)")
                    pool.close()
                except BaseException:
                    pool.terminate()  # Ctrl-C or a failed run: stop the others (checkpoints are atomic)
                    raise
                finally:
                    pool.join()
        finally:
            torch.set_num_threads(threads)
    study = {"settings": study_settings, "seeds": seeds, "quick": quick, "protocols": PROTOCOLS, "jobs": jobs,
             "cpu_count": os.cpu_count(), "machine": platform.machine(), "torch": torch.__version__}
    write_atomic(study_path, json.dumps(study, indent=1))
    write_report(out)
    return out


def _run_indexed(item: tuple[int, dict]) -> int:
    i, cfg_dict = item
    _run_one(cfg_dict)
    return i


def clean(out: str) -> None:
    """Remove a study folder (used by the tests for the quick variant)."""
    shutil.rmtree(out, ignore_errors=True)
