"""The Ray backend of the long jobs (`svdgrad sweep --backend ray`, `svdgrad study --backend ray`) under faults.

- an address where no Ray cluster answers: Ray's own ray.init retried for good (over 10 minutes seen,
  logging GCS time-outs); the sweep and the study must say so and stop;
- an address Ray cannot parse, given to a study in RAY_ADDRESS: a traceback;
- a Ray worker that dies in a sweep (kill -9, the OOM killer, a lost node): a traceback, with nothing
  saying that the finished chunks are kept and how to finish the grid.

All but one start no Ray instance: the faults are hit before one would be needed, or Ray's pool is replaced
by one that fails the way a dead worker makes it fail.  The last one runs a study on a real local Ray instance
and kills its workers (kill -9) more times than Ray retries a task.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from svdgrad.sweep import cli, runner
from svdgrad.sweep.store import read_rows, row_key

ray = pytest.importorskip("ray")

ROOT = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
ENV.pop("RAY_ADDRESS", None)

#: Two matrices, one method, one dtype: two cells of about a second each.
TWO = ["--methods", "exact", "--functions", "sqrt", "--dtypes", "float64", "--sizes", "16", "--kappas", "2,4",
       "--spectra", "logspaced", "--seeds", "0", "--jobs", "1", "--no-progress", "--no-report"]


def _closed_port() -> int:
    """A local port where nothing listens (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("how", ["--ray-address", "RAY_ADDRESS"])
def test_a_sweep_pointed_at_no_cluster_stops_with_a_clear_error(tmp_path, how):
    address = f"127.0.0.1:{_closed_port()}"
    env = dict(ENV)
    argv = [sys.executable, "-m", "svdgrad", "sweep", *TWO, "--backend", "ray", "--out", str(tmp_path / "s")]
    if how == "RAY_ADDRESS":
        env["RAY_ADDRESS"] = address
    else:
        argv += ["--ray-address", address]
    t0 = time.monotonic()
    try:
        proc = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=50)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the sweep still waited for a Ray cluster at {address} after 50 s")
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert f"{how}={address}" in proc.stderr and "ray start --head" in proc.stderr, proc.stderr
    assert time.monotonic() - t0 < 50


def test_a_sweep_pointed_at_no_cluster_leaves_its_folder_as_it_was(tmp_path):
    """The address is tried before a file is written: with --overwrite, a bad address used to empty the
    finished results.csv (and write a new grid.json) before it failed; in a new folder it left a header-only
    table behind."""
    out = tmp_path / "s"
    assert cli.main("sweep", TWO + ["--out", str(out)]) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    address = f"127.0.0.1:{_closed_port()}"
    for folder, extra in ((out, ["--overwrite"]), (tmp_path / "new", [])):
        proc = subprocess.run([sys.executable, "-m", "svdgrad", "sweep", *TWO, "--backend", "ray", "--ray-address",
                               address, "--out", str(folder), *extra], cwd=ROOT, env=ENV, capture_output=True,
                              text=True, timeout=50)
        assert proc.returncode == 2, proc.stderr
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    assert not [p.name for p in (tmp_path / "new").iterdir() if p.name != runner.LOCK]


@pytest.mark.parametrize("study, address", [("hybrid", "garbage"), ("hybrid", "127.0.0.1:{port}"),
                                            ("landscape", "127.0.0.1:{port}")])
def test_a_study_pointed_at_no_cluster_stops_with_a_clear_error(tmp_path, study, address):
    """... before study.json is written: a rerun with the address corrected (or another backend) used to be
    refused, the folder then holding "this study with 0 of 10 runs finished"."""
    address = address.format(port=_closed_port())
    argv = [sys.executable, "-m", "svdgrad", "study", study, "--quick", "--backend", "ray", "--out",
            str(tmp_path / "study")]
    try:
        proc = subprocess.run(argv, cwd=ROOT, env=dict(ENV, RAY_ADDRESS=address), capture_output=True, text=True,
                              timeout=50)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the study still waited for a Ray cluster at {address} after 50 s")
    assert proc.returncode == 2, proc.stderr
    assert f"RAY_ADDRESS={address}" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert not (tmp_path / "study" / "study.json").exists()


