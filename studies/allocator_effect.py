"""How much of two missed speed targets is glibc's allocator: page faults per call, and the ratios, under
its default thresholds and with them held.

glibc returns freed memory to the OS above a trim threshold and serves large blocks by mmap, both with
thresholds that move with the process's history.  A case that holds many large temporaries (the
Newton–Schulz iterates, eigh's workspace) can then touch fresh pages, one minor page fault per 4 KiB,
on every call, while a single matmul reuses the block it just freed.  Holding the thresholds
(``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_``) keeps the memory in the process.  The speed
targets of issue 9 (reports/performance) are measured under the default.

Each (setting, group) runs in a fresh process, since the environment variables act at start-up and the
allocator's state carries over from one case to the next.  Groups, float32, 2 threads, interleaved:

- ``n64`` (B = 32, n = 64): exact sqrtm forward + backward against eigh autograd (target <= 1.0);
- ``n256`` (B = 32, n = 256): Newton–Schulz(5) forward + backward in matmul units (target <= 42)
  and exact's time beyond eigh's forward in matmul units (target <= 7).

Run from the repository root:  ``python studies/allocator_effect.py``  (about 2 minutes on 2 cores;
``--quick`` for a smoke run).  Writes ``reports/performance/allocator/``: ``raw/<setting>-<group>.json``
(one per process, each written atomically, kept by ``--resume``), ``results.json`` and ``REPORT.md``.
Finished results are replaced only with ``--overwrite``.  The thresholds act only with glibc; the
report records the C library.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from svdgrad._io import write_atomic  # noqa: E402

#: Allocator settings: extra environment of the measuring process.
SETTINGS = {
    "default": {},
    # M_MMAP_THRESHOLD at glibc's maximum (32 MiB on 64-bit; setting it also stops its dynamic
    # adjustment), and no trimming below 1 GiB of free memory at the top of the heap.
    "held": {"MALLOC_MMAP_THRESHOLD_": str(32 << 20), "MALLOC_TRIM_THRESHOLD_": str(1 << 30)},
}
#: group -> (batch, n, case names); the quick profile shrinks the shapes
GROUPS = {
    "n64": (32, 64, ("sqrtm[exact]", "sqrtm[exact]|check=False", "eigh_autograd")),
    "n256": (32, 256, ("sqrtm[newton_schulz[manual]]", "sqrtm[newton_schulz[autograd]]", "sqrtm[exact]",
                       "eigh_forward", "matmul")),
}
BASELINES = ("eigh_forward", "matmul")  # (the rest are ``cases.ratio_cases`` names)
QUICK_SHAPES = {"n64": (4, 16), "n256": (4, 32)}
ROUNDS = {"n64": 200, "n256": 30}
THREADS = 2


def _cases(group: str, batch: int, n: int) -> dict:
    """The group's cases, built as the bench builds them: ``cases.ratio_cases`` for sqrtm[<variant>]
    (``grid.NO_CHECK`` for check=False) and eigh autograd; the eigh-forward and matmul baselines beside."""
    from svdgrad.bench import cases

    names = GROUPS[group][2]
    out = cases.ratio_cases(batch, n, "float32", "cpu", [x for x in names if x not in BASELINES])
    inputs = cases.Inputs(batch, n, "float32", "cpu")  # (the same seed: the same matrices)
    out.update({x: cases.baseline_case(inputs, x) for x in names if x in BASELINES})
    return {x: out[x] for x in names}


def _counting(f, faults: list):
    """f, with the minor page faults of each call appended to ``faults``."""
    import resource

    def run():
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        f()
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    return run


def metrics(group: str, times: dict) -> dict:
    """The targets' ratios, each the median over rounds of the per-round ratio (as the bench takes them)."""
    from svdgrad.bench.timing import median, per_round

    if group == "n64":
        return {f"{case} / eigh_autograd": median(per_round(times, lambda t, c=case: t[c] / t["eigh_autograd"]))
                for case in ("sqrtm[exact]", "sqrtm[exact]|check=False")}
    out = {f"{case} in matmul units": median(per_round(times, lambda t, c=case: t[c] / t["matmul"]))
           for case in ("sqrtm[newton_schulz[manual]]", "sqrtm[newton_schulz[autograd]]", "eigh_forward")}
    out["sqrtm[exact] beyond eigh_forward in matmul units"] = median(
        per_round(times, lambda t: (t["sqrtm[exact]"] - t["eigh_forward"]) / t["matmul"]))
    return out


def worker(group: str, quick: bool, rounds: int) -> dict:
    """Measure one group in this process (its allocator setting came with its environment)."""
    import torch

    from svdgrad.bench.timing import interleaved, load_average, median

    torch.set_num_threads(THREADS)
    batch, n = QUICK_SHAPES[group] if quick else GROUPS[group][:2]
    faults = {name: [] for name in GROUPS[group][2]}
    fns = {name: _counting(f, faults[name]) for name, f in _cases(group, batch, n).items()}
    load_before = load_average()
    times = interleaved(fns, min_rounds=rounds, max_rounds=rounds, budget_s=0.0, warmup=2, seed=0)
    warm = {name: faults[name][-rounds:] for name in faults}  # (the warm-up calls' faults left out)
    return {
        "group": group, "batch": batch, "n": n, "dtype": "float32", "threads": THREADS, "rounds": rounds,
        "torch": torch.__version__, "libc": " ".join(platform.libc_ver()) or "unknown",
        "malloc_env": {k: v for k, v in os.environ.items() if k.startswith("MALLOC_")},
        "load_before": load_before, "load_after": load_average(),
        "median_ms": {name: 1e3 * median(t) for name, t in times.items()},
        "faults_per_call": {name: sum(f) / len(f) for name, f in warm.items()},
        "metrics": metrics(group, times),
    }


