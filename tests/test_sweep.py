"""Tests of the condition-number sweep (svdgrad.sweep): grid, runner, resume, report, CLI."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("joblib")
pytest.importorskip("tqdm")

import torch  # noqa: E402

import svdgrad  # noqa: E402

from svdgrad.sweep import cells, cli, grid, report, runner, tables  # noqa: E402
from svdgrad.sweep.grid import DTYPES, Grid, default_grid, quick_grid  # noqa: E402
from svdgrad.sweep.store import ResultStore, read_rows, row_key  # noqa: E402
from svdgrad.testing import SPECTRA  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

#: A tiny grid: one mpmath-referenced size and one float64-exact-referenced size.
TINY = ["--methods", "exact,ordinary,newton_schulz", "--functions", "sqrt,log", "--sizes", "16,64",
        "--kappas", "0,8", "--spectra", "logspaced,rank_deficient", "--seeds", "0", "--jobs", "1", "--no-progress"]
#: Not part of the comparison of two runs: timings.
VOLATILE = {"time_ms"}


def _parse(argv):
    return cli.grid_from_args(cli._sweep_parser().parse_args(argv))


def _stable(rows):
    return sorted(tuple(sorted((k, v) for k, v in r.items() if k not in VOLATILE)) for r in rows)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny")
    rc = cli.main("sweep", TINY + ["--out", str(out)])
    assert rc == 0
    return out


# ---------------------------------------------------------------------------
# Grid as data.
# ---------------------------------------------------------------------------

def test_default_grid_covers_the_issue():
    g = default_grid()
    assert g.methods == svdgrad.methods()
    assert g.dtypes == DTYPES == ("float32", "float64")
    assert g.sizes == (16, 64, 256)
    assert g.log10_kappas == tuple(range(13))
    assert set(g.spectra) == set(SPECTRA) >= {"logspaced", "clustered", "repeated", "rank_deficient"}
    assert len(g.seeds) >= 3 and len(set(g.seeds)) == len(g.seeds)
    assert g.functions == svdgrad.functions()
    sqrt_cells = sum(1 for m in g.methods for n in g.sizes if g.size_cap(m) is None or n <= g.size_cap(m)) \
        * 2 * 13 * len(SPECTRA) * len(g.seeds)
    assert g.n_cells() > sqrt_cells
    assert Grid.from_json(g.to_json()) == g


def test_quick_grid_is_a_narrowing_of_the_default():
    q, g = quick_grid(), default_grid()
    for axis in Grid.AXES:
        assert set(getattr(q, axis)) <= set(getattr(g, axis))
    assert q.methods == g.methods and q.dtypes == g.dtypes
    assert q.log10_kappas[0] == 0 and q.log10_kappas[-1] == 12


def test_cli_narrows_the_grid():
    g = _parse(["--methods", "pade,exact", "--dtypes", "float32", "--sizes", "16", "--kappas", "0-12:6",
                "--spectra", "repeated", "--seeds", "1"])
    assert g.methods == ("exact", "pade")  # grid order, not argument order
    assert g.dtypes == ("float32",) and g.sizes == (16,) and g.log10_kappas == (0, 6, 12)
    assert g.spectra == ("repeated",) and g.seeds == (1,)
    assert g.n_cells() == 2 * 1 * 1 * 3 * 1 * 1
    assert _parse(["--quick"]) == quick_grid()


def test_methods_take_specs_with_options():
    assert cli.split_specs("exact,newton_schulz:iterations=7,normalization=frobenius,taylor:degree=9,pade") == [
        "exact", "newton_schulz:iterations=7,normalization=frobenius", "taylor:degree=9", "pade"]
    g = _parse(["--methods", "taylor:degree=9,pade,exact,taylor,taylor:degree=100"])
    # canonical labels (the default degree is plain "taylor"), registry order, duplicates merged
    assert g.methods == ("exact", "taylor:degree=9", "taylor", "pade")
    with pytest.raises(cli.UsageError, match="degre"):
        _parse(["--methods", "taylor:degre=9"])


def test_a_sweep_varies_a_methods_options(tmp_path):
    argv = ["--methods", "taylor:degree=9,taylor", "--functions", "sqrt", "--dtypes", "float64", "--sizes", "16", "--kappas", "6",
            "--spectra", "logspaced", "--seeds", "0", "--jobs", "1", "--no-progress", "--no-report"]
    assert cli.main("sweep", argv + ["--out", str(tmp_path)]) == 0
    rows = {r["method"]: r for r in read_rows(tmp_path / runner.RESULTS) if r["study"] == "method"}
    assert set(rows) == {"taylor:degree=9", "taylor"}
    # degree 9 truncates 1/(1-x) far from x = 1 - 1e-6: a different, larger error than degree 100
    assert float(rows["taylor:degree=9"]["grad_err"]) > 10 * float(rows["taylor"]["grad_err"])


def test_narrow_rejects_values_outside_the_grid():
    with pytest.raises(ValueError, match="not in the grid"):
        default_grid().narrow(sizes=[17])
    with pytest.raises(ValueError, match="unknown grid axis"):
        default_grid().narrow(colors=["red"])


def test_plan_skips_done_rows_exactly():
    g = default_grid().narrow(methods=["exact", "newton_schulz"], sizes=[16], log10_kappas=[0, 1],
                              spectra=["logspaced"], seeds=[0])
    tasks = runner.plan(g)
    keys = [k for t in tasks for k in t.pending]
    assert len(keys) == len(set(keys))
    done = set(keys[::3])
    again = [k for t in runner.plan(g, done) for k in t.pending]
    assert sorted(again) == sorted(set(keys) - done)
    assert runner.plan(g, set(keys)) == []


# ---------------------------------------------------------------------------
# End to end.
# ---------------------------------------------------------------------------

def test_tiny_sweep_end_to_end(tiny_run, capsys):
    out = tiny_run
    rows = read_rows(out / runner.RESULTS)
    g = _parse(TINY)
    expected = {k for n, kk, sp, s in g.matrices() for k in runner.matrix_keys(g, n, kk, sp, s)}
    keys = [row_key(r) for r in rows]
    assert len(keys) == len(set(keys)) and set(keys) == expected
    assert not [r for r in rows if r["error"]]
    by = {row_key(r): r for r in rows}
    # mpmath reference at n=16: exact float64 is accurate, ordinary is non-finite at κ = 1 (all ties).
    r = by[("method", "sqrt", "exact", "", "float64", 16, 8, "logspaced", 0)]
    assert r["reference"] == cells.REF_MPMATH and float(r["grad_err"]) < 1e-6
    assert float(by[("method", "sqrt", "ordinary", "", "float64", 16, 0, "logspaced", 0)]["nonfinite_grad"]) == 1.0
    # float64 exact reference at n=64: never compared with itself, floor labelled.
    r = by[("method", "sqrt", "exact", "", "float64", 64, 8, "logspaced", 0)]
    assert r["reference"] == cells.REF_SELF and r["grad_err"] == ""
    r = by[("method", "sqrt", "exact", "", "float32", 64, 8, "logspaced", 0)]
    assert r["reference"] == cells.REF_EXACT64 and float(r["ref_floor"]) > 0 and r["at_floor"] == "0"
    assert float(by[("eig", "", "eigvalsh", "", "float64", 16, 8, "logspaced", 0)]["kappa_reached"]) == \
        pytest.approx(1e8, rel=1e-3)
    for name in ("REPORT.md", "approx.csv", "grid.json", "runs.jsonl", "grad_error_n16.png", "grad_error_n64.png",
                 "nonfinite.png", "blowup.png", "taylor_pade.png", "newton_schulz.png", "float32_eigenvalues.png"):
        assert (out / name).is_file(), name
    text = (out / "REPORT.md").read_text()
    assert "≤floor" in text or "ref" in text
    assert "Summary" in text and "rank_deficient" in text


def test_sweep_prints_the_gradient_error_table(tmp_path, capsys):
    rc = cli.main("sweep", ["--methods", "exact,pade", "--functions", "sqrt", "--sizes", "16", "--kappas", "0,12", "--spectra",
                            "logspaced", "--seeds", "0", "--jobs", "1", "--no-progress", "--no-report",
                            "--out", str(tmp_path)])
    assert rc == 0
    out = capsys.readouterr().out
    assert "1e0" in out and "1e12" in out
    for m in ("exact", "pade"):
        for d in ("float32", "float64"):
            assert any(line.split()[:2] == [m, d] for line in out.splitlines())
    assert not (tmp_path / "REPORT.md").exists()


def test_same_command_gives_the_same_numbers(tiny_run, tmp_path):
    # The same cells again (narrowed to save time): identical numbers apart from timings.
    assert cli.main("sweep", TINY + ["--sizes", "64", "--out", str(tmp_path), "--no-report"]) == 0
    again = read_rows(tmp_path / runner.RESULTS)
    first = [r for r in read_rows(tiny_run / runner.RESULTS) if r["n"] == "64"]
    assert len(again) == len(first) > 0
    assert _stable(again) == _stable(first)


def test_a_failing_cell_is_recorded_and_the_sweep_goes_on(tmp_path, monkeypatch):
    def boom(*a, **k):
        raise RuntimeError("reference exploded")

    monkeypatch.setattr(cells, "reference_function_grad", boom)
    g = default_grid().narrow(methods=["exact"], functions=["sqrt"], sizes=[16, 64], log10_kappas=[2],
                              spectra=["logspaced"], seeds=[0])
    stats = runner.run_sweep(g, tmp_path, jobs=1, progress=False)
    rows = read_rows(tmp_path / runner.RESULTS)
    failed = [r for r in rows if r["error"]]
    assert failed and all("reference exploded" in r["error"] for r in failed)
    # n=64 uses float64 exact and is unaffected (the features route has its own reference, so is unaffected too)
    assert {r["n"] for r in failed} == {"16"} and {r["study"] for r in failed} == {"method", "option"}
    assert stats.written_rows == len(rows) == stats.planned_rows
    report.build(tmp_path)
    assert "Recorded errors" in (tmp_path / "REPORT.md").read_text()


# ---------------------------------------------------------------------------
# Kill and resume.
# ---------------------------------------------------------------------------

def test_kill_and_resume_lose_and_duplicate_nothing(tmp_path):
    args = ["--methods", "exact,ordinary,taylor", "--functions", "sqrt", "--sizes", "16", "--kappas", "0-12:4",
            "--spectra", "logspaced,repeated", "--seeds", "0,1", "--jobs", "1", "--no-progress", "--no-report"]
    out = tmp_path / "run"
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-m", "svdgrad", "sweep", *args, "--out", str(out)],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    results = out / runner.RESULTS
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            if results.exists() and len(read_rows(results)) >= 16:
                break
            if proc.poll() is not None:
                pytest.fail("the sweep finished before it could be killed")
            time.sleep(0.05)
        else:
            pytest.fail("no rows appeared within 60 s")
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    before = read_rows(results)
    g = _parse(args)
    expected = {k for n, kk, sp, s in g.matrices() for k in runner.matrix_keys(g, n, kk, sp, s)}
    assert 16 <= len(before) < len(expected), "the kill must land mid-run"
    # Simulate a torn last write as well: resume must drop it, not keep it.
    with open(results, "a") as f:
        f.write("method,exact,,float32,16,")
    assert cli.main("sweep", args + ["--resume", "--out", str(out)]) == 0
    after = read_rows(results)
    keys = [row_key(r) for r in after]
    assert len(keys) == len(set(keys)), "duplicated rows"
    assert set(keys) == expected, "lost rows"
    assert all(r in after for r in before), "finished rows changed"
    assert results.read_text().endswith("\n")
    # Resuming a finished run computes nothing.
    assert cli.main("sweep", args + ["--resume", "--out", str(out)]) == 0
    assert len(read_rows(results)) == len(expected)


def test_store_drops_a_torn_line(tmp_path):
    store = ResultStore(tmp_path / "results.csv")
    store.reset()
    row = cells._row(("method", "sqrt", "exact", "", "float64", 16, 0, "logspaced", 0), grad_err=1e-15, error="a, b")
    store.append([row])
    with open(store.path, "a") as f:
        f.write("method,ordinary")
    assert len(store.load()) == 1 and store.load()[0]["error"] == "a, b"
    assert store.repair() == len("method,ordinary")
    store.append([row])
    assert len(store.load()) == 2


@pytest.mark.parametrize("line", ["method,sqrt,pade,,float64,16\n", "x\n", "a,b,c," * 20 + "d\n"])
def test_a_complete_line_that_is_not_a_row_is_an_error_naming_the_line(tmp_path, line):
    """A line that ends in a newline but has the wrong number of fields (hand-edited, or damaged on disk; a kill
    leaves only a torn last line, without a newline) is reported with its line number and what to do, as a row
    with a damaged number is. It used to be dropped silently: `svdgrad report` drew its tables without that
    row and said nothing."""
    store = ResultStore(tmp_path / "results.csv")
    store.reset()
    keys = [("method", "sqrt", m, "", "float64", 16, 0, "logspaced", 0) for m in ("exact", "pade")]
    store.append([cells._row(keys[0], grad_err=1e-15)])
    with open(store.path, "a") as f:
        f.write(line)
    store.append([cells._row(keys[1], grad_err=2e-15)])
    with pytest.raises(svdgrad.SvdgradError) as err:
        store.load()
    msg = str(err.value)
    assert "line 3" in msg and str(store.path) in msg and f"expected {len(cells.COLUMNS)}" in msg
    assert "--resume" in msg  # (the fix: delete that line, then resume)


def test_a_blank_line_holds_no_row_and_is_passed_over(tmp_path):
    store = ResultStore(tmp_path / "results.csv")
    store.reset()
    keys = [("method", "sqrt", m, "", "float64", 16, 0, "logspaced", 0) for m in ("exact", "pade")]
    store.append([cells._row(keys[0], grad_err=1e-15)])
    with open(store.path, "a") as f:
        f.write("\n")
    store.append([cells._row(keys[1], grad_err=2e-15)])
    assert store.done_keys() == set(keys)


def test_append_finishes_a_short_write(tmp_path, monkeypatch):
    """os.write may write fewer bytes than asked (a signal, a nearly full disk, a pipe-like file system): the rest
    is written too. The first byte count used to be taken as the whole, so the rows' tail was lost and the next
    append glued onto a half row."""
    from svdgrad.sweep import store as store_module

    real = os.write
    calls = []

    def short(fd, data):
        calls.append(len(data))
        return real(fd, bytes(data[:7]))
    monkeypatch.setattr(store_module.os, "write", short)
    store = ResultStore(tmp_path / "results.csv")
    store.reset()
    keys = [("method", "sqrt", m, "", "float64", 16, 0, "logspaced", 0) for m in ("exact", "pade", "taylor")]
    store.append([cells._row(k, grad_err=1e-15) for k in keys[:2]])
    store.append([cells._row(keys[2], grad_err=2e-15)])
    assert len(calls) > 2
    assert store.done_keys() == set(keys)
    assert store.path.read_text().endswith("\n")


# ---------------------------------------------------------------------------
# Report.
# ---------------------------------------------------------------------------

def test_report_rebuilds_the_same_report_from_saved_files(tiny_run, tmp_path, monkeypatch):
    for name in ("results.csv", "approx.csv", "grid.json", "runs.jsonl"):
        shutil.copy(tiny_run / name, tmp_path / name)

    def no_compute(*a, **k):
        raise AssertionError("svdgrad report must not recompute")

    monkeypatch.setattr(cells, "run_cell", no_compute)
    monkeypatch.setattr(runner, "run_cell", no_compute)
    monkeypatch.setattr(svdgrad, "sqrtm", no_compute)
    assert cli.main("report", ["--out", str(tmp_path)]) == 0
    assert (tmp_path / "REPORT.md").read_text() == (tiny_run / "REPORT.md").read_text()
    for png in tiny_run.glob("*.png"):
        assert (tmp_path / png.name).stat().st_size > 0


def test_a_report_of_a_stopped_sweep_says_it_is_incomplete(tiny_run, tmp_path, capsys):
    """A sweep killed midway leaves part of results.csv; `svdgrad report` drew its tables from those rows and
    said nothing, so a partial table read like a finished one. The report and the command now say how many of
    the rows the grid defines are missing, and how to compute them; a finished sweep's report says complete."""
    assert "- rows: all " in (tiny_run / "REPORT.md").read_text()
    for name in ("results.csv", "approx.csv", "grid.json", "runs.jsonl"):
        shutil.copy(tiny_run / name, tmp_path / name)
    lines = (tmp_path / "results.csv").read_text().splitlines(keepends=True)
    total = len(lines) - 1
    drop = [i for i, line in enumerate(lines) if i and (",log," in line or ",64," in line)][:7]
    (tmp_path / "results.csv").write_text("".join(line for i, line in enumerate(lines) if i not in drop))
    capsys.readouterr()
    assert cli.main("report", ["--out", str(tmp_path)]) == 0
    text = (tmp_path / "REPORT.md").read_text()
    assert f"**Incomplete: 7 of the {total} rows the grid defines are missing**" in text
    assert "--resume" in text
    out = capsys.readouterr()
    assert f"7 of the {total} rows the grid defines are missing" in out.out + out.err


