"""What the performance report's numbers and verdicts mean, on tiny hand-made raw results.

No timing is run: the per-round times below are chosen so that each ratio, quartile and verdict can be
worked out by hand (times in arbitrary units; only ratios of times of the same round matter).
"""

from __future__ import annotations

import json
import re
import statistics

import pytest
import torch

from svdgrad.bench import memory, timing
from svdgrad.bench import report as bench_report


def _times(unit, **cases):
    """Raw times of one dtype as the target runner writes them: three matmuls per round whose median is
    ``unit[i]`` (the fastest is half of it), each case with its ``|check=False`` twin."""
    out = {"matmul#0": list(unit), "matmul#1": [u / 2 for u in unit], "matmul#2": [2 * u for u in unit]}
    for name, ts in cases.items():
        out[name] = list(ts)
        if name not in ("eigh_forward", "eigh_autograd"):
            out[name + "|check=False"] = list(ts)
    return out


def _eigh_case(unit, eigh, added):
    """t such that (t − t_eigh) / t_matmul is ``added[i]`` in round i."""
    return [e + a * u for e, a, u in zip(eigh, added, unit)]


def _row(rows, variant, dtype="float64"):
    (r,) = [r for r in rows if r["variant"] == variant and r["dtype"] == dtype]
    return r


# ---------------------------------------------------------------------------
# Target ratios: floors, medians of per-round ratios, verdicts.
# ---------------------------------------------------------------------------

UNIT = [1.0, 2.0, 1.0, 2.0, 1.0]  # the machine is twice as slow in rounds 2 and 4
EIGH = [1.0, 2.0, 1.0, 2.0, 1.0]
ADDED = [3.0, 4.0, 5.0, 6.0, 20.0]  # matmuls exact adds to eigh, per round; round 5 was disturbed


def test_eigen_target_is_matmuls_added_to_eigh_median_over_rounds():
    exact = _eigh_case(UNIT, EIGH, ADDED)
    times = _times(UNIT, eigh_forward=EIGH, exact=exact)
    med, by_min = bench_report.floor_ratio(times, "exact", "eigh")
    # median of (t − t_eigh) / t_matmul over rounds, with t_matmul the median of the round's three matmuls:
    # not t / t_matmul (6), not the mean (7.6), not against the round's fastest matmul (10)
    assert med == pytest.approx(5.0, rel=1e-12)
    # ratio of minima: fastest exact minus fastest eigh, in units of the unit's fastest round (the round's median
    # of three matmuls, as for every case), not of the fastest single matmul of the run (u / 2)
    assert by_min == pytest.approx((min(exact) - min(EIGH)) / min(UNIT), rel=1e-12)


def test_one_disturbed_round_does_not_move_the_ratio():
    calm = _times(UNIT, eigh_forward=EIGH, exact=_eigh_case(UNIT, EIGH, ADDED))
    spike = _times(UNIT, eigh_forward=EIGH, exact=_eigh_case(UNIT, EIGH, ADDED[:-1] + [2000.0]))
    assert bench_report.floor_ratio(spike, "exact", "eigh")[0] == bench_report.floor_ratio(calm, "exact", "eigh")[0]


def test_matmul_target_is_time_over_the_rounds_unit():
    ns = [40.0 * u for u in UNIT]  # 40 matmuls in every round, whatever the machine's speed
    times = _times(UNIT, eigh_forward=EIGH, **{"newton_schulz[manual]": ns})
    assert bench_report.floor_ratio(times, "newton_schulz[manual]", "matmul")[0] == pytest.approx(40.0, rel=1e-12)


def test_ratio_against_a_baseline_is_the_median_of_same_round_ratios():
    # The case takes 0.9 of its baseline in every round but round 3, where load hit the case alone; rounds 4-5
    # are a slow spell for both.  Same-round ratios give 0.9; a ratio of medians would compare 9 with 1.
    base = [1.0, 1.0, 1.0, 10.0, 10.0]
    case = [0.9, 0.9, 9.0, 9.0, 9.0]
    med, by_min = bench_report.relative({"a": case, "b": base}, "a", "b")
    assert med == pytest.approx(0.9, rel=1e-12)
    assert by_min == pytest.approx(0.9, rel=1e-12)


