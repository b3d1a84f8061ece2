"""svdgrad.train under injected faults: poisoned images, corrupted checkpoints, changed options,
existing output folders, bad labels, Ctrl-C; and the CLI's guards (issues 8 and 12)."""

import copy
import dataclasses
import io
import json
import os
import shlex
import signal
import subprocess
import sys
import time
import zipfile

import numpy as np
import pytest
import torch

from svdgrad import SvdgradError
from svdgrad.train import cli, data, ddp, trainer
from svdgrad.train.cli import main as cli_main

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HUGE = 3e38  # finite in float32; its square (the covariance) overflows

#: A tiny net on tiny user data: 4 classes, 40 training and 12 validation images of 16 px.
NET = dict(image_size=16, widths=(4, 8, 8), reduced_channels=6, batch_size=8, threads=1, progress=False)
NET_ARGS = ["--image-size", "16", "--widths", "4,8,8", "--reduced-channels", "6", "--batch-size", "8",
            "--threads", "1", "--no-progress"]
HEADS = {"gap": dict(head="gap"), "ns": dict(protocol="ns"), "svd-exact": dict(protocol="svd", svd_method="exact")}
HEAD_ARGS = {"gap": ["--head", "gap"], "ns": ["--protocol", "ns"],
             "svd-exact": ["--protocol", "svd", "--svd-method", "exact"]}


def _images(n, seed):
    return torch.randn(n, 1, 16, 16, generator=torch.Generator().manual_seed(seed))


def _write_data(path, *, train_poison=None, val_poison=None, labels=None):
    x, vx = _images(40, 0), _images(12, 1)
    if train_poison is not None:
        x[3] = train_poison
    if val_poison is not None:
        vx[0] = val_poison
    y = torch.arange(40) % 4 if labels is None else torch.as_tensor(labels)
    # (standardize=False: the poison reaches the network as it is, not divided by the training images' spread)
    torch.save({"images": x, "labels": y, "val_images": vx, "val_labels": torch.arange(12) % 4,
                "standardize": False}, path)
    return f"tensors:{path}"


@pytest.fixture
def keep_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = "1"
    return env


# ---------------------------------------------------------------------------
# Issue 8 §3: a skipped step changes nothing, and the run goes on.
# ---------------------------------------------------------------------------

def _tiny_model(head):
    cfg = trainer.TrainConfig(dataset="textures", **NET, **HEADS[head])
    net = trainer.build_model(cfg, 1, 4)
    if head == "svd-exact":
        net.pool.method = "exact"
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    guard = trainer._PoolGuard(net.pool) if cfg.head == "cov" else None
    return net, opt, guard


@pytest.mark.parametrize("poison", [HUGE, float("nan")], ids=["3e38", "nan"])
@pytest.mark.parametrize("head", list(HEADS))
def test_a_skipped_step_leaves_weights_buffers_and_optimizer_bitwise_unchanged(head, poison):
    torch.manual_seed(0)
    net, opt, guard = _tiny_model(head)
    net.train()
    y = torch.arange(8) % 4
    for k in range(2):  # fill the momentum buffers and move the BN statistics
        loss, _, reason = trainer.train_step(net, net, opt, _images(8, 10 + k), y, guard=guard)
        assert reason is None and torch.isfinite(loss)
    state = copy.deepcopy(net.state_dict())
    opt_state = copy.deepcopy(opt.state_dict())
    assert any("running_var" in k for k in state) and opt_state["state"]

    x = _images(8, 20)
    x[5] = poison
    _, _, reason = trainer.train_step(net, net, opt, x, y, guard=guard)
    assert reason is not None
    if head != "gap":
        assert reason.startswith("pooled matrix rejected by sqrtm")  # sqrtm raised; the step did not abort
    after = net.state_dict()
    assert after.keys() == state.keys()
    for k in state:  # weights and every buffer: running_mean/var, num_batches_tracked
        assert torch.equal(after[k], state[k]), k
    new_opt = opt.state_dict()
    for i, s in opt_state["state"].items():
        assert torch.equal(new_opt["state"][i]["momentum_buffer"], s["momentum_buffer"])

    # The next clean step is applied again (the guard is reset), so the test above was not vacuous.
    _, _, reason = trainer.train_step(net, net, opt, _images(8, 30), y, guard=guard)
    assert reason is None
    assert not torch.equal(net.state_dict()["fc.weight"], state["fc.weight"])


@pytest.mark.parametrize("head", list(HEADS))
def test_a_3e38_training_image_is_skipped_and_the_run_finishes(tmp_path, capsys, keep_threads, head):
    spec = _write_data(tmp_path / "d.pt", train_poison=HUGE)
    out = str(tmp_path / "run")
    rc = cli_main("train", ["--dataset", spec, *NET_ARGS, *HEAD_ARGS[head], "--epochs", "2", "--out", out])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    summary = json.loads(captured.out.strip().splitlines()[-1])
    assert summary["skipped_steps"] == 2  # one batch per epoch holds the image
    assert np.isfinite(summary["final_val_loss"])
    log = [json.loads(line) for line in open(os.path.join(out, "log.jsonl"))]
    assert [r["skipped_steps"] for r in log] == [1, 1]
    assert all(sum(r["skip_reasons"].values()) == 1 for r in log)
    assert "skipped 1" in captured.err


def test_a_nan_training_image_is_skipped_and_the_run_finishes(tmp_path, keep_threads, monkeypatch):
    # The loader refuses NaN in a file, so inject it behind the loader.
    clean = data.Dataset("poisoned", _images(40, 0), torch.arange(40) % 4, _images(12, 1), torch.arange(12) % 4,
                         ("0", "1", "2", "3"))
    clean.train_x[7] = float("nan")
    monkeypatch.setattr(data, "load", lambda *a, **k: clean)
    for head in ("gap", "ns"):
        cfg = trainer.TrainConfig(dataset="textures", **NET, **HEADS[head], epochs=1, out=str(tmp_path / head))
        summary = trainer.train(cfg, echo=lambda m: None)
        assert summary["skipped_steps"] == 1 and np.isfinite(summary["final_val_loss"])


def test_a_model_that_becomes_nonfinite_stops_the_run(tmp_path, capsys, keep_threads, monkeypatch):
    # A validation image that overflows: weights stay finite, the validation loss does not.
    spec = _write_data(tmp_path / "d.pt", val_poison=HUGE)
    out = str(tmp_path / "val")
    assert cli_main("train", ["--dataset", spec, *NET_ARGS, "--head", "gap", "--epochs", "2", "--out", out]) == 2
    err = capsys.readouterr().err
    assert "Training stopped in epoch 1" in err and "validation loss is nan" in err and "Traceback" not in err
    assert not os.path.exists(os.path.join(out, "summary.json"))

    # Finite gradients whose update overflows the weights: the run stops, the last good checkpoint stays.
    spec = _write_data(tmp_path / "ok.pt")
    real = torch.optim.SGD.step
    calls = {"n": 0}

    def overflowing_step(self, *a, **k):
        calls["n"] += 1
        r = real(self, *a, **k)
        if calls["n"] == 7:  # in epoch 2 (5 steps per epoch)
            with torch.no_grad():
                self.param_groups[0]["params"][0].fill_(float("inf"))
        return r

    monkeypatch.setattr(torch.optim.SGD, "step", overflowing_step)
    out = str(tmp_path / "w")
    assert cli_main("train", ["--dataset", spec, *NET_ARGS, "--head", "gap", "--epochs", "3", "--out", out]) == 2
    err = capsys.readouterr().err
    assert "Training stopped in epoch 2" in err and "not finite (stem.0.weight" in err
    assert "checkpoint of epoch 1" in err
    assert trainer.load_checkpoint(os.path.join(out, "checkpoint.pt"))["epoch"] == 1


