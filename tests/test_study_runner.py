"""Study grids: joblib and Ray backends, the device check, the time budget and --resume, the landscape report."""

import os

import pytest
import torch

from svdgrad import SvdgradError
from svdgrad.train import landscape, runner, trainer
from svdgrad.train.cli import main as cli_main

TINY = dict(dataset="textures", image_size=16, train_per_class=4, val_per_class=2, widths=(4, 4, 4),
            reduced_channels=4, batch_size=20, epochs=1, protocol="ns", threads=1, progress=False, resume=True)


@pytest.fixture
def keep_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def _todo(tmp_path, n):
    return [(f"run{i}", trainer.TrainConfig(**TINY, seed=i, out=str(tmp_path / f"run{i}"))) for i in range(n)]


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")
def test_cuda_without_a_gpu_is_refused_before_anything_runs(tmp_path, capsys):
    with pytest.raises(SvdgradError, match="Expected a CUDA device for --device cuda; .* Use --device cpu"):
        runner.check_device("cuda")
    runner.check_device("cpu")
    assert cli_main("study", ["landscape", "--quick", "--device", "cuda", "--out", str(tmp_path / "s")]) == 2
    assert "CUDA" in capsys.readouterr().err and not os.path.exists(tmp_path / "s")


def test_joblib_runs_in_parallel_bounded_by_cores_and_drops_checkpoints(tmp_path, keep_threads):
    assert runner.bounded_jobs(10 ** 6) == os.cpu_count() and runner.bounded_jobs(None) <= 2
    with pytest.raises(SvdgradError, match="--jobs >= 1"):
        runner.bounded_jobs(0)
    todo = _todo(tmp_path, 2)
    done = runner.run_all(todo, jobs=2, echo=lambda m: None)
    assert sorted(done) == ["run0", "run1"]
    assert all(runner.complete(c) and not os.path.exists(os.path.join(c.out, "checkpoint.pt")) for _, c in todo)
    import json

    with open(os.path.join(todo[0][1].out, "summary.json")) as f:  # what the run was computed with
        assert set(json.load(f)["host"]) == {"cpu", "torch", "svdgrad", "commit", "dirty"}


def test_the_time_budget_stops_launching_and_the_rest_runs_later(tmp_path, keep_threads):
    todo = _todo(tmp_path, 2)
    assert runner.run_all(todo, jobs=1, echo=lambda m: None, max_minutes=0) == []
    assert runner.run_all(todo[:1], jobs=1, echo=lambda m: None) == ["run0"]
    assert [lab for lab, c in todo if not runner.complete(c)] == ["run1"]


def test_the_time_budget_also_holds_with_parallel_jobs(tmp_path, keep_threads):
    todo = _todo(tmp_path, 3)
    assert runner.run_all(todo, jobs=2, echo=lambda m: None, max_minutes=0) == []
    assert not any(os.path.exists(c.out) for _, c in todo)


def test_the_seed_plan_goes_where_asked_and_only_grows():
    from svdgrad.train.study import PROTOCOLS, seed_plan

    assert seed_plan(None, None, {}, 8) == {p: 8 for p in PROTOCOLS}
    assert seed_plan(3, None, {}, 8) == {p: 3 for p in PROTOCOLS}  # a new study may plan fewer
    fresh = seed_plan(30, ["ns", "svd-exact"], {}, 8)
    assert fresh == dict({p: 8 for p in PROTOCOLS}, ns=30, **{"svd-exact": 30})
    old = {"seeds": 8, "protocols": {p: {} for p in PROTOCOLS}}  # a study.json from before per-protocol plans
    assert seed_plan(None, None, old, 1) == {p: 8 for p in PROTOCOLS}
    grown = seed_plan(12, ["gap"], dict(old, seeds_by_protocol=fresh), 8)
    assert grown == dict(fresh, gap=12)
    assert seed_plan(4, None, dict(old, seeds_by_protocol=fresh), 8) == fresh  # never drops finished seeds
    with pytest.raises(SvdgradError, match="Unknown protocol.*'nss'.*Expected names from gap, ns"):
        seed_plan(3, ["nss"], {}, 8)
    with pytest.raises(SvdgradError, match="Expected --seeds N with --protocols"):
        seed_plan(None, ["ns"], {}, 8)
    assert cli_main("study", ["hybrid", "--protocols", "ns", "--out", "/nonexistent/x"]) == 2


def test_ray_backend_on_a_local_instance(tmp_path, keep_threads):
    pytest.importorskip("ray")
    todo = _todo(tmp_path, 1)
    assert runner.run_all(todo, jobs=1, backend="ray", echo=lambda m: None) == ["run0"]
    assert runner.complete(todo[0][1])