def test_target_exactly_at_its_limit_is_met():
    unit, eigh = [1.0] * 3, [1.0] * 3
    at = _eigh_case(unit, eigh, [7.0] * 3)  # exact's limit: 7 matmuls added to eigh
    above = _eigh_case(unit, eigh, [7.25] * 3)
    for added, met in ((at, True), (above, False)):
        times = _times(unit, eigh_forward=eigh, eigh_autograd=[100.0] * 3, exact=added)
        r = _row(bench_report.target_rows({"dtypes": {"float64": {"times": times}}}), "exact")
        assert r["limit"] == 7.0 and r["met"] is met, r


def test_not_slower_than_eigh_autograd_is_judged_on_the_median_of_round_ratios():
    # exact is faster than eigh autograd in 4 of 5 rounds, slower in round 1, where autograd had its one fast
    # round: the ratio of minima (4 / 2) says slower, the same-round ratios (median 8/9) say faster.
    exact = [4.0, 6.0, 7.0, 8.0, 9.0]
    autograd = [2.0, 7.0, 8.0, 9.0, 10.0]
    eigh = [1.0] * 5
    unit = [1.0] * 5
    times = _times(unit, eigh_forward=eigh, eigh_autograd=autograd, exact=exact)
    r = _row(bench_report.target_rows({"dtypes": {"float64": {"times": times}}}), "exact")
    assert r["vs"] == "eigh_autograd"
    assert r["vs_ratio"] == pytest.approx(statistics.median(a / b for a, b in zip(exact, autograd)), rel=1e-12)
    assert r["vs_ratio"] < 1 < r["vs_ratio_min"]
    assert r["ratio"] == pytest.approx(6.0) and r["met"] is True


def test_not_slower_than_eigh_autograd_fails_the_target_even_within_the_limit():
    unit, eigh = [1.0] * 3, [1.0] * 3
    times = _times(unit, eigh_forward=eigh, eigh_autograd=[3.0] * 3, exact=_eigh_case(unit, eigh, [5.0] * 3))
    r = _row(bench_report.target_rows({"dtypes": {"float64": {"times": times}}}), "exact")
    assert r["ratio"] == pytest.approx(5.0) and r["ratio"] <= r["limit"]
    assert r["vs_ratio"] == pytest.approx(2.0) and r["met"] is False


def test_per_round_iqr_brackets_the_middle_half_of_the_rounds():
    unit, eigh = [1.0] * 9, [1.0] * 9
    added = [5.0, 1.0, 9.0, 3.0, 7.0, 2.0, 8.0, 4.0, 6.0]  # 1..9, shuffled
    times = _times(unit, eigh_forward=eigh, eigh_autograd=[100.0] * 9, exact=_eigh_case(unit, eigh, added))
    r = _row(bench_report.target_rows({"dtypes": {"float64": {"times": times}}}), "exact")
    assert r["ratio"] == pytest.approx(5.0)
    # either quantile convention: q1 between the 2nd and 3rd of nine, q3 between the 7th and 8th
    assert 2.0 <= r["q1"] <= 3.0 and 7.0 <= r["q3"] <= 8.0, (r["q1"], r["q3"])
    assert r["rounds"] == 9


def test_per_round_iqr_stays_within_the_rounds_measured():
    # Two rounds (the quick profile): the quartiles lie between the two values, not beyond them, so a miss in
    # every round is not called "within the spread" by an extrapolated lower quartile
    unit, eigh = [1.0] * 2, [1.0] * 2
    times = _times(unit, eigh_forward=eigh, eigh_autograd=[100.0] * 2, exact=_eigh_case(unit, eigh, [9.5, 11.5]))
    r = _row(bench_report.target_rows({"dtypes": {"float64": {"times": times}}}), "exact")
    assert 9.5 <= r["q1"] <= r["ratio"] <= r["q3"] <= 11.5, r
    assert r["met"] is False and r["within_spread"] is False


