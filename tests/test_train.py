"""svdgrad.train: schedules, the hybrid switch, data, the trainer (skip, resume, DDP), the study."""

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from svdgrad import SvdgradError
from svdgrad.train import data, schedules, study, trainer
from svdgrad.train.cli import main as cli_main

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: A tiny run: 5 texture classes x 16 patches of 16 px, a 4-8-8 ResNet, d = 6.
TINY = dict(dataset="textures", image_size=16, train_per_class=16, val_per_class=8, widths=(4, 8, 8),
            reduced_channels=6, batch_size=16, threads=1, progress=False)
TINY_ARGS = ["--dataset", "textures", "--image-size", "16", "--train-per-class", "16", "--val-per-class", "8",
             "--widths", "4,8,8", "--reduced-channels", "6", "--batch-size", "16", "--threads", "1",
             "--no-progress"]
TIMING_KEYS = ("time_s", "elapsed_s")


def _log(out):
    with open(os.path.join(out, "log.jsonl")) as f:
        return [{k: v for k, v in json.loads(line).items() if k not in TIMING_KEYS} for line in f]


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = "1"
    return env


@pytest.fixture
def keep_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


# ---------------------------------------------------------------------------
# Schedules: CVPR20 Table 3 in the 1-based convention.
# ---------------------------------------------------------------------------

def test_lr_fast_and_lr_adj_match_table_3():
    fast = schedules.lr_fast_resnet()
    for e in range(1, 31):
        assert fast.lr(e) == pytest.approx(0.1 * (1 - (e - 1) / 52) ** 11, rel=1e-12)
    adj = schedules.lr_adj_resnet()
    for e in range(1, 51):
        assert adj.lr(e) == pytest.approx(0.1 * (1 - (e - 1) / 49) ** 2, rel=1e-12)
    # The reference's off-by-one (e = 0 gives more than the base lr) cannot happen: epochs start at 1.
    assert fast.lr(1) == adj.lr(1) == 0.1
    assert 0.1 * (1 - (0 - 1) / 52) ** 11 > 0.1
    with pytest.raises(SvdgradError, match="1-based epoch"):
        fast.lr(0)


