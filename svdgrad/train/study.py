"""``svdgrad study hybrid``: the ICCV21 hybrid protocol, measured on the bundled textures.

The grid is declared once, here (``PROTOCOLS``, ``FULL``, ``QUICK``); the
runner, the report and the tests read it from here.  Each run is a normal
``svdgrad train`` run in ``OUT/runs/<protocol>/seed<k>/`` (log.jsonl,
summary.json, config.json).  A run with a complete summary is skipped, an
interrupted one resumes from its checkpoint, and the checkpoint is deleted
once the run is complete, so the committed output stays small.  The
report (REPORT.md and figures) is computed from those logs only.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
import shutil
import tempfile
import time

from .._errors import SvdgradError
from .._io import write_atomic

#: protocol label -> TrainConfig overrides.  Order = order in the report.
PROTOCOLS: dict[str, dict] = {
    "gap": {"head": "gap"},
    "ns": {"protocol": "ns"},
    "svd-ordinary": {"protocol": "svd", "svd_method": "ordinary"},
    "svd-pade": {"protocol": "svd", "svd_method": "pade"},
    "svd-taylor": {"protocol": "svd", "svd_method": "taylor"},
    "svd-exact": {"protocol": "svd", "svd_method": "exact"},
    "hybrid-ordinary": {"protocol": "hybrid", "svd_method": "ordinary"},
    "hybrid-pade": {"protocol": "hybrid", "svd_method": "pade"},
    "hybrid-exact": {"protocol": "hybrid", "svd_method": "exact"},
}
LABELS = {
    "gap": "GAP (first order)", "ns": "NS only (iSQRT-COV)", "svd-ordinary": "SVD ordinary (MPN-COV)",
    "svd-pade": "SVD Padé", "svd-taylor": "SVD Taylor", "svd-exact": "SVD exact (Daleckii-Krein)",
    "hybrid-ordinary": "NS → ordinary", "hybrid-pade": "NS → Padé", "hybrid-exact": "NS → exact",
}

#: Shared settings of the full study (TrainConfig fields).  Sized for about
#: 80 s per run on one core, so 27 runs fit in 45 minutes on 2 cores.
FULL = dict(dataset="textures", image_size=32, train_per_class=400, val_per_class=100, widths=(8, 16, 32),
            reduced_channels=32, epochs=12, batch_size=64, lr=0.1, momentum=0.9, weight_decay=1e-4,
            schedule="step", ns_iterations=5)
FULL_SEEDS = 3
#: The quick variant for the tests: the same grid on tiny data and a tiny net.
QUICK = dict(FULL, image_size=16, train_per_class=24, val_per_class=12, widths=(4, 8, 8), reduced_channels=8,
             epochs=3, batch_size=24)
QUICK_SEEDS = 1
DEFAULT_OUT = os.path.join("reports", "hybrid_protocol")


def configs(settings: dict, seeds: int, out: str):
    """(protocol, seed, TrainConfig) for every run of the grid."""
    from .trainer import TrainConfig

    for name, over in PROTOCOLS.items():
        for seed in range(seeds):
            yield name, seed, TrainConfig(**settings, **over, seed=seed, threads=1, progress=False, resume=True,
                                          out=os.path.join(out, "runs", name, f"seed{seed}"))


def _complete(cfg) -> bool:
    path = os.path.join(cfg.out, "summary.json")
    if not os.path.exists(path):
        return False
    with open(path) as f:
        return json.load(f).get("epochs") == cfg.epochs


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
        out = os.path.join(tempfile.mkdtemp(prefix="svdgrad-study-"), "hybrid_protocol_quick") if quick else DEFAULT_OUT
    jobs = jobs if jobs is not None else (1 if quick else max(1, min(2, os.cpu_count() or 1)))
    if jobs < 1:
        raise SvdgradError(f"Expected --jobs >= 1; received {jobs}.")
    os.makedirs(out, exist_ok=True)
    grid = list(configs(settings, seeds, out))
    todo = [(n, s, c) for n, s, c in grid if not _complete(c)]
    t0 = time.perf_counter()
    if not report_only and todo:
        echo(f"[svdgrad study] {len(grid) - len(todo)} of {len(grid)} runs done; running {len(todo)} "
             f"with {jobs} job(s)")
        threads = torch.get_num_threads()
        try:
            if jobs == 1:
                for k, (n, s, c) in enumerate(todo):
                    _run_one(dataclasses.asdict(c))
                    echo(f"[svdgrad study] {k + 1}/{len(todo)} {n} seed {s} done ({time.perf_counter() - t0:.0f}s)")
            else:
                import multiprocessing as mp
                from concurrent.futures import ProcessPoolExecutor, as_completed

                with ProcessPoolExecutor(jobs, mp_context=mp.get_context("spawn")) as pool:
                    futs = {pool.submit(_run_one, dataclasses.asdict(c)): (n, s) for n, s, c in todo}
                    for k, fut in enumerate(as_completed(futs)):
                        fut.result()
                        n, s = futs[fut]
                        echo(f"[svdgrad study] {k + 1}/{len(todo)} {n} seed {s} done "
                             f"({time.perf_counter() - t0:.0f}s)")
        finally:
            torch.set_num_threads(threads)
    study = {"settings": {k: list(v) if isinstance(v, tuple) else v for k, v in settings.items()},
             "seeds": seeds, "quick": quick, "protocols": PROTOCOLS, "jobs": jobs,
             "cpu_count": os.cpu_count(), "machine": platform.machine(), "torch": torch.__version__}
    write_atomic(os.path.join(out, "study.json"), json.dumps(study, indent=1))
    from .report import write_report

    write_report(out)
    return out


def clean(out: str) -> None:
    """Remove a study folder (used by the tests for the quick variant)."""
    shutil.rmtree(out, ignore_errors=True)


def load_runs(out: str) -> dict[str, list[dict]]:
    """protocol -> list of {seed, history, summary, config} read from the saved logs."""
    runs: dict[str, list[dict]] = {}
    root = os.path.join(out, "runs")
    for name in PROTOCOLS:
        d = os.path.join(root, name)
        if not os.path.isdir(d):
            continue
        for sd in sorted(os.listdir(d)):
            p = os.path.join(d, sd)
            if not os.path.exists(os.path.join(p, "summary.json")):
                continue
            with open(os.path.join(p, "log.jsonl")) as f:
                history = [json.loads(line) for line in f if line.strip()]
            with open(os.path.join(p, "summary.json")) as f:
                summary = json.load(f)
            with open(os.path.join(p, "config.json")) as f:
                config = json.load(f)
            runs.setdefault(name, []).append({"seed": summary["seed"], "history": history, "summary": summary,
                                              "config": config})
    return runs


def mean_std(values) -> tuple[float, float]:
    v = [float(x) for x in values if x is not None]
    if not v:
        return math.nan, math.nan
    m = sum(v) / len(v)
    s = math.sqrt(sum((x - m) ** 2 for x in v) / (len(v) - 1)) if len(v) > 1 else math.nan
    return m, s