def test_the_report_counts_the_baselines_the_sweeps_torch_ran(tiny_run, monkeypatch):
    """Which baselines a sweep runs depends on its torch (``torch.linalg.matrix_sqrth`` since 2.14): a report
    drawn under another torch counts those of the sweep, not its own."""
    rows, g, runs = tables.load(tiny_run), tables.load_grid(tiny_run), tables.load_runs(tiny_run)
    assert tables.missing_rows(rows, g, runs) == (0, len(rows))
    have = grid.available_baselines()
    other = (tuple(b for b in grid.BASELINES if b not in have[0]) + have[0],
             {b: "not in this torch" for b in have[0]})
    monkeypatch.setattr(grid, "available_baselines", lambda: other)
    monkeypatch.setattr(runner, "available_baselines", lambda: other)
    assert tables.missing_rows(rows, g, runs) == (0, len(rows))


def test_baseline_rows_a_finished_run_wrote_count_when_they_are_gone(tiny_run):
    """The last finished run in runs.jsonl says which baselines its torch ran; if results.csv has lost all of
    their rows, the report counts them as missing (the rows alone would not show that they were ever there)."""
    rows, g, runs = tables.load(tiny_run), tables.load_grid(tiny_run), tables.load_runs(tiny_run)
    assert not [r for r in rows if r["study"] == "baseline"]
    runs[-1] = dict(runs[-1], skipped_baselines={})  # as if that run's torch had every baseline
    n_base = len(g.matrices()) * len(g.dtypes) * len(grid.BASELINES)
    assert tables.missing_rows(rows, g, runs) == (n_base, len(rows) + n_base)
    assert tables.completeness_text(n_base, len(rows) + n_base).startswith(
        f"**Incomplete: {n_base} of the {len(rows) + n_base} rows the grid defines are missing**")


