"""The grid of ``svdgrad study hybrid``, declared once: protocols, labels, settings, seeds.

The runner (``study``), the report (``report``) and the tests read it from
here; this module imports nothing else of the package, so the dependencies
point one way: study -> report -> grid.
"""

from __future__ import annotations

import os

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
    # The switch point as an axis (issue 11): the hybrids above switch at the last lr decay; this one at
    # the first, chosen by --switch-lr (the first epoch whose lr is below 0.05 is the first decay).
    "hybrid-exact-first": {"protocol": "hybrid", "svd_method": "exact", "switch_lr": 0.05},
}
#: The hybrids that switch at the schedule's last decay (the ICCV21 protocol); they define "the switch".
HYBRIDS = ("hybrid-ordinary", "hybrid-pade", "hybrid-exact")
#: The same hybrid, switching at the first decay instead: compared with ``hybrid-exact`` paired by seed.
EARLY = "hybrid-exact-first"
LABELS = {
    "gap": "GAP (first order)", "ns": "NS only (iSQRT-COV)", "svd-ordinary": "SVD ordinary (MPN-COV)",
    "svd-pade": "SVD Padé", "svd-taylor": "SVD Taylor", "svd-exact": "SVD exact (Daleckii-Krein)",
    "hybrid-ordinary": "NS → ordinary", "hybrid-pade": "NS → Padé", "hybrid-exact": "NS → exact",
    "hybrid-exact-first": "NS → exact, first decay",
}

#: Shared settings of the full study (TrainConfig fields).  Sized for about
#: 80 s per run on one core: 9 runs (one seed of every protocol) take about 12 minutes.
FULL = dict(dataset="textures", image_size=32, train_per_class=400, val_per_class=100, widths=(8, 16, 32),
            reduced_channels=32, epochs=12, batch_size=64, lr=0.1, momentum=0.9, weight_decay=1e-4,
            schedule="step", ns_iterations=5)
#: Seeds per protocol of a new study (the report's "Seeds" line recomputes the need from the measured
#: spread): the paired hybrid − NS differences need about 8 for a 95% interval of ±0.5 points; the
#: Welch comparisons between independent protocols need about 30, which ``--seeds N --protocols a,b``
#: gives to the protocols of those claims only (the committed report: 30 for the seven protocols of
#: the Welch claims, 16 for the early switch).  A grid that does not fit one sitting on 2 shared cores
#: runs with --max-minutes and is completed with --resume.
FULL_SEEDS = 8
#: The quick variant for the tests: the same grid on tiny data and a tiny net.
QUICK = dict(FULL, image_size=16, train_per_class=24, val_per_class=12, widths=(4, 8, 8), reduced_channels=8,
             epochs=3, batch_size=24)
QUICK_SEEDS = 1
#: Where the full study writes (regenerating the committed report is its purpose);
#: the quick one writes to a new scratch folder (``study.default_out``).
DEFAULT_OUT = os.path.join("reports", "hybrid_protocol")
#: The datasets the hybrid study runs on (``--dataset``); each has its own report folder.
DATASETS = ("textures", "elpv")


def default_out_for(dataset: str) -> str:
    """reports/hybrid_protocol for textures, reports/hybrid_protocol_<dataset> for another dataset."""
    return DEFAULT_OUT if dataset == "textures" else f"{DEFAULT_OUT}_{dataset}"