# ---------------------------------------------------------------------------
# Issue 8 §4: checkpoints are verified; resume compares what changes results.
# ---------------------------------------------------------------------------

@pytest.fixture
def finished_run(tmp_path, keep_threads):
    spec = _write_data(tmp_path / "d.pt")
    args = ["--dataset", spec, *NET_ARGS, "--protocol", "ns", "--epochs", "2", "--out", str(tmp_path / "run")]
    assert cli_main("train", args) == 0
    return args, str(tmp_path / "run")


def _tensor_offset(payload: bytes) -> tuple[int, int]:
    """(offset, size) of the largest tensor's bytes inside a torch.save payload (a stored zip)."""
    with zipfile.ZipFile(io.BytesIO(payload)) as z:
        info = max((i for i in z.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    local = payload[info.header_offset:info.header_offset + 30]
    name_len, extra_len = int.from_bytes(local[26:28], "little"), int.from_bytes(local[28:30], "little")
    return info.header_offset + 30 + name_len + extra_len, info.file_size


@pytest.mark.parametrize("fault", ["truncated", "flipped", "no_header", "empty"])
def test_a_damaged_checkpoint_is_refused_with_a_clear_error(finished_run, capsys, fault):
    args, out = finished_run
    capsys.readouterr()
    path = os.path.join(out, "checkpoint.pt")
    raw = open(path, "rb").read()
    header_end = raw.index(b"\n") + 1
    if fault == "truncated":
        damaged = raw[:len(raw) // 2]
    elif fault == "flipped":
        payload = bytearray(raw[header_end:])
        off, size = _tensor_offset(bytes(payload))
        start = off + size // 2 - 8
        payload[start:start + 16] = bytes(b ^ 0xFF for b in payload[start:start + 16])
        # Without the checksum torch loads it silently, with different weights.
        ok = torch.load(io.BytesIO(raw[header_end:]), weights_only=True)["model"]
        bad = torch.load(io.BytesIO(bytes(payload)), weights_only=True)["model"]
        assert any(not torch.equal(ok[k], bad[k]) for k in ok)
        damaged = raw[:header_end] + bytes(payload)
    elif fault == "no_header":
        damaged = raw[header_end:]  # a plain torch.save file, as older versions wrote
    else:
        damaged = b""
    open(path, "wb").write(damaged)
    assert cli_main("train", args + ["--resume"]) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if not line.startswith("[svdgrad train]")]
    assert len(errors) == 1 and errors[0].startswith("svdgrad train: error: ") and "Traceback" not in err
    assert path in err and "--overwrite" in err and "backup" in err
    if fault == "truncated":  # called what it is, not "modified"
        assert "truncated or extended: its header promises" in err
    with pytest.raises(SvdgradError, match="checkpoint"):
        trainer.load_checkpoint(path)


def test_resume_refuses_other_threads_and_other_data(finished_run, capsys, tmp_path):
    args, out = finished_run
    capsys.readouterr()
    i = args.index("--threads")
    assert cli_main("train", args[:i + 1] + ["2"] + args[i + 2:] + ["--resume"]) == 2
    err = capsys.readouterr().err
    assert "threads = torch threads per process (--threads) (checkpoint 1, now 2)" in err
    assert "Use the original options" in err
    # The same file name with other content.
    _write_data(tmp_path / "d.pt", labels=(torch.arange(40) + 1) % 4)
    assert cli_main("train", args + ["--resume"]) == 2
    assert "data_sha256 = data content" in capsys.readouterr().err
    # Several differences are listed together.
    assert cli_main("train", args + ["--resume", "--lr", "0.05", "--seed", "3"]) == 2
    err = capsys.readouterr().err
    assert "lr (checkpoint 0.1, now 0.05)" in err and "seed (checkpoint 0, now 3)" in err


# ---------------------------------------------------------------------------
# Issue 8 §5: nothing is overwritten without being asked.
# ---------------------------------------------------------------------------

def test_train_into_an_existing_run_needs_resume_or_overwrite(finished_run, capsys):
    args, out = finished_run
    capsys.readouterr()
    before = open(os.path.join(out, "log.jsonl")).read()
    assert cli_main("train", args) == 2
    err = capsys.readouterr().err
    assert "already holds a finished run (2 epochs" in err and "--resume" in err and "--overwrite" in err
    assert open(os.path.join(out, "log.jsonl")).read() == before
    assert cli_main("train", args + ["--resume", "--overwrite"]) == 2
    assert "at most one of --resume" in capsys.readouterr().err
    # --resume of a finished run changes nothing; --overwrite starts over.
    assert cli_main("train", args + ["--resume"]) == 0
    assert open(os.path.join(out, "log.jsonl")).read() == before
    i = args.index("--epochs")
    assert cli_main("train", args[:i + 1] + ["1"] + args[i + 2:] + ["--overwrite"]) == 0
    assert len(open(os.path.join(out, "log.jsonl")).read().splitlines()) == 1
    # A log without a checkpoint (as a finished study run leaves it) cannot be resumed.
    os.remove(os.path.join(out, "checkpoint.pt"))
    assert cli_main("train", args + ["--resume"]) == 2
    assert "Nothing to resume" in capsys.readouterr().err


def test_quick_study_defaults_to_a_scratch_folder():
    from svdgrad.train import study

    q = study.default_out(True)
    assert not os.path.abspath(q).startswith(os.path.join(REPO, "reports"))
    assert os.path.isdir(os.path.dirname(q))
    os.rmdir(os.path.dirname(q))
    assert study.default_out(False) == os.path.join("reports", "hybrid_protocol")


# ---------------------------------------------------------------------------
# Issue 8 §7: labels are 0 ... K-1 with every class present.
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("labels,match", [
    ([0, 1, 2, 3, 10 ** 9], r"the largest 1000000000, so 999999996 class\(es\) below it .*\(4, 5, 6"),
    ([0, 1, 2, 3, 100], r"largest 100, so 96 class\(es\)"),
    ([0, 2, 3], r"largest 3, so 1 class\(es\) below it have no training image \(1\)"),
])
def test_labels_must_be_0_to_k_minus_1(tmp_path, labels, match):
    y = np.resize(np.array(labels), 20)
    y[:len(labels)] = labels
    np.savez(tmp_path / "d.npz", images=np.zeros((20, 8, 8), np.float32), labels=y)
    t0 = time.perf_counter()
    with pytest.raises(SvdgradError, match=match):
        data.load(f"tensors:{tmp_path / 'd.npz'}", 8)
    assert time.perf_counter() - t0 < 1  # fails fast, builds nothing of size 1e9


def test_validation_labels_outside_the_training_classes(tmp_path, capsys):
    x = np.zeros((20, 8, 8), np.float32)
    np.savez(tmp_path / "d.npz", images=x, labels=np.arange(20) % 4, val_images=x[:3], val_labels=[0, 1, 7])
    with pytest.raises(SvdgradError, match="val_labels has the labels 7"):
        data.load(f"tensors:{tmp_path / 'd.npz'}", 8)
    assert cli_main("train", ["--dataset", f"tensors:{tmp_path / 'd.npz'}", "--image-size", "8",
                              "--out", str(tmp_path / "o")]) == 2
    assert "labels 7" in capsys.readouterr().err


# ---------------------------------------------------------------------------
# Ctrl-C: one line with the command that resumes, exit 130.
# ---------------------------------------------------------------------------

def test_ctrl_c_prints_the_resume_command(tmp_path, keep_threads):
    spec = _write_data(tmp_path / "d.pt")
    out = str(tmp_path / "run")
    cmd = [sys.executable, "-m", "svdgrad", "train", "--dataset", spec, *NET_ARGS, "--protocol", "ns",
           "--epochs", "400", "--out", out]
    # A shell's background job inherits SIGINT ignored; a user's terminal does not.
    proc = subprocess.Popen(cmd, env=_env(), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    log = os.path.join(out, "log.jsonl")
    deadline = time.time() + 60
    while time.time() < deadline and proc.poll() is None:
        if os.path.exists(log) and open(log).read().count("\n") >= 1:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    line = err.strip().splitlines()[-1]
    assert line.startswith("svdgrad train: interrupted (Ctrl-C)")
    resume = shlex.split(line.split("Resume with: ")[1])
    assert resume[:2] == ["svdgrad", "train"] and resume[-1] == "--resume" and resume[2:-1] == cmd[4:]
    # The printed command reaches a valid checkpoint (run here with other --epochs, which it refuses by name).
    assert trainer.load_checkpoint(os.path.join(out, "checkpoint.pt"))["epoch"] >= 1
    i = resume.index("--epochs")
    with pytest.raises(SvdgradError, match=r"epochs \(checkpoint 400, now 2\)"):
        trainer.train(cli.config_from_args(cli.train_parser().parse_args(resume[2:i + 1] + ["2"] + resume[i + 2:])),
                      echo=lambda m: None)


def test_resume_command_adds_out_and_drops_overwrite():
    ns = cli.train_parser().parse_args(["--protocol", "svd", "--svd-method", "taylor:degree=9"])
    out = cli.default_out(ns)
    assert out == os.path.join("runs", "textures-svd-taylor-degree9-step-seed0")
    cmd = cli.resume_command(["svdgrad", "train"], ["--protocol", "svd", "--overwrite"], out)
    assert cmd == f"svdgrad train --protocol svd --out {out} --resume"


@pytest.mark.parametrize("info, env, expected", [
    (ddp.DistInfo(), {}, ["svdgrad", "train"]),
    # one node, 2 processes: --standalone picks a free port, as the interrupted run's may still be taken
    (ddp.DistInfo(0, 2, 0, 2), {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500", "GROUP_RANK": "0"},
     ["torchrun", "--standalone", "--nproc_per_node=2", "-m", "svdgrad", "train"]),
    # 2 nodes of 4 processes: --nproc_per_node is the local count (it was the world size, 8), and the
    # nodes must meet again: their count, this node's rank and the rendezvous
    (ddp.DistInfo(0, 8, 0, 4), {"MASTER_ADDR": "node0.cluster", "MASTER_PORT": "29400", "GROUP_RANK": "0"},
     ["torchrun", "--nnodes=2", "--nproc_per_node=4", "--node_rank=0", "--master_addr=node0.cluster",
      "--master_port=29400", "-m", "svdgrad", "train"]),
])
def test_the_resume_command_starts_the_run_as_torchrun_did(info, env, expected):
    """The printed resume command had --nproc_per_node set to the world size, and no other torchrun option:
    on 2 nodes of 4 it asked for 8 processes on one node, and said nothing of the other node."""
    prefix, note = ddp.launch_command(info, env)
    assert prefix == expected
    if info.world_size > info.local_world_size:
        assert "on each of the 2 nodes" in note and "--node_rank" in note
    else:
        assert note == ""


# ---------------------------------------------------------------------------
# Issue 12: the CLI.
# ---------------------------------------------------------------------------

def test_default_folders_of_the_readme_examples_differ():
    examples = [[], ["--protocol", "svd", "--svd-method", "ordinary"],
                ["--protocol", "hybrid", "--schedule", "poly", "--poly-power", "11", "--poly-final-epoch", "53",
                 "--switch-lr", "1e-3", "--epochs", "30"], ["--head", "gap"], ["--protocol", "ns"],
                ["--dataset", "tensors:/data/my images.pt"]]
    outs = [cli.default_out(cli.train_parser().parse_args(a)) for a in examples]
    assert len(set(outs)) == len(outs)
    assert outs[0] == os.path.join("runs", "textures-hybrid-pade-step-seed0")
    assert outs[-1] == os.path.join("runs", "tensors-my-images-hybrid-pade-step-seed0")


def test_a_hybrid_that_never_switches_is_an_error(capsys):
    readme = ["--protocol", "hybrid", "--schedule", "poly", "--poly-power", "11", "--poly-final-epoch", "53",
              "--switch-lr", "1e-3"]
    assert cli_main("train", readme + ["--out", "/nonexistent/x"]) == 2
    err = capsys.readouterr().err
    assert "would never switch" in err and "lowest lr 0.00" in err
    assert "--epochs 19 (then it switches at epoch 19)" in err
    cfg = trainer.TrainConfig(protocol="hybrid", schedule="poly", poly_power=11, poly_final_epoch=53,
                              switch_lr=1e-3, epochs=30)
    cfg.validate()  # the README's example, with the paper's 30 epochs
    assert trainer.switch_epoch_of(cfg, cfg.make_schedule()) == 19
    with pytest.raises(SvdgradError, match="switch at epoch 1 .*--protocol svd"):
        trainer.TrainConfig(protocol="hybrid", switch_lr=0.5).validate()
    with pytest.raises(SvdgradError, match="switch at epoch 1"):
        trainer.TrainConfig(protocol="hybrid", switch_epoch=1).validate()


def test_svd_method_spec_and_output_folder_are_printed(tmp_path, capsys, keep_threads):
    spec = _write_data(tmp_path / "d.pt")
    out = str(tmp_path / "run")
    assert cli_main("train", ["--dataset", spec, *NET_ARGS, "--protocol", "svd", "--svd-method",
                              "taylor:degree=9", "--epochs", "1", "--out", out]) == 0
    err = capsys.readouterr().err
    assert err.splitlines()[0] == f"[svdgrad train] output folder: {os.path.abspath(out)}"
    assert [json.loads(line)["method"] for line in open(os.path.join(out, "log.jsonl"))] == ["taylor:degree=9"]
    assert cli_main("train", ["--svd-method", "taylor:degre=9", "--out", str(tmp_path / "o")]) == 2
    assert "Unknown option" in capsys.readouterr().err


def test_study_without_a_name_shows_a_usage_line(capsys):
    assert cli_main("study", []) == 2
    err = capsys.readouterr().err
    assert err.splitlines()[0].startswith("usage: svdgrad study {hybrid,landscape} [--quick]")
    assert "expected the name of a study (hybrid, landscape); received none" in err
    assert cli_main("study", ["hybird"]) == 2
    assert "received 'hybird'" in capsys.readouterr().err
    assert cli_main("study", ["--help"]) == 0
    assert "hybrid" in capsys.readouterr().out


def test_report_and_study_do_not_import_each_other_in_a_circle():
    import ast

    def imports(mod):
        tree = ast.parse(open(os.path.join(REPO, "svdgrad", "train", f"{mod}.py")).read())
        return {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level == 1}

    assert "study" not in imports("report") and "study" not in imports("grid")
    assert "report" not in imports("grid")


def test_single_process_helpers_are_noops():
    ddp.barrier()
    assert ddp.any_flag(True, "cpu") is True


def test_ddp_processes_agree_to_skip_a_rejected_pooled_matrix(tmp_path, keep_threads):
    # The poisoned image reaches one process only; sqrtm raises there. Both must skip the step
    # (no deadlock, no DDP "unused parameters" error) and end like one process does.
    spec = _write_data(tmp_path / "d.pt", train_poison=HUGE)
    args = ["--dataset", spec, *NET_ARGS, *HEAD_ARGS["svd-exact"], "--epochs", "1"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "svdgrad", "train", *args, "--out", str(tmp_path / "ddp")]
    res = subprocess.run(cmd, env=_env(), cwd=REPO, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-3000:]
    two = json.loads(res.stdout.strip().splitlines()[-1])
    assert two["world_size"] == 2 and two["skipped_steps"] == 1
    one = trainer.train(trainer.TrainConfig(dataset=spec, **NET, **HEADS["svd-exact"], epochs=1,
                                            out=str(tmp_path / "one")), echo=lambda m: None)
    assert one["skipped_steps"] == 1
    assert two["final_val_loss"] == pytest.approx(one["final_val_loss"], rel=1e-5)
    # (the rejected matrix's output is finite: both count the batch's loss, as one process does)
    (r2,), (r1,) = ([json.loads(line) for line in open(tmp_path / d / "log.jsonl")] for d in ("ddp", "one"))
    assert r2["train_loss"] == pytest.approx(r1["train_loss"], rel=1e-5) and r2["train_acc"] == r1["train_acc"]

def test_a_batch_whose_loss_another_process_found_nonfinite_is_not_counted(monkeypatch):
    """Under DDP each process counted its own half of a skipped batch whenever its own loss was finite, so the
    epoch's loss and accuracy took in images that one process (whose loss of the whole batch is NaN) leaves out."""
    torch.manual_seed(0)
    net, opt, guard = _tiny_model("gap")
    net.train()
    before = copy.deepcopy(net.state_dict())
    monkeypatch.setattr(ddp, "any_flags", lambda flags, device: [True, True])  # the other process's loss: NaN
    loss, _, reason = trainer.train_step(net, net, opt, _images(8, 0), torch.arange(8) % 4, guard=guard)
    assert loss is None and reason == trainer.OTHER_PROCESS
    assert all(torch.equal(net.state_dict()[k], v) for k, v in before.items())


def test_merged_skips_keep_the_cause_of_each_step():
    o, g, w = trainer.OTHER_PROCESS, "non-finite gradient", "whitening rejected its input: x"
    # process 0 saw step 3's NaN gradient after the all-reduce, process 1 the input whitening refused
    assert trainer.merged_skips([(3, g), (7, o), (3, w), (7, "non-finite loss")]) == [
        (3, w), (7, "non-finite loss")]
    assert trainer.merged_skips([(5, "pooled matrix rejected by sqrtm: a"), (5, "pooled matrix rejected by sqrtm: b")]) \
        == [(5, "pooled matrix rejected by sqrtm: a")]  # equals: the lowest rank's
    assert trainer.merged_skips([(1, o), (1, o)]) == [(1, o)] and trainer.merged_skips([]) == []


def test_ddp_processes_agree_to_skip_an_input_that_whitening_rejects(tmp_path, keep_threads):
    # --norm whiten: the stem's output of the 3e38 image overflows and Whitening refuses it. One process
    # skipped the step; under torchrun the process holding the image raised (an error on process 1 is not
    # printed) and the other died on gloo's "Connection closed by peer": the run stopped instead of skipping.
    spec = _write_data(tmp_path / "d.pt", train_poison=HUGE)
    args = ["--dataset", spec, *NET_ARGS, "--widths", "16,16,16", "--norm", "whiten", "--head", "gap",
            "--seed", "2", "--epochs", "1"]  # (seed 2: the image is in process 1's half of a batch)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "svdgrad", "train", *args, "--out", str(tmp_path / "ddp")]
    res = subprocess.run(cmd, env=_env(), cwd=REPO, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-3000:]
    assert json.loads(res.stdout.strip().splitlines()[-1])["skipped_steps"] == 1
    one = trainer.train(cli.config_from_args(cli.train_parser().parse_args(args + ["--out", str(tmp_path / "one")])),
                        echo=lambda m: None)
    assert one["skipped_steps"] == 1
    (row,) = [json.loads(line) for line in open(tmp_path / "one" / "log.jsonl")]
    assert list(row["skip_reasons"]) == ["whitening rejected its input"]
    # The log is the main process's: it recorded "another process skipped this step", not process 1's reason
    (row,) = [json.loads(line) for line in open(tmp_path / "ddp" / "log.jsonl")]
    assert row["skip_reasons"] == {"whitening rejected its input": 1}
    # The epoch's accuracy: process 0 counted its half of the skipped batch (its loss was finite), which one
    # process, whose loss of the whole batch is NaN, leaves out: 8 of 36 images, where the 32 of the four other
    # batches count. (Each process whitens its own half, so the two runs' numbers differ otherwise.)
    assert (row["train_acc"] * 32) == pytest.approx(round(row["train_acc"] * 32), abs=1e-9)
    assert "(whitening rejected its input: 1)" in res.stderr


def _torchrun(script, args, tmp_path):
    path = tmp_path / "harness.py"
    path.write_text(script)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(path), *args]
    res = subprocess.run(cmd, env=_env(), cwd=REPO, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-3000:]
    return res


#: Run under torchrun: each process saves the model it validates (``_evaluate``'s) to DUMP/rank<r>.pt.
_EVALUATED_MODEL = """
import os, sys, torch
from svdgrad.train import trainer
from svdgrad.train.cli import main
inner = trainer._evaluate
def evaluate(model, x, y, batch_size, info):
    torch.save(model.state_dict(), os.path.join(sys.argv[1], f"rank{info.rank}.pt"))
    return inner(model, x, y, batch_size, info)
trainer._evaluate = evaluate
sys.exit(main("train", sys.argv[2:]))
"""


#: Run under torchrun --max-restarts: on its first attempt the main process copies the first checkpoint it
#: writes to SIDE and is then killed (kill -9), so torchrun restarts every process with the same command.
_KILLED_AFTER_FIRST_CHECKPOINT = """
import os, shutil, signal, sys
from svdgrad.train import trainer
from svdgrad.train.cli import main
if os.environ["TORCHELASTIC_RESTART_COUNT"] == "0" and os.environ["RANK"] == "0":
    inner = trainer.save_checkpoint
    def save(state, path):
        out = inner(state, path)
        shutil.copy(path, sys.argv[1])
        os.kill(os.getpid(), signal.SIGKILL)
    trainer.save_checkpoint = save
sys.exit(main("train", sys.argv[2:]))
"""


@pytest.mark.parametrize("flag", [[], ["--overwrite"]])
def test_a_torchrun_restart_resumes_the_checkpoint_of_its_first_attempt(tmp_path, flag):
    # torchrun --max-restarts restarts the processes with the same command. That command was refused (the
    # folder held the first attempt's run) until the restarts ran out; with --overwrite it deleted the first
    # attempt's epochs and trained them again.
    spec = _write_data(tmp_path / "d.pt")
    out, side = tmp_path / "ddp", tmp_path / "attempt0.pt"
    args = ["--dataset", spec, *NET_ARGS, "--head", "gap", "--epochs", "2", "--out", str(out), *flag]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "--max-restarts=1", "--monitor-interval=0.2", str(tmp_path / "harness.py"), str(side), *args]
    (tmp_path / "harness.py").write_text(_KILLED_AFTER_FIRST_CHECKPOINT)
    res = subprocess.run(cmd, env=_env(), cwd=REPO, capture_output=True, text=True, timeout=180)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "torchrun restart 1: resuming" in res.stderr
    first = trainer.load_checkpoint(str(side))["history"]
    rows = [json.loads(line) for line in open(out / "log.jsonl")]
    assert [r["epoch"] for r in rows] == [1, 2]
    assert rows[0] == first[0], "epoch 1 was trained again instead of resumed"


def test_a_restart_resumes_only_a_checkpoint_of_its_own_torchrun(tmp_path, monkeypatch, keep_threads):
    spec = _write_data(tmp_path / "d.pt")
    cfg = trainer.TrainConfig(dataset=spec, **NET, head="gap", epochs=1, out=str(tmp_path / "run"), overwrite=True)
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "0")
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "none")
    trainer.train(cfg, echo=lambda m: None)
    ckpt = os.path.join(cfg.out, "checkpoint.pt")
    mine = trainer.load_checkpoint(ckpt)["env"]["launch"]
    assert mine == ddp.launch_identity() and mine.startswith("none|")
    said = []
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "1")
    assert trainer._elastic_restart(cfg, ddp.DistInfo(), ckpt, "cpu", said.append) == \
        dataclasses.replace(cfg, resume=True, overwrite=False)
    assert said == ["[svdgrad train] torchrun restart 1: resuming the checkpoint of its earlier attempt "
                    "(--overwrite applied to the first attempt only)"]
    # another torchrun's run with the same run id ('none' outside --standalone), a first attempt, a damaged
    # checkpoint, no checkpoint: the command as given
    monkeypatch.setattr(ddp, "launch_identity", lambda: mine.replace("none|", "none|other-host-"))
    assert trainer._elastic_restart(cfg, ddp.DistInfo(), ckpt, "cpu", said.append) == cfg
    monkeypatch.setattr(ddp, "launch_identity", lambda: mine)
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "0")
    assert trainer._elastic_restart(cfg, ddp.DistInfo(), ckpt, "cpu", said.append) == cfg
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "1")
    with open(ckpt, "r+b") as f:
        f.seek(100)
        f.write(b"\0" * 8)
    assert trainer._elastic_restart(cfg, ddp.DistInfo(), ckpt, "cpu", said.append) == cfg
    assert trainer._elastic_restart(cfg, ddp.DistInfo(), str(tmp_path / "none.pt"), "cpu", said.append) == cfg
    assert len(said) == 1


