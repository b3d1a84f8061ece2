"""The hybrid and landscape study reports, the schedules' defaults and the study's seed plan, on hand-made runs.

Every record below is built the way the trainer writes it (``log.jsonl`` rows, ``summary.json``) and is
small enough to work out by hand: each test states the number or verdict the report must draw from it.
No training runs here.
"""

import json
import math
import os

import pytest

from svdgrad.train import landscape_report, report, schedules, stats, study
from svdgrad.train.grid import EARLY, LABELS, QUICK

from .helpers import disk_full_on


def _epoch(e, *, lr=0.1, acc=0.5, skipped=0, method="newton_schulz", kappa=100.0, loss=1.0):
    return {"epoch": e, "lr": lr, "method": method, "switched": False, "train_loss": loss, "val_loss": loss,
            "val_acc": acc, "kappa_median": kappa, "small_eig_fraction": 0.0, "skipped_steps": skipped}


def _run(seed, final, *, best=None, skipped=0, switch=None, history=None):
    history = history or [_epoch(1, acc=final / 2), _epoch(2, acc=final, skipped=skipped)]
    summary = {"seed": seed, "final_val_acc": final, "best_val_acc": final if best is None else best,
               "final_val_loss": 1.0, "skipped_steps": sum(h["skipped_steps"] for h in history),
               "switch_epoch": switch, "elapsed_s": 10.0}
    return {"seed": seed, "summary": summary, "history": history, "config": {}}


def _write(out, runs, plan):
    """A study folder as ``svdgrad study hybrid`` leaves it: study.json and runs/<protocol>/seed<k>/."""
    for p, rs in runs.items():
        for r in rs:
            d = os.path.join(out, "runs", p, f"seed{r['seed']}")
            os.makedirs(d)
            with open(os.path.join(d, "log.jsonl"), "w") as f:
                f.write("".join(json.dumps(h) + "\n" for h in r["history"]))
            for name, obj in (("summary.json", r["summary"]), ("config.json", r["config"])):
                with open(os.path.join(d, name), "w") as f:
                    json.dump(obj, f)
    settings = dict(QUICK, widths=list(QUICK["widths"]))
    with open(os.path.join(out, "study.json"), "w") as f:
        json.dump({"settings": settings, "seeds": max(plan.values()), "seeds_by_protocol": plan, "quick": True,
                   "jobs": 1, "cpu_count": 2, "torch": "x"}, f)


# ---------------------------------------------------------------------------
# Schedules: the defaults the docstring promises.
# ---------------------------------------------------------------------------

def test_poly_by_default_keeps_the_last_epoch_lr_positive():
    s = schedules.make("poly", 0.1, 10)  # e_f = E + 1 = 11
    assert s.final_epoch == 11
    assert s.lr(10) == pytest.approx(0.1 * (1 - 9 / 10) ** 2, rel=1e-12) and s.lr(10) > 0


def test_exp_by_default_decays_as_lr_norm():
    s = schedules.make("exp", 0.045, 5)  # MobileNetV2 LR_norm: 0.98 per epoch
    assert [s.lr(e) for e in (1, 2, 5)] == pytest.approx([0.045, 0.045 * 0.98, 0.045 * 0.98 ** 4], rel=1e-12)


def test_a_decay_at_the_last_epoch_is_where_the_hybrid_switches():
    assert schedules.make("step", 0.1, 3).last_decay_epoch == 3  # the quick study: decays at 2 and 3
    assert schedules.make("step", 0.1, 10, milestones=(4, 10)).last_decay_epoch == 10
    assert schedules.make("step", 0.1, 10, milestones=(4, 11)).last_decay_epoch == 4  # 11 never happens


# ---------------------------------------------------------------------------
# The study's seed plan.
# ---------------------------------------------------------------------------

def test_configs_run_each_protocol_for_exactly_its_planned_seeds(tmp_path):
    plan = dict({p: 0 for p in study.PROTOCOLS}, ns=2, gap=1)
    got = [(name, seed) for name, seed, _ in study.configs(QUICK, plan, str(tmp_path))]
    assert got == [("gap", 0), ("ns", 0), ("ns", 1)]