# ---------------------------------------------------------------------------
# Ratio targets of the function family.
# ---------------------------------------------------------------------------

def _group(times, *targets, n=64, batch=32):
    return {"n": n, "batch": batch, "dtype": "float32", "times": times, "load_before": None, "load_after": None,
            "targets": [dict(name=name, case=case, baseline=base, limit=limit, n=n, batch=batch)
                        for name, case, base, limit in targets]}


def test_ratio_target_is_the_median_of_same_round_ratios():
    times = {"eigh_autograd": [1.0, 1.0, 1.0, 10.0, 10.0], "sqrtm[exact]": [0.9, 0.9, 9.0, 9.0, 9.0],
             "sqrtm[exact]|check=False": [0.9, 0.9, 9.0, 9.0, 9.0]}
    (r,) = bench_report.ratio_target_rows({"groups": [_group(times, ("t", "sqrtm[exact]", "eigh_autograd", 1.0))]})
    assert r["ratio"] == pytest.approx(0.9, rel=1e-12) and r["met"] is True
    assert r["rounds"] == 5


def test_ratio_target_check_false_column_skips_the_checks_on_both_sides():
    # mpa against Newton–Schulz: the checks cost 1 on each side; without them both take 1.
    times = {"sqrtm[mpa]": [2.0] * 3, "sqrtm[mpa]|check=False": [1.0] * 3,
             "sqrtm[newton_schulz[manual]]": [2.0] * 3, "sqrtm[newton_schulz[manual]]|check=False": [1.0] * 3}
    (r,) = bench_report.ratio_target_rows(
        {"groups": [_group(times, ("mpa", "sqrtm[mpa]", "sqrtm[newton_schulz[manual]]", 1.3), n=256)]})
    assert r["ratio"] == pytest.approx(1.0) and r["ratio_nocheck"] == pytest.approx(1.0)


# ---------------------------------------------------------------------------
# The Markdown section: counts, the round-to-round-spread sentence, memory in matrices.
# ---------------------------------------------------------------------------

def _run_info():
    return {"device": "cpu", "device_name": "test cpu", "cpu": "test cpu", "cpu_count": 2, "torch_threads": 1,
            "torch": "x", "blas": "x", "svdgrad": "x", "python": "x", "platform": "x", "profile": "quick",
            "started": "s", "finished": "f", "newton_schulz_default_backward": "manual",
            "load": {"start": [0.1, 0.1, 0.1]}}


def _memory(B=2, n=4, rows=None):
    rows = rows or {"exact": (2, 3)}  # label: (saved, peak) in matrices
    out = {"size": n, "batch": B, "dtypes": {}}
    for dt, size in (("float32", 4), ("float64", 8)):
        mb = B * n * n * size
        out["dtypes"][dt] = {"matrix_bytes": mb, "rows": {
            lab: {"saved_bytes": s * mb, "peak_bytes": p * mb, "products": {"matmul": 3, "eigh": 1, "cholesky": 0}}
            for lab, (s, p) in rows.items()}}
    return out


@pytest.fixture
def section(tmp_path, monkeypatch):
    """device_section on raw files written from ``times`` (one dict per dtype); figures are not drawn."""
    monkeypatch.setattr(bench_report, "figure_time_vs_n", lambda *a, **k: None)
    monkeypatch.setattr(bench_report, "figure_ratios", lambda *a, **k: None)

    def build(times_by_dtype, mem=None):
        raw = tmp_path / "raw"
        raw.mkdir(exist_ok=True)
        files = {"pytest_benchmark": {"benchmarks": [], "machine_info": {"torch_threads": 1}},
                 "targets": {"size": 4, "batch": 2, "dtypes": {d: {"times": t} for d, t in times_by_dtype.items()}},
                 "memory": mem or _memory(), "run": _run_info()}
        for name, obj in files.items():
            (raw / f"{name}_cpu.json").write_text(json.dumps(obj))
        return bench_report.device_section(tmp_path, "cpu", "CPU")
    return build


