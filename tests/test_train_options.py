"""svdgrad train: the issue-9 features wired into the trainer (--norm whiten, --pool-route features, --sigma-dtype)."""

import json
import os

import pytest
import torch

from svdgrad import SvdgradError
from svdgrad.train import cli, data, trainer

TINY = dict(dataset="textures", image_size=16, train_per_class=8, val_per_class=4, widths=(4, 8, 8),
            reduced_channels=6, batch_size=20, epochs=1, protocol="ns", threads=1, progress=False)


@pytest.fixture
def keep_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def _model(**over):
    cfg = trainer.TrainConfig(**{**TINY, **over})
    cfg.validate()
    ds = data.load(cfg.dataset, cfg.image_size, train_per_class=cfg.train_per_class,
                   val_per_class=cfg.val_per_class)
    return cfg, trainer.build_model(cfg, ds.in_channels, ds.num_classes)


def test_norm_whiten_puts_whitening_in_the_backbone():
    from svdgrad.nn import Whitening

    _, net = _model(norm="whiten", whiten_method="exact")
    ws = [m for m in net.modules() if isinstance(m, Whitening)]
    assert ws and all(w.method.name == "exact" for w in ws)
    assert all(w.group_size == min(16, w.num_features) for w in ws)
    _, bn = _model()
    assert not any(isinstance(m, Whitening) for m in bn.modules())


def test_pool_route_features_and_sigma_dtype_reach_the_layer():
    _, net = _model(protocol="svd", svd_method="exact", pool_route="features")
    assert net.pool.route == "features" and net.pool.method.name == "exact"
    _, net = _model(protocol="svd", svd_method="exact", sigma_dtype="float32")
    assert net.pool.route == "covariance" and net.pool.method.compute_dtype == torch.float32
    _, net = _model(protocol="svd", svd_method="exact")  # the layer's auto: float64 for an eigen method
    assert net.pool.method.compute_dtype == torch.float64
    _, net = _model(protocol="ns", sigma_dtype="float64")
    assert net.pool.method.name == "newton_schulz" and net.pool.method.compute_dtype == torch.float64


def test_hybrid_on_the_features_route_switches_route_and_method():
    cfg, net = _model(protocol="hybrid", svd_method="exact", pool_route="features", epochs=3, switch_epoch=2)
    assert net.pool.route == "covariance" and net.pool.method.name == "newton_schulz"
    sched = cfg.make_schedule()
    trainer.set_pool_method(net.pool, trainer.method_for_epoch(cfg, sched, 2), cfg.pool_route)
    assert net.pool.route == "features" and net.pool.method.name == "exact"
    trainer.set_pool_method(net.pool, trainer.method_for_epoch(cfg, sched, 1), cfg.pool_route)
    assert net.pool.route == "covariance"


@pytest.mark.parametrize("over, match", [
    (dict(pool_route="features", protocol="ns"), "--protocol svd or hybrid"),
    (dict(pool_route="features", protocol="svd", svd_method="pade"), "--svd-method exact"),
    (dict(sigma_dtype="float16"), "--sigma-dtype"),
    (dict(norm="layer"), "--norm"),
    (dict(norm="whiten", whiten_method="nope"), "nope"),
    (dict(probe_every=-1), "--probe-every"),
])
def test_bad_options_are_refused(over, match):
    with pytest.raises(SvdgradError, match=match):
        trainer.TrainConfig(**{**TINY, **over}).validate()


def test_cli_runs_whiten_and_features_and_names_the_folder(tmp_path, keep_threads, capsys):
    out = tmp_path / "run"
    args = ["--dataset", "textures", "--image-size", "16", "--train-per-class", "8", "--val-per-class", "4",
            "--widths", "4,8,8", "--reduced-channels", "6", "--batch-size", "20", "--epochs", "1", "--no-progress",
            "--norm", "whiten", "--pool-route", "features", "--protocol", "svd", "--svd-method", "exact",
            "--sigma-dtype", "float32", "--out", str(out)]
    assert cli.main("train", args) == 0
    with open(out / "config.json") as f:
        cfg = json.load(f)
    assert (cfg["norm"], cfg["pool_route"], cfg["sigma_dtype"]) == ("whiten", "features", "float32")
    ns = cli.train_parser().parse_args(args[:-2])
    assert os.path.basename(cli.default_out(ns)) == "textures-svd-exact-features-sigma-float32-whiten-step-seed0"


def test_resume_accepts_an_older_checkpoint_without_the_new_options(tmp_path, keep_threads):
    out = str(tmp_path / "run")
    trainer.train(trainer.TrainConfig(**{**TINY, "epochs": 2}, out=out), echo=lambda m: None)
    ck = trainer.load_checkpoint(os.path.join(out, "checkpoint.pt"))
    for k in ("norm", "whiten_method", "pool_route", "sigma_dtype", "probe_every", "probe_batch",
              "landscape_every", "landscape_etas"):
        ck["config"].pop(k)
    env = ck["env"]
    assert trainer._resume_mismatches(ck, trainer.TrainConfig(**{**TINY, "epochs": 2}, out=out),
                                      env) == []
    assert trainer._resume_mismatches(ck, trainer.TrainConfig(**{**TINY, "epochs": 2}, out=out,
                                                              norm="whiten"), env)


def test_resume_compares_every_option_that_changes_the_results():
    """A new TrainConfig field is compared on --resume unless it is named here as not changing the numbers
    (threads and device are compared through the environment record; the rest say where and how to run:
    --ddp-timeout only says how long a process waits for the others)."""
    import dataclasses

    not_compared = {"threads", "device", "ddp_timeout", "out", "resume", "overwrite", "progress"}
    fields = {f.name for f in dataclasses.fields(trainer.TrainConfig)}
    assert set(trainer._RESUME_KEYS) == fields - not_compared