def test_a_partial_landscape_report_says_what_ran_and_how_to_complete_it(tmp_path):
    out = str(tmp_path / "land")
    landscape.run(quick=True, out=out, max_minutes=0, echo=lambda m: None)
    text = open(os.path.join(out, "REPORT.md")).read()
    assert "0 of the 13 planned runs" in text and "This report covers part of the grid" in text
    assert "`svdgrad study landscape --quick --resume`" in text and "probes/gap: seeds 0" in text
    with pytest.raises(SvdgradError, match="Pass --resume to run the 13 missing ones"):
        landscape.run(quick=True, out=out, echo=lambda m: None)
    with pytest.raises(SvdgradError, match="another grid"):
        landscape.run(quick=False, out=out, echo=lambda m: None)


def test_landscape_grid_is_data_and_shares_runs():
    grid = list(landscape.configs(False, 2, "X"))
    assert [s for _, _, s, _ in grid] == sorted(s for _, _, s, _ in grid)  # seed by seed
    for part, name, _, cfg in grid:
        cfg.validate()
        assert cfg.out.startswith(os.path.join("X", "runs", part, name))
    assert landscape.run_dir("X", "schedules", "gap-norm", 0) == landscape.run_dir("X", "probes", "gap", 0)
    assert len({c.out for *_, c in grid}) == len(grid)


def test_train_modules_import_each_other_without_a_circle():
    import ast

    root = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "svdgrad", "train")
    mods = [f[:-3] for f in os.listdir(root) if f.endswith(".py")]
    graph = {}
    for m in mods:
        tree = ast.parse(open(os.path.join(root, f"{m}.py")).read())
        deps = set()
        for n in ast.walk(tree):
            if isinstance(n, ast.ImportFrom) and n.level == 1:
                deps |= {n.module} if n.module else {a.name for a in n.names}
        graph[m] = deps & set(mods)

    def reach(a, seen):
        for b in graph[a]:
            if b not in seen:
                seen.add(b)
                reach(b, seen)
        return seen

    assert [m for m in mods if m in reach(m, set())] == []


def _fake(acc, rel=None, dl=(1.0, 2.0), rob=0.5):
    return {"seed": 0, "summary": {"final_val_acc": acc, "skipped_steps": 0, "elapsed_s": 1.0,
                                   "robustness": {f"{k}{s}": rob for k in ("noise", "blur", "contrast")
                                                  for s in (1, 2, 3)}},
            "history": [{"kappa_median": 10.0}],
            "probes": [] if rel is None else [{"step": 0, "rel_err": rel}],
            "landscape": [{"step": 0, "loss": 1.0, "delta_l": list(dl), "delta_g": list(dl)}]}


def test_landscape_claims_and_gradient_prediction_on_hand_made_runs():
    from svdgrad.train import landscape_report as lr, stats

    runs = {("probes", "gap"): [_fake(0.80 + 0.01 * i, dl=(1.0, 3.0 + 0.1 * i), rob=0.4) for i in range(4)],
            ("probes", "gcp-ns"): [_fake(0.90 + 0.01 * i, rel=0.2, dl=(1.0, 1.5 + 0.1 * i), rob=0.6)
                                   for i in range(4)],
            ("probes", "gcp-exact"): [_fake(0.92 + 0.01 * i, dl=(1.0, 1.5)) for i in range(4)],
            ("precision", "sigma32"): [_fake(0.91 + 0.01 * i, rel=1e-5) for i in range(4)]}
    judged = {c.claim.split(" (")[0]: c for c, *_ in lr.claims(runs)}
    assert judged["GCP-NS has better loss Lipschitzness: a smaller range of Δl over η"].verdict == stats.HOLDS
    assert judged["GCP-NS beats GAP on noise-corrupted validation images"].verdict == stats.HOLDS
    assert judged["GCP-NS beats GAP under LR_fast"].test == "none"  # runs missing: not resolved, not an error
    text = lr.gradient_predicts(runs)
    assert "12 probed GCP runs" in text and "Spearman" in text
    assert lr.gradient_predicts({}) .startswith("Too few")


def test_max_minutes_is_in_minutes():
    """0.6 s of work inside a 3 s budget all runs (read as seconds, the budget would stop after the first)."""
    import time

    todo = [(f"r{i}", trainer.TrainConfig(**TINY)) for i in range(3)]
    done = runner.run_all(todo, jobs=1, echo=lambda m: None, max_minutes=0.05, fn=lambda d: time.sleep(0.2))
    assert done == ["r0", "r1", "r2"]