def test_each_torchrun_attempt_meets_under_its_own_keys():
    """torchrun keeps its store across restarts; a restarted process that read the dead attempt's keys (gloo's
    addresses) hung or was refused, or, by the luck of the race, not: the torchrun test alone cannot tell."""
    from torch.distributed import TCPStore

    agent = TCPStore("127.0.0.1", 0, 1, is_master=True, wait_for_workers=False)
    env = {"TORCHELASTIC_USE_AGENT_STORE": "True", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(agent.port),
           "WORLD_SIZE": "2", "TORCHELASTIC_RESTART_COUNT": "0"}
    first = ddp.attempt_store(env)
    first.set("default_pg/rank_0", "the dead process's address")
    again = ddp.attempt_store({**env, "TORCHELASTIC_RESTART_COUNT": "1"})
    assert not again.check(["default_pg/rank_0"]) and first.check(["default_pg/rank_0"])
    assert ddp.attempt_store({**env, "TORCHELASTIC_USE_AGENT_STORE": "False"}) is None  # (torch's env:// then)


def test_launch_identity_and_restart_count_outside_and_inside_torchrun():
    assert ddp.launch_identity({}) is None and ddp.restart_count({}) == 0 and ddp.attempt_store({}) is None
    assert ddp.restart_count({"TORCHELASTIC_RESTART_COUNT": "3"}) == 3
    assert ddp.restart_count({"TORCHELASTIC_RESTART_COUNT": "x"}) == 0
    env = {"TORCHELASTIC_RESTART_COUNT": "0", "TORCHELASTIC_RUN_ID": "abc"}
    a, b = ddp.launch_identity(env, ppid=os.getpid()), ddp.launch_identity(env, ppid=os.getppid())
    assert a.startswith("abc|") and a != b and a == ddp.launch_identity(env, ppid=os.getpid())
    if os.path.exists("/proc/self/stat"):
        assert a.split("|")[-1].isdigit()  # the agent's start time: a reused pid is another agent