def _run_worker(setting: str, group: str, quick: bool, rounds: int) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    env.update(SETTINGS[setting], OMP_NUM_THREADS=str(THREADS), MKL_NUM_THREADS=str(THREADS))
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", group, "--rounds", str(rounds)]
    cmd += ["--quick"] if quick else []
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        raise SystemExit(f"allocator_effect: the {setting}/{group} worker failed (rc {proc.returncode}):\n"
                         f"{proc.stderr[-2000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["setting"] = setting
    return result


TARGETS = {  # metric -> (limit, what the target is)
    "sqrtm[exact] / eigh_autograd": (1.0, "issue 9: exact sqrtm fwd+bwd, n = 64"),
    "sqrtm[newton_schulz[manual]] in matmul units": (42.0, "bench: NS(5) fwd+bwd, n = 256"),
    "sqrtm[newton_schulz[autograd]] in matmul units": (42.0, "bench: NS(5) fwd+bwd, n = 256"),
    "sqrtm[exact] beyond eigh_forward in matmul units": (7.0, "bench: exact beyond eigh, n = 256"),
}


def _cell(text: str) -> str:
    return text.replace("|", "\\|")  # (a markdown table cell: "sqrtm[exact]|check=False")


def render(results: list[dict], started: str, finished: str) -> str:
    by = {(r["setting"], r["group"]): r for r in results}
    settings = [s for s in SETTINGS if any(k[0] == s for k in by)]
    lines = [
        "# Speed ratios and glibc's allocator",
        "",
        "Written by `python studies/allocator_effect.py` (see its docstring); do not edit by hand.",
        f"Run {started} to {finished}; torch {results[0]['torch']}, {results[0]['libc']}, float32, "
        f"{results[0]['threads']} threads, each (setting, group) in a fresh process, cases interleaved.",
        "",
        "Settings: " + "; ".join(f"`{s}`: " + (" ".join(f"{k}={v}" for k, v in SETTINGS[s].items()) or
                                               "glibc's own thresholds") for s in settings) + ".",
        "",
        "## Targets",
        "",
        *(["A smoke run (`--quick`): small shapes and 3 rounds, so these are not the targets' numbers.", ""]
          if any(r["n"] != GROUPS[r["group"]][1] for r in results) else []),
        "| metric | target | " + " | ".join(settings) + " |",
        "|---|---|" + "---|" * len(settings),
    ]
    for group in GROUPS:
        for metric in (by.get((settings[0], group)) or {}).get("metrics", {}):
            limit, what = TARGETS.get(metric, (None, ""))
            cells = [f"{by[(s, group)]['metrics'][metric]:.3f}" if (s, group) in by else "—" for s in settings]
            target = f"<= {limit:g} ({what})" if limit is not None else "(for reference)"
            lines.append(f"| {_cell(metric)} | {target} | " + " | ".join(cells) + " |")
    lines += ["", "## Per case", "",
              "| group | case | " + " | ".join(f"{s}: ms, faults/call" for s in settings) + " |",
              "|---|---|" + "---|" * len(settings)]
    for group in GROUPS:
        first = by.get((settings[0], group))
        if first is None:
            continue
        shape = f"{group} (B = {first['batch']}, n = {first['n']}, {first['rounds']} rounds)"
        for case in first["median_ms"]:
            cells = [f"{by[(s, group)]['median_ms'][case]:.2f}, {by[(s, group)]['faults_per_call'][case]:.0f}"
                     if (s, group) in by else "—" for s in settings]
            lines.append(f"| {shape} | {_cell(case)} | " + " | ".join(cells) + " |")
    loads = ", ".join(f"{r['setting']}/{r['group']} {r['load_before']}->{r['load_after']}" for r in results)
    lines += ["", f"Load averages (1, 5, 15 min) before and after each process: {loads}.", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "reports" / "performance" / "allocator")
    ap.add_argument("--quick", action="store_true", help="small shapes and 3 rounds (smoke run)")
    ap.add_argument("--rounds", type=int, default=None, help="interleaved rounds per group (default 200 / 30)")
    ap.add_argument("--resume", action="store_true", help="keep the finished (setting, group) results in raw/")
    ap.add_argument("--overwrite", action="store_true", help="measure everything again")
    ap.add_argument("--worker", choices=tuple(GROUPS), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        rounds = args.rounds or (3 if args.quick else ROUNDS[args.worker])
        print(json.dumps(worker(args.worker, args.quick, rounds)))
        return 0
    raw = args.out / "raw"
    if raw.exists() and any(raw.glob("*.json")) and not (args.resume or args.overwrite):
        raise SystemExit(f"allocator_effect: {raw} holds finished results; pass --resume to keep them and "
                         f"measure the rest, or --overwrite to measure everything again.")
    raw.mkdir(parents=True, exist_ok=True)
    started = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    results = []
    for setting in SETTINGS:
        for group in GROUPS:
            path = raw / f"{setting}-{group}.json"
            if args.resume and path.exists():
                results.append(json.loads(path.read_text()))
                print(f"allocator_effect: kept {path.name}", flush=True)
                continue
            rounds = args.rounds or (3 if args.quick else ROUNDS[group])
            print(f"allocator_effect: {setting}/{group}, {rounds} rounds ...", flush=True)
            result = _run_worker(setting, group, args.quick, rounds)
            write_atomic(path, json.dumps(result, indent=1) + "\n")
            results.append(result)
    finished = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    write_atomic(args.out / "results.json", json.dumps(results, indent=1) + "\n")
    write_atomic(args.out / "REPORT.md", render(results, started, finished))
    print(f"allocator_effect: report written to {args.out / 'REPORT.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
