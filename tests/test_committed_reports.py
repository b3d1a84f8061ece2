"""Every committed report is what its own command draws from the committed data, and from nothing else.

The hybrid study's REPORT.md was written from 40 seeds of two protocols, of which only 30 were committed: the
other runs sat in the author's folder, ignored by git (``runs/`` matched ``reports/*/runs/``).  A clean clone
could not draw that report again; redrawn, three claims moved by up to 0.2 points.  These tests copy only
the files git tracks into a scratch folder and redraw each report there.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _tracked_copy(folder: str, dst: Path) -> Path:
    """The files git tracks under ``folder`` (e.g. reports/landscape), copied into ``dst``; skip outside git."""
    try:
        proc = subprocess.run(["git", "ls-files", "-z", folder], cwd=ROOT, capture_output=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout: which files are committed is unknown")
    names = [n for n in proc.stdout.decode().split("\0") if n]
    if not names:
        pytest.skip(f"{folder} is not committed in this checkout")
    for name in names:
        target = dst / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ROOT / name, target)
    return dst / folder


@pytest.mark.parametrize("folder,command", [
    ("reports/hybrid_protocol", ["study", "hybrid"]),
    ("reports/hybrid_protocol_elpv", ["study", "hybrid", "--dataset", "elpv"]),
    ("reports/landscape", ["study", "landscape"]),
    ("reports/condition_sweep", ["report"]),
])
def test_a_committed_report_is_redrawn_from_the_committed_data_alone(tmp_path, folder, command):
    from svdgrad.__main__ import main

    out = _tracked_copy(folder, tmp_path)
    committed = (out / "REPORT.md").read_text()
    (out / "REPORT.md").unlink()
    args = command + ([] if command == ["report"] else ["--report-only"]) + ["--out", str(out)]
    assert main(args) == 0
    assert (out / "REPORT.md").read_text() == committed, (
        f"{folder}/REPORT.md is not what `svdgrad {' '.join(args[:-2])}` draws from the committed files: "
        f"commit the data it was drawn from (git status --ignored {folder}), or redraw it")
