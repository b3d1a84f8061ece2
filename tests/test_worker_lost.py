"""A worker process of a long job that dies (kill -9, the OOM killer, a lost Ray node).

`svdgrad sweep` and `svdgrad study` on loky, and `svdgrad study` on Ray (after Ray's own retries), ended in
a 40-line traceback of joblib's or Ray's internals, with nothing saying that the finished work is kept or how
to finish it. Each now ends in one line, exit code 1, with the command that resumes; the resume finishes the
job. The loky cases kill a real worker; the Ray case replaces Ray's calls by ones that fail as a lost worker
makes them fail (nothing here starts a Ray instance).
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from svdgrad.sweep.store import read_rows, row_key

from .helpers import children

ROOT = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""), PYTHONUNBUFFERED="1")
ENV.pop("RAY_ADDRESS", None)


def _kill_a_worker_after(proc: subprocess.Popen, marker: str, settle: float) -> str:
    """Read ``proc``'s stdout until a line containing ``marker``, wait ``settle`` seconds, then kill -9 one of
    its loky workers; stderr after the process ends."""
    seen = []
    deadline = time.monotonic() + 120
    for line in proc.stdout:
        seen.append(line)
        if marker in line:
            break
        assert time.monotonic() < deadline, "".join(seen)
    workers = []
    while not workers and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
        workers = children(proc.pid, b"LokyProcess")
    assert proc.poll() is None, "the job ended before a worker could be killed:\n" + "".join(seen)
    assert workers, "no loky worker to kill:\n" + "".join(seen)
    time.sleep(settle)
    assert proc.poll() is None, "the job ended before a worker could be killed:\n" + "".join(seen)
    os.kill(workers[0], signal.SIGKILL)
    rest, err = proc.communicate(timeout=120)
    return err


def _one_line_with_the_resume_command(err: str, command: str) -> list[str]:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert "Traceback" not in err, err
    assert len(lines) == 1, err
    assert "worker" in lines[0] and "SIGKILL" in lines[0], err
    assert f"svdgrad {command}: error:" in lines[0], err
    return shlex.split(lines[0].split("resume with: ", 1)[1])


def test_a_killed_sweep_worker_ends_in_one_line_and_the_resume_finishes_the_grid(tmp_path):
    out = tmp_path / "sweep"
    argv = ["--methods", "exact", "--functions", "sqrt", "--dtypes", "float64", "--sizes", "16,256", "--kappas",
            "2,4,6,8", "--spectra", "logspaced", "--seeds", "0", "--jobs", "2", "--no-report", "--out", str(out)]
    proc = subprocess.Popen([sys.executable, "-m", "svdgrad", "sweep", *argv], cwd=ROOT, env=ENV, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    err = _kill_a_worker_after(proc, "svdgrad sweep:", 1.0)  # (the first line: inside an n = 256 cell then)
    assert proc.returncode == 1, err
    resume = _one_line_with_the_resume_command(err, "sweep")
    assert resume[:2] == ["svdgrad", "sweep"] and resume[-1] == "--resume" and str(out) in resume, err
    before = read_rows(out / "results.csv")
    done = subprocess.run([sys.executable, "-m", *resume], cwd=ROOT, env=ENV, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    after = read_rows(out / "results.csv")
    keys = [row_key(r) for r in after]
    assert len(keys) == len(set(keys)) and {r["log10_kappa"] for r in after} == {"2", "4", "6", "8"}
    assert {r["n"] for r in after} == {"16", "256"}
    assert all(r in after for r in before)


def test_a_killed_study_worker_ends_in_one_line_and_the_resume_finishes_the_study(tmp_path):
    out = tmp_path / "study"
    argv = ["hybrid", "--quick", "--seeds", "1", "--jobs", "2", "--out", str(out)]
    proc = subprocess.Popen([sys.executable, "-m", "svdgrad", "study", *argv], cwd=ROOT, env=ENV, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    err = _kill_a_worker_after(proc, " done (", 0.0)  # (the first finished run: 9 to go, both workers busy)
    assert proc.returncode == 1, err
    resume = _one_line_with_the_resume_command(err, "study")
    assert resume[:3] == ["svdgrad", "study", "hybrid"] and resume[-1] == "--resume" and str(out) in resume, err
    done = subprocess.run([sys.executable, "-m", *resume], cwd=ROOT, env=ENV, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    planned = sum(json.loads((out / "study.json").read_text())["seeds_by_protocol"].values())
    assert len(list(out.glob("runs/*/seed*/summary.json"))) == planned
    assert f"{planned} of the {planned} planned runs" in (out / "REPORT.md").read_text()


def test_a_lost_ray_worker_in_a_study_ends_in_one_line_with_the_resume_command(tmp_path, monkeypatch, capsys):
    """Ray retries a task whose worker died (3 times by default); after that ray.get raises one of Ray's
    errors (WorkerCrashedError, NodeDiedError, ...), which the study let through as a traceback."""
    ray = pytest.importorskip("ray")
    from svdgrad.train import runner as train_runner
    from svdgrad.train.cli import main as cli_main

    results = []

    class Remote:
        def __init__(self, fn):
            self.fn = fn

        def remote(self, *args):
            results.append(args)
            return len(results) - 1

    def get(ref):
        if ref >= 1:  # the second run's worker is lost for good
            raise ray.exceptions.WorkerCrashedError()
        return self_run(*results[ref])

    def self_run(fn, label, d):
        return train_runner._outcome(label, fn(d))

    monkeypatch.setattr(ray, "is_initialized", lambda: True)  # (an instance "exists": none is started)
    monkeypatch.setattr(ray, "remote", lambda **kw: Remote)
    monkeypatch.setattr(ray, "wait", lambda pending, num_returns=1: (pending[:1], pending[1:]))
    monkeypatch.setattr(ray, "get", get)
    out = tmp_path / "study"
    rc = cli_main("study", ["hybrid", "--quick", "--backend", "ray", "--jobs", "1", "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 1, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert "Ray worker" in lines[0] and "WorkerCrashedError" in lines[0], err
    assert lines[0].endswith(f"resume with: svdgrad study hybrid --quick --backend ray --jobs 1 --out {out} "
                             f"--resume"), err
    finished = list(out.rglob("summary.json"))
    assert len(finished) == 1  # the run that finished before is kept


def test_a_run_that_raises_in_a_ray_worker_is_not_called_a_lost_worker(tmp_path, monkeypatch, capsys):
    """A Ray task that raised (RayTaskError) is the run's own error, not a lost worker: it is not reported
    as one, and an SvdgradError inside it still ends as the study's error message (exit 2)."""
    ray = pytest.importorskip("ray")
    from svdgrad import SvdgradError
    from svdgrad.train.cli import main as cli_main

    class Remote:
        def __init__(self, fn):
            pass

        def remote(self, *args):
            return 0

    def get(ref):
        cause = SvdgradError("Expected finite images; received a NaN.")
        raise ray.exceptions.RayTaskError("run_one", "Traceback: ...", cause).as_instanceof_cause()

    monkeypatch.setattr(ray, "is_initialized", lambda: True)
    monkeypatch.setattr(ray, "remote", lambda **kw: Remote)
    monkeypatch.setattr(ray, "wait", lambda pending, num_returns=1: (pending[:1], pending[1:]))
    monkeypatch.setattr(ray, "get", get)
    rc = cli_main("study", ["hybrid", "--quick", "--backend", "ray", "--jobs", "1", "--out", str(tmp_path / "s")])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "Expected finite images" in err and "worker" not in err.lower(), err
