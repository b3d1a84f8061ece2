"""The `svdgrad` command line itself: --help, --version, missing optional dependencies, plain logs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import svdgrad
from svdgrad import __main__ as entry
from svdgrad.sweep import cli as sweep_cli

ROOT = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))


def _run(*args, code=None):
    cmd = [sys.executable, "-c", code, *args] if code else [sys.executable, "-m", "svdgrad", *args]
    return subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=120)


def test_version(capsys):
    assert entry.main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"svdgrad {svdgrad.__version__}"


def test_help_lists_every_command_with_a_description(capsys):
    assert entry.main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in entry.COMMANDS:
        line = next(ln for ln in out.splitlines() if ln.strip().startswith(name + " "))
        assert len(line.split(None, 1)[1]) > 20, line
    assert "--version" in out
    assert entry.main([]) == 2  # no command: usage on stderr, an error status
    assert "commands:" in capsys.readouterr().err


def test_a_missing_optional_dependency_is_named_in_one_line(tmp_path):
    # Ray hidden: the sweep's cluster backend names the extra, in one line, no traceback.
    code = ("import sys; sys.modules['ray'] = None; from svdgrad.__main__ import main; "
            "sys.exit(main(sys.argv[1:]))")
    proc = _run("sweep", "--backend", "ray", "--methods", "exact", "--dtypes", "float64", "--sizes", "16",
                "--kappas", "0", "--spectra", "logspaced", "--seeds", "0", "--no-progress", "--no-report",
                "--out", str(tmp_path / "sweep"), code=code)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode != 0 and len(lines) == 1, proc.stderr
    assert 'svdgrad[cluster]' in lines[0] and "Traceback" not in proc.stderr
    assert not (tmp_path / "sweep").exists()  # refused before anything was written


def test_missing_dependency_message_names_the_extra():
    exc = ModuleNotFoundError("No module named 'pytest_benchmark'", name="pytest_benchmark")
    assert 'pip install "svdgrad[bench]"' in entry.missing_dependency("bench", exc)
    exc = ModuleNotFoundError("No module named 'foo'", name="foo")
    assert entry.missing_dependency("bench", exc).endswith("pip install foo")


def test_progress_off_a_terminal_is_plain_short_lines(tmp_path, capsys):
    # stderr is not a tty under pytest: no tqdm bar (which writes one endless line of \r updates),
    # a short progress line instead.
    argv = ["--methods", "exact", "--dtypes", "float64", "--sizes", "16", "--kappas", "0,2", "--spectra",
            "logspaced", "--seeds", "0", "--jobs", "1", "--no-report", "--out", str(tmp_path)]
    assert sweep_cli.main("sweep", argv) == 0
    cap = capsys.readouterr()
    assert "\r" not in cap.out + cap.err
    assert all(len(ln) < 200 for ln in (cap.out + cap.err).splitlines() if ln.startswith("sweep:"))
    assert any(ln.startswith("sweep: ") and "rows" in ln for ln in cap.out.splitlines())