def test_lr_norm_and_mobilenet_match_table_3():
    norm = schedules.lr_norm_resnet(100)
    for e in range(1, 101):
        e0 = e - 1  # Table 3 counts this schedule from 0
        assert norm.lr(e) == pytest.approx(0.1 ** (e0 // 30 + 1), rel=1e-12)
    assert norm.last_decay_epoch == 91
    for sched, base, g in ((schedules.lr_norm_mobilenet(), 0.045, 0.98), (schedules.lr_fast_mobilenet(), 0.06, 0.92)):
        for e in (1, 2, 10, 100):
            assert sched.lr(e) == pytest.approx(base * g ** (e - 1), rel=1e-12)


def test_cosine_step_defaults_and_errors():
    c = schedules.make("cosine", 0.2, 10)
    assert c.lr(1) == 0.2 and c.lr(10) == pytest.approx(0.1 * (1 + math.cos(math.pi * 0.9)))
    s = schedules.make("step", 0.1, 30)
    assert s.milestones == (11, 21) and s.last_decay_epoch == 21  # ICCV21 AlexNet: switch at epoch 21 of 30
    assert [s.lr(e) for e in (10, 11, 20, 21)] == pytest.approx([0.1, 0.01, 0.01, 0.001])
    with pytest.raises(SvdgradError, match="Unknown schedule 'linear'.*step, poly, exp, cosine"):
        schedules.make("linear", 0.1, 10)
    with pytest.raises(SvdgradError, match="milestones"):
        schedules.make("step", 0.1, 10, milestones=(5, 3))
    with pytest.raises(SvdgradError, match="e_f"):
        schedules.make("poly", 0.1, 10, final_epoch=5)


# ---------------------------------------------------------------------------
# The hybrid switch rule.
# ---------------------------------------------------------------------------

def _methods_by_epoch(cfg):
    s = cfg.make_schedule()
    return [trainer.method_for_epoch(cfg, s, e).name for e in range(1, cfg.epochs + 1)]


def test_hybrid_switches_at_last_decay():
    cfg = trainer.TrainConfig(epochs=30, protocol="hybrid", svd_method="exact")
    names = _methods_by_epoch(cfg)
    assert names[:20] == ["newton_schulz"] * 20 and names[20:] == ["exact"] * 10  # epoch 21 of 30
    cfg = trainer.TrainConfig(epochs=12, protocol="hybrid", milestones=(4, 7, 10))
    assert trainer.switch_epoch_of(cfg, cfg.make_schedule()) == 10


def test_hybrid_switch_lr_and_switch_epoch():
    cfg = trainer.TrainConfig(epochs=30, protocol="hybrid", schedule="poly", poly_power=11, poly_final_epoch=53,
                              switch_lr=1e-3, svd_method="ordinary")
    s = cfg.make_schedule()
    sw = trainer.switch_epoch_of(cfg, s)
    assert s.lr(sw) < 1e-3 <= s.lr(sw - 1)
    names = _methods_by_epoch(cfg)
    assert names.index("ordinary") == sw - 1 and set(names[sw - 1:]) == {"ordinary"}
    cfg = trainer.TrainConfig(epochs=10, protocol="hybrid", schedule="cosine", switch_epoch=4)
    assert _methods_by_epoch(cfg)[2:4] == ["newton_schulz", "pade"]
    # ns never switches, svd starts with the SVD method, gap has no square root.
    assert set(_methods_by_epoch(trainer.TrainConfig(epochs=5, protocol="ns"))) == {"newton_schulz"}
    assert set(_methods_by_epoch(trainer.TrainConfig(epochs=5, protocol="svd", svd_method="taylor"))) == {"taylor"}
    gap = trainer.TrainConfig(epochs=5, head="gap")
    assert trainer.method_for_epoch(gap, gap.make_schedule(), 3) is None


def test_hybrid_without_a_decay_needs_a_rule():
    with pytest.raises(SvdgradError, match="--switch-lr"):
        trainer.TrainConfig(epochs=10, protocol="hybrid", schedule="cosine").validate()


def test_hybrid_run_logs_the_switch_exactly(tmp_path, keep_threads):
    cfg = trainer.TrainConfig(**TINY, epochs=4, milestones=(2, 4), protocol="hybrid", svd_method="exact",
                              out=str(tmp_path / "run"))
    summary = trainer.train(cfg, echo=lambda m: None)
    log = _log(cfg.out)
    assert summary["switch_epoch"] == 4
    assert [r["method"] for r in log] == ["newton_schulz"] * 3 + ["exact"]
    assert [r["switched"] for r in log] == [False, False, False, True]
    assert [r["lr"] for r in log] == pytest.approx([0.1, 0.01, 0.01, 0.001])
    for r in log:
        assert set(trainer.LOG_FIELDS) <= set(r) | {"time_s"}
        assert r["kappa_median"] >= 1 and r["kappa_max"] >= r["kappa_median"]
        assert 0 <= r["small_eig_fraction"] <= 1
    assert os.path.exists(os.path.join(cfg.out, "checkpoint.pt"))
    assert not [f for f in os.listdir(cfg.out) if f.endswith(".tmp")]


def test_nonfinite_steps_are_skipped_and_counted(tmp_path, keep_threads, monkeypatch):
    real = torch.nn.functional.cross_entropy
    calls = {"n": 0}

    def poisoned(out, y, **kw):
        loss = real(out, y, **kw)
        if kw.get("reduction", "mean") == "mean":
            calls["n"] += 1
            if calls["n"] in (2, 3):
                return loss * float("nan")
        return loss

    monkeypatch.setattr(trainer.F, "cross_entropy", poisoned)
    cfg = trainer.TrainConfig(**TINY, epochs=1, protocol="svd", svd_method="ordinary", out=str(tmp_path / "r"))
    summary = trainer.train(cfg, echo=lambda m: None)
    assert summary["skipped_steps"] == 2
    state = trainer.load_checkpoint(os.path.join(cfg.out, "checkpoint.pt"))["model"]
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())


# ---------------------------------------------------------------------------
# Data.
# ---------------------------------------------------------------------------

def test_textures_and_digits_are_deterministic():
    a = data.load("textures", 16, train_per_class=4, val_per_class=2)
    data.textures.cache_clear()
    b = data.load("textures", 16, train_per_class=4, val_per_class=2)
    assert a.num_classes >= 3 and {"brick", "grass", "gravel"} <= set(a.classes)
    assert torch.equal(a.train_x, b.train_x) and torch.equal(a.val_y, b.val_y)
    assert a.train_x.shape == (4 * a.num_classes, 1, 16, 16)
    d = data.load("digits", 16)
    assert d.num_classes == 10 and d.train_x.shape[1:] == (1, 16, 16)
    assert len(d.train_y) + len(d.val_y) == 1797


def test_user_tensor_files(tmp_path):
    x = np.random.default_rng(0).normal(size=(20, 3, 8, 8)).astype(np.float32)
    y = np.arange(20) % 4
    np.savez(tmp_path / "d.npz", images=x, labels=y)
    torch.save({"images": torch.from_numpy(x), "labels": torch.from_numpy(y)}, tmp_path / "d.pt")
    a = data.load(f"tensors:{tmp_path / 'd.npz'}", 8)
    b = data.load(f"tensors:{tmp_path / 'd.pt'}", 8)
    assert a.in_channels == 3 and a.num_classes == 4 and len(a.val_y) == 4
    assert torch.equal(a.train_x, b.train_x) and torch.equal(a.val_y, b.val_y)


@pytest.mark.parametrize("kind,match", [
    ("missing", "does not exist"),
    ("extension", "extension"),
    ("nokey", "Expected a key 'labels'"),
    ("shape", "one per image"),
    ("nan", "finite images"),
    ("float_labels", "integer class labels"),
    ("huge_float_label", r"received a label of 1e\+30"),
    ("inf_label", "received non-finite labels"),
    ("huge_negative_float_label", r"received a label of -1e\+30"),
    ("garbage", "Could not read"),
])
def test_bad_user_files_give_clear_errors(tmp_path, kind, match):
    x = np.zeros((6, 8, 8), np.float32)
    p = tmp_path / "d.npz"
    if kind == "extension":
        p = tmp_path / "d.csv"
        p.write_text("1,2\n")
    elif kind == "nokey":
        np.savez(p, images=x)
    elif kind == "shape":
        np.savez(p, images=x, labels=np.zeros(5, int))
    elif kind == "nan":
        x[0, 0, 0] = np.nan
        np.savez(p, images=x, labels=np.zeros(6, int))
    elif kind == "float_labels":
        np.savez(p, images=x, labels=np.full(6, 0.5))
    elif kind in ("huge_float_label", "inf_label", "huge_negative_float_label"):
        # (integer-valued floats: cast to int64 they were garbage, and the message showed a garbage minimum)
        bad = {"huge_float_label": 1e30, "inf_label": np.inf, "huge_negative_float_label": -1e30}[kind]
        np.savez(p, images=x, labels=np.array([0.0, 1.0, 2.0, bad, 1.0, 0.0]))
    elif kind == "garbage":
        p = tmp_path / "d.pt"
        p.write_bytes(b"not a torch file")
    with pytest.raises(SvdgradError, match=match):
        data.load(f"tensors:{p}", 8)


def test_cli_bad_data_and_options_give_clear_errors(tmp_path, capsys):
    out = str(tmp_path / "o")
    assert cli_main("train", ["--dataset", f"tensors:{tmp_path}/nope.pt", "--out", out]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert cli_main("train", ["--dataset", "cifar", "--out", out]) == 2
    assert "Unknown dataset 'cifar'. Expected one of textures, digits" in capsys.readouterr().err
    assert cli_main("train", ["--svd-method", "svdd", "--out", out]) == 2
    assert "Unknown method 'svdd'" in capsys.readouterr().err
    assert cli_main("train", ["--schedule", "cosine", "--out", out]) == 2
    assert "--switch-lr" in capsys.readouterr().err
    assert cli_main("train", ["--epochs", "0", "--out", out]) == 2
    assert "--epochs" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli_main("train", ["--protocol", "fast"])
    assert "invalid choice" in capsys.readouterr().err


def test_resume_refuses_different_options(tmp_path, keep_threads):
    cfg = trainer.TrainConfig(**TINY, epochs=1, protocol="ns", out=str(tmp_path / "r"))
    trainer.train(cfg, echo=lambda m: None)
    cfg2 = trainer.TrainConfig(**TINY, epochs=1, protocol="ns", lr=0.05, resume=True, out=cfg.out)
    with pytest.raises(SvdgradError, match="lr \\(checkpoint 0.1, now 0.05\\)"):
        trainer.train(cfg2, echo=lambda m: None)


# ---------------------------------------------------------------------------
# Kill and resume; DDP against one process.
# ---------------------------------------------------------------------------

def test_kill_and_resume_give_identical_metrics(tmp_path, keep_threads):
    args = TINY_ARGS + ["--epochs", "6", "--milestones", "3,5", "--protocol", "hybrid", "--svd-method", "exact"]
    ref = trainer.TrainConfig(**TINY, epochs=6, milestones=(3, 5), protocol="hybrid", svd_method="exact",
                              out=str(tmp_path / "ref"))
    trainer.train(ref, echo=lambda m: None)

    out = str(tmp_path / "killed")
    cmd = [sys.executable, "-m", "svdgrad", "train", *args, "--out", out]
    proc = subprocess.Popen(cmd, env=_env(), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    log = os.path.join(out, "log.jsonl")
    deadline = time.time() + 90
    while time.time() < deadline and proc.poll() is None:
        if os.path.exists(log) and len(open(log).read().splitlines()) >= 2:
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the run finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    done = trainer.load_checkpoint(os.path.join(out, "checkpoint.pt"))["epoch"]
    assert 2 <= done < 6

    res = subprocess.run(cmd + ["--resume"], env=_env(), cwd=REPO, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert f"resuming {out} after epoch {done}" in res.stderr
    assert _log(out) == _log(ref.out)  # every metric of every epoch, exactly
    s_ref = json.load(open(os.path.join(ref.out, "summary.json")))
    s_res = json.load(open(os.path.join(out, "summary.json")))
    for k in ("final_val_acc", "final_val_loss", "final_train_loss", "best_val_acc", "skipped_steps"):
        assert s_res[k] == s_ref[k]


def test_ddp_two_processes_match_one_process(tmp_path, keep_threads):
    args = TINY_ARGS + ["--epochs", "2", "--protocol", "hybrid", "--svd-method", "exact", "--switch-epoch", "2"]
    out = str(tmp_path / "ddp")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "svdgrad", "train", *args, "--out", out]
    res = subprocess.run(cmd, env=_env(), cwd=REPO, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-3000:]
    assert json.loads(res.stdout.strip().splitlines()[-1])["world_size"] == 2
    single = trainer.TrainConfig(**TINY, epochs=2, protocol="hybrid", svd_method="exact", switch_epoch=2,
                                 out=str(tmp_path / "one"))
    trainer.train(single, echo=lambda m: None)
    a, b = _log(out), _log(single.out)
    assert [r["method"] for r in a] == [r["method"] for r in b] == ["newton_schulz", "exact"]
    for ra, rb in zip(a, b):
        for k in ("train_loss", "val_loss", "kappa_median", "lambda_max_median"):
            assert ra[k] == pytest.approx(rb[k], rel=1e-4), k
        for k in ("train_acc", "val_acc", "skipped_steps", "steps"):
            assert ra[k] == rb[k], k


# ---------------------------------------------------------------------------
# The study, quick variant.
# ---------------------------------------------------------------------------

def test_quick_study_writes_the_report(tmp_path, keep_threads):
    out = str(tmp_path / "hybrid_protocol")
    t0 = time.perf_counter()
    assert study.run(quick=True, out=out, echo=lambda m: None) == out
    assert time.perf_counter() - t0 < 120
    for f in ("REPORT.md", "curves.png", "kappa.png", "skipped.png", "study.json"):
        assert os.path.exists(os.path.join(out, f)), f
    runs = study.load_runs(out)
    assert set(runs) == set(study.PROTOCOLS)
    assert not any(f == "checkpoint.pt" for _, _, fs in os.walk(out) for f in fs)
    text = open(os.path.join(out, "REPORT.md")).read()
    for p in study.PROTOCOLS:
        assert study.LABELS[p] in text
    assert "Do the papers' findings hold here?" in text
    # Finished runs are not run again.
    with pytest.raises(SvdgradError, match="--resume"):  # a study folder is completed only on request
        study.run(quick=True, out=out, seeds=2, echo=lambda m: None)
    t0 = time.perf_counter()
    study.run(quick=True, out=out, resume=True, echo=lambda m: None)
    assert time.perf_counter() - t0 < 20
    # The switch point is an axis: the early hybrid switches at the first decay, the others at the last,
    # and the report judges the two switch points paired by seed.
    early = {r["summary"]["switch_epoch"] for r in runs[study.EARLY]}
    late = {r["summary"]["switch_epoch"] for r in runs["hybrid-exact"]}
    assert early == {2} and late == {3}, (early, late)  # quick: 3 epochs, decays at epochs 2 and 3
    assert "beats switching at the first (epoch 2)" in text
    # A grid that grew since (a protocol added) is completed by --resume, running only the new protocol...
    with open(os.path.join(out, "study.json")) as f:
        saved = json.load(f)
    del saved["protocols"][study.EARLY]
    del saved["seeds_by_protocol"]  # as an older study.json, with one number of seeds for every protocol
    with open(os.path.join(out, "study.json"), "w") as f:
        json.dump(saved, f)
    shutil.rmtree(os.path.join(out, "runs", study.EARLY))
    said = []
    study.run(quick=True, out=out, resume=True, echo=said.append)
    assert any("running 1 " in m for m in said), said
    assert set(study.load_runs(out)) == set(study.PROTOCOLS)
    # Seeds go where the claims need them: --seeds N --protocols ns runs only ns's new seed, the plan is
    # kept in study.json (a later --resume keeps it), and the report states it.
    said = []
    study.run(quick=True, out=out, seeds=2, protocols=["ns"], resume=True, echo=said.append)
    assert any("running 1 " in m for m in said), said
    assert [r["seed"] for r in study.load_runs(out)["ns"]] == [0, 1]
    with open(os.path.join(out, "study.json")) as f:
        saved = json.load(f)
    assert saved["seeds_by_protocol"] == dict({p: 1 for p in study.PROTOCOLS}, ns=2)
    text = open(os.path.join(out, "REPORT.md")).read()
    assert f"2 seeds of ns; 1 seed of {', '.join(p for p in study.PROTOCOLS if p != 'ns')}" in text
    assert f"{len(study.PROTOCOLS) + 1} of the {len(study.PROTOCOLS) + 1} planned runs" in text
    # ... but a protocol whose settings changed would mix two grids, and is refused.
    saved["protocols"] = dict(study.PROTOCOLS, ns={"protocol": "ns", "ns_iterations": 9})
    with open(os.path.join(out, "study.json"), "w") as f:
        json.dump(saved, f)
    with pytest.raises(SvdgradError, match="other settings \\(ns differ"):
        study.run(quick=True, out=out, resume=True, echo=lambda m: None)
    shutil.rmtree(out)


# ---------------------------------------------------------------------------
# Resume at every point of a run (found by mutation: each of these resumed wrongly and no test noticed).
# ---------------------------------------------------------------------------

def _stop_after(k):
    """An echo that interrupts the run after epoch k (its checkpoint and log line are written by then)."""
    def echo(msg):
        if msg.startswith(f"[svdgrad train] epoch {k}/"):
            raise KeyboardInterrupt
    return echo


def _interrupted_then_resumed(tmp_path, name, k, torn_log=False, **over):
    cfg = trainer.TrainConfig(**TINY, **over, out=str(tmp_path / name))
    with pytest.raises(KeyboardInterrupt):
        trainer.train(cfg, echo=_stop_after(k))
    assert trainer.load_checkpoint(os.path.join(cfg.out, "checkpoint.pt"))["epoch"] == k
    if torn_log:  # killed while appending the last line: half of it, no newline
        log = os.path.join(cfg.out, "log.jsonl")
        with open(log) as f:
            lines = f.read().splitlines(keepends=True)
        with open(log, "w") as f:
            f.write("".join(lines[:-1]) + lines[-1][:len(lines[-1]) // 2])
    cfg.resume = True
    return cfg, trainer.train(cfg, echo=lambda m: None)


HYBRID_3 = dict(epochs=3, protocol="hybrid", svd_method="exact", switch_epoch=2)


def test_a_hybrid_resumed_after_its_switch_goes_on_with_the_svd_method(tmp_path, keep_threads):
    ref = trainer.TrainConfig(**TINY, **HYBRID_3, out=str(tmp_path / "ref"))
    trainer.train(ref, echo=lambda m: None)
    assert [r["switched"] for r in _log(ref.out)] == [False, True, False]  # on the switch epoch only
    cfg, _ = _interrupted_then_resumed(tmp_path, "res", 2, **HYBRID_3)
    assert _log(cfg.out) == _log(ref.out)


def test_the_optimizer_trains_with_the_scheduled_lr(tmp_path, keep_threads):
    """The log's lr is the schedule's; the optimizer's own must be the same, or the log says what did not run."""
    cfg = trainer.TrainConfig(**TINY, epochs=2, milestones=(2,), protocol="ns", out=str(tmp_path / "r"))
    trainer.train(cfg, echo=lambda m: None)
    ck = trainer.load_checkpoint(os.path.join(cfg.out, "checkpoint.pt"))
    assert [g["lr"] for g in ck["optimizer"]["param_groups"]] == [pytest.approx(0.01)]
    assert _log(cfg.out)[-1]["lr"] == pytest.approx(0.01)


def test_a_resumed_run_counts_the_time_before_the_interruption(tmp_path, keep_threads):
    cfg, summary = _interrupted_then_resumed(tmp_path, "r", 1, epochs=2, protocol="ns")
    with open(os.path.join(cfg.out, "log.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    assert len(rows) == 2 and summary["elapsed_s"] >= sum(r["time_s"] for r in rows)


def test_resume_rewrites_a_torn_log_from_the_checkpoint(tmp_path, keep_threads):
    ref = trainer.TrainConfig(**TINY, epochs=2, protocol="ns", out=str(tmp_path / "ref"))
    trainer.train(ref, echo=lambda m: None)
    cfg, _ = _interrupted_then_resumed(tmp_path, "r", 1, torn_log=True, epochs=2, protocol="ns")
    assert _log(cfg.out) == _log(ref.out)