# ---------------------------------------------------------------------------
# The hybrid report: table, claims, findings.
# ---------------------------------------------------------------------------

def test_mean_std_is_the_sample_standard_deviation():
    m, s = report.mean_std([1.0, 2.0, None, 3.0, 4.0])  # None: a run without the value
    assert m == pytest.approx(2.5, rel=1e-15) and s == pytest.approx(math.sqrt(5 / 3), rel=1e-15)
    assert math.isnan(report.mean_std([0.7])[1])


def test_the_results_table_shows_final_accuracy_and_every_seeds_skipped_steps(tmp_path, monkeypatch):
    monkeypatch.setattr(report, "_figures", lambda *a: None)  # the numbers, not the pictures
    runs = {"ns": [_run(0, 0.70, best=0.80, skipped=2), _run(1, 0.74, best=0.84, skipped=3)]}
    out = str(tmp_path)
    _write(out, runs, {"ns": 2})
    text = open(report.write_report(out)).read()
    row = next(line for line in text.splitlines() if line.startswith(f"| {LABELS['ns']} |"))
    _, n, final, best, _, skipped, *_ = [c.strip() for c in row.split("|")[1:-1]]
    sd = 100 * math.sqrt(2 * 0.02 ** 2)  # sample sd of 0.70 and 0.74, in points
    assert n == "2" and final == f"72.0 ± {sd:.1f}" and best == f"82.0 ± {sd:.1f}"
    assert skipped == "5"  # 2 + 3: every seed's skipped steps
    assert "2 of the 2 planned runs" in text


def test_the_switch_point_claim_is_the_late_switch_against_the_early_one():
    late = [0.80, 0.82, 0.85, 0.83]
    gain = [0.05, 0.06, 0.04, 0.05]
    runs = {"hybrid-exact": [_run(s, a, switch=3) for s, a in enumerate(late)],
            EARLY: [_run(s, a - g, switch=2) for s, (a, g) in enumerate(zip(late, gain))]}
    (c, *_), = [j for j in report.claims(runs, switch=3) if j[0].test != "none"]
    assert c.claim.startswith("switching to exact at the last lr decay (epoch 3) beats switching at the first "
                              "(epoch 2)")
    assert c.test == "paired" and c.n_a == 4
    assert c.diff == pytest.approx(0.05, rel=1e-9) and c.verdict == stats.HOLDS


def test_paired_claims_pair_runs_by_seed_not_by_load_order(tmp_path):
    """12 NS seeds load as seed0, seed1, seed10, seed11, seed2, ...; the 4 hybrid seeds pair with NS seeds 0-3."""
    base = [0.60 + 0.03 * s for s in range(12)]  # a large seed-to-seed spread
    gain = [0.010, 0.012, 0.011, 0.013]
    runs = {"ns": [_run(s, base[s]) for s in range(12)],
            "hybrid-exact": [_run(s, base[s] + gain[s], switch=2) for s in range(4)]}
    out = str(tmp_path)
    _write(out, runs, {"ns": 12, "hybrid-exact": 4})
    loaded = report.load_runs(out)
    assert [r["seed"] for r in loaded["ns"]][:4] == [0, 1, 10, 11]
    (c, *_), = [j for j in report.claims(loaded, switch=2) if "beats NS alone" in j[0].claim]
    assert c.test == "paired" and c.n_a == 4
    assert c.diff == pytest.approx(sum(gain) / 4, rel=1e-9) and c.verdict == stats.HOLDS


def _skips(lrs_and_counts):
    return [_epoch(e, lr=lr, skipped=c, method="ordinary") for e, (lr, c) in enumerate(lrs_and_counts, 1)]


