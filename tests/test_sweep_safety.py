"""What `svdgrad sweep` must never do, tested by injecting the fault for real.

- replace finished results without --resume / --overwrite (issue 8 §5);
- write a smoke run (--quick) into reports/ (issue 8 §5);
- leave a headerless results.csv after a tear inside the header (issue 8 §6);
- let two writers hold one output directory (issue 8 §6);
- start more workers than matrices or cores (issue 8 §6);
- leave workers running after a kill -9 of the sweep (issue 8 §6);
- answer Ctrl-C with a traceback instead of the command that resumes (issue 8 §6).
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

from svdgrad.sweep import cli, runner
from svdgrad.sweep.cells import COLUMNS
from svdgrad.sweep.store import ResultStore, read_rows, row_key

from .helpers import children as _children
from .helpers import lock_held_elsewhere

ROOT = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
HEADER = ",".join(COLUMNS) + "\n"

#: One matrix, one method, one dtype: the cheapest sweep there is (~1 s).
ONE = ["--methods", "exact", "--functions", "sqrt", "--dtypes", "float64", "--sizes", "16", "--kappas", "2", "--spectra", "logspaced",
       "--seeds", "0", "--jobs", "1", "--no-progress", "--no-report"]


def _sweep(argv, capsys=None):
    rc = cli.main("sweep", list(argv))
    captured = capsys.readouterr() if capsys is not None else None
    return rc, captured


def _alive(pids) -> list[int]:
    alive = []
    for p in pids:
        try:
            state = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            alive.append(p)
    return alive


# ---------------------------------------------------------------------------
# §5: nothing overwritten without being asked.
# ---------------------------------------------------------------------------

def test_finished_results_are_not_replaced_without_resume_or_overwrite(tmp_path, capsys):
    out = tmp_path / "sweep"
    assert _sweep(ONE + ["--out", str(out)])[0] == 0
    before = (out / "results.csv").read_bytes()
    assert len(read_rows(out / "results.csv")) > 0

    # The README's partial-grid example, aimed at a folder with results: refused, nothing touched.
    rc, cap = _sweep(["--methods", "exact,pade", "--functions", "sqrt", "--dtypes", "float32", "--sizes", "16", "--kappas", "0",
                      "--spectra", "logspaced", "--seeds", "0", "--jobs", "1", "--no-progress",
                      "--out", str(out)], capsys)
    assert rc == 2
    assert "already holds results" in cap.err and "--overwrite" in cap.err and "--resume" in cap.err
    assert (out / "results.csv").read_bytes() == before

    # --resume keeps the rows; --overwrite replaces them, as asked.
    assert _sweep(ONE + ["--resume", "--out", str(out)])[0] == 0
    assert (out / "results.csv").read_bytes() == before
    runs = [json.loads(line) for line in (out / "runs.jsonl").read_text().splitlines()]
    assert [r["resume"] for r in runs] == [False, True]  # the resumed run is logged after the first one
    assert all(set(r["host"]) == {"cpu", "torch", "svdgrad", "commit", "dirty"} for r in runs)  # (host and commit)
    assert _sweep(["--methods", "pade"] + ONE[2:] + ["--overwrite", "--out", str(out)])[0] == 0
    assert {r["method"] for r in read_rows(out / "results.csv") if r["study"] == "method"} == {"pade"}
    assert len((out / "runs.jsonl").read_text().splitlines()) == 1  # a fresh run starts the log again


@pytest.mark.parametrize("argv", [
    ["--methods", "exact", "--overwrite", "--out", "old"],
    ["--overwrite", "--methods=exact", "--out=old", "--resume"],
    ["--methods", "exact"],
])
def test_the_resume_command_never_carries_overwrite(argv, tmp_path):
    """The printed command must add to the folder's rows: with --overwrite it would discard them."""
    words = shlex.split(cli.resume_command(argv, tmp_path / "sweep"))
    assert "--overwrite" not in words and words.count("--resume") == 1
    assert words[-3:] == ["--out", str(tmp_path / "sweep"), "--resume"] and "old" not in words
    assert words[:2] == ["svdgrad", "sweep"] and any(w in ("exact", "--methods=exact") for w in words)


