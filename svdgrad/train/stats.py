"""Statistics of the study reports: confidence intervals, tests, Holm's correction, verdicts.

Pure functions of numbers (no files, no torch), so they are tested on tiny
synthetic data.  A claim says "a is larger than b" for one metric:

- **paired** (Student's t on the per-seed differences) where the two
  protocols share their runs up to a switch, e.g. a hybrid and the NS run
  with the same seed: the seed-to-seed spread cancels;
- **Welch** (unequal variances) otherwise.

Every difference gets a two-sided confidence interval (95% by default).  The
p-values of a family of claims are adjusted with Holm's step-down method
(strong control of the family-wise error rate).  A claim then

- **holds** when its Holm-adjusted p-value is below ``alpha`` and the
  difference is positive,
- **goes the other way** when it is below ``alpha`` and negative,
- is **not resolved** otherwise, with its interval: "the effect is between
  -x and +y points".
"""

from __future__ import annotations

import dataclasses
import math
import warnings

#: A spread below this fraction of the values is rounding: the runs are constant, and no t-test applies
#: (scipy would divide by a rounding error).
_TIES = 1e-12

#: Verdicts, in the order a report lists them.
HOLDS, OTHER_WAY, UNRESOLVED = "holds", "goes the other way", "not resolved"


@dataclasses.dataclass(frozen=True)
class Comparison:
    """mean(a) - mean(b) with its interval and test; ``p_holm`` and ``verdict`` are set by ``judge``."""

    claim: str
    test: str  # "paired" | "welch" | "none"
    n_a: int
    n_b: int
    diff: float
    low: float
    high: float
    p: float
    level: float = 0.95
    p_holm: float = math.nan
    verdict: str = UNRESOLVED


def _t(level: float, df: float) -> float:
    from scipy import stats

    return float(stats.t.ppf(0.5 + level / 2, df))


def paired(claim: str, a: dict, b: dict, level: float = 0.95) -> Comparison:
    """Paired t-test of a - b over the keys (seeds) present in both dicts."""
    from scipy import stats

    keys = sorted(set(a) & set(b))
    d = [float(a[k]) - float(b[k]) for k in keys]
    n = len(d)
    if n == 0:
        return Comparison(claim, "none", len(a), len(b), math.nan, math.nan, math.nan, math.nan, level)
    if not all(math.isfinite(x) for x in d):  # (a diverged run: no interval, and the sentence says so)
        return Comparison(claim, "paired", n, n, math.nan, math.nan, math.nan, math.nan, level)
    mean = sum(d) / n
    if n == 1:
        return Comparison(claim, "paired", 1, 1, mean, -math.inf, math.inf, math.nan, level)
    if max(abs(x) for x in d) <= _TIES * max(max(abs(float(a[k])), abs(float(b[k]))) for k in keys):
        # the two sides agree seed by seed up to rounding (0.1 + 0.2 against 0.3): no effect, and no t-test on
        # rounding noise (it read 'holds' with p = 0 when every seed rounds the same way)
        return Comparison(claim, "paired", n, n, 0.0, 0.0, 0.0, 1.0, level)
    sd = math.sqrt(sum((x - mean) ** 2 for x in d) / (n - 1))
    if sd <= _TIES * max(abs(x) for x in d):  # every seed gives the same difference (up to rounding)
        return Comparison(claim, "paired", n, n, mean, mean, mean, 1.0 if mean == 0 else 0.0, level)
    half = _t(level, n - 1) * sd / math.sqrt(n)
    p = float(stats.ttest_rel(d, [0.0] * n).pvalue)
    return Comparison(claim, "paired", n, n, mean, mean - half, mean + half, p, level)


