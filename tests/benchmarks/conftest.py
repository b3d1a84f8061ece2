"""pytest-benchmark suite settings: device, grid profile and pinned threads.

Environment (set by ``svdgrad bench``; defaults for a plain
``pytest tests/benchmarks``): SVDGRAD_BENCH_DEVICE (cpu),
SVDGRAD_BENCH_PROFILE (full | quick), SVDGRAD_BENCH_THREADS (grid.THREADS).
"""

import os
import platform

import torch

from svdgrad.bench import grid
from svdgrad.bench.timing import load_average

DEVICE = os.environ.get("SVDGRAD_BENCH_DEVICE", "cpu")
PROFILE = grid.PROFILES[os.environ.get("SVDGRAD_BENCH_PROFILE", "full")]
THREADS = int(os.environ.get("SVDGRAD_BENCH_THREADS", grid.THREADS))

torch.set_num_threads(THREADS)


def pytest_benchmark_update_machine_info(config, machine_info):
    machine_info["torch"] = torch.__version__
    machine_info["torch_threads"] = torch.get_num_threads()
    machine_info["device"] = DEVICE
    if torch.device(DEVICE).type == "cuda":
        machine_info["device_name"] = torch.cuda.get_device_name(torch.device(DEVICE))
    machine_info["profile"] = PROFILE.name
    machine_info["batch"] = PROFILE.batch
    machine_info["load_average_end"] = load_average()
    machine_info["platform"] = platform.platform()
