"""svdgrad.train.stats on tiny synthetic data: intervals, tests, Holm, verdicts, seed counts."""

import math

import pytest
from scipy import stats as sps

from svdgrad.train import stats


def test_paired_matches_scipy_and_cancels_the_seed_spread():
    base = {0: 0.90, 1: 0.80, 2: 0.95, 3: 0.85, 4: 0.70}
    a = {k: v + 0.01 + 0.001 * (k % 2) for k, v in base.items()}
    c = stats.paired("a over b", a, base)
    d = [a[k] - base[k] for k in base]
    assert c.p == pytest.approx(sps.ttest_rel(list(a.values()), list(base.values())).pvalue)
    ci = sps.ttest_1samp(d, 0).confidence_interval(0.95)
    assert (c.low, c.high) == pytest.approx((ci.low, ci.high))
    assert c.p < 1e-4  # while a Welch test drowns the same shift in the seed spread
    assert stats.welch("a over b", a.values(), base.values()).p > 0.5
    assert stats.paired("x", {0: 1.0, 5: 2.0}, {0: 0.5, 1: 0.0}).n_a == 1  # only shared seeds pair


def test_welch_matches_scipy():
    a, b = [1.0, 1.2, 0.9, 1.1], [0.5, 0.9, 0.4, 0.8, 0.7, 0.3]
    c = stats.welch("a", a, b)
    r = sps.ttest_ind(a, b, equal_var=False)
    assert c.p == pytest.approx(r.pvalue)
    ci = r.confidence_interval(0.95)
    assert (c.low, c.high) == pytest.approx((ci.low, ci.high))


def test_holm_step_down():
    assert stats.holm([0.01, 0.04, 0.03, math.nan]) == pytest.approx([0.03, 0.06, 0.06, math.nan], nan_ok=True)
    assert stats.holm([0.5, 0.9]) == [1.0, 1.0]


def test_verdicts_and_sentences():
    up = stats.paired("up", {k: 1.0 + 0.01 * k for k in range(6)}, {k: 0.0 for k in range(6)})
    down = stats.welch("down", [0.0, 0.1, 0.05, 0.02], [1.0, 1.1, 0.95, 1.05])
    flat = stats.welch("flat", [0.5, 0.6, 0.4], [0.45, 0.55, 0.5])
    one = stats.welch("one", [0.5], [0.4, 0.3])
    j = stats.judge([up, down, flat, one])
    assert [c.verdict for c in j] == [stats.HOLDS, stats.OTHER_WAY, stats.UNRESOLVED, stats.UNRESOLVED]
    assert stats.describe(j[0]).startswith("holds (+")
    # the interval reads low to high: "95% CI +x to +y" with x < y
    ci = stats.describe(j[0]).split("95% CI ")[1].split(";")[0].split(" to ")
    assert [float(v.replace("−", "-")) for v in ci] == pytest.approx([100 * j[0].low, 100 * j[0].high], abs=0.051)
    assert j[0].low < j[0].high
    assert stats.describe(j[1]).startswith("goes the other way (−")
    text = stats.describe(j[2])
    assert text.startswith("not resolved: the effect is between −") and " and +" in text and "points" in text
    assert "one seed" in stats.describe(j[3])
    assert math.isnan(j[3].p_holm)


def test_identical_runs_are_a_zero_effect():
    c = stats.paired("same", {0: 0.5, 1: 0.7}, {0: 0.5, 1: 0.7})
    assert (c.diff, c.low, c.high, c.p) == (0.0, 0.0, 0.0, 1.0)
    assert stats.judge([c])[0].verdict == stats.UNRESOLVED


def test_seeds_needed():
    n = stats.seeds_needed(0.7, 0.5, paired=True)
    assert sps.t.ppf(0.975, n - 1) * 0.7 / math.sqrt(n) <= 0.5 < sps.t.ppf(0.975, n - 2) * 0.7 / math.sqrt(n - 1)
    assert stats.seeds_needed(0.7, 0.5, paired=False) > n
    assert stats.seeds_needed(100.0, 0.01, paired=True, most=10) is None


@pytest.mark.parametrize("sd, half_width", [(1.0, 1.0), (0.7, 0.5), (0.02, 0.01)])
def test_seeds_needed_for_welch_is_the_smallest_n_of_its_own_interval(sd, half_width):
    """Welch with n seeds per protocol and the same spread sd: half-width t(2(n−1))·sd·√(2/n), the Welch–
    Satterthwaite degrees of freedom at equal variances; the answer is the first n that reaches half_width."""
    n = stats.seeds_needed(sd, half_width, paired=False)

    def width(k):
        return sps.t.ppf(0.975, 2 * (k - 1)) * sd * math.sqrt(2 / k)
    assert width(n) <= half_width < width(n - 1)
    # the same from the Welch interval of two samples with exactly that spread
    m = (n - 1) / 2
    s = math.sqrt(sum((i - m) ** 2 for i in range(n)) / (n - 1))
    a = [sd * (i - m) / s for i in range(n)]  # mean 0, sample standard deviation sd
    c = stats.welch("w", a, [x + 1.0 for x in a])
    assert c.high - c.diff == pytest.approx(width(n), rel=1e-9)


