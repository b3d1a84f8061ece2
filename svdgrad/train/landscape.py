"""``svdgrad study landscape``: the CVPR20 findings and the ICCV21 mechanisms, measured.

The grid is declared once, here (``PARTS``, ``BASE``, ``QUICK``, ``SEEDS``); the runner below,
the report (``landscape_report``) and the tests read it from there.  Parts:

- ``probes``: GAP, GCP with Newton-Schulz, GCP with ``exact`` (Σ in float64, the layer's default):
  the CVPR20 probes (eqs. 3-4) and the ICCV21 gradient probe every ``PROBE_EVERY`` steps, and
  accuracy on corrupted validation images after training.  Its GAP and GCP-NS runs are also the
  LR_norm runs of ``schedules``, and its GCP-exact runs the "Σ in float64" runs of ``precision``.
- ``precision``: GCP-exact with Σ formed and decomposed in float32, and the features route
  (``gram_sqrtm``) in float32, with the gradient probe.
- ``schedules``: GAP and GCP-NS under LR_fast and LR_adj (CVPR20 Table 3, scaled to this run length).
- ``secondorder``: GAP and GCP-NS on the synthetic dataset whose classes differ only in their channel
  correlations, at two condition numbers.

Runs go to ``OUT/runs/<part>/<protocol>/seed<k>/`` and are ordered seed by seed, so an interrupted
study has whole seeds of every protocol.
"""

from __future__ import annotations

import json
import os
import platform
import tempfile

from .._errors import SvdgradError
from .._io import output_conflict, write_atomic
from . import runner
from .landscape_report import write_report
from .report import read_study

from .landscape_grid import (ADJ, BASE, DEFAULT_OUT, ETAS, FAST, KAPPAS, LABELS, PARTS, PROBE_EVERY,  # noqa: F401
                             QUICK, QUICK_OVERRIDES, QUICK_SEEDS, SEEDS, SHARED, run_dir)


def configs(quick: bool, seeds: int, out: str, device: str = "cpu"):
    """(part, protocol, seed, TrainConfig) for every run of the grid, seed by seed."""
    from .trainer import TrainConfig

    base = QUICK if quick else BASE
    for seed in range(seeds):
        for part, protocols in PARTS.items():
            for name, over in protocols.items():
                over = dict(over)
                if quick:
                    over.update({k: v for k, v in QUICK_OVERRIDES.items() if k in over or k == "epochs"})
                    if part == "secondorder":
                        over["train_per_class"], over["val_per_class"] = base["train_per_class"], base["val_per_class"]
                    if over.get("landscape_every"):
                        over.update(landscape_every=1, probe_every=1, landscape_etas=(0.1, 75.0))
                    elif over.get("probe_every"):
                        over["probe_every"] = 1
                yield part, name, seed, TrainConfig(**{**base, **over}, seed=seed, threads=1, progress=False,
                                                    resume=True, device=device,
                                                    out=run_dir(out, part, name, seed))


def default_out(quick: bool) -> str:
    if quick:
        return os.path.join(tempfile.mkdtemp(prefix="svdgrad-study-"), "landscape_quick")
    return DEFAULT_OUT


def _run_one(cfg_dict: dict) -> dict:
    return runner.run_one(cfg_dict)


def run(quick: bool = False, out: str | None = None, seeds: int | None = None, jobs: int | None = None,
        report_only: bool = False, echo=print, *, resume: bool = False, backend: str = "joblib",
        device: str = "cpu", max_minutes: float | None = None) -> str:
    """Run the missing runs of the grid (``resume`` to complete a folder that holds it), then the report."""
    import torch

    seeds = seeds if seeds is not None else (QUICK_SEEDS if quick else SEEDS)
    out = out or default_out(quick)
    jobs = runner.check_study_options(seeds=seeds, jobs=jobs, backend=backend, device=device, quick=quick,
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
        grid_id = {"quick": quick, "base": {k: list(v) if isinstance(v, tuple) else v
                                            for k, v in (QUICK if quick else BASE).items()},
                   "parts": json.loads(json.dumps(PARTS))}
        before = {}
        if os.path.exists(study_path):
            before = read_study(out)
            if before.get("grid") != grid_id:
                raise SvdgradError(f"{out} holds a landscape study with another grid"
                                   f"{' (it is a --quick study)' if before.get('grid', {}).get('quick') else ''}"
                                   f"{' (this is --quick)' if quick else ''}. Its runs would be mixed with these. Pass "
                                   f"a new --out, or delete {out} to start over.")
            seeds = max(seeds, int(before.get("seeds", seeds)))
        grid = list(configs(quick, seeds, out, device))
        todo = [(f"{p}/{n} seed {s}", c) for p, n, s, c in grid if not runner.complete(c)]
        if before and todo and not resume:
            raise SvdgradError(
                f"{out} holds this study with {len(grid) - len(todo)} of {len(grid)} runs finished. Pass --resume to "
                f"run the {len(todo)} missing ones (finished runs are kept), or --report-only to redraw the report.")
        os.makedirs(out, exist_ok=True)
        study = {"grid": grid_id, "seeds": seeds, "planned_runs": len(grid), "jobs": jobs, "backend": backend,
                 "device": device, "cpu_count": os.cpu_count(), "machine": platform.machine(),
                 "torch": torch.__version__, "command": "svdgrad study landscape" + (" --quick" if quick else "")
                 + (f" --seeds {seeds}" if seeds != (QUICK_SEEDS if quick else SEEDS) else "")}
        with runner.ray_session(backend, jobs, needed=bool(todo)):  # (a bad RAY_ADDRESS: before study.json)
            write_atomic(study_path, json.dumps(study, indent=1))
            runner.run_missing(todo, len(grid), out, jobs=jobs, backend=backend, echo=echo,
                               max_minutes=max_minutes, local_fn=_run_one)
        write_report(out)
        return out
