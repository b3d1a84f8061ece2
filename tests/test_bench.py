"""`svdgrad bench` on the tiny grid: it runs, writes the report, and replaces nothing unasked."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from svdgrad.bench import cli, grid, runner
from svdgrad.bench import report as bench_report

from .helpers import lock_held_elsewhere

ROOT = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))


def _bench(argv):
    threads = torch.get_num_threads()
    try:
        return cli.main("bench", argv)
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    assert _bench(["--profile", "quick", "--threads", "1", "--out", str(out)]) == 0
    return out


def test_bench_quick_writes_report(quick_run):
    tmp_path = quick_run
    report = (tmp_path / "REPORT.md").read_text()
    assert "### Targets" in report and "Newton–Schulz" in report
    assert (tmp_path / "figures" / "ratios_cpu.png").stat().st_size > 0
    assert (tmp_path / "figures" / "time_vs_n_cpu.png").stat().st_size > 0
    raw = json.loads((tmp_path / "raw" / "pytest_benchmark_cpu.json").read_text())
    assert raw["machine_info"]["torch_threads"] == 1
    labels = {b["extra_info"]["label"] for b in raw["benchmarks"]}
    assert {v.label for v in grid.VARIANTS} | set(grid.BASELINES) <= labels
    targets = json.loads((tmp_path / "raw" / "targets_cpu.json").read_text())
    for t in grid.TARGETS:
        assert t.variant in targets["dtypes"]["float64"]["times"]
    run = json.loads((tmp_path / "raw" / "run_cpu.json").read_text())
    assert run["torch_threads"] == 1 and run["load"]["start"] is not None


def test_bench_refuses_to_replace_results_without_overwrite(quick_run, capsys):
    before = {p.name: p.read_bytes() for p in (quick_run / "raw").iterdir()}
    rc = _bench(["--profile", "quick", "--threads", "1", "--out", str(quick_run)])
    err = capsys.readouterr().err
    assert rc == 2
    assert "refusing to replace" in err and "--overwrite" in err and "--report-only" in err
    assert {p.name: p.read_bytes() for p in (quick_run / "raw").iterdir()} == before
    # Redrawing the report from the raw files is what --report-only is for: allowed.
    assert _bench(["--report-only", "--out", str(quick_run)]) == 0


def test_bench_product_code_never_uses_the_test_tree():
    assert runner.SUITE.parent == Path(cli.__file__).parent
    import ast

    for path in Path(cli.__file__).parent.glob("*.py"):
        tree = ast.parse(path.read_text())
        strings = [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)]
        docs = {ast.get_docstring(n) for n in ast.walk(tree) if isinstance(n, (ast.Module, ast.FunctionDef))}
        code_strings = [t for t in strings if t not in docs and t.strip() not in {d.strip() for d in docs if d}]
        assert not [t for t in code_strings if "tests" in t.split("/") or t == "tests"], path.name
        imports = [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
        imports += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
        assert not [m for m in imports if m.split(".")[0] == "tests"], path.name


def test_quick_profile_defaults_to_a_scratch_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    seen = {}

    def fake_run(device, threads, profile, out, **kw):
        seen["out"] = out
        return 1  # stop before the report

    monkeypatch.setattr(runner, "run", fake_run)
    assert _bench(["--profile", "quick"]) == 1
    out = seen["out"]
    assert out.parent == Path("runs") and out.name.startswith("bench-quick-")
    assert f"-> {out}" in capsys.readouterr().out
    assert cli.parser().parse_args([]).out is None and cli.DEFAULT_OUT == Path("reports") / "performance"


def test_bench_methods_take_specs(tmp_path):
    vs = grid.variants(["exact", "taylor:degree=9", "newton_schulz:iterations=3,backward=autograd", "taylor:degree=100"])
    import svdgrad

    ns = svdgrad.method_spec(svdgrad.get_method("newton_schulz", iterations=3, backward="autograd"))
    assert [v.label for v in vs] == ["exact", "taylor:degree=9", ns, "taylor"]
    assert vs[1].method == "taylor" and vs[1].options == {"degree": 9}
    assert [t.variant for t in grid.targets_for(vs)] == ["exact", "taylor"]
    assert cli._split_methods("exact,newton_schulz:iterations=3,backward=autograd") == [
        "exact", "newton_schulz:iterations=3,backward=autograd"]
    from svdgrad.bench import cases

    inputs = cases.Inputs(2, 8, "float64", "cpu")
    cases.sqrtm_case(inputs, "taylor:degree=9", "forward_backward")()
    assert inputs.leaf.grad is not None and torch.isfinite(inputs.leaf.grad).all()


def test_bench_rejects_an_unknown_method(capsys):
    assert _bench(["--methods", "exact,nope", "--out", "/nonexistent/never-written"]) == 2
    err = capsys.readouterr().err
    assert "Unknown method 'nope'" in err and "taylor" in err


def test_missing_pytest_benchmark_names_the_extra(monkeypatch, tmp_path, capsys):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "pytest_benchmark" else real(name, *a))
    assert _bench(["--profile", "quick", "--out", str(tmp_path)]) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and 'svdgrad[bench]' in err[0]
    assert not (tmp_path / "raw").exists()


def test_a_second_benchmark_into_the_same_folder_is_refused(tmp_path, capsys):
    """Another process holds the folder's lock: refused before anything runs or is written."""
    out = tmp_path / "bench"
    out.mkdir()
    with lock_held_elsewhere(out / cli.LOCK, env=ENV):
        assert _bench(["--profile", "quick", "--threads", "1", "--no-pytest", "--out", str(out)]) == 1
        err = capsys.readouterr().err
        assert "another benchmark is writing to" in err and "--out" in err
        assert not (out / "raw").exists() and not (out / "REPORT.md").exists()


