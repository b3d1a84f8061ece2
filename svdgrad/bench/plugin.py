"""pytest plugin of the benchmark suite: records the run's settings in pytest-benchmark's machine_info."""

import platform

import torch

from svdgrad.bench.timing import load_average


def pytest_configure(config):
    """The suite runs in a subprocess of ``svdgrad bench``: it exits when the bench is gone (kill -9)."""
    from svdgrad.bench.runner import exit_with_parent

    exit_with_parent()


def pytest_benchmark_update_machine_info(config, machine_info):
    from svdgrad.bench import suite

    machine_info["torch"] = torch.__version__
    machine_info["torch_threads"] = torch.get_num_threads()
    machine_info["device"] = suite.DEVICE
    if torch.device(suite.DEVICE).type == "cuda":
        machine_info["device_name"] = torch.cuda.get_device_name(torch.device(suite.DEVICE))
    machine_info["profile"] = suite.PROFILE.name
    machine_info["batch"] = suite.PROFILE.batch
    machine_info["load_average_end"] = load_average()
    machine_info["platform"] = platform.platform()
