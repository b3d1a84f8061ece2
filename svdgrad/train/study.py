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

import json
import os
import platform
import shutil
import tempfile

from .._errors import SvdgradError
from .._io import write_atomic
from . import runner
from .grid import DATASETS, DEFAULT_OUT, EARLY, FULL, FULL_SEEDS, HYBRIDS, LABELS, PROTOCOLS, QUICK, QUICK_SEEDS  # noqa: F401 (re-exported)
from .grid import default_out_for
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
    return runner.complete(cfg)


def default_out(quick: bool, dataset: str = "textures") -> str:
    """reports/hybrid_protocol (textures) or reports/hybrid_protocol_<dataset> for the full study; a new
    scratch folder for the quick smoke test."""
    if quick:
        return os.path.join(tempfile.mkdtemp(prefix="svdgrad-study-"), "hybrid_protocol_quick")
    return default_out_for(dataset)


def _run_one(cfg_dict: dict) -> dict:
    return runner.run_one(cfg_dict)


def run(quick: bool = False, out: str | None = None, seeds: int | None = None, jobs: int | None = None,
        report_only: bool = False, echo=print, *, resume: bool = False, backend: str = "joblib",
        device: str = "cpu", max_minutes: float | None = None, dataset: str = "textures") -> str:
    """Run the missing runs of the grid, then write the report.  Returns the output folder.

    A folder that already holds this study is completed only with ``resume=True`` (finished runs
    are skipped, interrupted ones continue from their checkpoints).
    """
    import torch

    if dataset not in DATASETS:
        raise SvdgradError(f"Unknown --dataset {dataset!r} for the hybrid study. Expected one of {', '.join(DATASETS)}.")
    settings = dict(QUICK if quick else FULL, dataset=dataset)
    seeds = seeds if seeds is not None else (QUICK_SEEDS if quick else FULL_SEEDS)
    if out is None:
        out = default_out(quick, dataset)
    jobs = runner.check_study_options(seeds=seeds, jobs=jobs, backend=backend, device=device, quick=quick)
    if report_only:
        return runner.redraw(out, write_report)
    study_path = os.path.join(out, "study.json")
    study_settings = {k: list(v) if isinstance(v, tuple) else v for k, v in settings.items()}
    before = {}
    if os.path.exists(study_path):
        with open(study_path) as f:
            before = json.load(f)
        old_protocols = before.get("protocols", {})
        changed_protocols = sorted(k for k in old_protocols if PROTOCOLS.get(k) != old_protocols[k])
        if before.get("settings") != study_settings or changed_protocols:
            changed = sorted(k for k in set(study_settings) | set(before.get("settings", {}))
                             if before.get("settings", {}).get(k) != study_settings.get(k))
            raise SvdgradError(
                f"{out} holds a study with other settings ({', '.join(changed or changed_protocols)} differ"
                f"{'; it is a --quick study' if before.get('quick') else ''}{'; this is --quick' if quick else ''}). "
                f"Its runs would be mixed with these. Pass a new --out, or delete {out} to start over.")
        seeds = max(seeds, int(before.get("seeds", seeds)))  # the report reads every seed in runs/
        # A protocol added to the grid since (the grid only grows) is run by --resume like any missing run.
    grid = [(n, s_, c) for n, s_, c in configs(settings, seeds, out)]
    for _, _, c in grid:
        c.device = device
    todo = [(f"{n} seed {s_}", c) for n, s_, c in grid if not _complete(c)]
    if before and todo and not resume:
        raise SvdgradError(
            f"{out} holds this study with {len(grid) - len(todo)} of {len(grid)} runs finished. Pass --resume to "
            f"run the {len(todo)} missing ones (finished runs are kept), or --report-only to redraw the report.")
    os.makedirs(out, exist_ok=True)
    study = {"settings": study_settings, "seeds": seeds, "quick": quick, "protocols": PROTOCOLS, "jobs": jobs,
             "backend": backend, "device": device, "cpu_count": os.cpu_count(), "machine": platform.machine(),
             "torch": torch.__version__, "planned_runs": len(grid)}
    write_atomic(study_path, json.dumps(study, indent=1))  # first, so --resume and --report-only find it
    if todo:
        echo(f"[svdgrad study] {len(grid) - len(todo)} of {len(grid)} runs done; running {len(todo)} "
             f"with {jobs} job(s) ({backend}) into {out}")
        threads = torch.get_num_threads()
        try:
            runner.run_all(todo, jobs=jobs, backend=backend, echo=echo, max_minutes=max_minutes,
                           fn=_run_one if jobs == 1 and backend == "joblib" else runner.run_one)
        finally:
            torch.set_num_threads(threads)
    write_report(out)
    return out


def clean(out: str) -> None:
    """Remove a study folder (used by the tests for the quick variant)."""
    shutil.rmtree(out, ignore_errors=True)