def _stopping_data(tmp_path):
    """Every training image 3e38 (kept as it is): every step of epoch 1 is skipped, so the run stops there."""
    path = tmp_path / "stop.pt"
    torch.save({"images": torch.full((24, 1, 16, 16), 3e38), "labels": torch.arange(24) % 2,
                "val_images": torch.randn(4, 1, 16, 16), "val_labels": torch.arange(4) % 2, "standardize": False},
               path)
    return f"tensors:{path}"


def test_a_run_that_stops_on_its_own_is_its_outcome_and_the_study_goes_on(tmp_path, keep_threads):
    """A run whose method fails for good (every step of an epoch non-finite: `ordinary` on a tie that persists)
    is recorded and the study goes on; it was an error that stopped the whole study, and --resume ran it again,
    to stop again, so a study with such a seed could never finish."""
    import json

    stop = trainer.TrainConfig(**{**TINY, "dataset": _stopping_data(tmp_path), "epochs": 2}, seed=0,
                               out=str(tmp_path / "stop"))
    todo = [("stop", stop)] + _todo(tmp_path, 1)
    done = runner.run_all(todo, jobs=1, echo=lambda m: None)
    assert sorted(done) == ["run0", "stop (stopped in epoch 1)"]
    with open(os.path.join(stop.out, runner.STOPPED)) as f:
        rec = json.load(f)
    assert rec["stopped"] is True and rec["epoch"] == 1 and rec["seed"] == 0
    assert rec["reason"].startswith("Every one of the ") and "steps of epoch 1 was skipped" in rec["reason"]
    assert runner.complete(stop) and not os.path.exists(os.path.join(stop.out, "checkpoint.pt"))
    assert not os.path.exists(os.path.join(stop.out, "summary.json"))
    assert runner.run_all([lab_c for lab_c in todo if not runner.complete(lab_c[1])], jobs=1, echo=print) == []
    # the CLI still reports it as an error for a single run
    assert cli_main("train", ["--dataset", _stopping_data(tmp_path), "--image-size", "16", "--widths", "4,4,4",
                              "--reduced-channels", "4", "--batch-size", "20", "--protocol", "ns", "--epochs", "1",
                              "--out", str(tmp_path / "cli")]) == 2


def test_the_hybrid_report_says_which_runs_stopped_and_leaves_them_out():
    from svdgrad.train import report

    study = {"seeds_by_protocol": {"svd-ordinary": 3, "svd-pade": 3}}
    runs = {"svd-ordinary": [{"seed": 0}, {"seed": 2}], "svd-pade": [{"seed": s} for s in range(3)]}
    stopped = {"svd-ordinary": [{"seed": 1, "epoch": 2, "reason": "Every one of the 31 steps of epoch 2 was "
                                 "skipped (non-finite gradient: 31). Check the data."}]}
    lines = report._what_ran(runs, study, stopped)
    assert lines[0].startswith("5 of the 6 planned runs")
    assert ("1 more stopped on its own before its last epoch and is left out of every statistic below, "
            "which therefore describes the runs that finished (SVD ordinary (MPN-COV) seed 1, in epoch 2: Every "
            "one of the 31 steps of epoch 2 was skipped (non-finite gradient: 31)).") in lines[0]
    assert len(lines) == 1  # nothing missing: a stopped run is not listed as one to complete
    two = report._what_ran(runs, study, {"svd-ordinary": stopped["svd-ordinary"] * 2})[0]
    assert "2 more stopped on their own before their last epoch and are left out" in two
    # with a run really missing (svd-pade seed 2), that one is listed, the stopped one is not
    part = report._what_ran({**runs, "svd-pade": runs["svd-pade"][:2]}, study, stopped)
    assert "Missing: svd-pade: seeds 2. Complete it" in part[2] and "svd-ordinary" not in part[2]
    # without the record, seed 1 is missing and the command to complete the grid is given
    assert "Missing: svd-ordinary: seeds 1." in report._what_ran(runs, study, {})[2]


def test_a_second_study_into_a_folder_being_written_is_refused(tmp_path):
    """Two `--resume`s of one study ran the same runs twice (every log line doubled) and both exited 0."""
    from filelock import FileLock

    from svdgrad.train import study, trainer

    out = tmp_path / "study"
    out.mkdir()
    held = FileLock(str(out / trainer.LOCK), timeout=0)
    held.acquire()
    try:
        with pytest.raises(SvdgradError, match="another study is writing to"):
            study.run(quick=True, out=str(out), seeds=1, jobs=1, echo=lambda *a: None)
        assert not (out / "study.json").exists()
    finally:
        held.release()
