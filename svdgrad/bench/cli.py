"""``svdgrad bench``: run the benchmark and write ``reports/performance/``."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from . import grid, report, runner


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="svdgrad bench",
        description="Time every sqrtm method (forward, forward + backward) against eigh and matmul "
                    "floors with pytest-benchmark, measure the speed targets interleaved, count "
                    "memory, and write REPORT.md with figures.")
    p.add_argument("--device", default="cpu", help="torch device to benchmark on (default cpu), e.g. cuda:0")
    p.add_argument("--threads", type=int, default=grid.THREADS,
                   help=f"torch intra-op threads to pin (default {grid.THREADS})")
    p.add_argument("--profile", choices=sorted(grid.PROFILES), default="full",
                   help="full grid (default) or a tiny quick one (smoke test)")
    p.add_argument("--out", type=Path, default=runner.REPO / "reports" / "performance",
                   help="output folder (default reports/performance in the repository)")
    p.add_argument("--omp-wait-policy", choices=("passive", "active", "default"), default="default",
                   help="OMP_WAIT_POLICY of the measuring processes (default: leave OpenMP's own setting). "
                        "'passive' is steadier on shared cores but makes torch.linalg.eigh several times "
                        "slower, which would flatter every ratio against the eigh floor")
    p.add_argument("--report-only", action="store_true", help="rebuild REPORT.md from the existing raw/ files")
    p.add_argument("--no-pytest", action="store_true",
                   help="skip the pytest-benchmark grid (reuse its existing JSON)")
    return p


def main(command: str, argv: list[str]) -> int:
    args = parser().parse_args(argv)
    start = time.perf_counter()
    if not args.report_only:
        policy = None if args.omp_wait_policy == "default" else args.omp_wait_policy
        rc = runner.run(args.device, args.threads, grid.PROFILES[args.profile], args.out,
                        pytest=not args.no_pytest, wait_policy=policy)
        if rc:
            return rc
    path = report.build(args.out)
    print(f"svdgrad bench: wrote {path} ({time.perf_counter() - start:.0f} s)")
    return 0
