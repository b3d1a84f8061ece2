"""Hypothesis profiles: ``ci`` (default, deterministic, used by `make test`) and ``thorough``.

Select with HYPOTHESIS_PROFILE=thorough pytest tests ...
"""

import os

import torch
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    max_examples=50,
    derandomize=True,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "thorough",
    max_examples=400,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

# Tests measure numerics, not speed: one thread keeps them deterministic and
# avoids oversubscribing the 2-core CI machine.
torch.set_num_threads(1)


def pytest_configure(config):
    # torch.compile's inductor imports torch.utils.mkldnn, whose class body uses
    # the deprecated torch.jit.script_method, and torch.func imports use
    # torch.jit.script (torch 2.13 internals, not ours):
    # 14 identical warnings per run that say nothing about svdgrad.
    config.addinivalue_line(
        "filterwarnings", "ignore:`torch.jit.script:DeprecationWarning"
    )