@pytest.mark.parametrize("command,flags", [("sweep", []), ("sweep", ["--resume"]), ("report", [])],
                         ids=["sweep", "sweep-resume", "report"])
@pytest.mark.parametrize("content", [b"epoch,accuracy\n1,0.5\n", bytes(range(256)) * 4],
                         ids=["another-header", "garbage"])
def test_a_results_csv_that_is_not_a_results_table_is_not_replaced_without_overwrite(tmp_path, capsys, command,
                                                                                     flags, content):
    """Someone else's results.csv (another header, or garbage from its first line) in the chosen folder: refused
    like finished results, and only --overwrite (or another --out) is offered.  The refusal offered --resume,
    which then failed; that failure (and `svdgrad report`) said "Delete that line and run ... --resume", which
    leaves another line that is not the header in its place."""
    out = tmp_path / "sweep"
    out.mkdir()
    (out / "results.csv").write_bytes(content)
    rc, err = _sweep_or_report(command, out, capsys, flags)
    assert rc == 2, err
    assert f"{out / 'results.csv'}" in err and "--overwrite" in err and "--out" in err
    assert "Delete that line" not in err and "--resume" not in err, err
    assert (out / "results.csv").read_bytes() == content
    if command == "sweep" and not flags:  # and the advice works
        assert _sweep(ONE + ["--overwrite", "--out", str(out)])[0] == 0
        assert read_rows(out / "results.csv")


def test_resume_and_overwrite_together_are_refused(tmp_path, capsys):
    rc, cap = _sweep(ONE + ["--resume", "--overwrite", "--out", str(tmp_path)], capsys)
    assert rc == 2 and "--overwrite" in cap.err
    assert not (tmp_path / "results.csv").exists()


