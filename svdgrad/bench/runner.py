"""One benchmark run on one device: pytest-benchmark grid, interleaved targets, memory.

Writes, under ``<out>/raw/``:
  pytest_benchmark_<device>.json   the raw pytest-benchmark JSON of the grid
  targets_<device>.json            per-round times of the interleaved target run
  ratio_targets_<device>.json      per-round times of the ratio targets (issues 9 and 10), per shape
  memory_<device>.json             saved and peak bytes per variant
  run_<device>.json                machine, threads, torch, load averages
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import torch

import svdgrad
from svdgrad._io import cpu_name, write_atomic

from . import cases, grid, memory
from .timing import interleaved, load_average

#: The pytest-benchmark suite, part of the package (never the repository's test tree).
SUITE = Path(__file__).resolve().with_name("suite.py")
PLUGIN = "svdgrad.bench.plugin"


def device_tag(device: str) -> str:
    return torch.device(device).type


def machine_info(device: str, threads: int) -> dict:
    dev = torch.device(device)
    info = {
        "device": str(dev),
        "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else cpu_name(),
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "requested_threads": threads,
        "torch": torch.__version__,
        "svdgrad": svdgrad.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "blas": "MKL" if torch.backends.mkl.is_available() else "other",
    }
    return info


#: The bench's pid, in its measuring subprocesses' environment: they exit when it is gone (``exit_with_parent``).
PARENT_ENV = "SVDGRAD_BENCH_PARENT"


def exit_with_parent(period: float = 0.5) -> None:
    """In a measuring subprocess: exit as soon as the bench that started it is gone.

    A ``kill -9`` (or SIGTERM) of ``svdgrad bench`` left its pytest-benchmark or target process running,
    re-parented, timing on the shared cores and writing into the result folder after the lock was
    released.  A daemon thread polls ``getppid()`` (POSIX, as the sweep's workers do).
    """
    parent = os.environ.get(PARENT_ENV)
    if not parent or int(parent) == os.getpid():
        return
    import threading
    import time

    def _watch():
        while True:
            if os.getppid() != int(parent):
                os._exit(1)
            time.sleep(period)

    threading.Thread(target=_watch, name="svdgrad-bench-parent-watchdog", daemon=True).start()


def bench_env(device: str, threads: int, profile: grid.Profile, wait_policy: str | None,
              methods: list[str] | None = None) -> dict:
    """Environment of the measuring subprocesses: threads pinned before OpenMP starts."""
    env = dict(os.environ, SVDGRAD_BENCH_DEVICE=device, SVDGRAD_BENCH_PROFILE=profile.name,
               SVDGRAD_BENCH_THREADS=str(threads), OMP_NUM_THREADS=str(threads),
               MKL_NUM_THREADS=str(threads))
    env[PARENT_ENV] = str(os.getpid())
    env.pop(grid.METHODS_ENV, None)
    if methods:
        env[grid.METHODS_ENV] = json.dumps([v.label for v in grid.variants(methods)])
    if wait_policy:
        env["OMP_WAIT_POLICY"] = wait_policy.upper()
    return env


def missing_pytest_benchmark() -> str | None:
    """None if the pytest-benchmark suite can run here, else the one-line reason naming the extra."""
    import importlib.util

    for module in ("pytest", "pytest_benchmark"):
        if importlib.util.find_spec(module) is None:
            return (f"svdgrad bench: the timing grid needs {module.replace('_', '-')}, which is not installed; "
                    f"install the bench extra: pip install \"svdgrad[bench]\" (or run with --no-pytest)")
    return None


def run_pytest(env: dict, json_path: Path, profile: grid.Profile, log) -> int:
    """The pytest-benchmark suite in a subprocess, writing its JSON to ``json_path``."""
    missing = missing_pytest_benchmark()
    if missing:
        log(missing)
        return 2
    # -c os.devnull: no ini file of whatever directory this runs in (addopts, testpaths) applies.
    cmd = [sys.executable, "-m", "pytest", str(SUITE), "-c", os.devnull, "--rootdir", str(SUITE.parent),
           "-q", "-p", "no:cacheprovider", "-p", PLUGIN, f"--benchmark-json={json_path.resolve()}",
           "--benchmark-sort=name", "--benchmark-columns=min,median,max,rounds"]
    log("$ " + " ".join(cmd))
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    tail = (proc.stdout + proc.stderr).strip().splitlines()[-3:]
    for line in tail:
        log("  " + line)
    return proc.returncode


def target_cases(inputs: cases.Inputs) -> dict:
    """Everything the targets compare, to run interleaved.  The unit is timed three times per round.

    Only the targets of the selected variants (all of them by default; ``--methods`` may drop some).
    """
    out = {
        "eigh_forward": cases.baseline_case(inputs, "eigh_forward"),
        "eigh_autograd": cases.baseline_case(inputs, "eigh_autograd"),
    }
    for i in range(3):
        out[f"matmul#{i}"] = cases.baseline_case(inputs, "matmul")
    for t in grid.targets_for(grid.selected_variants()):
        out[t.variant] = cases.sqrtm_case(inputs, t.variant, "forward_backward")
        out[t.variant + "|check=False"] = cases.sqrtm_case(inputs, t.variant, "forward_backward", check=False)
    return out


def run_targets(device: str, profile: grid.Profile, log) -> dict:
    result = {"size": profile.target_size, "batch": profile.batch, "dtypes": {}}
    for dtype in profile.dtypes:
        inputs = cases.Inputs(profile.batch, profile.target_size, dtype, device)
        load_before = load_average()
        times = interleaved(target_cases(inputs), min_rounds=profile.rounds[0], max_rounds=profile.rounds[1],
                            budget_s=profile.budget_s, seed=0)
        result["dtypes"][dtype] = {"times": times, "load_before": load_before, "load_after": load_average()}
        log(f"  targets {dtype}: {len(times['eigh_forward'])} interleaved rounds, load {load_average()}")
    return result


def run_ratio_targets(device: str, profile: grid.Profile, log) -> dict:
    """The ratio targets of issues 9 and 10: each shape's cases interleaved in one run (RATIO_DTYPE)."""
    groups = []
    for (n, batch), targets in grid.ratio_groups(profile).items():
        names = grid.with_unchecked(dict.fromkeys(x for t in targets for x in (t.case, t.baseline)))
        load_before = load_average()
        fns = cases.ratio_cases(batch, n, grid.RATIO_DTYPE, device, names)
        times = interleaved(fns, min_rounds=profile.ratio_rounds[0], max_rounds=profile.ratio_rounds[1],
                            budget_s=profile.ratio_budget_s, seed=0)
        groups.append({"n": n, "batch": batch, "dtype": grid.RATIO_DTYPE, "times": times,
                       "targets": [dataclasses.asdict(t) for t in targets],
                       "load_before": load_before, "load_after": load_average()})
        log(f"  ratio targets n={n} B={batch}: {len(next(iter(times.values())))} interleaved rounds, "
            f"load {load_average()}")
    return {"groups": groups}


def run_memory(device: str, profile: grid.Profile, log) -> dict:
    n = profile.target_size
    result = {"size": n, "batch": profile.batch, "dtypes": {}}
    for dtype in profile.dtypes:
        inputs = cases.Inputs(profile.batch, n, dtype, device)
        rows = {}
        # check=False: the method's own memory (the default checks only add short-lived temporaries).
        selected = grid.selected_variants()
        named = {v.label: cases.sqrtm_case(inputs, v.label, "forward_backward", check=False) for v in selected}
        named["eigh_autograd"] = cases.baseline_case(inputs, "eigh_autograd")
        fns = {v.label: cases.sqrtm_fn(v.label, check=False) for v in selected}
        fns["eigh_autograd"] = cases.eigh_sqrtm
        for label, run in named.items():
            run()  # warm up (lazy initialisation, Padé coefficients)
            leaf = inputs.leaf
            leaf.grad = None
            saved = memory.saved_bytes(lambda: fns[label](leaf), lambda Z: Z.backward(inputs.G), exclude=(leaf,))
            default = (cases.baseline_case(inputs, label) if label in grid.BASELINES
                       else cases.sqrtm_case(inputs, label, "forward_backward"))
            rows[label] = {"saved_bytes": saved, "peak_bytes": memory.peak_bytes(run, device),
                           "products": memory.count_products(default)}
        result["dtypes"][dtype] = {"matrix_bytes": inputs.A.numel() * inputs.A.element_size(), "rows": rows}
    log(f"  memory: {len(rows)} variants")
    return result


def run(device: str, threads: int, profile: grid.Profile, out: Path, log=print, pytest: bool = True,
        wait_policy: str | None = None, methods: list[str] | None = None) -> int:
    """pytest-benchmark grid, then targets and memory, each in a fresh subprocess.

    A KeyboardInterrupt kills the subprocess (its traceback is not shown) and propagates.
    """
    raw = out / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    env = bench_env(device, threads, profile, wait_policy, methods)
    env["SVDGRAD_BENCH_STARTED"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    env["SVDGRAD_BENCH_LOAD_START"] = json.dumps(load_average())
    if pytest:
        rc = run_pytest(env, raw / f"pytest_benchmark_{device_tag(device)}.json", profile, log)
        if rc != 0:
            log(f"svdgrad bench: the pytest-benchmark suite failed (exit {rc}).")
            return rc
    cmd = [sys.executable, "-m", "svdgrad.bench.runner", str(out.resolve())]
    log("$ " + " ".join(cmd))
    proc = subprocess.Popen(cmd, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    lines = []
    try:
        for line in proc.stdout:  # stream progress; the profiler's own log lines are dropped
            if line.startswith(("  ", "Traceback", "svdgrad")) or lines and lines[-1].startswith("Traceback"):
                log(line.rstrip())
            lines.append(line)
        rc = proc.wait()
    except BaseException:  # Ctrl-C: stop the measuring process without showing its traceback
        proc.kill()
        proc.wait()
        raise
    if rc != 0:
        log("".join(lines[-40:]))
        log(f"svdgrad bench: the target/memory run failed (exit {rc}).")
    return rc


def measure(device: str, threads: int, profile: grid.Profile, out: Path, log=print) -> int:
    """Targets and memory in this process (started by ``run`` with the benchmark environment)."""
    torch.set_num_threads(threads)
    raw = out / "raw"
    tag = device_tag(device)
    info = machine_info(device, threads)
    now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    info.update(profile=profile.name, started=os.environ.get("SVDGRAD_BENCH_STARTED", now),
                newton_schulz_default_backward=svdgrad.NewtonSchulz().backward,
                omp_wait_policy=os.environ.get("OMP_WAIT_POLICY", "(OpenMP default)"),
                load={"start": json.loads(os.environ.get("SVDGRAD_BENCH_LOAD_START", "null"))})
    pyjson = raw / f"pytest_benchmark_{tag}.json"
    if pyjson.exists():
        info["load"]["after_pytest"] = json.loads(pyjson.read_text())["machine_info"].get("load_average_end")
    info["load"]["before_targets"] = load_average()
    targets = run_targets(device, profile, log)
    info["load"]["after_targets"] = load_average()
    ratio = run_ratio_targets(device, profile, log)
    info["load"]["after_ratio_targets"] = load_average()
    mem = run_memory(device, profile, log)
    info["load"]["end"] = load_average()
    info["finished"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    for name, obj in (("targets", targets), ("ratio_targets", ratio), ("memory", mem), ("run", info)):
        write_atomic(raw / f"{name}_{tag}.json", json.dumps(obj, indent=1, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    # Started by ``run``: settings come from the environment it prepared.
    exit_with_parent()
    _profile = grid.PROFILES[os.environ["SVDGRAD_BENCH_PROFILE"]]
    sys.exit(measure(os.environ["SVDGRAD_BENCH_DEVICE"], int(os.environ["SVDGRAD_BENCH_THREADS"]),
                     _profile, Path(sys.argv[1]), log=lambda m: print(m, flush=True)))