def _table_after(lines, header_start):
    """Rows of the Markdown table whose header line starts with ``header_start``, as {column: cell}."""
    i = next(i for i, ln in enumerate(lines) if ln.startswith(header_start))
    head = [c.strip() for c in lines[i].strip("|").split("|")]
    rows = []
    for ln in lines[i + 2:]:
        if not ln.startswith("|"):
            break
        rows.append(dict(zip(head, (c.strip() for c in ln.strip("|").split("|")))))
    return rows


def test_count_of_met_targets_counts_the_not_slower_than_condition(section):
    unit, eigh = [1.0] * 3, [1.0] * 3
    times = _times(unit, eigh_forward=eigh, eigh_autograd=[3.0] * 3,
                   exact=_eigh_case(unit, eigh, [5.0] * 3),  # within ≤ 7, but twice as slow as eigh autograd
                   ordinary=_eigh_case(unit, eigh, [8.0] * 3))  # within ≤ 9
    lines = section({"float64": times})
    status = {r["method"]: r["status"] for r in _table_after(lines, "| method | dtype | ratio |")}
    assert status == {"`exact`": "**not met**", "`ordinary`": "met"}
    assert "1 of 2 targets met." in lines


def test_miss_within_the_round_spread_is_told_apart_from_a_structural_one(section):
    unit, eigh = [1.0] * 5, [1.0] * 5
    times = _times(unit, eigh_forward=eigh, eigh_autograd=[100.0] * 5,
                   exact=_eigh_case(unit, eigh, [5.0] * 5),  # met
                   # median 10 > 9, but a quarter of the rounds or more are at or below 9: noise
                   ordinary=_eigh_case(unit, eigh, [8.0, 8.5, 10.0, 11.0, 12.0]),
                   # every round above 9: structural
                   taylor=_eigh_case(unit, eigh, [10.0, 11.0, 12.0, 13.0, 14.0]))
    lines = section({"float64": times})
    (missed,) = [ln for ln in lines if ln.startswith("Not met: ")]
    assert "`ordinary`" in missed and "`taylor`" in missed and "`exact`" not in missed
    (noisy,) = [ln for ln in lines if ln.startswith("Of these, ")]
    assert "`ordinary` float64" in noisy and "`taylor`" not in noisy
    assert "1 of 3 targets met." in lines


def test_a_structural_miss_of_not_slower_than_is_not_called_noise(section):
    # exact adds 5 matmuls in every round (limit 7: met) but is twice as slow as eigh autograd in every round:
    # the miss is structural, though the matmul ratio's lower quartile is within its limit
    unit, eigh = [1.0] * 5, [1.0] * 5
    exact = _eigh_case(unit, eigh, [5.0] * 5)
    noisy_vs = [e / r for e, r in zip(exact, [0.9, 0.95, 1.05, 1.1, 1.2])]  # slower in 3 of 5 rounds only
    for autograd, within in (([e / 2 for e in exact], False), (noisy_vs, True)):
        lines = section({"float64": _times(unit, eigh_forward=eigh, eigh_autograd=autograd, exact=exact)})
        (missed,) = [ln for ln in lines if ln.startswith("Not met: ")]
        assert "`exact`" in missed
        assert any(ln.startswith("Of these, `exact`") for ln in lines) is within, lines


