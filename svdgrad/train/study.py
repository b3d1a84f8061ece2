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
from .._io import output_conflict, write_atomic
from . import runner
from .grid import DATASETS, DEFAULT_OUT, EARLY, FULL, FULL_SEEDS, HYBRIDS, LABELS, PROTOCOLS, QUICK, QUICK_SEEDS  # noqa: F401 (re-exported)
from .grid import default_out_for
from .report import load_runs, mean_std, read_study, write_report  # noqa: F401 (re-exported)


def seed_plan(seeds: int | None, protocols: list[str] | None, before: dict, default: int) -> dict[str, int]:
    """protocol -> seeds planned for it.

    ``--seeds N`` sets N for the protocols named by ``--protocols`` (all by default), so the seeds can go
    where the claims need them (a Welch comparison needs several times the seeds of a paired one).  A
    study already on disk keeps its plan and only grows: a smaller N never drops finished seeds.
    """
    if protocols and seeds is None:
        raise SvdgradError("Expected --seeds N with --protocols (it names the protocols that get N seeds); "
                           "received --protocols alone.")
    unknown = [p for p in protocols or () if p not in PROTOCOLS]
    if unknown:
        raise SvdgradError(f"Unknown protocol(s) {', '.join(map(repr, unknown))} for --protocols. Expected names "
                           f"from {', '.join(PROTOCOLS)}, separated by commas.")
    old = (before or {}).get("seeds_by_protocol", {})
    if before and not old:  # a study written before plans were per protocol: one number for all
        default = int(before.get("seeds", default))
    plan = {p: int(old.get(p, default)) for p in PROTOCOLS}
    if seeds is not None:
        for p in protocols or PROTOCOLS:
            plan[p] = max(plan[p], seeds) if before else seeds
    return plan


def configs(settings: dict, seeds: int | dict[str, int], out: str):
    """(protocol, seed, TrainConfig) for every run of the grid, seed by seed.

    ``seeds`` is one number for every protocol or a ``seed_plan`` (protocol -> seeds)."""
    from .trainer import TrainConfig

    plan = seeds if isinstance(seeds, dict) else {p: seeds for p in PROTOCOLS}
    # Seed-major: an interrupted study has whole seeds of every protocol, so its report can compare them.
    for seed in range(max(plan.values(), default=0)):
        for name, over in PROTOCOLS.items():
            if seed >= plan.get(name, 0):
                continue
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
        device: str = "cpu", max_minutes: float | None = None, dataset: str = "textures",
        protocols: list[str] | None = None) -> str:
    """Run the missing runs of the grid, then write the report.  Returns the output folder.

    A folder that already holds this study is completed only with ``resume=True`` (finished runs
    are skipped, interrupted ones continue from their checkpoints).  ``seeds`` applies to
    ``protocols`` (default: all of them); see ``seed_plan``.
    """
    import torch

    if dataset not in DATASETS:
        raise SvdgradError(f"Unknown --dataset {dataset!r} for the hybrid study. Expected one of {', '.join(DATASETS)}.")
    settings = dict(QUICK if quick else FULL, dataset=dataset)
    default_seeds = QUICK_SEEDS if quick else FULL_SEEDS
    if out is None:
        out = default_out(quick, dataset)
    jobs = runner.check_study_options(seeds=default_seeds if seeds is None else seeds, jobs=jobs, backend=backend,
                                      device=device, quick=quick,
                                      max_minutes=max_minutes)
    if report_only:
        return runner.redraw(out, write_report)
    conflict = output_conflict(out, "study")
    if conflict:
        raise SvdgradError(conflict)
    # The folder is locked while the study writes it: a second study (or --resume) into it is refused
    # (two resumes ran the same runs twice, every log line doubled, and both exited 0).
    from .trainer import _folder_lock  # (imports torch: not at module import)

    with _folder_lock(out, "study"):
        study_path = os.path.join(out, "study.json")
        study_settings = {k: list(v) if isinstance(v, tuple) else v for k, v in settings.items()}
        before = {}
        if os.path.exists(study_path):
            before = read_study(out)
            old_protocols = before.get("protocols", {})
            changed_protocols = sorted(k for k in old_protocols if PROTOCOLS.get(k) != old_protocols[k])
            if before.get("settings") != study_settings or changed_protocols:
                changed = sorted(k for k in set(study_settings) | set(before.get("settings", {}))
                                 if before.get("settings", {}).get(k) != study_settings.get(k))
                raise SvdgradError(
                    f"{out} holds a study with other settings ({', '.join(changed or changed_protocols)} differ"
                    f"{'; it is a --quick study' if before.get('quick') else ''}{'; this is --quick' if quick else ''}). "
                    f"Its runs would be mixed with these. Pass a new --out, or delete {out} to start over.")
            # A protocol added to the grid since (the grid only grows) is run by --resume like any missing run.
        plan = seed_plan(seeds, protocols, before, default_seeds)  # the report reads every seed in runs/
        grid = [(n, s_, c) for n, s_, c in configs(settings, plan, out)]
        for _, _, c in grid:
            c.device = device
        todo = [(f"{n} seed {s_}", c) for n, s_, c in grid if not _complete(c)]
        if before and todo and not resume:
            raise SvdgradError(
                f"{out} holds this study with {len(grid) - len(todo)} of {len(grid)} runs finished. Pass --resume to "
                f"run the {len(todo)} missing ones (finished runs are kept), or --report-only to redraw the report.")
        os.makedirs(out, exist_ok=True)
        study = {"settings": study_settings, "seeds": max(plan.values()), "seeds_by_protocol": plan, "quick": quick,
                 "protocols": PROTOCOLS, "jobs": jobs,
                 "backend": backend, "device": device, "cpu_count": os.cpu_count(), "machine": platform.machine(),
                 "torch": torch.__version__, "planned_runs": len(grid)}
        with runner.ray_session(backend, jobs, needed=bool(todo)):  # (a bad RAY_ADDRESS: before study.json)
            write_atomic(study_path, json.dumps(study, indent=1))  # first, so --resume and --report-only find it
            runner.run_missing(todo, len(grid), out, jobs=jobs, backend=backend, echo=echo,
                               max_minutes=max_minutes, local_fn=_run_one)
        write_report(out)
        return out


def clean(out: str) -> None:
    """Remove a study folder (used by the tests for the quick variant)."""
    shutil.rmtree(out, ignore_errors=True)
