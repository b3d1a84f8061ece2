"""The benchmark grid and the speed targets, declared once as data.

The pytest-benchmark suite (``svdgrad/bench/suite.py``), the interleaved
target runner and the report all read these tables; nothing else names a
method, a size or a limit.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

#: Batch size of every timed call.
BATCH = 32
#: Matrix sizes n of the full grid.
SIZES = (64, 256)
#: dtypes of the full grid (names of torch dtypes).
DTYPES = ("float32", "float64")
#: What is timed for each method.
MODES = ("forward", "forward_backward")
#: Torch intra-op threads the benchmark pins (recorded in every output).
THREADS = 2
#: Condition number of the benchmark matrices (svdgrad.testing.spd, log-spaced spectrum).
KAPPA = 1e2


@dataclass(frozen=True)
class Variant:
    """A timed configuration of ``svdgrad.sqrtm``: a label, a method name and its options."""

    label: str
    method: str
    options: dict = field(default_factory=dict)


#: Every registered method with its defaults; Newton–Schulz once per
#: backward (the report marks which one is the library default).
VARIANTS = (
    Variant("exact", "exact"),
    Variant("ordinary", "ordinary"),
    Variant("truncated", "truncated"),
    Variant("topn", "topn"),
    Variant("taylor", "taylor"),
    Variant("pade", "pade"),
    Variant("newton_schulz[autograd]", "newton_schulz", {"backward": "autograd"}),
    Variant("newton_schulz[manual]", "newton_schulz", {"backward": "manual"}),
    Variant("mpa", "mpa"),
    Variant("mtp", "mtp"),
)
# power_iteration is not among the default variants: its deflated power steps cost seconds per
# (B = 32, n = 256) call, longer than the rest of the grid together; the sweep's accuracy–cost
# figure times it, and ``--methods power_iteration`` times it here.

#: Environment variable through which ``svdgrad bench --methods`` reaches the measuring
#: subprocesses: a JSON list of method specs.  Unset: VARIANTS.
METHODS_ENV = "SVDGRAD_BENCH_METHODS"


def variant_of(label: str) -> Variant:
    """The Variant of a label: one of VARIANTS, or a method spec such as ``taylor:degree=9``."""
    for v in VARIANTS:
        if v.label == label:
            return v
    import svdgrad
    from svdgrad._methods import parse_spec

    svdgrad.get_method(label)  # an unknown name or option raises SvdgradError listing the valid ones
    name, options = parse_spec(label)
    return Variant(label, name, options)


def variants(specs=None) -> tuple[Variant, ...]:
    """VARIANTS, or one Variant per method spec (label = the canonical spec, ``svdgrad.method_spec``)."""
    if specs is None:
        return VARIANTS
    import svdgrad

    labels = list(dict.fromkeys(svdgrad.method_spec(svdgrad.get_method(s)) for s in specs))
    return tuple(variant_of(lab) for lab in labels)


def selected_variants() -> tuple[Variant, ...]:
    """The variants of this run: from METHODS_ENV if set (``svdgrad bench --methods``), else VARIANTS."""
    raw = os.environ.get(METHODS_ENV)
    return variants(json.loads(raw)) if raw else VARIANTS


#: Baselines timed in the same run.
#:  eigh_forward: torch.linalg.eigh alone, the floor of every eigen method.
#:  eigh_autograd: Z = U diag(sqrt λ) U^T through torch.linalg.eigh's autograd,
#:                 forward + backward: what a user writes today.
#:  matmul: one batched n×n×n product, the unit of the iterative methods.
BASELINES = ("eigh_forward", "eigh_autograd", "matmul")

#: Methods run inside svdgrad.nn.CovariancePooling (if importable), on
#: (B, n, POOL_HW, POOL_HW) feature maps without channel reduction.
POOLING_METHODS = ("exact", "newton_schulz")
POOL_HW = 14


#: The other functions, timed forward + backward in the grid: (function, method).  Exact for each
#: function, and the matmul-only methods of inv_sqrt.
FUNCTION_CASES = (("inv_sqrt", "exact"), ("inv_sqrt", "newton_schulz"), ("inv_sqrt", "mpa"),
                  ("log", "exact"), ("power", "exact"))
#: Exponent of the power rows.
POWER_P = 0.25
#: The features route: X of shape (B, n, GRAM_COLUMNS·n); ``gram_sqrtm(X)`` (its default, in float32 the
#: float64 Gram matrix) and ``gram_sqrtm(X, algorithm="svd")`` against ``sqrtm(X @ X.mT)``.
GRAM_COLUMNS = 2
GRAM_CASES = ("gram_sqrtm", "gram_sqrtm[svd]", "sqrtm(X X^T)")
#: Forward-mode AD: ``torch.func.jvp`` of ``sqrtm(·, "exact")`` in a symmetric direction.
JVP_CASE = "jvp[exact]"
#: Many small matrices (the whitening case): (n, B), exact forward + backward and eigh autograd.
SMALL = (16, 4096)


@dataclass(frozen=True)
class RatioTarget:
    """A speed target stated as t_case / t_baseline <= limit, measured interleaved at (n, batch) in
    RATIO_DTYPE.  Case names: ``sqrtm[<variant>]``, ``eigh_autograd``, GRAM_CASES, JVP_CASE."""

    name: str
    case: str
    baseline: str
    limit: float
    n: int
    batch: int = BATCH


#: dtype of the ratio targets (issues 9 and 10: float32, 2 threads, B = 32).
RATIO_DTYPE = "float32"
#: Suffix of a ``sqrtm[...]`` ratio case run with ``check=False`` beside it (what the value checks cost).
NO_CHECK = "|check=False"


def with_unchecked(names) -> list:
    """``names`` and, for each ``sqrtm[...]`` case among them, the same case with ``check=False``."""
    return list(names) + [x + NO_CHECK for x in names if x.startswith("sqrtm[")]

#: Speed targets of issues 9 and 10.
RATIO_TARGETS = (
    RatioTarget("exact sqrtm fwd+bwd vs eigh autograd", "sqrtm[exact]", "eigh_autograd", 1.0, 64),
    RatioTarget("exact sqrtm fwd+bwd vs eigh autograd", "sqrtm[exact]", "eigh_autograd", 1.0, 256),
    RatioTarget("many small: exact sqrtm fwd+bwd vs eigh autograd", "sqrtm[exact]", "eigh_autograd", 1.2,
                SMALL[0], SMALL[1]),
    RatioTarget("gram_sqrtm(X) vs sqrtm(X @ X.mT), fwd+bwd", "gram_sqrtm", "sqrtm(X X^T)", 2.0, 64),
    RatioTarget("gram_sqrtm(X) vs sqrtm(X @ X.mT), fwd+bwd", "gram_sqrtm", "sqrtm(X X^T)", 2.0, 256),
    RatioTarget("gram_sqrtm(X, algorithm='svd') vs sqrtm(X @ X.mT), fwd+bwd", "gram_sqrtm[svd]", "sqrtm(X X^T)",
                2.0, 64),
    RatioTarget("gram_sqrtm(X, algorithm='svd') vs sqrtm(X @ X.mT), fwd+bwd", "gram_sqrtm[svd]", "sqrtm(X X^T)",
                2.0, 256),
    RatioTarget("jvp (torch.func.jvp) vs fwd+bwd, exact", JVP_CASE, "sqrtm[exact]", 1.3, 64),
    RatioTarget("jvp (torch.func.jvp) vs fwd+bwd, exact", JVP_CASE, "sqrtm[exact]", 1.3, 256),
    RatioTarget("mpa fwd+bwd vs newton_schulz(5)", "sqrtm[mpa]", "sqrtm[newton_schulz[manual]]", 1.3, 256),
    RatioTarget("mtp fwd+bwd vs newton_schulz(5)", "sqrtm[mtp]", "sqrtm[newton_schulz[manual]]", 1.3, 256),
)


def ratio_groups(profile) -> dict:
    """{(n, batch): targets} of one run: the full profile measures each target at its own shape; a profile
    that is not ``full`` measures all of them at (target_size, batch), a smoke test of the code path."""
    groups: dict = {}
    for t in RATIO_TARGETS:
        shape = (t.n, t.batch) if profile.name == "full" else (profile.target_size, profile.batch)
        same = [u for u in groups.get(shape, []) if (u.case, u.baseline, u.limit) == (t.case, t.baseline, t.limit)]
        if not same:  # at one shared shape, targets that differ only in their shape are measured once
            groups.setdefault(shape, []).append(t)
    return groups


@dataclass(frozen=True)
class Target:
    """One speed target, a ratio measured in one run at TARGET_SIZE.

    floor "eigh":   (t_fb - t_eigh_forward) / t_matmul <= limit
    floor "matmul": t_fb / t_matmul <= limit
    ``not_slower_than``: additionally t_fb <= t_<baseline>.
    """

    variant: str
    floor: str
    limit: float
    not_slower_than: str | None = None


TARGET_SIZE = 256
TARGETS = (
    Target("exact", "eigh", 7.0, not_slower_than="eigh_autograd"),
    Target("ordinary", "eigh", 9.0),
    Target("truncated", "eigh", 9.0),
    Target("taylor", "eigh", 9.0),
    Target("pade", "eigh", 9.0),
    Target("topn", "eigh", 9.0),
    Target("newton_schulz[manual]", "matmul", 42.0),
    Target("newton_schulz[autograd]", "matmul", 42.0),
)


def targets_for(selected) -> tuple[Target, ...]:
    """The targets whose variant is among ``selected`` (Variants)."""
    labels = {v.label for v in selected}
    return tuple(t for t in TARGETS if t.variant in labels)


@dataclass(frozen=True)
class Profile:
    """How much to measure: the full grid or a tiny one for the smoke test."""

    name: str
    batch: int
    sizes: tuple
    dtypes: tuple
    target_size: int
    #: interleaved rounds of the target runner (min, max) and its time budget (s)
    rounds: tuple
    budget_s: float
    #: pytest-benchmark: exactly ``pedantic_rounds`` single-call rounds after
    #: ``warmup_rounds`` (no calibration loop, so the run time is predictable)
    pedantic_rounds: int
    warmup_rounds: int
    #: interleaved rounds (min, max) and budget (s) of each shape of the ratio targets.  The full profile's
    #: cap of 400 lets the cheap shapes (n = 64: about 70 ms a round) fill their budget: their per-round
    #: ratios spread by ±5 % on this 2-core machine, so 40 rounds left a median uncertain by about a per cent.
    ratio_rounds: tuple = (2, 2)
    ratio_budget_s: float = 0.5
    #: (n, B) of the many-small-matrices rows of the grid
    small: tuple = SMALL


PROFILES = {
    "full": Profile("full", BATCH, SIZES, DTYPES, TARGET_SIZE, rounds=(5, 30), budget_s=120.0,
                    pedantic_rounds=5, warmup_rounds=1, ratio_rounds=(7, 400), ratio_budget_s=50.0, small=SMALL),
    "quick": Profile("quick", 2, (8,), ("float64",), 8, rounds=(2, 2), budget_s=0.5,
                     pedantic_rounds=1, warmup_rounds=0, small=(8, 4)),
}
