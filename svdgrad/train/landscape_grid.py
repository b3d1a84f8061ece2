"""The grid of ``svdgrad study landscape``, declared once: parts, protocols, labels, settings, seeds.

The runner (``landscape``), the report (``landscape_report``) and the tests read it from here; this
module imports nothing else of the package, so the dependencies point one way:
landscape -> landscape_report -> landscape_grid.
"""

from __future__ import annotations

import os

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
#: As the hybrid study (``grid.FULL_SEEDS``): about 6.5 minutes per seed on one core, so 8 seeds take
#: about 50 minutes; --max-minutes and --resume split them over sittings.
SEEDS = 8
QUICK = dict(BASE, image_size=16, train_per_class=12, val_per_class=6, widths=(4, 8, 8), reduced_channels=6,
             epochs=2, batch_size=20)
QUICK_OVERRIDES = dict(epochs=2, poly_final_epoch=3, image_size=16)
QUICK_SEEDS = 1
DEFAULT_OUT = os.path.join("reports", "landscape")


def run_dir(out: str, part: str, protocol: str, seed: int) -> str:
    part, protocol = SHARED.get((part, protocol), (part, protocol))
    return os.path.join(out, "runs", part, protocol, f"seed{seed}")
