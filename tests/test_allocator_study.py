"""studies/allocator_effect.py: both allocator settings measured in their own processes, atomic raw results,
no silent overwrite, --resume keeps what is finished."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "studies" / "allocator_effect.py"


def _run(*args):
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)


def test_quick_run_refuses_to_overwrite_and_resumes(tmp_path):
    out = tmp_path / "alloc"
    first = _run("--quick", "--out", str(out))
    assert first.returncode == 0, first.stderr
    raw = sorted(p.name for p in (out / "raw").glob("*.json"))
    assert raw == ["default-n256.json", "default-n64.json", "held-n256.json", "held-n64.json"]
    held = json.loads((out / "raw" / "held-n256.json").read_text())
    assert held["malloc_env"] == {"MALLOC_MMAP_THRESHOLD_": str(32 << 20), "MALLOC_TRIM_THRESHOLD_": str(1 << 30)}
    assert json.loads((out / "raw" / "default-n256.json").read_text())["malloc_env"] == {}
    for case, faults in held["faults_per_call"].items():
        assert faults >= 0 and held["median_ms"][case] > 0
    report = (out / "REPORT.md").read_text()
    assert "| default | held |" in report and "smoke run" in report
    assert "sqrtm[exact]\\|check=False" in report  # (escaped in its table cell)
    assert "sqrtm[newton_schulz[manual]] in matmul units" in report

    again = _run("--quick", "--out", str(out))
    assert again.returncode != 0 and "--resume" in again.stderr and "--overwrite" in again.stderr

    before = {p.name: p.read_bytes() for p in (out / "raw").glob("*.json")}
    (out / "raw" / "held-n64.json").unlink()  # as if killed before the last process finished
    resumed = _run("--quick", "--resume", "--out", str(out))
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.count("kept ") == 3 and "held/n64" in resumed.stdout
    after = {p.name: p.read_bytes() for p in (out / "raw").glob("*.json")}
    assert {k: v for k, v in after.items() if k != "held-n64.json"} == \
        {k: v for k, v in before.items() if k != "held-n64.json"}
    assert not list(out.rglob("*.tmp"))