def test_quick_writes_to_a_new_scratch_folder_not_reports(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    narrow = ["--quick", "--methods", "exact", "--functions", "sqrt", "--dtypes", "float64", "--kappas", "0", "--spectra", "logspaced",
              "--seeds", "0", "--jobs", "1", "--no-progress", "--no-report"]
    outs = []
    for _ in range(2):  # the second smoke run neither refuses nor overwrites the first
        rc, cap = _sweep(narrow, capsys)
        assert rc == 0, cap.err
        line = [ln for ln in cap.out.splitlines() if ln.startswith("svdgrad sweep: results in ")][-1]
        outs.append(Path(line.rsplit(" ", 1)[1]))
    assert outs[0] != outs[1]
    for out in outs:
        assert out.parent == Path("runs") and out.name.startswith("sweep-quick-")
        assert len(read_rows(out / "results.csv")) > 0
    assert not (tmp_path / "reports").exists()
    rc, cap = _sweep(narrow + ["--resume"], capsys)
    assert rc == 2 and "--out" in cap.err


def test_runs_folder_is_ignored_by_git():
    proc = subprocess.run(["git", "check-ignore", "-q", "runs/sweep-quick-x/results.csv"], cwd=ROOT)
    assert proc.returncode == 0


# ---------------------------------------------------------------------------
# §6: a header torn by a kill.
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("torn", [HEADER[:7], HEADER[:-1], ""])
def test_repair_rewrites_a_torn_header(tmp_path, torn):
    store = ResultStore(tmp_path / "results.csv")
    store.path.write_text(torn)
    store.repair()
    assert store.path.read_text() == HEADER
    assert store.load() == []


def test_resume_and_report_work_after_a_tear_inside_the_header(tmp_path):
    out = tmp_path / "sweep"
    out.mkdir()
    (out / "results.csv").write_text(HEADER[:23])  # killed inside the header: no newline at all
    assert cli.main("sweep", ONE + ["--resume", "--out", str(out)]) == 0
    text = (out / "results.csv").read_text()
    assert text.startswith(HEADER)
    rows = read_rows(out / "results.csv")
    assert rows and len({row_key(r) for r in rows}) == len(rows)
    assert cli.main("report", ["--out", str(out)]) == 0
    assert (out / "REPORT.md").is_file()


# ---------------------------------------------------------------------------
# §6: one writer per output directory (filelock).
# ---------------------------------------------------------------------------

def test_a_second_writer_is_refused_with_a_clear_message(tmp_path, capsys):
    out = tmp_path / "sweep"
    out.mkdir()
    with lock_held_elsewhere(out / runner.LOCK, env=ENV):
        rc, cap = _sweep(ONE + ["--out", str(out)], capsys)
        assert rc == 1
        assert "another sweep is writing to" in cap.err and "--out" in cap.err
        assert not (out / "results.csv").exists()
    # The holder is gone (its lock with it): the same command now runs, and the lock file stays in
    # place (it is never unlinked, so a third writer cannot lock a different file of the same name).
    assert _sweep(ONE + ["--out", str(out)])[0] == 0
    assert (out / runner.LOCK).exists()


# ---------------------------------------------------------------------------
# §6: --jobs is bounded.
# ---------------------------------------------------------------------------

def test_jobs_are_bounded_by_matrices_and_cores(tmp_path, capsys):
    rc, cap = _sweep(ONE + ["--jobs", "32", "--out", str(tmp_path)], capsys)
    assert rc == 0
    assert "--jobs 32 reduced to 1 (1 matrix to compute)" in cap.out
    run = json.loads((tmp_path / runner.RUNS).read_text().splitlines()[-1])
    assert run["jobs"] == 1
    cores = runner.usable_cores()
    assert runner.effective_jobs(32, 1000, "loky") == (cores, f"{cores} usable {'core' if cores == 1 else 'cores'}")
    assert runner.effective_jobs(32, 1000, "ray") == (32, "")  # a cluster has more cores than this machine
    assert runner.effective_jobs(2, 1000, "loky")[0] == min(2, cores)


# ---------------------------------------------------------------------------
# §6: workers die with the sweep; Ctrl-C says how to resume.
# ---------------------------------------------------------------------------

def test_kill_9_of_the_sweep_leaves_no_worker_behind(tmp_path):
    # n = 256 cells take many seconds each, so the workers are busy when the sweep is killed: without
    # the parent watchdog they finish their cell (and linger) long after the sweep is gone.
    out = tmp_path / "sweep"
    proc = subprocess.Popen([sys.executable, "-m", "svdgrad", "sweep", "--sizes", "256", "--kappas", "4,8",
                             "--spectra", "logspaced", "--seeds", "0", "--jobs", "2", "--no-progress",
                             "--no-report", "--out", str(out)], cwd=ROOT, env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        kids: list[int] = []
        while time.monotonic() < deadline and len(kids) < 3:  # 2 workers + loky's resource tracker(s)
            time.sleep(0.2)
            kids = _children(proc.pid)
            assert proc.poll() is None, "the sweep ended before it could be killed"
        assert len(kids) >= 3, kids
        time.sleep(3.0)  # the workers are inside their first n = 256 cell (about 8 s each)
        kids = _children(proc.pid)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    # Normally gone within a second; the bound is generous for a loaded machine (a worker still importing
    # torch when the sweep dies exits when the import ends). Without the watchdog they live on indefinitely.
    deadline = time.monotonic() + 10
    while _alive(kids) and time.monotonic() < deadline:
        time.sleep(0.2)
    survivors = _alive(kids)
    for p in survivors:  # clean up before failing
        os.kill(p, signal.SIGKILL)
    assert not survivors, f"workers outlived the killed sweep: {survivors}"


def test_ctrl_c_prints_one_line_with_the_command_that_resumes(tmp_path):
    out = tmp_path / "sweep"
    # Enough matrices (7 κ × 3 seeds) that work is always left when Ctrl-C lands: with 8 the sweep
    # could finish first on an idle machine.
    args = ["--methods", "exact,ordinary", "--functions", "sqrt", "--sizes", "16", "--kappas", "0-12:2", "--spectra", "logspaced",
            "--seeds", "0,1,2", "--jobs", "2", "--no-progress", "--no-report"]
    # A new session, signalled as a group: what a terminal's Ctrl-C does (the workers get SIGINT too).
    proc = subprocess.Popen([sys.executable, "-m", "svdgrad", "sweep", *args, "--out", str(out)], cwd=ROOT,
                            env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True,
                            # a shell's background job (a CI launched with &) inherits SIGINT ignored; a terminal does not
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if (out / "results.csv").exists() and len(read_rows(out / "results.csv")) >= 6:
                break
            assert proc.poll() is None, "the sweep finished before Ctrl-C"
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 130, stderr
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr + stdout
    command = lines[0].split("resume with: ", 1)[1]
    assert command.endswith(f"--out {out} --resume")
    before = read_rows(out / "results.csv")
    # The printed command, run as printed, finishes the grid.
    argv = shlex.split(command)
    assert argv[:2] == ["svdgrad", "sweep"]
    assert cli.main("sweep", argv[2:]) == 0
    after = read_rows(out / "results.csv")
    assert all(r in after for r in before)
    g = cli.grid_from_args(cli._sweep_parser().parse_args(args))
    expected = {k for n, kk, sp, s in g.matrices() for k in runner.matrix_keys(g, n, kk, sp, s)}
    assert len(before) < len(after) == len({row_key(r) for r in after}) and {row_key(r) for r in after} == expected


def test_resuming_a_narrower_grid_into_a_folder_keeps_its_grid_json(tmp_path):
    from svdgrad.sweep.grid import Grid

    assert cli.main("sweep", ONE + ["--out", str(tmp_path)]) == 0
    assert cli.main("sweep", ["--methods", "pade"] + ONE[2:] + ["--resume", "--out", str(tmp_path)]) == 0
    g = Grid.from_json((tmp_path / runner.GRID).read_text())
    assert set(g.methods) == {"exact", "pade"}
    assert {r["method"] for r in read_rows(tmp_path / "results.csv") if r["study"] == "method"} == {"exact", "pade"}


# ---------------------------------------------------------------------------
# Damaged files in a sweep folder: a clear error naming the file and what to do, never a traceback,
# and nothing replaced; what a kill -9 can leave (a torn last line) is tolerated.
# ---------------------------------------------------------------------------

#: Not UTF-8, and holds newlines.
GARBAGE = bytes(range(256)) * 4


@pytest.fixture(scope="module")
def finished_sweep(tmp_path_factory):
    out = tmp_path_factory.mktemp("finished") / "sweep"
    assert cli.main("sweep", ONE + ["--out", str(out)]) == 0
    return out


def _copy(src: Path, tmp_path: Path) -> Path:
    import shutil

    return Path(shutil.copytree(src, tmp_path / "sweep"))


def _sweep_or_report(command: str, out: Path, capsys, flags=("--resume",)) -> tuple[int, str]:
    argv = ONE + [*flags, "--out", str(out)] if command == "sweep" else ["--out", str(out)]
    rc = cli.main(command, argv)
    return rc, capsys.readouterr().err


def _files(out: Path) -> dict:
    return {p.name: p.read_bytes() for p in out.iterdir() if p.is_file() and p.name != runner.LOCK}


@pytest.mark.parametrize("command", ["sweep", "report"])
@pytest.mark.parametrize("content", [b"[1, 2]\n", b"3\n", b'{"methods": 5}\n', b'{"sizes": [16]}\n',
                                     b'{"methods": ["exact"], "sizes": "16"}\n', GARBAGE, b""],
                         ids=["list", "number", "methods-not-a-list", "no-methods", "sizes-a-string", "garbage",
                              "empty"])
def test_a_damaged_grid_json_is_a_clear_error(finished_sweep, tmp_path, capsys, content, command):
    """A list gave an AttributeError traceback; garbage was silently replaced by --resume."""
    out = _copy(finished_sweep, tmp_path)
    (out / runner.GRID).write_bytes(content)
    before = _files(out)
    rc, err = _sweep_or_report(command, out, capsys)
    assert rc == 2, err
    assert f"{out / runner.GRID}" in err and "Expected" in err and "Delete it" in err
    assert _files(out) == before  # nothing replaced, grid.json included


def test_a_tear_inside_a_multibyte_character_is_dropped(finished_sweep, tmp_path, capsys):
    """A kill -9 inside a row whose error text is not ASCII: the report read a UnicodeDecodeError."""
    out = _copy(finished_sweep, tmp_path)
    before = (out / "results.csv").read_bytes()
    row = before.decode().splitlines()[1].rsplit(",", 1)[0] + ",κ ≤ 0\n"
    with open(out / "results.csv", "ab") as f:
        f.write(row.encode()[: row.encode().index("κ".encode()) + 1])  # cut inside κ
    from svdgrad.sweep import tables

    assert len(tables.load(out)) == len(read_rows(out / "results.csv")) == before.count(b"\n") - 1
    assert cli.main("sweep", ONE + ["--resume", "--out", str(out)]) == 0
    assert (out / "results.csv").read_bytes() == before  # the torn line cut, nothing recomputed


def _bad_number(text: bytes) -> bytes:
    lines = text.decode().splitlines(keepends=True)
    fields = lines[1].split(",")
    fields[COLUMNS.index("n")] = "sixteen"
    return "".join(lines[:1] + [",".join(fields)] + lines[2:]).encode()


@pytest.mark.parametrize("command", ["sweep", "report"])
@pytest.mark.parametrize("damage,below_header", [
    (lambda t: GARBAGE, False), (lambda t: HEADER.encode() + GARBAGE[200:260] + b"\n" + t[len(HEADER):], True),
    (_bad_number, True), (lambda t: b"\x00\x01 not a sweep table", False)],
    ids=["garbage", "garbage-line", "bad-number", "no-header"])
def test_a_damaged_results_csv_is_a_clear_error(finished_sweep, tmp_path, capsys, damage, below_header, command):
    """Garbage gave 'utf-8 codec can't decode byte' (no file named), a bad number 'invalid literal for int()';
    --resume cut or reset the damaged file before failing.  A damaged row can be deleted and recomputed with
    --resume; a damaged first line (the header) cannot: only --overwrite starts a table there."""
    out = _copy(finished_sweep, tmp_path)
    (out / "results.csv").write_bytes(damage((out / "results.csv").read_bytes()))
    before = _files(out)
    rc, err = _sweep_or_report(command, out, capsys)
    assert rc == 2, err
    assert f"{out / 'results.csv'}" in err and "Expected" in err
    if below_header:
        assert "Delete that line" in err and "--resume" in err
    else:
        assert "line 1" in err and "--overwrite" in err and "Delete that line" not in err
    assert _files(out) == before


def test_a_torn_last_line_of_runs_jsonl_is_ignored_and_repaired(finished_sweep, tmp_path):
    """The report failed on it (JSONDecodeError), and the next run glued its entry onto the torn line."""
    from svdgrad.sweep import tables

    out = _copy(finished_sweep, tmp_path)
    good = (out / runner.RUNS).read_bytes()
    (out / runner.RUNS).write_bytes(good + good[:70])
    assert tables.load_runs(out) == [json.loads(good)]
    assert cli.main("sweep", ONE + ["--resume", "--out", str(out)]) == 0
    text = (out / runner.RUNS).read_text()
    assert text.startswith(good.decode()) and text.endswith("\n")
    assert [r["resume"] for r in tables.load_runs(out)] == [False, True]


@pytest.mark.parametrize("command", ["sweep", "report"])
@pytest.mark.parametrize("damage", [lambda t: GARBAGE, lambda t: b"{bad\n" + t, lambda t: t + b"[1]\n"],
                         ids=["garbage", "bad-first-line", "not-an-object"])
def test_a_damaged_runs_jsonl_is_a_clear_error(finished_sweep, tmp_path, capsys, damage, command):
    """A list line gave an AttributeError traceback in the report; --resume kept a bad line for good."""
    out = _copy(finished_sweep, tmp_path)
    (out / runner.RUNS).write_bytes(damage((out / runner.RUNS).read_bytes()))
    before = _files(out)
    rc, err = _sweep_or_report(command, out, capsys)
    assert rc == 2, err
    assert f"{out / runner.RUNS}" in err and "line" in err and "Expected" in err
    assert _files(out) == before


def test_the_next_sweep_removes_a_killed_writers_temporary(finished_sweep, tmp_path):
    """A kill -9 inside an atomic write (grid.json, runs.jsonl, REPORT.md) left grid.json.PID.tmp for good."""
    from .test_io import dead_pid

    out = _copy(finished_sweep, tmp_path)
    tmp = out / f"{runner.GRID}.{dead_pid()}.tmp"
    tmp.write_text('{"methods": ["ex')
    assert cli.main("sweep", ONE + ["--resume", "--out", str(out)]) == 0
    assert not tmp.exists() and not list(out.glob("*.tmp"))


def test_an_out_that_cannot_be_a_folder_is_a_clear_error(tmp_path, capsys):
    """--out under a file: the sweep failed inside with '[Errno 20] Not a directory' and exit 1; the report
    said a results.csv that is a directory 'does not exist'.  Both are usage errors now (exit 2), as train's."""
    (tmp_path / "f").write_text("x")
    assert cli.main("sweep", ONE + ["--out", str(tmp_path / "f" / "sub")]) == 2
    err = capsys.readouterr().err
    assert "--out" in err and "cannot be created" in err and "is a file" in err and "Errno" not in err
    assert not (tmp_path / "f").is_dir()
    (tmp_path / "d" / "results.csv").mkdir(parents=True)
    assert cli.main("report", ["--out", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err
    assert "is not a file" in err and "does not exist" not in err


#: Every file a sweep (with its report) writes into --out: a directory there is refused before anything runs.
WRITTEN = [runner.RESULTS, runner.APPROX, runner.GRID, runner.RUNS, runner.LOCK, runner.REPORT, "grad_error_n16.png"]


@pytest.mark.parametrize("name", WRITTEN)
def test_a_folder_where_the_sweep_writes_a_file_is_a_usage_error(tmp_path, capsys, name):
    """A directory OUT/approx.csv (or any file the sweep writes) gave 'sweep: error: [Errno 21] Is a directory'
    and exit 1, after the matrices were computed (results.csv and grid.json already rewritten)."""
    out = tmp_path / "sweep"
    (out / name).mkdir(parents=True)
    argv = [a for a in ONE if a != "--no-report"]  # (the report's files too)
    assert cli.main("sweep", argv + ["--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"{out / name}" in err and "is a directory" in err and "--out" in err and "Errno" not in err, err
    assert [p.name for p in out.iterdir()] == [name]  # refused before anything ran or was written


@pytest.mark.parametrize("name", [runner.APPROX, runner.GRID, runner.RUNS, runner.REPORT, "grad_error_n16.png"])
def test_a_folder_where_the_report_reads_or_writes_a_file_is_a_usage_error(finished_sweep, tmp_path, capsys, name):
    """`svdgrad report` read approx.csv, grid.json, runs.jsonl and wrote REPORT.md and the figures through
    '[Errno 21] Is a directory' and exit 1 (a figure's only after the others were drawn)."""
    out = _copy(finished_sweep, tmp_path)
    if (out / name).exists():
        (out / name).unlink()
    (out / name).mkdir()
    before = _files(out)
    assert cli.main("report", ["--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"{out / name}" in err and "is a directory" in err and "Errno" not in err, err
    assert _files(out) == before and not (out / runner.REPORT).is_file()