def welch(claim: str, a, b, level: float = 0.95) -> Comparison:
    """Welch's unequal-variance t-test of mean(a) - mean(b), with the Welch-Satterthwaite interval."""
    from scipy import stats

    a = [float(x) for x in a]
    b = [float(x) for x in b]
    na, nb = len(a), len(b)
    if na == 0 or nb == 0:
        return Comparison(claim, "none", na, nb, math.nan, math.nan, math.nan, math.nan, level)
    if not all(math.isfinite(x) for x in a + b):  # (a diverged run: no interval, and the sentence says so)
        return Comparison(claim, "welch", na, nb, math.nan, math.nan, math.nan, math.nan, level)
    ma, mb = sum(a) / na, sum(b) / nb
    diff = ma - mb
    if na < 2 or nb < 2:
        return Comparison(claim, "welch", na, nb, diff, -math.inf, math.inf, math.nan, level)
    va = sum((x - ma) ** 2 for x in a) / (na - 1) / na
    vb = sum((x - mb) ** 2 for x in b) / (nb - 1) / nb
    se = math.sqrt(va + vb)
    if se <= _TIES * max(abs(ma), abs(mb)):  # both protocols constant over their seeds (up to rounding)
        if abs(diff) <= _TIES * max(abs(ma), abs(mb)):
            # one value on both sides: with other seed counts the means differ by the rounding of their sums
            # (7 runs at 0.9 against 2: 1.1e-16), which is no effect (it read 'holds' with p = 0)
            return Comparison(claim, "welch", na, nb, 0.0, 0.0, 0.0, 1.0, level)
        return Comparison(claim, "welch", na, nb, diff, diff, diff, 0.0, level)
    df = (va + vb) ** 2 / ((va ** 2 / (na - 1) if va else 0.0) + (vb ** 2 / (nb - 1) if vb else 0.0))
    half = _t(level, df) * se
    with warnings.catch_warnings():  # a constant side is fine here; scipy warns about its moments
        warnings.simplefilter("ignore", RuntimeWarning)
        p = float(stats.ttest_ind(a, b, equal_var=False).pvalue)
    return Comparison(claim, "welch", na, nb, diff, diff - half, diff + half, p, level)


def holm(pvalues) -> list[float]:
    """Holm's step-down adjusted p-values (NaN stays NaN and does not count in the family)."""
    idx = [i for i, p in enumerate(pvalues) if not math.isnan(p)]
    m = len(idx)
    adj = [math.nan] * len(pvalues)
    running = 0.0
    for rank, i in enumerate(sorted(idx, key=lambda i: pvalues[i])):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        adj[i] = running
    return adj


def judge(comparisons, alpha: float = 0.05) -> list[Comparison]:
    """Holm-adjust the family and give each claim its verdict."""
    adj = holm([c.p for c in comparisons])
    out = []
    for c, p in zip(comparisons, adj):
        if not math.isnan(p) and p < alpha and c.diff != 0:
            v = HOLDS if c.diff > 0 else OTHER_WAY
        else:
            v = UNRESOLVED
        out.append(dataclasses.replace(c, p_holm=p, verdict=v))
    return out


def _num(x: float, scale: float, digits: int) -> str:
    if math.isinf(x):
        return "−∞" if x < 0 else "+∞"
    return f"{scale * x:+.{digits}f}".replace("-", "−")


def describe(c: Comparison, unit: str = "points", scale: float = 100.0, digits: int = 1) -> str:
    """One sentence: the verdict, the difference, its interval and the test."""
    pct = f"{100 * c.level:.0f}%"
    if c.test == "none":
        return f"not resolved: runs missing ({c.n_a} and {c.n_b})"
    if math.isnan(c.p) and math.isnan(c.diff):
        seeds = f"{c.n_a} seeds" if c.test == "paired" else f"{c.n_a} and {c.n_b} seeds"
        return f"not resolved: a value is not finite (NaN or Inf) among the {seeds}, so there is no interval"
    if math.isnan(c.p):
        return f"not resolved: one seed, no interval (difference {_num(c.diff, scale, digits)} {unit})"
    test = (f"paired t over {c.n_a} seeds" if c.test == "paired" else f"Welch t, {c.n_a} and {c.n_b} seeds")
    tail = (f"{test}, p = {c.p:.2g}, Holm-adjusted {c.p_holm:.2g}")
    ci = f"{pct} CI {_num(c.low, scale, digits)} to {_num(c.high, scale, digits)}"
    if c.verdict == UNRESOLVED:
        return (f"not resolved: the effect is between {_num(c.low, scale, digits)} and {_num(c.high, scale, digits)} "
                f"{unit} ({pct} CI; difference {_num(c.diff, scale, digits)}; {tail})")
    return f"{c.verdict} ({_num(c.diff, scale, digits)} {unit}, {ci}; {tail})"


def seeds_needed(sd: float, half_width: float, *, paired: bool, level: float = 0.95, most: int = 1000) -> int | None:
    """Smallest n per protocol whose CI half-width t·sd·√(k/n) is at most ``half_width``.

    ``sd`` is the spread of one run (Welch: of each protocol, k = 2) or of the
    per-seed differences (paired: k = 1); None if more than ``most`` are needed.
    """
    if not (sd >= 0 and half_width > 0):
        raise ValueError(f"Expected sd >= 0 and half_width > 0; received {sd!r}, {half_width!r}.")
    k = 1.0 if paired else 2.0
    for n in range(2, most + 1):
        df = n - 1 if paired else 2 * (n - 1)
        if _t(level, df) * sd * math.sqrt(k / n) <= half_width:
            return n
    return None
