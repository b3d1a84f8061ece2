"""Smoke test of `svdgrad bench` on the tiny grid: it runs and writes the report."""

import json

import torch

from svdgrad.bench import cli, grid


def test_bench_quick_writes_report(tmp_path):
    threads = torch.get_num_threads()
    try:
        rc = cli.main("bench", ["--profile", "quick", "--threads", "1", "--out", str(tmp_path)])
    finally:
        torch.set_num_threads(threads)
    assert rc == 0
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
