"""The long jobs' atomic writes (``svdgrad._io``): a target is either the old file or the new one."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from svdgrad._io import save_atomic, write_atomic


def test_write_atomic_replaces_the_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "results.csv"
    target.write_text("old\n")
    write_atomic(target, "new\n")
    assert target.read_text() == "new\n"
    write_atomic(target, b"\x00bytes")
    assert target.read_bytes() == b"\x00bytes"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.csv"]


@pytest.mark.parametrize("fail_at", ["fsync", "replace"])
def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch, fail_at):
    target = tmp_path / "grid.json"
    target.write_text('{"old": true}\n')

    def fail(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, fail_at, fail)
    with pytest.raises(OSError, match="No space left"):
        write_atomic(target, '{"new": true}\n' * 1000)
    monkeypatch.undo()
    assert target.read_text() == '{"old": true}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grid.json"]


def test_a_failed_first_write_creates_no_file(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "fsync", lambda fd: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        write_atomic(tmp_path / "REPORT.md", "# report\n")
    monkeypatch.undo()
    assert list(tmp_path.iterdir()) == []


def test_save_atomic_round_trips_a_checkpoint(tmp_path):
    state = {"step": 7, "weights": torch.arange(6.0).reshape(2, 3)}
    save_atomic(state, tmp_path / "ckpt.pt")
    back = torch.load(tmp_path / "ckpt.pt")
    assert back["step"] == 7 and torch.equal(back["weights"], state["weights"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.pt"]


def test_provenance_names_the_host_and_the_commit():
    import subprocess

    from svdgrad._io import provenance

    info = provenance()
    assert set(info) == {"cpu", "torch", "svdgrad", "commit", "dirty"} and info["cpu"]
    root = Path(__file__).resolve().parents[1]
    head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True)
    if (root / ".git").exists() and head.returncode == 0:
        assert info["commit"] == head.stdout.strip() and isinstance(info["dirty"], bool)
    else:  # an installed copy, or a repository without a commit (the mutation harness's scratch copy)
        assert info["commit"] is None and info["dirty"] is None


def dead_pid() -> int:
    """The PID of a process that has exited (and been reaped)."""
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_only_the_temporaries_of_dead_writers_are_removed(tmp_path):
    """A kill -9 inside write_atomic leaves NAME.PID.tmp; nothing removed it, ever."""
    from svdgrad._io import remove_stale_temporaries

    dead = dead_pid()
    stale = {f"results.csv.{dead}.tmp", f"checkpoint.pt.{dead}.tmp"}
    kept = {f"grid.json.{os.getpid()}.tmp",  # a live writer's: it may be writing it now
            "notes.tmp", f"notes.{dead}.txt", "results.csv", f"x.y{dead}.tmp"}
    for name in stale | kept:
        (tmp_path / name).write_text("half")
    (tmp_path / f"folder.{dead}.tmp").mkdir()  # (not a file: not ours)
    assert sorted(p.name for p in remove_stale_temporaries(tmp_path)) == sorted(stale)
    assert {p.name for p in tmp_path.iterdir()} == kept | {f"folder.{dead}.tmp"}
    assert remove_stale_temporaries(tmp_path / "missing") == []


def test_another_hosts_temporaries_are_kept(tmp_path, monkeypatch):
    """In a folder shared between hosts (NFS), a live writer's PID on host A is no process on host B, so B's
    `svdgrad report` (which cleans without the folder's lock) removed A's temporary while A was writing it, and A's
    os.replace then failed.  Temporaries now carry their host (NAME.HOST-PID.tmp); only this host's dead
    writers' are removed, and a name from before (NAME.PID.tmp) as before."""
    from svdgrad import _io

    dead = dead_pid()
    here = _io.host_token()
    assert here and all(c.isalnum() or c == "_" for c in here)
    ours, theirs = f"results.csv.{here}-{dead}.tmp", f"results.csv.{here}x-{dead}.tmp"
    live = f"grid.json.{here}-{os.getpid()}.tmp"
    for name in (ours, theirs, live):
        (tmp_path / name).write_text("half")
    assert [p.name for p in _io.remove_stale_temporaries(tmp_path)] == [ours]
    assert {p.name for p in tmp_path.iterdir()} == {theirs, live}
    # write_atomic's own temporary is of this form
    seen = []
    monkeypatch.setattr(_io.os, "replace", lambda a, b: seen.append(os.path.basename(a)) or os.rename(a, b))
    _io.write_atomic(tmp_path / "x.json", "{}")
    assert seen == [f"x.json.{here}-{os.getpid()}.tmp"]


def test_an_atomic_write_onto_a_directory_is_a_clear_error(tmp_path):
    """A directory where a long job writes one of its files (summary.json, a bench raw file, a figure) failed
    in os.replace with '[Errno 21] Is a directory' (or 'Directory not empty'), a bare OSError.  Now the write
    is refused before anything is written, naming the path and what to do; the directory is left alone."""
    from svdgrad import SvdgradError
    from svdgrad._io import save_atomic, write_atomic

    (tmp_path / "summary.json").mkdir()
    (tmp_path / "summary.json" / "keep").write_text("x")
    with pytest.raises(SvdgradError, match=r"summary\.json to be a file.*is a directory.*Move or rename it"):
        write_atomic(tmp_path / "summary.json", "{}")
    (tmp_path / "checkpoint.pt").mkdir()
    with pytest.raises(SvdgradError, match=r"checkpoint\.pt to be a file.*is a directory"):
        save_atomic({"a": 1}, tmp_path / "checkpoint.pt")
    assert (tmp_path / "summary.json" / "keep").read_text() == "x"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt", "summary.json"]