def test_skipped_steps_at_the_initial_lr_are_counted_and_judged():
    early = {"svd-ordinary": [_run(0, 0.5, history=_skips([(0.1, 3), (0.1, 1), (0.01, 1)]))]}
    line = report._other_findings(early, None, 8)[0]
    assert line.startswith("- 5 steps were skipped")
    assert "4 of them were taken at the initial lr" in line and "does not agree" not in line
    late = {"svd-ordinary": [_run(0, 0.5, history=_skips([(0.1, 1), (0.01, 2), (0.001, 2)]))]}
    line = report._other_findings(late, None, 8)[0]
    assert "1 of them were taken at the initial lr" in line and "does not agree" in line


# ---------------------------------------------------------------------------
# The landscape report.
# ---------------------------------------------------------------------------

def _land(acc, delta, rel=None):
    return {"seed": 0, "summary": {"final_val_acc": acc, "skipped_steps": 0, "elapsed_s": 1.0},
            "history": [{"kappa_median": 10.0}],
            "probes": [] if rel is None else [{"step": 0, "rel_err": rel}],
            "landscape": [{"step": 0, "loss": 1.0, "delta_l": list(delta), "delta_g": list(delta)}]}


def test_lipschitzness_compares_the_range_over_eta_not_its_largest_value():
    """GAP's Δl sits higher but varies less over η than GCP-NS's: GAP is the smoother one."""
    gap = [_land(0.8, (10.0, 11.0 + 0.1 * i)) for i in range(4)]  # range 1.0, 1.1, 1.2, 1.3
    ns = [_land(0.8, (1.0, 3.0 + 0.2 * i)) for i in range(4)]  # range 2.0, 2.2, 2.4, 2.6
    assert landscape_report._mean_range(gap[1], "delta_l") == pytest.approx(1.1, rel=1e-12)
    judged = {c.claim.split(" (")[0]: c for c, *_ in landscape_report.claims({("probes", "gap"): gap,
                                                                              ("probes", "gcp-ns"): ns})}
    c = judged["GCP-NS has better loss Lipschitzness: a smaller range of Δl over η"]
    assert c.diff == pytest.approx(1.15 - 2.3, rel=1e-9) and c.verdict == stats.OTHER_WAY


def test_gradient_error_against_accuracy_states_the_direction_of_the_correlation():
    def runs(accs):
        return {("probes", "gcp-exact"): [_land(accs[0], (1, 2))],
                ("probes", "gcp-ns"): [_land(a, (1, 2), rel=r) for a, r in zip(accs[1:4], (0.1, 0.2, 0.3))],
                ("precision", "sigma32"): [_land(a, (1, 2), rel=r) for a, r in zip(accs[4:], (1e-6, 1e-4))]}

    # error order: exact 0 < 1e-6 < 1e-4 < 0.1 < 0.2 < 0.3; accuracy falls along it (rho = -1)
    falling = landscape_report.gradient_predicts(runs([0.95, 0.80, 0.75, 0.70, 0.90, 0.85]))
    assert "is -1.00" in falling and falling.endswith("a larger gradient error goes with a lower accuracy.")
    rising = landscape_report.gradient_predicts(runs([0.70, 0.85, 0.90, 0.95, 0.75, 0.80]))
    assert "is +1.00" in rising and rising.endswith("a larger gradient error goes with a higher accuracy.")


def _pade_finding(ordinary_skips, pade_skips, pade_loss=None, seeds=(0,)):
    """The Padé sentence for seeds whose ordinary and pade runs skipped steps in the given epochs."""
    def run(seed, skips, loss=lambda e: 1.0 / e):
        return _run(seed, 0.5, history=[_epoch(e, skipped=4 if e in skips else 0, loss=loss(e)) for e in (1, 2, 3)])
    (line,) = [ln for ln in report._other_findings(
        {"svd-ordinary": [run(s, ordinary_skips) for s in seeds],
         "svd-pade": [run(s, pade_skips, pade_loss or (lambda e: 1.0 / e)) for s in seeds]}, None, 3)
        if "is `ordinary` wherever" in ln]
    return line