def test_ctrl_c_of_the_bench_prints_one_line(tmp_path):
    out = tmp_path / "bench"
    proc = subprocess.Popen([sys.executable, "-m", "svdgrad", "bench", "--profile", "quick", "--threads", "1",
                             "--out", str(out)], cwd=tmp_path, env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True,
                            # a shell's background job (a CI launched with &) inherits SIGINT ignored; a terminal does not
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 60
        for line in proc.stdout:  # wait until the pytest-benchmark grid is running
            if line.startswith("$ ") or time.monotonic() > deadline:
                break
        time.sleep(1.0)
        os.killpg(proc.pid, signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 130, stderr
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in stderr + stdout, stderr
    assert lines[0].startswith("svdgrad bench: interrupted; start again with: svdgrad bench")
    assert lines[0].endswith(f"--out {out} --overwrite")


def test_bench_covers_the_function_family_and_its_ratio_targets(quick_run):
    raw = quick_run / "raw"
    py = json.loads((raw / "pytest_benchmark_cpu.json").read_text())
    kinds = {b["extra_info"]["kind"] for b in py["benchmarks"]}
    assert {"sqrtm", "function", "gram", "jvp", "small"} <= kinds
    labels = {b["extra_info"]["label"] for b in py["benchmarks"]}
    assert {"inv_sqrt[exact]", "log[exact]", "power[exact]", "mpa", "mtp", "gram_sqrtm", "sqrtm(X X^T)"} <= labels
    ratio = json.loads((raw / "ratio_targets_cpu.json").read_text())
    measured = {(t["case"], t["baseline"]) for g in ratio["groups"] for t in g["targets"]}
    assert measured == {(t.case, t.baseline) for t in grid.RATIO_TARGETS}
    report = (quick_run / "REPORT.md").read_text()
    assert "Speed targets of the function family" in report
    for t in grid.RATIO_TARGETS:
        assert t.name in report
    # every svdgrad.sqrtm case also ran with check=False, and only those get the column's ratio
    times = {name for g in ratio["groups"] for name in g["times"]}
    assert {t.case + grid.NO_CHECK for t in grid.RATIO_TARGETS if t.case.startswith("sqrtm[")} <= times
    rows = bench_report.ratio_target_rows(ratio)
    for r in rows:
        assert (r["ratio_nocheck"] is not None) == r["case"].startswith("sqrtm["), r
        if r["baseline"].startswith("sqrtm["):  # both sides unchecked: mpa against NS, not against checked NS
            assert r["baseline"] + grid.NO_CHECK in times


def test_ratio_targets_state_the_issue_limits():
    by = {(t.case, t.baseline, t.n, t.batch): t.limit for t in grid.RATIO_TARGETS}
    assert by[("sqrtm[exact]", "eigh_autograd", 64, 32)] == 1.0
    assert by[("sqrtm[exact]", "eigh_autograd", 256, 32)] == 1.0
    assert by[("sqrtm[exact]", "eigh_autograd", 16, 4096)] == 1.2
    assert by[("gram_sqrtm", "sqrtm(X X^T)", 256, 32)] == 2.0
    assert by[(grid.JVP_CASE, "sqrtm[exact]", 256, 32)] == 1.3
    assert by[("sqrtm[mpa]", "sqrtm[newton_schulz[manual]]", 256, 32)] == 1.3
    assert grid.RATIO_DTYPE == "float32"


def test_a_measuring_subprocess_exits_when_the_bench_is_killed(tmp_path):
    """kill -9 of `svdgrad bench` left its timing process running (re-parented), writing into the folder."""
    import signal
    import subprocess
    import sys
    import time

    code = ("import os, subprocess, sys, time\n"
            "env = dict(os.environ, SVDGRAD_BENCH_PARENT=str(os.getpid()))\n"
            "child = subprocess.Popen([sys.executable, '-c', 'import time; from svdgrad.bench.runner import "
            "exit_with_parent; exit_with_parent(0.1); time.sleep(60)'], env=env)\n"
            "print(child.pid, flush=True)\n"
            "time.sleep(60)\n")
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    child = int(parent.stdout.readline())
    time.sleep(3.0)  # (the child imports svdgrad and starts its watchdog)
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    os.kill(child, signal.SIGKILL)
    raise AssertionError("the measuring subprocess outlived the bench")


def test_bad_device_or_threads_are_refused_before_anything_runs(tmp_path, capsys):
    from svdgrad.bench import cli as bench_cli

    for args, match in ((["--device", "foo"], "a torch device"), (["--threads", "0"], "--threads >= 1"),
                        (["--device", "cuda"], "no CUDA GPU")):
        if args[-1] == "cuda" and torch.cuda.is_available():
            continue
        assert bench_cli.main("bench", [*args, "--out", str(tmp_path / "b")]) == 2
        assert match in capsys.readouterr().err
        assert not (tmp_path / "b").exists()


def test_an_interrupted_overwrite_keeps_the_earlier_results(tmp_path, monkeypatch, capsys):
    """An overwrite killed mid-way left new pytest JSON beside the old targets; --report-only drew them as one run."""
    from svdgrad.bench import cli as bench_cli, runner

    out = tmp_path / "b"
    (out / "raw").mkdir(parents=True)
    tag = runner.device_tag("cpu")
    old = {f"{k}_{tag}.json": f'{{"old": "{k}"}}' for k in ("pytest_benchmark", "targets", "run")}
    for name, text in old.items():
        (out / "raw" / name).write_text(text)

    def interrupted(device, threads, profile, where, **kw):
        (where / "raw").mkdir(parents=True, exist_ok=True)
        (where / "raw" / f"pytest_benchmark_{tag}.json").write_text('{"new": 1}')
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "run", interrupted)
    monkeypatch.setattr(runner, "missing_pytest_benchmark", lambda: None)
    assert bench_cli.main("bench", ["--out", str(out), "--overwrite"]) == bench_cli.EXIT_INTERRUPTED
    assert {p.name: p.read_text() for p in (out / "raw").iterdir()} == old
    assert "earlier results are kept" in capsys.readouterr().err and not (out / bench_cli.STAGING).exists()

    def finished(device, threads, profile, where, **kw):
        (where / "raw").mkdir(parents=True, exist_ok=True)
        for k in ("pytest_benchmark", "targets"):
            (where / "raw" / f"{k}_{tag}.json").write_text('{"new": 1}')
        return 0

    monkeypatch.setattr(runner, "run", finished)
    monkeypatch.setattr(bench_cli.report, "build", lambda o: o / "REPORT.md")
    assert bench_cli.main("bench", ["--out", str(out), "--overwrite"]) == 0
    got = {p.name: p.read_text() for p in (out / "raw").iterdir()}
    assert got[f"pytest_benchmark_{tag}.json"] == '{"new": 1}' and got[f"targets_{tag}.json"] == '{"new": 1}'
    assert not (out / bench_cli.STAGING).exists()


@pytest.mark.parametrize("report_only", [False, True], ids=["measure", "report-only"])
def test_the_next_benchmark_removes_a_killed_writers_temporaries(tmp_path, monkeypatch, report_only):
    """A kill -9 inside an atomic write (raw/targets_cpu.json, REPORT.md) left NAME.PID.tmp for good: the sweep
    removes those of dead writers from its folder, the bench did not.  A live writer's is kept."""
    from .test_io import dead_pid

    out = tmp_path / "b"
    (out / "raw").mkdir(parents=True)
    dead = dead_pid()
    tag = runner.device_tag("cpu")
    stale = [out / "raw" / f"targets_{tag}.json.{dead}.tmp", out / f"REPORT.md.{dead}.tmp"]
    live = out / "raw" / f"memory_{tag}.json.{os.getpid()}.tmp"  # (it may be writing it now)
    for p in stale + [live]:
        p.write_text("half")
    monkeypatch.setattr(runner, "run", lambda *a, **kw: 0)  # (the cleanup, not the measurements)
    monkeypatch.setattr(runner, "missing_pytest_benchmark", lambda: None)
    argv = ["--report-only"] if report_only else ["--profile", "quick", "--threads", "1"]
    assert _bench(argv + ["--out", str(out)]) == 0
    assert [p for p in stale if p.exists()] == [] and live.exists()


def test_a_directory_where_the_report_goes_is_a_clear_error(tmp_path, capsys):
    """`svdgrad bench --report-only` with a directory named REPORT.md (or a figure): a bare '[Errno 21]'
    traceback from os.replace.  Now exit 2 naming the path; the raw results are untouched."""
    from svdgrad.__main__ import main as svdgrad_main

    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "keep.json").write_text("{}")
    (tmp_path / "REPORT.md").mkdir()
    assert svdgrad_main(["bench", "--report-only", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "REPORT.md to be a file" in err and "is a directory" in err and "Traceback" not in err
    assert (tmp_path / "raw" / "keep.json").read_text() == "{}" and (tmp_path / "REPORT.md").is_dir()