def test_a_ray_worker_that_dies_keeps_the_finished_chunks_and_says_how_to_resume(tmp_path, monkeypatch, capsys):
    import joblib

    real = joblib.Parallel
    calls = []

    class DyingPool:
        """Ray's pool: the first chunk runs (here, in this process), the second loses its worker."""

        def __init__(self, *args, **kwargs):
            pass

        def __call__(self, jobs):
            calls.append(1)
            if len(calls) > 1:
                raise ray.exceptions.ActorDiedError()
            with joblib.parallel_config(backend="sequential"):
                return real(n_jobs=1)(jobs)

    shutdowns = []
    monkeypatch.setattr(runner, "RAY_CHUNK", 1)  # one matrix per chunk (jobs 1)
    from ray.util.joblib import register_ray

    # as if this sweep had started Ray (joblib's "ray" backend registered, no instance started)
    monkeypatch.setattr(runner, "_init_ray", lambda address: register_ray() or True)
    monkeypatch.setattr(joblib, "Parallel", DyingPool)
    monkeypatch.setattr(ray, "shutdown", lambda *a, **k: shutdowns.append(1))
    out = tmp_path / "s"
    rc = cli.main("sweep", TWO + ["--backend", "ray", "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 1, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert "Ray worker" in err and "ActorDiedError" in err, err
    assert lines[0].endswith(f"resume with: svdgrad sweep {' '.join(TWO)} --backend ray --out {out} --resume"), err
    assert shutdowns == [1]  # the Ray instance this sweep started is shut down on the failure too
    first = read_rows(out / runner.RESULTS)
    assert first and {r["log10_kappa"] for r in first} == {"2"}  # the finished chunk is kept
    monkeypatch.setattr(joblib, "Parallel", real)
    assert cli.main("sweep", TWO + ["--out", str(out), "--resume"]) == 0  # and the grid is finished by --resume
    after = read_rows(out / runner.RESULTS)
    assert {r["log10_kappa"] for r in after} == {"2", "4"} and len({row_key(r) for r in after}) == len(after)


def _session_pids(sid: int) -> dict[int, str]:
    """pid -> command line of every process in session ``sid`` (a Ray instance started by a driver runs there)."""
    ps = subprocess.run(["ps", "-eo", "pid=,sid=,args="], capture_output=True, text=True).stdout
    found = {}
    for line in ps.splitlines():
        parts = line.split(None, 2)
        if len(parts) == 3 and parts[1] == str(sid) and int(parts[0]) != os.getpid():
            found[int(parts[0])] = parts[2]
    return found


def _kill_session(sid: int) -> None:
    for pid in _session_pids(sid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_a_real_ray_worker_killed_beyond_ray_s_retries_ends_the_study_in_one_line_and_resume_finishes_it(tmp_path):
    """On a real local Ray instance: every worker that runs a study's task is killed (kill -9, as the OOM killer
    does). Ray runs a task 4 times (3 retries); then the study must stop with one line naming the lost worker and
    the command that resumes, shut its Ray instance down, and the printed command must finish the study.
    (The other Ray tests replace Ray's calls; this one kills real worker processes.)"""
    out = tmp_path / "study"
    cmd = [sys.executable, "-m", "svdgrad", "study", "hybrid", "--quick", "--backend", "ray", "--jobs", "1",
           "--out", str(out)]
    proc = subprocess.Popen(cmd, env=ENV, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    killed = []
    try:
        deadline = time.monotonic() + 180
        while proc.poll() is None and time.monotonic() < deadline:
            for pid, args in _session_pids(proc.pid).items():
                if args.startswith("ray::_labelled"):  # (Ray's title for a worker running the study's task)
                    try:
                        os.kill(pid, signal.SIGKILL)
                        killed.append(pid)
                    except ProcessLookupError:
                        pass
            time.sleep(0.1)
        _, err = proc.communicate(timeout=60)
    finally:
        _kill_session(proc.pid)
        proc.wait()
    assert proc.returncode == 1, err[-3000:]
    assert len(set(killed)) >= 4, killed  # the first attempt and Ray's 3 retries
    lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith("[svdgrad study]")]
    assert len(lines) == 1 and "Traceback" not in err, err[-3000:]
    assert lines[0].startswith("svdgrad study: error: a Ray worker was lost (WorkerCrashedError"), lines[0]
    resume = lines[0].split("resume with: ", 1)[1]
    assert resume == f"svdgrad study hybrid --quick --backend ray --jobs 1 --out {out} --resume", resume
    # the Ray instance the study started is gone (its processes were in the driver's session)
    time.sleep(1)
    assert not [a for a in _session_pids(proc.pid).values() if "ray" in a], _session_pids(proc.pid)
    argv = shlex.split(resume)
    res = subprocess.run([sys.executable, "-m", *argv], env=ENV, cwd=ROOT, capture_output=True, text=True,
                         timeout=300, start_new_session=True)
    assert res.returncode == 0, res.stderr[-3000:]
    planned = sum(json.loads((out / "study.json").read_text())["seeds_by_protocol"].values())
    assert len(list(out.glob("runs/*/seed*/summary.json"))) == planned