# ---------------------------------------------------------------------------
# CLI errors.
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("argv, message", [
    (["sweep", "--methods", "exact,nope"], "exact, ordinary, truncated, topn, taylor, pade, newton_schulz"),
    (["sweep", "--dtypes", "float16"], "float32, float64"),
    (["sweep", "--sizes", "17"], "--sizes"),
    (["sweep", "--sizes", "sixteen"], "integers"),
    (["sweep", "--kappas", "13"], "--kappas"),
    (["sweep", "--spectra", "flat"], "logspaced"),
    (["sweep", "--seeds", ""], "--seeds"),
    (["sweep", "--jobs", "0"], "--jobs"),
    (["sweep", "--backend", "dask"], "loky"),
    (["sweep", "--frobnicate"], "unrecognized"),
    (["report", "--out", "/nonexistent/sweep"], "results.csv"),
])
def test_bad_arguments_give_a_clear_message(argv, message, capsys, monkeypatch, tmp_path):
    def must_not_run(*a, **k):
        raise AssertionError("a bad command line must not start a sweep")

    monkeypatch.setattr(runner, "run_sweep", must_not_run)
    monkeypatch.chdir(tmp_path)  # nothing may be written under the repository's reports/
    rc = cli.main(argv[0], argv[1:])
    err = capsys.readouterr().err
    assert rc != 0
    assert message in err, err