def test_ddp_processes_validate_the_model_of_the_checkpoint(tmp_path):
    # Whitening keeps running statistics of the local batch, so after the epoch's last step each process held
    # its own; the validation split over the processes then scored a mix of two models, none of them the
    # checkpoint's (rank 0's).
    spec = _write_data(tmp_path / "d.pt")
    out = tmp_path / "ddp"
    args = ["--dataset", spec, *NET_ARGS, "--widths", "16,16,16", "--norm", "whiten", "--protocol", "ns",
            "--epochs", "1", "--out", str(out)]
    _torchrun(_EVALUATED_MODEL, [str(tmp_path), *args], tmp_path)
    saved = trainer.load_checkpoint(str(out / "checkpoint.pt"))["model"]
    for rank in (0, 1):
        seen = torch.load(tmp_path / f"rank{rank}.pt")
        differ = [k for k in saved if not torch.equal(seen[k], saved[k])]
        assert not differ, f"process {rank} validated a model other than the checkpoint's: {differ[:4]}"


#: Run under torchrun: SyncBatchNorm2d on each process's half of a batch against BatchNorm2d on the whole
#: batch (float32) and in float64; prints the largest errors (output, input gradient, running variance).
_SYNC_BN = """
import json, torch, torch.distributed as dist
from torch import nn
from svdgrad.train import ddp
dist.init_process_group("gloo")
r, W = dist.get_rank(), dist.get_world_size()
mine, rows = slice(r * 8 // W, (r + 1) * 8 // W), []
for offset in (0.0, 1e3, 1e4):
    g = torch.Generator().manual_seed(0)
    x = offset + torch.randn(8, 3, 5, 5, generator=g)  # the global batch (the same on every process)
    w = torch.randn(8, 3, 5, 5, generator=g)           # the cotangent
    got = {}
    for name, layer, xin in (("float64", nn.BatchNorm2d(3).double(), x.double()), ("bn", nn.BatchNorm2d(3), x),
                             ("sync", ddp.SyncBatchNorm2d(3), x[mine])):
        part = slice(None) if name == "sync" else mine
        xin = xin.clone().requires_grad_()
        y = layer(xin)
        (y * w[mine if name == "sync" else slice(None)].to(y.dtype)).sum().backward()
        got[name] = (y.detach()[part].double(), xin.grad[part].double(), layer.running_var.double())
    rows.append({"offset": offset, **{f"{name}_{what}": float((got[name][i] - got["float64"][i]).abs().max())
                                      for name in ("bn", "sync") for i, what in enumerate(("y", "grad", "var"))}})
gathered = [None] * W
dist.all_gather_object(gathered, rows)
if r == 0:
    print("SYNC_BN " + json.dumps(gathered), flush=True)
dist.destroy_process_group()
"""