def test_the_pade_finding_says_whether_the_runs_agree_bit_for_bit_before_the_first_skip():
    line = _pade_finding({3}, set())
    assert "agree exactly in every epoch before the first skipped step in 1 of 1 seeds;" in line
    assert "part before any skip" not in line
    # a difference in epoch 2, before ordinary's skip in epoch 3: said, with its size and the seed
    line = _pade_finding({3}, set(), pade_loss=lambda e: 1.0 / e + (0.25 if e == 2 else 0.0), seeds=(7,))
    assert "in 0 of 1 seeds; in 1 (seed 7) they part before any skip, by up to 2.50e-01 in training loss" in line
    # the same difference from the skip's epoch on is not a parting before it
    assert "part before" not in _pade_finding({2}, set(), pade_loss=lambda e: 1.0 / e + (0.25 if e >= 2 else 0.0))
    # the largest over seeds, every parted seed named
    line = _pade_finding(set(), set(), pade_loss=lambda e: 1.0 / e + 1e-3 * e, seeds=(2, 10))
    assert "in 0 of 2 seeds; in 2 (seeds 2, 10) they part before any skip, by up to 3.00e-03" in line
    # a parting at the last bits counts: bit for bit means equal (the committed runs parted by 4e-8 in two seeds)
    line = _pade_finding(set(), set(), pade_loss=lambda e: 1.0 / e + (2.0 ** -40 if e == 3 else 0.0))
    assert "in 0 of 1 seeds; in 1 (seed 0) they part before any skip, by up to 9.09e-13" in line


def test_the_pade_finding_says_which_run_skipped_first():
    # ordinary failed in epoch 2 and pade did not: the finding the paper predicts
    assert "in 1 of 1 seeds `ordinary` hit a non-finite gradient" in _pade_finding({2}, set())
    # pade failed and ordinary did not: not counted as ordinary failing, and said as it happened
    line = _pade_finding(set(), {2})
    assert "in 0 of 1 seeds `ordinary` hit" in line and "in 1 `pade` skipped a step where `ordinary` stayed" in line
    # both in the same epoch
    line = _pade_finding({3}, {3})
    assert "in 0 of 1 seeds `ordinary` hit" in line and "in 1 both first skipped a step in the same epoch" in line
    # neither: no seed counted
    line = _pade_finding(set(), set())
    assert "in 0 of 1 seeds" in line and "`pade` skipped" not in line and "both" not in line


def test_the_plan_counts_seeds_and_protocols_in_words():
    assert report.describe_plan({"ns": 8, "gap": 8}) == "8 seeds × 2 protocols"
    assert report.describe_plan({"ns": 1}) == "1 seed × 1 protocol"
    assert report.describe_plan({"ns": 30, "gap": 1}) == "30 seeds of ns; 1 seed of gap"


def test_the_summary_counts_in_the_singular_and_the_plural():
    from types import SimpleNamespace

    from svdgrad.train import stats

    def claim(verdict, half_width):
        return (SimpleNamespace(claim=f"c{half_width} (why)", verdict=verdict, low=-half_width, high=half_width),
                "points")

    one = report._findings({}, None, [claim(stats.UNRESOLVED, 0.006), claim(stats.HOLDS, 0.001)])[0]
    assert one.endswith("1 holds (c0.001), 0 go the other way, and 1 is not resolved. 1 unresolved accuracy "
                        "claim has a 95% interval wider than ±0.5 points: more seeds would narrow it.")
    two = report._findings({}, None, [claim(stats.UNRESOLVED, 0.006), claim(stats.UNRESOLVED, 0.007),
                                      claim(stats.UNRESOLVED, 0.004)])[0]
    assert two.endswith("and 3 are not resolved. 2 unresolved accuracy claims have a 95% interval wider than "
                        "±0.5 points: more seeds would narrow them.")


# ---------------------------------------------------------------------------
# The reports' files are written atomically: a write that fails midway keeps the old file.
# ---------------------------------------------------------------------------


