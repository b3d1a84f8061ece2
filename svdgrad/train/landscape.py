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
from .._io import write_atomic
from . import runner

#: Every run's settings unless a protocol overrides them (TrainConfig fields): the hybrid study's
#: network and schedule on half its training images.
BASE = dict(dataset="textures", image_size=32, train_per_class=200, val_per_class=100, widths=(8, 16, 32),
            reduced_channels=32, epochs=12, batch_size=64, lr=0.1, momentum=0.9, weight_decay=1e-4,
            schedule="step", ns_iterations=5)
#: Probe period in optimizer steps (15 steps = one epoch of BASE) and the step sizes η of eqs. 3-4:
#: uniform in [0.1, 75] as the paper's ResNet-18 (left end = the initial lr), 6 points instead of 50.
PROBE_EVERY = 15
ETAS = (0.1, 15.0, 30.0, 45.0, 60.0, 75.0)
_PROBED = dict(landscape_every=PROBE_EVERY, landscape_etas=ETAS, probe_every=PROBE_EVERY, robustness=True)
_GRAD = dict(probe_every=PROBE_EVERY)
#: Table 3 (ResNets: LR_norm 100 epochs, LR_fast rho 11 / e_f 53 / 30 epochs, LR_adj rho 2 / e_f 50 /
#: 50 epochs) scaled by 12/100; LR_adj's e_f is one past its last epoch so that epoch keeps a positive lr.
FAST = dict(schedule="poly", epochs=4, poly_power=11.0, poly_final_epoch=6)
ADJ = dict(schedule="poly", epochs=6, poly_power=2.0, poly_final_epoch=7)
SECOND_ORDER = dict(image_size=16, epochs=8)
KAPPAS = (10.0, 1000.0)

#: part -> protocol -> TrainConfig overrides of BASE.  Order = order in the report.
PARTS: dict[str, dict[str, dict]] = {
    "probes": {"gap": dict(head="gap", **_PROBED), "gcp-ns": dict(protocol="ns", **_PROBED),
               "gcp-exact": dict(protocol="svd", svd_method="exact", **_PROBED)},
    "precision": {"sigma32": dict(protocol="svd", svd_method="exact", sigma_dtype="float32", **_GRAD),
                  "features32": dict(protocol="svd", svd_method="exact", pool_route="features",
                                     sigma_dtype="float32", **_GRAD)},
    "schedules": {f"{h}-{s}": dict(**({"head": "gap"} if h == "gap" else {"protocol": "ns"}), **sched)
                  for s, sched in (("fast", FAST), ("adj", ADJ)) for h in ("gap", "gcp-ns")},
    "secondorder": {f"{h}-k{k:g}": dict(dataset=f"secondorder:kappa={k:g}", **SECOND_ORDER,
                                        **({"head": "gap"} if h == "gap" else {"protocol": "ns"}))
                    for k in KAPPAS for h in ("gap", "gcp-ns")},
}
#: Protocols of one part that are runs of another (the same configuration, so never run twice).
SHARED = {("schedules", "gap-norm"): ("probes", "gap"), ("schedules", "gcp-ns-norm"): ("probes", "gcp-ns"),
          ("precision", "sigma64"): ("probes", "gcp-exact")}
LABELS = {"gap": "GAP", "gcp-ns": "GCP, Newton-Schulz", "gcp-exact": "GCP, exact (Σ float64)",
          "sigma32": "GCP exact, Σ float32", "sigma64": "GCP exact, Σ float64", "features32": "GCP features route, float32",
          "gap-norm": "GAP, LR_norm", "gcp-ns-norm": "GCP-NS, LR_norm", "gap-fast": "GAP, LR_fast",
          "gcp-ns-fast": "GCP-NS, LR_fast", "gap-adj": "GAP, LR_adj", "gcp-ns-adj": "GCP-NS, LR_adj",
          **{f"{h}-k{k:g}": f"{'GAP' if h == 'gap' else 'GCP-NS'}, κ {k:g}" for k in KAPPAS for h in ("gap", "gcp-ns")}}
SEEDS = 3
QUICK = dict(BASE, image_size=16, train_per_class=12, val_per_class=6, widths=(4, 8, 8), reduced_channels=6,
             epochs=2, batch_size=20)
QUICK_OVERRIDES = dict(epochs=2, poly_final_epoch=3, image_size=16)
QUICK_SEEDS = 1
DEFAULT_OUT = os.path.join("reports", "landscape")


def run_dir(out: str, part: str, protocol: str, seed: int) -> str:
    part, protocol = SHARED.get((part, protocol), (part, protocol))
    return os.path.join(out, "runs", part, protocol, f"seed{seed}")


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

    from .landscape_report import write_report

    seeds = seeds if seeds is not None else (QUICK_SEEDS if quick else SEEDS)
    if seeds < 1:
        raise SvdgradError(f"Expected --seeds >= 1; received {seeds}.")
    out = out or default_out(quick)
    jobs = 1 if (quick and jobs is None) else runner.bounded_jobs(jobs)
    if backend not in runner.BACKENDS:
        raise SvdgradError(f"Unknown --backend {backend!r}. Expected one of {', '.join(runner.BACKENDS)}.")
    runner.check_device(device)
    study_path = os.path.join(out, "study.json")
    if report_only:
        if not os.path.exists(study_path):
            raise SvdgradError(f"Expected {study_path} for --report-only (it redraws the report of a study "
                               f"already run); it does not exist. Run the study into {out} first.")
        write_report(out)
        return out
    grid_id = {"quick": quick, "base": {k: list(v) if isinstance(v, tuple) else v
                                        for k, v in (QUICK if quick else BASE).items()},
               "parts": json.loads(json.dumps(PARTS))}
    before = {}
    if os.path.exists(study_path):
        with open(study_path) as f:
            before = json.load(f)
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
    write_atomic(study_path, json.dumps(study, indent=1))
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