def test_hybrid_report_claims_pair_hybrids_with_ns_and_merge_identical_hybrids():
    from svdgrad.train import report

    def run(seed, acc, kappas=(1e3, 1e2)):
        hist = [{"epoch": e + 1, "val_acc": acc, "train_loss": 1.0, "val_loss": 1.0, "kappa_median": k}
                for e, k in enumerate(kappas)]
        return {"seed": seed, "summary": {"final_val_acc": acc, "seed": seed}, "history": hist, "config": {}}

    ns = [run(s, 0.80 + 0.05 * s) for s in range(4)]
    hyb = [run(s, 0.81 + 0.05 * s + 0.0001 * s) for s in range(4)]
    runs = {"ns": ns, "hybrid-pade": hyb, "hybrid-exact": [dict(r) for r in hyb], "gap": ns}
    judged = report.claims(runs, switch=2)
    merged = [c for c, *_ in judged if "beats NS alone" in c.claim]
    assert len(merged) == 1 and merged[0].test == "paired" and merged[0].verdict == stats.HOLDS
    kappa = [c for c, *_ in judged if c.claim.startswith("κ")][0]
    assert kappa.diff == pytest.approx(1.0) and kappa.verdict == stats.HOLDS


def test_verdicts_use_the_holm_adjusted_p_values():
    """Two raw p-values below 0.05 whose Holm adjustment (0.06 each) is not: neither claim holds."""
    cs = [stats.Comparison("a", "welch", 4, 4, 0.1, 0.0, 0.2, 0.03),
          stats.Comparison("b", "welch", 4, 4, 0.1, 0.0, 0.2, 0.04)]
    judged = stats.judge(cs)
    assert [c.p_holm for c in judged] == pytest.approx([0.06, 0.06])
    assert [c.verdict for c in judged] == [stats.UNRESOLVED, stats.UNRESOLVED]


@pytest.mark.parametrize("value, n_a, n_b", [(0.9, 2, 7), (0.7, 3, 2), (0.2, 2, 3), (0.9125, 7, 2)])
def test_welch_same_constant_value_with_other_seed_counts_is_a_zero_effect(value, n_a, n_b):
    """Every run of both protocols at one accuracy (e.g. 360/400), with a stopped or missing seed on one
    side: the means differ only by the rounding of the sums (1e-16), which is no effect.  It read
    'holds'/'goes the other way' with p = 0."""
    c = stats.welch("same", [value] * n_a, [value] * n_b)
    assert (c.diff, c.low, c.high, c.p) == (0.0, 0.0, 0.0, 1.0)
    assert stats.judge([c])[0].verdict == stats.UNRESOLVED
    # two constant protocols at different values are still a (deterministic) effect
    d = stats.judge([stats.welch("apart", [0.9] * n_a, [0.8975] * n_b)])[0]
    assert d.p == 0.0 and d.verdict == stats.HOLDS


def test_paired_differences_at_rounding_level_are_a_zero_effect():
    """Per-seed values equal up to rounding (0.1 + 0.2 against 0.3): the differences, constant (5.6e-17)
    or not, are no effect; they read 'holds' with p = 0, or a t-test on rounding noise."""
    a = {k: 0.1 + 0.2 for k in range(6)}
    b = {k: 0.3 for k in range(6)}
    c = stats.paired("same", a, b)
    assert (c.diff, c.low, c.high, c.p) == (0.0, 0.0, 0.0, 1.0)
    assert stats.judge([c])[0].verdict == stats.UNRESOLVED
    noisy = {**a, 5: 0.3}  # 5 seeds 5.6e-17 apart, one exactly equal
    assert stats.judge([stats.paired("noise", noisy, b)])[0].verdict == stats.UNRESOLVED
    assert stats.paired("noise", noisy, b).diff == 0.0
    # a real constant shift is still an effect
    assert stats.judge([stats.paired("up", {k: 0.3125 for k in range(6)}, b)])[0].verdict == stats.HOLDS


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("test", ["welch", "paired"])
def test_a_value_that_is_not_finite_is_named_not_called_one_seed(test, bad):
    """A NaN (or Inf) value among 3 seeds gave p = NaN, and the sentence read 'one seed, no interval'; an Inf
    gave a difference of ±inf judged like a number.  Now: not resolved, and the sentence says why."""
    a, b = [0.7, bad, 0.72], [0.6, 0.61, 0.62]
    c = (stats.welch("x", a, b) if test == "welch"
         else stats.paired("x", dict(enumerate(a)), dict(enumerate(b))))
    (c,) = stats.judge([c])
    assert c.verdict == stats.UNRESOLVED and math.isnan(c.p)
    text = stats.describe(c)
    assert "one seed" not in text and "not finite" in text and "3" in text
