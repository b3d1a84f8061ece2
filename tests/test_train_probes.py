"""Probes during training (gradient smoothness, CVPR20 eqs. 3-4) and corrupted validation images."""

import json
import os

import pytest
import torch

from svdgrad.train import corruptions, data, probes, trainer

TINY = dict(dataset="textures", image_size=16, train_per_class=8, val_per_class=4, widths=(4, 8, 8),
            reduced_channels=6, batch_size=20, epochs=2, protocol="ns", threads=1, progress=False)


@pytest.fixture
def keep_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def _net_and_batch(**over):
    cfg = trainer.TrainConfig(**{**TINY, **over})
    ds = data.load(cfg.dataset, cfg.image_size, train_per_class=cfg.train_per_class, val_per_class=cfg.val_per_class)
    return trainer.build_model(cfg, ds.in_channels, ds.num_classes), ds.train_x[:16], ds.train_y[:16]


def _state(net):
    return {k: v.clone() for k, v in net.state_dict().items()}


def test_gradient_probe_is_zero_for_the_reference_and_leaves_the_model_alone():
    net, x, y = _net_and_batch(protocol="svd", svd_method="exact")
    before = _state(net)
    r = probes.gradient_probe(net, x, y)
    assert r["rel_err"] < 1e-5 and r["cosine"] == pytest.approx(1, abs=1e-6) and r["method"].startswith("exact")
    ns, _, _ = _net_and_batch()
    r = probes.gradient_probe(ns, x, y)
    assert r["method"].startswith("newton_schulz") and r["rel_err"] > 1e-4 and ns.pool.method.name == "newton_schulz"
    after = net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.grad is None for p in net.parameters())


def test_gradient_metrics():
    g = torch.tensor([1.0, 0.0])
    m = probes.gradient_metrics(2 * g, g)
    assert m == pytest.approx({"rel_err": 1.0, "cosine": 1.0, "norm_ratio": 2.0})
    assert probes.gradient_metrics(torch.tensor([0.0, 1.0]), g)["cosine"] == pytest.approx(0.0)


def test_landscape_probe_follows_eqs_3_and_4():
    net, x, y = _net_and_batch(head="gap")
    before = _state(net)
    r = probes.landscape_probe(net, x, y, (1e-6, 1.0))
    assert r["etas"] == [1e-6, 1.0] and len(r["delta_l"]) == len(r["delta_g"]) == 2
    assert r["delta_l"][0] == pytest.approx(r["loss"], rel=1e-4)  # η → 0: L(X) and Δg → 0
    assert r["delta_g"][0] < 1e-3 * r["grad_norm"] < r["delta_g"][1]
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())


def test_a_run_with_probes_trains_exactly_as_one_without(tmp_path, keep_threads):
    def log(out):
        with open(os.path.join(out, "log.jsonl")) as f:
            return [{k: v for k, v in json.loads(l).items() if k != "time_s"} for l in f]

    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    trainer.train(trainer.TrainConfig(**TINY, out=a), echo=lambda m: None)
    trainer.train(trainer.TrainConfig(**TINY, out=b, probe_every=1, landscape_every=1, landscape_etas=(0.5,),
                                      probe_batch=8, robustness=True), echo=lambda m: None)
    assert log(a) == log(b)
    for name in ("probes.jsonl", "landscape.jsonl"):
        with open(os.path.join(b, name)) as f:
            rows = [json.loads(l) for l in f]
        assert [r["step"] for r in rows] == [0, 1, 2, 3]  # 2 epochs x 2 steps
    with open(os.path.join(b, "summary.json")) as f:
        rob = json.load(f)["robustness"]
    assert set(rob) == {"clean"} | {f"{k}{s}" for k in corruptions.SEVERITIES for s in (1, 2, 3)}


def test_corruptions():
    x = torch.randn(3, 2, 12, 12)
    x = (x - x.mean(dim=(1, 2, 3), keepdim=True)) / x.std(dim=(1, 2, 3), keepdim=True)
    assert torch.equal(corruptions.corrupt(x, "noise", 2, seed=1), corruptions.corrupt(x, "noise", 2, seed=1))
    errs = [float((corruptions.corrupt(x, k, s) - x).norm()) for k in corruptions.SEVERITIES for s in (1, 2, 3)]
    assert all(e > 0 for e in errs)
    for k in corruptions.SEVERITIES:  # severity orders the damage
        e = [float((corruptions.corrupt(x, k, s) - x).norm()) for s in (1, 2, 3)]
        assert e == sorted(e)
    c = torch.full((1, 1, 8, 8), 3.0)
    assert torch.allclose(corruptions.blur(c, 2.0), c)
    with pytest.raises(ValueError, match="noise, blur, contrast"):
        corruptions.corrupt(x, "fog", 1)
