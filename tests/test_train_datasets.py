"""The synthetic second-order dataset and the elpv loader (on a stand-in for the package)."""

import sys
import types

import numpy as np
import pytest
import torch

from svdgrad import SvdgradError
from svdgrad.train import data


def test_second_order_classes_share_first_order_statistics_and_differ_in_correlations():
    ds = data.load("secondorder:kappa=1000", 16)
    assert ds.in_channels == data.SECOND_ORDER["channels"] and ds.num_classes == data.SECOND_ORDER["classes"]
    assert torch.equal(ds.train_x, data.load("secondorder:kappa=1000", 16).train_x)  # from the seed
    assert not torch.equal(ds.train_x, data.load("secondorder:kappa=1000", 16, split_seed=1).train_x)
    K = ds.num_classes
    x = ds.train_x.transpose(0, 1).flatten(1)  # (C, N·H·W)
    means = torch.stack([ds.train_x[ds.train_y == k].mean((0, 2, 3)) for k in range(K)])
    vars_ = torch.stack([ds.train_x[ds.train_y == k].var((0, 2, 3)) for k in range(K)])
    assert means.abs().max() < 0.05 and (vars_ - 1).abs().max() < 0.15
    corr = [torch.corrcoef(ds.train_x[ds.train_y == k].transpose(0, 1).flatten(1)) for k in range(K)]
    assert min(float((corr[i] - corr[j]).abs().max()) for i in range(K) for j in range(i)) > 0.2
    assert x.shape[0] == ds.in_channels


def test_second_order_kappa_is_the_knob():
    lo = torch.linalg.cond(data.second_order_covariances(4, 4, 10.0, 0))
    hi = torch.linalg.cond(data.second_order_covariances(4, 4, 1e4, 0))
    assert bool((hi > 10 * lo).all())
    for bad in ("secondorder:kappa=0.5", "secondorder:k=3", "secondorder:kappa=x"):
        with pytest.raises(SvdgradError, match="secondorder:kappa=K"):
            data.load(bad, 16)


def test_elpv_classes_and_split(monkeypatch):
    probs = np.array([0.0] * 10 + [1 / 3] * 5 + [2 / 3] * 5 + [1.0] * 10)
    imgs = np.random.default_rng(0).integers(0, 255, size=(len(probs), 20, 20)).astype(np.uint8)
    fake = types.ModuleType("elpv_dataset.utils")
    fake.load_dataset = lambda: (imgs, probs, np.array(["mono"] * len(probs)))
    monkeypatch.setitem(sys.modules, "elpv_dataset", types.ModuleType("elpv_dataset"))
    monkeypatch.setitem(sys.modules, "elpv_dataset.utils", fake)
    data.elpv.cache_clear()
    ds = data.load("elpv", 16)
    data.elpv.cache_clear()
    assert ds.classes == ("p=0.00", "p=0.33", "p=0.67", "p=1.00")
    assert ds.val_y.bincount().tolist() == [2, 1, 1, 2] and ds.train_y.bincount().tolist() == [8, 4, 4, 8]
    assert ds.train_x.shape[1:] == (1, 16, 16)


def test_elpv_missing_package_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "elpv_dataset", None)
    monkeypatch.setitem(sys.modules, "elpv_dataset.utils", None)
    data.elpv.cache_clear()
    with pytest.raises(SvdgradError, match=r"\.\[elpv\]"):
        data.load("elpv", 16)
    data.elpv.cache_clear()


def test_hybrid_study_on_elpv_has_its_own_folder_and_says_how_to_complete(monkeypatch, tmp_path):
    """`svdgrad study hybrid --dataset elpv`: the same grid on elpv (a stand-in here), its report names the
    data and the command that completes it, and a textures study cannot be mixed into its folder."""
    from svdgrad.train import study

    rng = np.random.default_rng(1)
    probs = np.array([0.0] * 40 + [1 / 3] * 20 + [2 / 3] * 20 + [1.0] * 40)
    imgs = rng.integers(0, 255, size=(len(probs), 24, 24)).astype(np.uint8)
    fake = types.ModuleType("elpv_dataset.utils")
    fake.load_dataset = lambda: (imgs, probs, np.array(["mono"] * len(probs)))
    monkeypatch.setitem(sys.modules, "elpv_dataset", types.ModuleType("elpv_dataset"))
    monkeypatch.setitem(sys.modules, "elpv_dataset.utils", fake)
    data.elpv.cache_clear()
    assert study.default_out(False, "elpv") == "reports/hybrid_protocol_elpv"
    out = str(tmp_path / "elpv")
    try:
        study.run(quick=True, out=out, dataset="elpv", echo=lambda m: None)
        text = open(f"{out}/REPORT.md").read()
        assert "svdgrad study hybrid --quick --dataset elpv" in text  # the Written-by line and the completion command
        assert "electroluminescence" in text
        with pytest.raises(SvdgradError, match="other settings .*dataset"):
            study.run(quick=True, out=out, dataset="textures", resume=True, echo=lambda m: None)
        with pytest.raises(SvdgradError, match="Unknown --dataset"):
            study.run(quick=True, out=str(tmp_path / "x"), dataset="imagenet", echo=lambda m: None)
    finally:
        data.elpv.cache_clear()


def test_textures_refuse_an_image_size_beyond_their_strips_in_one_line():
    """--image-size 224 ended in numpy's 'low >= high' inside the patch cropper; the largest side is named."""
    with pytest.raises(SvdgradError, match=r"--image-size at most (\d+) for the textures dataset.*received 224") as info:
        data.textures(224, 2, 2)
    largest = int(str(info.value).split("at most ")[1].split()[0])
    assert data.textures(largest, 1, 1).val_x.shape[-1] == largest