def test_console_script_dispatches_to_the_sweep():
    proc = subprocess.run([sys.executable, "-m", "svdgrad", "sweep", "--methods", "bogus"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "Unknown method 'bogus'" in proc.stderr and "newton_schulz" in proc.stderr


# ---------------------------------------------------------------------------
# Ray backend (optional extra).
# ---------------------------------------------------------------------------

def test_ray_backend_on_a_local_instance(tmp_path, capfd):
    ray = pytest.importorskip("ray")
    try:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": dict(runner.THREAD_ENV)})
        args = ["--methods", "exact,ordinary", "--functions", "sqrt", "--sizes", "64", "--kappas", "6",
                "--spectra", "logspaced", "--seeds", "0,1", "--no-progress", "--no-report"]
        capfd.readouterr()  # what the test's own ray.init printed
        assert cli.main("sweep", args + ["--backend", "ray", "--jobs", "2", "--out", str(tmp_path / "ray")]) == 0
        err = capfd.readouterr().err
        # a successful Ray sweep is quiet: no 'context' argument or worker warnings from Ray
        assert "WARNING" not in err and "context" not in err, err
        assert cli.main("sweep", args + ["--jobs", "1", "--out", str(tmp_path / "local")]) == 0
    finally:
        ray.shutdown()
    assert _stable(read_rows(tmp_path / "ray" / runner.RESULTS)) == \
        _stable(read_rows(tmp_path / "local" / runner.RESULTS))


# ---------------------------------------------------------------------------
# The function axis, the features route, the options study, the baselines.
# ---------------------------------------------------------------------------

def test_grid_pairs_functions_with_their_valid_methods_only():
    g = default_grid()
    for n, _, sp, s in g.matrices()[:: 37]:
        for f, m in g.pairs(n, sp, s):
            assert m.partition(":")[0] in svdgrad.methods(f)
            assert not (f in grid.UNBOUNDED_AT_ZERO and sp == "rank_deficient")
            cap = g.size_cap(m)
            assert cap is None or n <= cap
    # every function is measured with every method valid for it somewhere in the grid
    seen = {p for n, _, sp, s in g.matrices() for p in g.pairs(n, sp, s)}
    assert seen == {(f, m) for f in g.functions for m in g.methods if m in svdgrad.methods(f)}
    # the options study covers the settings the issue names
    for spec in ("newton_schulz:iterations=3", "newton_schulz:iterations=10,backward=lyapunov",
                 "mpa:num_degree=3,den_degree=3", "mpa:num_degree=8,den_degree=8", "mtp:degree=20",
                 "power_iteration:iterations=19", "taylor:degree=9"):
        assert spec in g.option_specs
        assert svdgrad.method_spec(svdgrad.get_method(spec)) == spec


def test_baseline_is_planned_only_when_torch_has_it(monkeypatch):
    g = default_grid().narrow(methods=["exact"], functions=["sqrt"], sizes=[16], log10_kappas=[2],
                              spectra=["logspaced"], seeds=[0])
    have, skipped = grid.available_baselines()
    keys = runner.matrix_keys(g, 16, 2, "logspaced", 0)
    assert any(k[0] == "baseline" for k in keys) == bool(have)
    assert set(have) | set(skipped) == set(grid.BASELINES)
    monkeypatch.setattr(grid, "BASELINES", ("torch.linalg.no_such_function",))
    assert grid.available_baselines() == ((), {"torch.linalg.no_such_function":
                                               f"torch {torch.__version__} has no torch.linalg.no_such_function"})


def test_tiny_run_measures_each_function_route_and_setting(tiny_run):
    rows = read_rows(tiny_run / runner.RESULTS)
    by = {row_key(r): r for r in rows}
    assert not [r for r in rows if r["error"]]
    # log against its own 50-digit reference at n = 16; float64 exact of log is the reference at n = 64
    r = by[("method", "log", "exact", "", "float64", 16, 8, "logspaced", 0)]
    assert r["reference"] == cells.REF_MPMATH and float(r["grad_err"]) < 1e-6
    assert by[("method", "log", "exact", "", "float64", 64, 8, "logspaced", 0)]["reference"] == cells.REF_SELF
    assert not any(k[1] == "log" and k[7] == "rank_deficient" for k in by)  # log(0) is infinite
    # the features route: mpmath at n = 16, float64 gram_sqrtm is the reference at n = 64
    r = by[("gram", "sqrt", cells.GRAM_ROUTE, "", "float64", 16, 8, "logspaced", 0)]
    assert r["reference"] == cells.REF_MPMATH and float(r["grad_err"]) < 1e-8
    assert by[("gram", "sqrt", cells.GRAM_ROUTE, "", "float64", 64, 8, "logspaced", 0)]["reference"] == cells.REF_SELF
    # float32 at κ(X Xᵀ) = 1e8: forming Σ loses what the SVD of X keeps
    route = float(by[("gram", "sqrt", cells.GRAM_ROUTE, "", "float32", 16, 8, "logspaced", 0)]["grad_err"])
    sigma = float(by[("gram", "sqrt", cells.GRAM_VIA_SIGMA, "", "float32", 16, 8, "logspaced", 0)]["grad_err"])
    assert route < sigma
    # the options study: Newton–Schulz settings of the grid (only methods the grid lists)
    opts = {r["method"] for r in rows if r["study"] == "option"}
    assert "newton_schulz:iterations=3" in opts and "newton_schulz:backward=lyapunov" in opts
    assert all(o.partition(":")[0] in ("exact", "ordinary", "newton_schulz") for o in opts)


def test_report_has_a_section_per_function_and_the_accuracy_cost_figure(tiny_run):
    text = (tiny_run / "REPORT.md").read_text()
    assert "`logm`" in text and "`inv_sqrtm`" not in text.split("## Grid")[1].split("## How")[0]
    assert "features route" in text and "Method settings" in text
    assert "Baselines outside svdgrad" in text
    if not grid.available_baselines()[0]:
        assert "Skipped: `torch.linalg.matrix_sqrth`" in text
    for name in ("log_grad_error_n16.png", "log_grad_error_n64.png", "gram.png", "accuracy_cost_n16.png",
                 "accuracy_cost_n64.png"):
        assert (tiny_run / name).stat().st_size > 0, name
    pts = tables.accuracy_cost(tables.load(tiny_run), 64)
    assert {p["dtype"] for p in pts} == {"float32", "float64"}
    assert all(p["time"] > 0 for p in pts)


def test_a_huge_kappa_range_is_refused_before_it_is_built(capsys):
    """--kappas 0-1000000000 built the whole list (OOM-killed); 0-2000000 printed a 16 MB message."""
    for text in ("0-20000", "0-1000000000", "0-2000000"):  # (a small one first: the cap's mutant then fails, not OOMs)
        assert cli.main("sweep", ["--methods", "exact", "--kappas", text, "--out", "/nonexistent/x"]) == 2
        err = capsys.readouterr().err
        assert "at most 10000 values" in err and len(err) < 1000
