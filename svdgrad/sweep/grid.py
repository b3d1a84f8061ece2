"""The sweep grid, declared as data in one place.

The runner (``runner``), the report (``report``), the CLI and the tests all
read the axes and the study constants from here.  A grid is a frozen
dataclass; ``narrow`` restricts it to a subset of its own values, so a
narrowed grid can never ask for something the default does not define.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

from .. import methods as _registered_methods
from ..testing import SPECTRA

#: Input dtypes the sweep knows, by name.
DTYPES = ("float32", "float64")

#: The function axis: names of ``svdgrad.functions()`` that the sweep measures.  Each function is run
#: with every method of ``svdgrad.methods(function)`` that the grid lists.
FUNCTIONS = ("sqrt", "inv_sqrt", "log", "power")

#: The exponent of the ``power`` rows (``svdgrad.powm(A, POWER_P)``): a fractional power that is
#: neither ±1/2 (those are sqrt and inv_sqrt) nor unbounded at 0.
POWER_P = 0.25

#: Functions whose value is infinite at λ = 0: the ``rank_deficient`` spectrum (exact zero
#: eigenvalues) is undefined by construction for them and is not run.
UNBOUNDED_AT_ZERO = ("inv_sqrt", "log")

#: Baselines outside svdgrad, run as extra rows of the sqrt function when the installed torch has
#: them (``available_baselines``), skipped otherwise (the report says which were skipped and why).
BASELINES = ("torch.linalg.matrix_sqrth",)

#: The method settings of the options study (canonical ``svdgrad.method_spec`` labels or specs):
#: Newton–Schulz iterations 3/5/10 with the manual and the Lyapunov backward, MPA [3/3], [5/5], [8/8],
#: MTP degree 5/10/20, power-iteration steps 3/9/19, Taylor degree 9/100.  The defaults are listed
#: too, so that every setting is measured on the same matrices with the same timing.
OPTION_SPECS = (
    "newton_schulz:iterations=3", "newton_schulz", "newton_schulz:iterations=10",
    "newton_schulz:iterations=3,backward=lyapunov", "newton_schulz:backward=lyapunov",
    "newton_schulz:iterations=10,backward=lyapunov",
    "mpa:num_degree=3,den_degree=3", "mpa", "mpa:num_degree=8,den_degree=8",
    "mtp:degree=5", "mtp", "mtp:degree=20",
    "power_iteration:iterations=3", "power_iteration", "power_iteration:iterations=19",
    "taylor:degree=9", "taylor",
    "exact", "ordinary", "truncated", "topn", "pade",
)

#: Largest n for which the reference is computed with mpmath.  Measured on
#: the 2-core study machine (``reference_sqrtm_grad``, one matrix, dps 50):
#: n=16 0.3 s, n=32 1.7 s, n=64 8.5-14 s.  At n=64 the 156 matrices of the
#: default grid would take 13+ minutes of both cores on the reference alone,
#: over the 20-minute budget once the methods run too; so n=64 and n=256
#: use float64 ``exact`` as the (labelled) reference.
MPMATH_MAX_N = 32

#: Decimal digits of the mpmath reference.
MPMATH_DPS = 50

#: Where the reference is float64 ``exact``, an error below
#: ``REFERENCE_FLOOR_FACTOR · (κ + n) · eps64`` is reported as "at the
#: float64 floor": the reference's own error is of that order (the sweep's
#: own n = 16 rows, against mpmath, measure float64 Daleckii–Krein at or below
#: κ·eps64, plus the O(n·eps) rounding of the eigendecomposition that remains
#: at κ = 1; see the n = 16 tables of reports/condition_sweep/REPORT.md).
REFERENCE_FLOOR_FACTOR = 1.0

#: κ bands of the generated summary: (label, lowest log10 κ, highest log10 κ).
KAPPA_BANDS = (
    ("well conditioned (κ ≤ 1e4)", 0, 4),
    ("ill conditioned (1e5 ≤ κ ≤ 1e8)", 5, 8),
    ("near singular (κ ≥ 1e9)", 9, 99),
)


def undefined_by_construction(method: str, spectrum: str, log10_kappa: int) -> str | None:
    """Why ``method`` (a label, possibly a spec) has no defined gradient on such a matrix, or None.

    ``ordinary`` divides by λi − λj, so at exact ties it is infinite or, after
    rounding splits the tie, arbitrary: at κ = 1 (every eigenvalue equal, all
    spectra), on the ``repeated`` spectrum (every eigenvalue twice) and on
    ``rank_deficient`` (n − r ≥ 2 exact zero eigenvalues).  The summary's
    rankings leave such columns out rather than rank a method on a value it
    cannot have.
    """
    if method.partition(":")[0] == "ordinary" and (log10_kappa == 0 or spectrum in ("repeated", "rank_deficient")):
        return "1/(λi − λj) at exact eigenvalue ties"
    return None


def available_baselines() -> tuple[tuple[str, ...], dict[str, str]]:
    """(baselines the installed torch has, {skipped baseline: why})."""
    import torch

    have, skipped = [], {}
    for name in BASELINES:
        obj = torch
        for part in name.split(".")[1:]:
            obj = getattr(obj, part, None)
        if callable(obj):
            have.append(name)
        else:
            skipped[name] = f"torch {torch.__version__} has no {name}"
    return tuple(have), skipped


def reference_floor(kappa: float, n: int) -> float:
    """Error level of a float64 ``exact`` reference for a matrix of condition κ and size n."""
    return REFERENCE_FLOOR_FACTOR * (kappa + n) * 2.0 ** -52


def _number(x, kind=(int, float)) -> bool:
    return isinstance(x, kind) and not isinstance(x, bool)


#: What each kind of Grid field holds in grid.json, by the start of its type (first match): (said as, check).
_FIELD_KINDS = {
    "tuple[str": ("a list of strings", lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v)),
    "tuple[int": ("a list of integers", lambda v: isinstance(v, list) and all(_number(x, int) for x in v)),
    "tuple[tuple": ("a list of pairs", lambda v: isinstance(v, list) and all(isinstance(x, list) and len(x) == 2
                                                                             for x in v)),
    "int": ("an integer", lambda v: _number(v, int)),
    "float": ("a number", _number),
}


def read_grid(path, *, fix: str) -> "Grid":
    """The grid saved in ``path`` (grid.json); a damaged one raises SvdgradError naming it and ``fix``."""
    from .._errors import SvdgradError
    from .._io import read_json

    d = read_json(path, fix=fix)
    try:
        return Grid.from_dict(d)
    except SvdgradError as exc:
        raise SvdgradError(f"Expected the sweep's grid in {path}, as `svdgrad sweep` writes it; it is damaged: "
                           f"{exc}. {fix}") from None


@dataclass(frozen=True)
class Grid:
    """Axes of the sweep and the settings of its side studies.

    Main study: every (function, method valid for it, dtype) on every matrix
    (n, κ = 10**k, spectrum, seed); functions other than sqrt only at
    ``function_sizes`` and ``function_seeds`` (they multiply the cost), and
    inv_sqrt and log not on ``rank_deficient`` (``UNBOUNDED_AT_ZERO``).
    ``max_size`` caps n per method (power_iteration: its deflated power
    steps cost seconds per matrix at n = 256).  The features route
    (``gram``): ``gram_sqrtm(X)`` and ``sqrtm(X Xᵀ)`` on X =
    ``svdgrad.testing.features(n, gram_columns·n, κ(X) = √κ)``, so that
    κ(X Xᵀ) = κ, at ``gram_sizes`` / ``gram_seeds``, logspaced singular
    values.  Options study: every ``option_specs`` setting of sqrt at
    ``option_sizes`` / ``option_seeds`` on ``option_spectra``, the data of
    the accuracy–cost figure.  Baselines (``BASELINES``) as rows of sqrt
    when the installed torch has them.  Side studies on the same matrices:
    Newton–Schulz with ``ns_iterations`` × ``ns_normalizations`` (float64
    input, ``ns_spectra`` only), and the float32/float64 eigenvalue
    precision probe (all matrices).  The Taylor/Padé approximation study
    evaluates 1/(1-x) at ``approx_taylor_degrees`` / ``approx_pade_degrees``.
    """

    methods: tuple[str, ...]
    functions: tuple[str, ...] = FUNCTIONS
    dtypes: tuple[str, ...] = DTYPES
    sizes: tuple[int, ...] = (16, 64, 256)
    log10_kappas: tuple[int, ...] = tuple(range(13))
    spectra: tuple[str, ...] = SPECTRA
    seeds: tuple[int, ...] = (0, 1, 2)
    ns_iterations: tuple[int, ...] = (1, 2, 3, 5, 7, 10, 15, 20, 30)
    ns_normalizations: tuple[str, ...] = ("trace", "frobenius")
    ns_spectra: tuple[str, ...] = ("logspaced",)
    approx_taylor_degrees: tuple[int, ...] = (9, 25, 100, 400)
    approx_pade_degrees: tuple[tuple[int, int], ...] = ((1, 1), (5, 5), (50, 50))
    function_sizes: tuple[int, ...] = (16, 64)
    function_seeds: tuple[int, ...] = (0,)
    max_size: tuple[tuple[str, int], ...] = (("power_iteration", 64),)
    power_p: float = POWER_P
    gram_sizes: tuple[int, ...] = (16, 64, 256)
    gram_seeds: tuple[int, ...] = (0, 1, 2)
    gram_columns: int = 2
    option_specs: tuple[str, ...] = OPTION_SPECS
    option_sizes: tuple[int, ...] = (16, 64)
    option_seeds: tuple[int, ...] = (0,)
    option_spectra: tuple[str, ...] = ("logspaced",)
    baselines: tuple[str, ...] = BASELINES
    #: timed calls per row after one untimed warm-up (1 since the function axis: the full grid must fit
    #: its time budget; the accuracy–cost figure takes medians over κ, and ``svdgrad bench`` is the
    #: timing tool)
    timing_repeats: int = 1
    mpmath_max_n: int = MPMATH_MAX_N
    mpmath_dps: int = MPMATH_DPS

    #: The axes that ``narrow`` (and the CLI) can restrict.
    AXES = ("methods", "functions", "dtypes", "sizes", "log10_kappas", "spectra", "seeds")

    def matrices(self):
        """(n, log10 κ, spectrum, seed) for every matrix, heaviest (largest n) first."""
        return [(n, k, sp, s) for n in sorted(self.sizes, reverse=True) for k in self.log10_kappas
                for sp in self.spectra for s in self.seeds]

    def n_cells(self) -> int:
        """Main-study cells: one per (function, method, dtype, matrix) that the grid runs."""
        return sum(len(self.pairs(n, sp, s)) for n, _, sp, s in self.matrices()) * len(self.dtypes)

    def size_cap(self, method: str) -> int | None:
        return dict(self.max_size).get(method.partition(":")[0])

    def runs(self, function: str, method: str, n: int, spectrum: str, seed: int) -> bool:
        """Whether the main study runs (function, method) on such a matrix."""
        from .. import methods as valid

        if method.partition(":")[0] not in valid(function):
            return False
        cap = self.size_cap(method)
        if cap is not None and n > cap:
            return False
        if function != "sqrt" and (n not in self.function_sizes or seed not in self.function_seeds):
            return False
        return not (function in UNBOUNDED_AT_ZERO and spectrum == "rank_deficient")

    def options(self, n: int, spectrum: str, seed: int) -> tuple[str, ...]:
        """Settings of the options study on one matrix: those of ``option_specs`` whose method the grid lists."""
        if "sqrt" not in self.functions or n not in self.option_sizes or seed not in self.option_seeds \
                or spectrum not in self.option_spectra:
            return ()
        names = {m.partition(":")[0] for m in self.methods}
        return tuple(s for s in self.option_specs if s.partition(":")[0] in names
                     and (self.size_cap(s) is None or n <= self.size_cap(s)))

    def gram(self, n: int, spectrum: str, seed: int) -> bool:
        """Whether the features-route rows run on this matrix's (n, κ, seed) (logspaced singular values)."""
        return ("sqrt" in self.functions and "exact" in self.methods and spectrum == "logspaced"
                and n in self.gram_sizes and seed in self.gram_seeds)

    def pairs(self, n: int, spectrum: str, seed: int) -> list[tuple[str, str]]:
        """(function, method) of the main study on one matrix."""
        return [(f, m) for f in self.functions for m in self.methods if self.runs(f, m, n, spectrum, seed)]

    def narrow(self, **axes) -> "Grid":
        """A copy restricted on the given axes; every value must be one of this grid's."""
        changes = {}
        for axis, values in axes.items():
            if values is None:
                continue
            if axis not in self.AXES:
                raise ValueError(f"unknown grid axis {axis!r}; expected one of {', '.join(self.AXES)}")
            allowed = getattr(self, axis)
            values = tuple(dict.fromkeys(values))
            bad = [v for v in values if v not in allowed]
            if bad:
                raise ValueError(f"{axis}: {', '.join(map(str, bad))} not in the grid; "
                                 f"expected values from {', '.join(map(str, allowed))}")
            if not values:
                raise ValueError(f"{axis}: empty selection")
            changes[axis] = tuple(v for v in allowed if v in values)
        return dataclasses.replace(self, **changes)

    def with_methods(self, specs) -> "Grid":
        """A copy that runs ``specs``: registered names or specs with options, e.g. ``taylor:degree=9``.

        Each spec is resolved by ``svdgrad.get_method`` (an unknown name or
        option raises ``SvdgradError`` listing the valid ones) and stored in
        its canonical form, ``svdgrad.method_spec``, which is the method's
        label in results.csv: ``taylor:degree=100`` (the default) is
        ``taylor``.  Order: by registered method, then as given.
        """
        from .. import get_method, method_spec

        order = list(_registered_methods())
        labels = []
        for spec in specs:
            label = method_spec(get_method(spec))
            if label not in labels:
                labels.append(label)
        if not labels:
            raise ValueError("methods: empty selection")
        labels.sort(key=lambda lab: order.index(lab.partition(":")[0]))
        return dataclasses.replace(self, methods=tuple(labels))

    def union(self, other: "Grid") -> "Grid":
        """This grid with every axis value of ``other`` added (settings from ``other``): the grid that
        a folder's results cover after ``other`` was resumed into it."""
        changes = {axis: tuple(dict.fromkeys(getattr(self, axis) + getattr(other, axis))) for axis in self.AXES}
        return dataclasses.replace(other, **changes)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=1)

    @classmethod
    def from_json(cls, text: str) -> "Grid":
        return cls.from_dict(json.loads(text))

    @classmethod
    def from_dict(cls, d) -> "Grid":
        """The grid of ``json.loads(grid.to_json())``; anything else (not an object, no methods, a field of
        the wrong type) raises SvdgradError saying what, not a TypeError deep in the runner or the report.
        Keys that are not fields (of an older or newer svdgrad) are ignored."""
        from .._errors import SvdgradError

        types = {f.name: f.type for f in dataclasses.fields(cls)}
        if not isinstance(d, dict) or "methods" not in d:
            received = f"an object with the keys {', '.join(d) or '(none)'}" if isinstance(d, dict) else \
                f"a JSON {type(d).__name__}"
            raise SvdgradError(f"expected a JSON object of the grid's fields (methods, {', '.join(cls.AXES[1:])}, "
                               f"...); received {received}")
        fields = {}
        for k, v in d.items():
            if k not in types:
                continue
            want, ok = next((kind for start, kind in _FIELD_KINDS.items() if types[k].startswith(start)),
                            (types[k], lambda v: True))
            if not ok(v):
                raise SvdgradError(f"expected {k} to be {want}; received {json.dumps(v)[:80]}")
            fields[k] = tuple(tuple(x) if isinstance(x, list) else x for x in v) if isinstance(v, list) else v
        return cls(**fields)


def default_grid() -> Grid:
    """The full grid: every registered method on every function it supports, float32 and float64,
    n ∈ {16, 64, 256}, κ = 1e0 … 1e12 by decades, all four spectra, three seeds (functions other
    than sqrt: n ∈ {16, 64}, one seed), the features route, the options study."""
    return Grid(methods=tuple(_registered_methods()))


def quick_grid() -> Grid:
    """``--quick``: n = 16 only (mpmath reference), κ = 1e0, 1e2, …, 1e12; everything else as the default."""
    return dataclasses.replace(default_grid(), sizes=(16,), log10_kappas=tuple(range(0, 13, 2)),
                               ns_iterations=(1, 2, 3, 5, 7, 10, 20))


def kappa(log10_kappa: int) -> float:
    return 10.0 ** log10_kappa


def kappa_label(log10_kappa) -> str:
    return f"1e{int(log10_kappa)}"