def test_synchronized_batch_norm_is_as_accurate_as_batch_norm_far_from_zero(tmp_path):
    # The variance was E[x²] - mean² in float32: features of mean 1e3 and spread 1 lost every digit of it
    # (an output off by 0.14, at 1e4 by 1e3), where BatchNorm on the whole batch is right to 6e-4.
    res = _torchrun(_SYNC_BN, [], tmp_path)
    rows = json.loads(res.stdout.split("SYNC_BN ")[1].splitlines()[0])
    assert len(rows) == 2  # (one list per process)
    for row in (r for rows_of_one in rows for r in rows_of_one):
        for what in ("y", "grad", "var"):
            assert row[f"sync_{what}"] <= 4 * row[f"bn_{what}"] + 1e-5, (row["offset"], what, row)


# ---------------------------------------------------------------------------
# The study: Ctrl-C, --report-only, figures that do not mislead.
# ---------------------------------------------------------------------------

def test_study_ctrl_c_prints_the_resume_command(tmp_path, capsys, monkeypatch):
    from svdgrad.train import study

    def interrupted(cfg_dict):
        raise KeyboardInterrupt

    monkeypatch.setattr(study, "_run_one", interrupted)
    assert cli_main("study", ["hybrid", "--quick"]) == 130
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    resume = shlex.split(err.split("Resume with: ")[1])
    assert resume[:4] == ["svdgrad", "study", "hybrid", "--quick"] and resume[4] == "--out"
    assert not os.path.abspath(resume[5]).startswith(os.path.join(REPO, "reports"))
    study.clean(os.path.dirname(resume[5]))
    assert cli_main("study", ["hybrid", "--report-only", "--out", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err
    assert "study.json for --report-only" in err and "Run the study into" in err


def _fake_run(seed, accs):
    return {"seed": seed, "summary": {}, "config": {},
            "history": [{"epoch": e + 1, "val_acc": a, "train_loss": 1 / (e + 1), "val_loss": 1.0}
                        for e, a in enumerate(accs)]}


def test_identical_protocols_are_grouped_and_others_are_not():
    from svdgrad.train import report

    runs = {"ns": [_fake_run(0, [0.5, 0.6]), _fake_run(1, [0.5, 0.7])],
            "hybrid-ordinary": [_fake_run(0, [0.5, 0.8]), _fake_run(1, [0.5, 0.7])],
            "hybrid-pade": [_fake_run(0, [0.5, 0.8 * (1 + 1e-9)]), _fake_run(1, [0.5, 0.7])],
            "hybrid-exact": [_fake_run(0, [0.5, 0.8 * (1 + 1e-4)]), _fake_run(1, [0.5, 0.7])]}
    assert report.identical_groups(runs) == [["ns"], ["hybrid-ordinary", "hybrid-pade"], ["hybrid-exact"]]
    assert report._group_label(["hybrid-ordinary", "hybrid-pade"]) == "NS → ordinary = Padé"
    e, m, lo, hi = report._band(runs["ns"], "val_acc")
    assert e == [1, 2] and m == pytest.approx([0.5, 0.65]) and lo == [0.5, 0.6] and hi == [0.5, 0.7]


def test_an_epoch_with_every_step_skipped_stops_the_run(tmp_path, capsys, keep_threads):
    x = torch.full((40, 1, 16, 16), HUGE)  # every batch overflows: a systematic fault, not a stray image
    torch.save({"images": x, "labels": torch.arange(40) % 4, "val_images": _images(12, 1),
                "val_labels": torch.arange(12) % 4, "standardize": False}, tmp_path / "d.pt")
    args = ["--dataset", f"tensors:{tmp_path / 'd.pt'}", *NET_ARGS, "--protocol", "ns", "--epochs", "2"]
    assert cli_main("train", args + ["--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "Every one of the 5 steps of epoch 1 was skipped (pooled matrix rejected by sqrtm: 5" in err


def test_a_study_refuses_a_folder_of_another_study(tmp_path):
    from svdgrad.train import study

    out = str(tmp_path / "s")
    os.makedirs(out)
    with open(os.path.join(out, "study.json"), "w") as f:
        json.dump({"settings": {**study.QUICK, "widths": list(study.QUICK["widths"])}, "quick": True,
                   "protocols": study.PROTOCOLS, "seeds": 1}, f)
    with pytest.raises(SvdgradError, match="holds a study with other settings .*epochs.*it is a --quick study"):
        study.run(quick=False, out=out, echo=lambda m: None)
    assert sorted(os.listdir(out)) in (["study.json"], [trainer.LOCK, "study.json"])  # (the lock file is no result)


# ---------------------------------------------------------------------------
# Found by mutation: faults that no test injected.
# ---------------------------------------------------------------------------

def test_a_finite_loss_with_an_infinite_gradient_is_skipped():
    net, opt, guard = _tiny_model("gap")
    net.train()
    x, y = _images(8, 0), torch.arange(8) % 4
    before = {k: v.clone() for k, v in net.state_dict().items()}
    hook = net.fc.weight.register_hook(lambda g: torch.full_like(g, float("inf")))
    try:
        loss, _, reason = trainer.train_step(net, net, opt, x, y, guard=guard)
    finally:
        hook.remove()
    assert torch.isfinite(loss) and reason == "non-finite gradient"
    assert all(torch.equal(net.state_dict()[k], v) for k, v in before.items())


def test_a_checkpoint_write_that_dies_midway_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    """Disk full half-way through the new checkpoint: the old one is still there and loads."""
    import builtins

    path = str(tmp_path / "checkpoint.pt")
    trainer.save_checkpoint({"epoch": 1, "w": torch.zeros(4096)}, path)
    real_open = builtins.open

    class Dying:
        def __init__(self, f):
            self.f = f

        def write(self, b):
            self.f.write(b[:len(b) // 2])
            self.f.flush()
            raise OSError(28, "No space left on device")

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def __getattr__(self, name):
            return getattr(self.f, name)

    def dying_open(p, mode="r", *args, **kwargs):
        f = real_open(p, mode, *args, **kwargs)
        return Dying(f) if "w" in mode else f

    monkeypatch.setattr(builtins, "open", dying_open)
    with pytest.raises(OSError, match="No space left"):
        trainer.save_checkpoint({"epoch": 2, "w": torch.ones(4096)}, path)
    monkeypatch.undo()
    assert trainer.load_checkpoint(path)["epoch"] == 1
    assert sorted(os.listdir(tmp_path)) == ["checkpoint.pt"]


def test_overwrite_removes_the_old_results_even_when_the_new_run_fails(tmp_path, capsys, keep_threads):
    """A stale summary.json beside a failed new run would tell the study runner the run is finished."""
    out = str(tmp_path / "run")
    ok = _write_data(tmp_path / "ok.pt")
    assert cli_main("train", ["--dataset", ok, *NET_ARGS, "--protocol", "ns", "--epochs", "1", "--out", out]) == 0
    assert os.path.exists(os.path.join(out, "summary.json"))
    bad = tmp_path / "bad.pt"  # every image 3e38: every step is skipped, and the new run stops in epoch 1
    torch.save({"images": torch.full((40, 1, 16, 16), HUGE), "labels": torch.arange(40) % 4,
                "val_images": _images(12, 1), "val_labels": torch.arange(12) % 4, "standardize": False}, bad)
    assert cli_main("train", ["--dataset", f"tensors:{bad}", *NET_ARGS, "--protocol", "ns", "--epochs", "1",
                              "--out", out, "--overwrite"]) == 2
    assert "Every one of the 5 steps" in capsys.readouterr().err
    assert not os.path.exists(os.path.join(out, "summary.json"))
    assert not os.path.exists(os.path.join(out, "checkpoint.pt"))


def test_a_validation_label_equal_to_the_class_count_is_refused(tmp_path):
    x = np.zeros((20, 8, 8), np.float32)
    np.savez(tmp_path / "d.npz", images=x, labels=np.arange(20) % 4, val_images=x[:3], val_labels=[0, 1, 4])
    with pytest.raises(SvdgradError, match="val_labels has the labels 4"):
        data.load(f"tensors:{tmp_path / 'd.npz'}", 8)


# ---------------------------------------------------------------------------
# Session 16 review: two writers in one folder, an --out that is not a folder.
# ---------------------------------------------------------------------------

def test_a_second_run_into_a_folder_being_written_is_refused(tmp_path, capsys, keep_threads):
    """Two runs into one --out both finished with exit 0 and mixed their log lines; the folder is now locked
    while a run writes it, as the sweep's and the bench's are."""
    from filelock import FileLock

    out = tmp_path / "run"
    out.mkdir()
    held = FileLock(str(out / trainer.LOCK), timeout=0)
    held.acquire()  # (another process's run, as far as this one can tell)
    try:
        args = ["--dataset", "digits", *NET_ARGS, "--epochs", "1", "--head", "gap", "--out", str(out)]
        assert cli_main("train", args) == 2
        err = capsys.readouterr().err
        assert "another run is writing to" in err and "--out" in err
        assert not (out / "log.jsonl").exists()
        assert cli_main("train", args + ["--resume"]) == 2
    finally:
        held.release()


@pytest.mark.parametrize("kind", ["file", "under-a-file"])
def test_an_out_that_cannot_be_a_folder_is_a_clear_error(tmp_path, capsys, kind):
    f = tmp_path / "afile"
    f.write_text("x")
    out = f if kind == "file" else f / "sub"
    args = ["--dataset", "digits", *NET_ARGS, "--epochs", "1", "--head", "gap", "--out", str(out)]
    assert cli_main("train", args) == 2
    err = capsys.readouterr().err
    assert "Expected --out to be a folder" in err and str(out) in err


@pytest.mark.parametrize("scale", [1e19, 1e30])
def test_an_image_that_overflows_a_batch_norm_statistic_is_skipped(tmp_path, capsys, keep_threads, scale):
    """A milder poison than 3e38 stopped the run: the batch-norm running variance overflowed while the loss and
    the gradients stayed finite (BN divides by the inf variance), and the model check then found it."""
    spec = _write_data(tmp_path / "d.pt", train_poison=_images(1, 5)[0] * scale)
    out = str(tmp_path / "run")
    rc = cli_main("train", ["--dataset", spec, *NET_ARGS, *HEAD_ARGS["gap"], "--epochs", "2", "--out", out])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    summary = json.loads(captured.out.strip().splitlines()[-1])
    assert summary["skipped_steps"] == 2 and np.isfinite(summary["final_val_loss"])
    log = [json.loads(line) for line in open(os.path.join(out, "log.jsonl"))]
    assert all("non-finite batch-norm statistics" in r["skip_reasons"] for r in log)


@pytest.mark.parametrize("option, value, match", [
    ("--weight-decay", "nan", "finite --weight-decay"), ("--threads", "20000", r"--threads in \[0, 1024\]"),
])
def test_train_numbers_nan_passed_are_refused(tmp_path, capsys, option, value, match):
    args = ["--dataset", "digits", *[a for a in NET_ARGS if a not in ("--threads", "1")], "--epochs", "1",
            "--head", "gap", "--out", str(tmp_path / "r"), option, value]
    assert cli_main("train", args) == 2
    import re
    assert re.search(match, capsys.readouterr().err)


@pytest.mark.parametrize("value", ["nan", "-1"])
def test_study_max_minutes_must_be_a_finite_number(tmp_path, capsys, value):
    assert cli_main("study", ["hybrid", "--quick", "--out", str(tmp_path / "s"), "--max-minutes", value]) == 2
    assert "finite --max-minutes >= 0" in capsys.readouterr().err


def test_images_with_no_channels_are_a_clear_error(tmp_path, capsys):
    path = tmp_path / "z.pt"
    torch.save({"images": torch.zeros(8, 0, 4, 4), "labels": torch.arange(8) % 2}, path)
    assert cli_main("train", ["--dataset", f"tensors:{path}", *NET_ARGS, "--epochs", "1", "--head", "gap",
                              "--out", str(tmp_path / "r")]) == 2
    assert "every size > 0" in capsys.readouterr().err


def test_a_garbage_run_log_does_not_stop_a_resume(finished_run, capsys):
    """Random bytes in log.jsonl gave a UnicodeDecodeError traceback; the checkpoint rewrites the log anyway."""
    args, out = finished_run
    with open(os.path.join(out, "log.jsonl"), "wb") as f:
        f.write(bytes(range(256)) * 4)
    os.remove(os.path.join(out, "summary.json"))  # (an unfinished run: the checkpoint is kept)
    assert cli_main("train", args + ["--resume"]) == 0, capsys.readouterr().err
    assert all(json.loads(line)["epoch"] for line in open(os.path.join(out, "log.jsonl")))


def test_a_damaged_study_json_is_a_clear_error(tmp_path):
    from svdgrad.train import study

    out = tmp_path / "s"
    out.mkdir()
    (out / "study.json").write_text('{"settings": {"ep')
    with pytest.raises(SvdgradError, match=r"Expected JSON in .*study.json; it is damaged.*--resume"):
        study.run(quick=True, out=str(out), resume=True, echo=lambda m: None)


@pytest.mark.parametrize("kind", ["hybrid", "landscape"])
def test_a_damaged_study_json_gets_the_same_fix_from_the_study_and_its_report(tmp_path, kind):
    """study.py and landscape.py each carried their own copy of what to do about a damaged study.json, worded
    unlike the reports' (``report.read_study``): one text now, in one place."""
    from svdgrad.train import landscape, report, study

    (tmp_path / "study.json").write_text('{"settings": {"ep')
    with pytest.raises(SvdgradError) as from_report:
        report.read_study(str(tmp_path))
    runner_module = study if kind == "hybrid" else landscape
    with pytest.raises(SvdgradError) as from_study:
        runner_module.run(quick=True, out=str(tmp_path), resume=True, echo=lambda m: None)
    assert str(from_study.value) == str(from_report.value)
    assert "--resume" in str(from_study.value) and str(tmp_path) in str(from_study.value)


def test_the_study_json_fix_is_written_once():
    root = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "svdgrad", "train")
    copies = [f for f in sorted(os.listdir(root)) if f.endswith(".py")
              for _ in range(open(os.path.join(root, f)).read().count("only the missing ones run"))]
    assert len(copies) == 1, copies


def test_a_damaged_run_summary_is_a_clear_error(tmp_path):
    from types import SimpleNamespace

    from svdgrad.train import runner

    (tmp_path / "summary.json").write_text('{"epochs": 2, "fin')
    with pytest.raises(SvdgradError, match=r"summary.json; it is damaged.*Delete the run's folder"):
        runner.complete(SimpleNamespace(out=str(tmp_path), epochs=2))


def test_a_damaged_run_log_in_a_report_is_a_clear_error(tmp_path):
    from svdgrad.train import report

    run = tmp_path / "runs" / "ns" / "seed0"
    run.mkdir(parents=True)
    (run / "summary.json").write_text(json.dumps({"seed": 0, "epochs": 1}))
    (run / "log.jsonl").write_text('{"epoch": 1, "lr"')
    with pytest.raises(SvdgradError, match=r"log.jsonl; it is damaged"):
        report.load_runs(str(tmp_path))


@pytest.mark.parametrize("name,content", [
    ("summary.json", b'{"seed": 0, "ep'),
    ("log.jsonl", b'{"epoch": 1, "lr"'),
    ("probes.jsonl", bytes(range(256))),
    ("landscape.jsonl", b"[1, 2]\n"),
])
def test_a_damaged_landscape_run_is_a_clear_error(tmp_path, name, content):
    """The landscape report read its runs with bare json.loads: JSONDecodeError / UnicodeDecodeError /
    AttributeError tracebacks, where the study report (``report._read_log``) names the file and the fix."""
    from svdgrad.train import landscape_grid, landscape_report

    part, protocol = next((p, n) for p, ps in landscape_grid.PARTS.items() for n in ps)
    run = landscape_grid.run_dir(str(tmp_path), part, protocol, 0)
    os.makedirs(run)
    files = {"summary.json": b'{"seed": 0, "epochs": 1}', "log.jsonl": b'{"epoch": 1}\n',
             "probes.jsonl": b'{"epoch": 1, "step": 1}\n', "landscape.jsonl": b'{"epoch": 1, "step": 1}\n'}
    for f, data in {**files, name: content}.items():
        with open(os.path.join(run, f), "wb") as fh:
            fh.write(data)
    with pytest.raises(SvdgradError, match=rf"{name}; it is damaged.*Delete that run's folder.*--resume"):
        landscape_report.load(str(tmp_path), 1)


@pytest.mark.parametrize("study", ["landscape", "hybrid"])
def test_a_damaged_study_json_in_report_only_is_a_clear_error(tmp_path, capsys, study):
    """--report-only read study.json with json.load: a JSONDecodeError traceback."""
    (tmp_path / "study.json").write_text('{"seeds": 1, "gr')
    assert cli_main("study", [study, "--report-only", "--out", str(tmp_path)]) == 2
    assert "study.json; it is damaged" in capsys.readouterr().err


def test_a_run_or_study_folder_loses_a_killed_writers_temporary(tmp_path):
    """A kill -9 inside an atomic write (summary.json, checkpoint.pt, study.json) left NAME.PID.tmp for good;
    the next run or study into the folder (it takes the folder's lock) removes it."""
    from .test_io import dead_pid

    tmp = tmp_path / f"checkpoint.pt.{dead_pid()}.tmp"
    tmp.write_bytes(b"half a checkpoint")
    with trainer._folder_lock(str(tmp_path)):
        assert not tmp.exists()


def test_report_only_removes_a_killed_reports_temporary(tmp_path):
    """A kill -9 inside --report-only's atomic write of REPORT.md (or a figure) left REPORT.md.PID.tmp; the next
    --report-only did not remove it (only a locked study run did).  Dead writers' only, as the sweep's report."""
    import os as _os

    from svdgrad.train import runner

    from .test_io import dead_pid

    (tmp_path / "study.json").write_text("{}")
    dead = tmp_path / f"REPORT.md.{dead_pid()}.tmp"
    live = tmp_path / f"curves.png.{_os.getpid()}.tmp"
    dead.write_text("half a report")
    live.write_text("a live writer's")
    assert runner.redraw(str(tmp_path), lambda out: None) == str(tmp_path)
    assert not dead.exists() and live.exists()


@pytest.mark.parametrize("name", ["checkpoint.pt", "summary.json", "log.jsonl", "config.json"])
def test_a_directory_where_train_writes_a_file_is_refused_before_training(tmp_path, capsys, keep_threads, name):
    """A directory where `svdgrad train` writes one of its files failed after the first epoch (or at the end)
    with a bare '[Errno 21] Is a directory'.  Now it is exit 2 before any training, naming the path."""
    spec = _write_data(tmp_path / "d.pt")
    out = tmp_path / "run"
    (out / name).mkdir(parents=True)
    assert cli_main("train", ["--dataset", spec, *NET_ARGS, "--head", "gap", "--epochs", "1", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"{name} to be a file" in err and "is a directory" in err and "Errno" not in err
    assert "epoch" not in err.lower()
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == [name]


#: Run under torchrun: process 1 stops itself (SIGSTOP, as Ctrl-Z or a debugger would) when it reaches the
#: second epoch's validation, after the first checkpoint.
_STOPPED_AFTER_FIRST_EPOCH = """
import os, signal, sys
from svdgrad.train import trainer
from svdgrad.train.cli import main
if os.environ["RANK"] == "1":
    inner, calls = trainer._evaluate, []
    def evaluate(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGSTOP)
        return inner(*args, **kwargs)
    trainer._evaluate = evaluate
sys.exit(main("train", sys.argv[1:]))
"""


def _run_own_group(cmd, timeout=170):
    """subprocess.run in a session of its own, all of which is killed (SIGKILL reaches a stopped process) when it
    ends or times out: a stopped worker must not outlive a failing test and hold a core's worth of waiting peer."""
    proc = subprocess.Popen(cmd, env=_env(), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def test_a_stopped_process_ends_the_run_after_the_ddp_timeout_and_resume_finishes_it(tmp_path):
    # A process stopped under torchrun made the others wait in their next collective for gloo's default
    # 30 minutes, with no option to shorten it. --ddp-timeout sets it: the waiting process stops the run with
    # one line that says why and how to resume, and every finished epoch is kept.
    spec = _write_data(tmp_path / "d.pt")
    out = tmp_path / "ddp"
    args = ["--dataset", spec, *NET_ARGS, "--head", "gap", "--epochs", "3", "--ddp-timeout", "5", "--out", str(out)]
    (tmp_path / "harness.py").write_text(_STOPPED_AFTER_FIRST_EPOCH)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(tmp_path / "harness.py"), *args]
    t0 = time.monotonic()
    res = _run_own_group(cmd)
    took = time.monotonic() - t0
    assert res.returncode != 0, res.stderr[-3000:]
    line = [x for x in res.stderr.splitlines() if "svdgrad train: error: process 0 of 2 waited" in x]
    assert line and "--ddp-timeout 5 s" in line[0] and "Resume with:" in line[0], res.stderr[-3000:]
    assert "Traceback" not in res.stderr.split("svdgrad train: error")[0][-2000:]  # (not before the message)
    assert took < 150, took
    history = trainer.load_checkpoint(str(out / "checkpoint.pt"))["history"]
    assert [h["epoch"] for h in history] == [1]
    resume = shlex.split(line[0].split("Resume with: ", 1)[1])
    assert resume[:6] == ["torchrun", "--standalone", "--nproc_per_node=2", "-m", "svdgrad", "train"], resume
    assert resume[-1] == "--resume" and "--ddp-timeout" in resume, resume
    # The printed command itself (torchrun as a module: the console script may not be on PATH here)
    res = _run_own_group([sys.executable, "-m", "torch.distributed.run", *resume[1:]])
    assert res.returncode == 0, res.stderr[-3000:]
    rows = [json.loads(x) for x in open(out / "log.jsonl")]
    assert [r["epoch"] for r in rows] == [1, 2, 3] and rows[0] == history[0]


@pytest.mark.parametrize("value", [0.0, -1.0, float("nan"), float("inf")])
def test_ddp_timeout_must_be_a_positive_number_of_seconds(value):
    with pytest.raises(SvdgradError, match="--ddp-timeout"):
        trainer.TrainConfig(ddp_timeout=value).validate()
    trainer.TrainConfig(ddp_timeout=2.5).validate()


def test_the_ddp_timeout_reaches_the_process_group(monkeypatch):
    from datetime import timedelta

    seen = []
    monkeypatch.setattr(ddp.dist, "is_initialized", lambda: False)
    monkeypatch.setattr(ddp.dist, "init_process_group", lambda **kw: seen.append(kw))
    monkeypatch.setattr(ddp, "env_info", lambda: ddp.DistInfo(rank=0, world_size=2, local_rank=0,
                                                               local_world_size=2))
    monkeypatch.setattr(ddp, "attempt_store", lambda env=None: None)
    ddp.init_from_env("cpu", timeout=7.5)
    ddp.init_from_env("cpu")
    assert seen == [{"backend": "gloo", "timeout": timedelta(seconds=7.5)}, {"backend": "gloo"}]
    assert cli.config_from_args(cli.train_parser().parse_args(["--ddp-timeout", "7.5"])).ddp_timeout == 7.5
    assert ddp.is_timeout(RuntimeError("[x/unbound_buffer.cc:78] Timed out waiting 5000ms for recv operation"))
    assert not ddp.is_timeout(RuntimeError("Connection closed by peer"))