def test_memory_is_stated_in_matrices_of_each_dtype(section):
    unit, eigh = [1.0] * 3, [1.0] * 3
    t = _times(unit, eigh_forward=eigh, eigh_autograd=[100.0] * 3, exact=_eigh_case(unit, eigh, [5.0] * 3))
    lines = section({"float32": t, "float64": t}, mem=_memory(rows={"exact": (2, 3)}))
    (row,) = _table_after(lines, "| method | products |")
    # exact keeps two (B, n, n) matrices and peaks at three, in float32 and in float64 alike
    assert (row["saved (float32)"], row["peak (float32)"]) == ("2.0", "3.0")
    assert (row["saved (float64)"], row["peak (float64)"]) == ("2.0", "3.0")


# ---------------------------------------------------------------------------
# Timing and memory measurement helpers.
# ---------------------------------------------------------------------------

def test_interleaved_runs_min_rounds_once_the_budget_is_spent():
    calls = {"a": 0, "b": 0}

    def case(name):
        def run():
            calls[name] += 1
        return run

    times = timing.interleaved({k: case(k) for k in calls}, min_rounds=3, max_rounds=10, budget_s=0.0, warmup=1)
    assert {k: len(v) for k, v in times.items()} == {"a": 3, "b": 3}
    assert calls == {"a": 4, "b": 4}  # one warmup round, untimed
    times = timing.interleaved({k: case(k) for k in calls}, min_rounds=1, max_rounds=4, budget_s=1e9, warmup=0)
    assert {k: len(v) for k, v in times.items()} == {"a": 4, "b": 4}


def test_saved_bytes_counts_each_storage_once_and_not_the_input():
    x = torch.rand(100, dtype=torch.float64, requires_grad=True)

    def forward():
        y = x.exp()  # saves its result y
        return y * y  # saves y twice more: still one storage of 800 bytes

    assert memory.saved_bytes(forward, lambda z: z.sum().backward(), exclude=(x,)) == 100 * 8
    assert memory.saved_bytes(lambda: x * x, lambda z: z.sum().backward(), exclude=(x,)) == 0
    assert x.grad is not None


@pytest.mark.parametrize("name", ["time_vs_n_cpu.png", "ratios_cpu.png"])
def test_a_figure_write_that_fails_midway_keeps_the_old_figure(tmp_path, monkeypatch, name):
    """The bench's two figures were written in place by ``fig.savefig(path)``: a full disk (or a kill) during
    the write left half a PNG where the previous one was.  They now go through ``_io.savefig_atomic``.
    Drawn from raw files written here (a matmul floor, eigh and one method over two sizes)."""
    from .helpers import disk_full_on

    unit, eigh = [1.0] * 3, [1.0] * 3
    times = _times(unit, eigh_forward=eigh, eigh_autograd=[3.0] * 3, exact=_eigh_case(unit, eigh, [5.0] * 3))
    raw = tmp_path / "raw"
    raw.mkdir()
    benchmarks = [{"extra_info": {"kind": kind, "label": label, "mode": "forward_backward", "n": n,
                                  "dtype": "float32"},
                   "stats": {"median": 1e-3 * n, "min": 1e-3 * n, "rounds": 3}}
                  for kind, label in (("sqrtm", "exact"), ("baseline", "eigh_autograd")) for n in (64, 256)]
    files = {"pytest_benchmark": {"benchmarks": benchmarks, "machine_info": {"torch_threads": 1}},
             "targets": {"size": 4, "batch": 2, "dtypes": {"float32": {"times": times}}},
             "memory": _memory(), "run": _run_info()}
    for key, obj in files.items():
        (raw / f"{key}_cpu.json").write_text(json.dumps(obj))
    bench_report.device_section(tmp_path, "cpu", "CPU")
    old = (tmp_path / "figures" / name).read_bytes()
    disk_full_on(monkeypatch, name)
    with pytest.raises(OSError, match="No space left"):
        bench_report.device_section(tmp_path, "cpu", "CPU")
    assert (tmp_path / "figures" / name).read_bytes() == old
    assert not [f for f in (tmp_path / "figures").iterdir() if ".tmp" in f.name]