def _land_run(seed, acc):
    return {"seed": seed, "summary": {"final_val_acc": acc, "skipped_steps": 0, "elapsed_s": 1.0,
                                      "robustness": {f"{kind}{k}": acc / k for kind in ("noise", "blur", "contrast")
                                                     for k in (1, 2, 3)}},
            "history": [{"kappa_median": 10.0}],
            "probes": [{"step": s, "rel_err": 1e-3 * (s + 1), "cosine": 0.99} for s in range(2)],
            "landscape": [{"step": s, "loss": 1.0, "etas": [0.1, 1.0], "delta_l": [1.0, 2.0], "delta_g": [0.5, 1.5]}
                          for s in range(2)]}


def _a_landscape_study(out, monkeypatch):
    """A landscape study folder (study.json) whose logs read as two seeds of the probed and precision runs."""
    from svdgrad.train import landscape_grid

    base = {k: list(v) if isinstance(v, tuple) else v for k, v in landscape_grid.QUICK.items()}
    with open(os.path.join(out, "study.json"), "w") as f:
        json.dump({"grid": {"quick": True, "base": base}, "seeds": 2, "planned_runs": 26, "jobs": 1,
                   "backend": "joblib", "device": "cpu", "cpu_count": 2, "torch": "x",
                   "command": "svdgrad study landscape --quick"}, f)
    runs = {key: [_land_run(0, 0.5), _land_run(1, 0.6)]
            for key in (("probes", "gap"), ("probes", "gcp-ns"), ("precision", "sigma32"))}
    monkeypatch.setattr(landscape_report, "load", lambda o, seeds: runs)


@pytest.mark.parametrize("study_kind,name", [
    ("hybrid", "REPORT.md"), ("hybrid", "curves.png"), ("hybrid", "kappa.png"), ("hybrid", "skipped.png"),
    ("landscape", "REPORT.md"), ("landscape", "landscape.png"), ("landscape", "gradients.png"),
    ("landscape", "accuracy.png")])
def test_a_report_write_that_fails_midway_keeps_the_old_file(tmp_path, monkeypatch, study_kind, name):
    """REPORT.md and the figures were written in place: a full disk (or a kill) during the write left half a
    file where the previous report was.  Now each is drawn in memory and replaced atomically (``_io``)."""
    out = str(tmp_path)
    if study_kind == "hybrid":
        _write(out, {"ns": [_run(0, 0.70), _run(1, 0.74)], "svd-ordinary": [_run(0, 0.60), _run(1, 0.66)]},
               {"ns": 2, "svd-ordinary": 2})
        module = report
    else:
        _a_landscape_study(out, monkeypatch)
        module = landscape_report
    assert os.path.exists(module.write_report(out))  # (every file of the report is drawn from these runs)
    old = {f: (tmp_path / f).read_bytes() for f in os.listdir(out) if f.endswith((".md", ".png"))}
    assert name in old
    disk_full_on(monkeypatch, name)
    with pytest.raises(OSError, match="No space left"):
        module.write_report(out)
    assert (tmp_path / name).read_bytes() == old[name]
    assert not [f for f in os.listdir(out) if f.endswith(".tmp")]


def test_a_landscape_range_with_a_nan_is_nan_wherever_it_sits():
    """max/min over a probe's η with a NaN (a loss that diverged) depended on where the NaN sat in the list:
    [nan, 1, 3] gave nan, [1, nan, 3] gave 2 and [1, 3, nan] gave 2 (Python's max/min compare False with NaN)."""
    for vals in ([math.nan, 1.0, 3.0], [1.0, math.nan, 3.0], [1.0, 3.0, math.nan]):
        r = {"landscape": [{"delta_l": vals}, {"delta_l": [0.0, 1.0]}]}
        assert math.isnan(landscape_report._mean_range(r, "delta_l")), vals
    assert landscape_report._mean_range({"landscape": [{"delta_l": [1.0, 3.0]}]}, "delta_l") == 2.0
