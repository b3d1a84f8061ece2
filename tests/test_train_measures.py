"""What the training-side measurements mean, on tiny hand-made models and tensors with a known answer.

- The CVPR20 landscape probe on a linear logistic model, where L(X + ηg), ∇L(X + ηg) and so Δl(η), Δg(η)
  have closed forms; and on a network with batch normalization, where the probe must see the training step's
  batch statistics.
- The corruptions: the noise's standard deviation, the blur's Gaussian (against scipy's), the contrast factor.
- The data: textures' training and validation patches never share pixels, every image is standardized on
  its own, and the tensors:PATH split is a partition drawn from split_seed alone.
"""

import math

import numpy as np
import pytest
import scipy.ndimage
import torch
from torch import nn

from svdgrad import SvdgradError
from svdgrad.train import corruptions, data, probes


class _Linear(nn.Module):
    """logits = W X with W = [[w], [0]]: the attributes landscape_probe cuts the network at, nothing else.

    With one sample of class 0 and s = w·X: L = softplus(−s), g = ∇_X L = −σ(−s) w, and a step X + ηg
    gives s' = s − η σ(−s) ‖w‖², L' = softplus(−s'), Δg = ‖g − ∇L'‖ = |σ(−s') − σ(−s)| ‖w‖.
    """

    def __init__(self, w, stem=()):
        super().__init__()
        self.stem = nn.Sequential(nn.Identity(), *stem)
        self.features = nn.Identity()
        self.pool = nn.Flatten()
        self.fc = nn.Linear(len(w), 2, bias=False).double()
        with torch.no_grad():
            self.fc.weight.zero_()
            self.fc.weight[0] = torch.tensor(w, dtype=torch.float64)

    def forward(self, x):
        return self.fc(self.pool(self.features(self.stem(x))))


def _softplus(t):
    return math.log1p(math.exp(t))


def _sigmoid(t):
    return 1 / (1 + math.exp(-t))


def test_landscape_probe_on_a_linear_model_matches_the_closed_form():
    w, x = (3.0, 4.0), (0.2, 0.1)  # ‖w‖ = 5, s = w·x = 1
    net = _Linear(w)
    s, nw2 = 1.0, 25.0
    etas = (0.05, 0.1, 0.4)
    r = probes.landscape_probe(net, torch.tensor([x], dtype=torch.float64), torch.tensor([0]), etas)
    p = _sigmoid(-s)  # σ(−s) = −∂L/∂s
    assert r["loss"] == pytest.approx(_softplus(-s), rel=1e-12)
    assert r["grad_norm"] == pytest.approx(p * 5.0, rel=1e-12)  # ‖g‖, not ‖g‖²
    for eta, dl, dg in zip(etas, r["delta_l"], r["delta_g"]):
        s_eta = s - eta * p * nw2  # the step follows +∇L (eq. 3 as printed): the loss goes up
        assert dl == pytest.approx(_softplus(-s_eta), rel=1e-12) and dl > r["loss"]
        assert dg == pytest.approx(abs(_sigmoid(-s_eta) - p) * 5.0, rel=1e-12)  # absolute ‖g − ∇L(X + ηg)‖


def test_landscape_probe_sees_the_training_steps_batch_statistics_and_restores_the_mode():
    """X is the first layer's output; the rest (here a BatchNorm) runs as in training: batch mean and variance."""
    torch.manual_seed(0)
    net = _Linear((1.0, -2.0, 0.5), stem=(nn.BatchNorm1d(3, affine=False).double(),))
    x = 3 + 2 * torch.randn(6, 3, dtype=torch.float64)  # far from the running statistics (0, 1)
    y = torch.tensor([0, 1, 0, 1, 1, 0])
    z = (x - x.mean(0)) / torch.sqrt(x.var(0, unbiased=False) + 1e-5)  # BatchNorm in training mode
    expected = float(torch.nn.functional.cross_entropy(net.fc(z), y).detach())
    net.eval()
    r = probes.landscape_probe(net, x, y, (0.0,))
    assert r["loss"] == pytest.approx(expected, rel=1e-12) and r["delta_l"][0] == pytest.approx(expected, rel=1e-12)
    assert r["delta_g"] == [0.0]
    assert not net.training and torch.equal(net.stem[1].running_mean, torch.zeros(3, dtype=torch.float64))


def _standardized(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, generator=g, dtype=torch.float64)
    x = x + torch.arange(shape[1], dtype=torch.float64).view(1, -1, 1, 1)  # channels with different means
    return (x - x.mean(dim=(1, 2, 3), keepdim=True)) / x.std(dim=(1, 2, 3), keepdim=True)


def test_noise_corruption_adds_noise_of_the_severitys_std():
    x = _standardized(2, 1, 160, 160)
    for sev, std in enumerate(corruptions.SEVERITIES["noise"], start=1):
        n = corruptions.corrupt(x, "noise", sev, seed=3) - x  # 51,200 draws: the sample std is within 1%
        assert float(n.mean()) == pytest.approx(0, abs=0.02) and float(n.std()) == pytest.approx(std, rel=0.02)


def test_blur_is_the_gaussian_of_the_severitys_sigma():
    """An impulse spreads with variance σ² along each axis (σ ≥ 1, where sampling the Gaussian hardly
    matters; the truncation at 3σ takes up to 2.7% off), and the blur of an image is scipy's Gaussian filter truncated at 3σ with mirrored borders."""
    d = torch.zeros(1, 1, 31, 31, dtype=torch.float64)
    d[0, 0, 15, 15] = 1
    t = torch.arange(-15, 16, dtype=torch.float64)
    for sigma in corruptions.SEVERITIES["blur"]:
        k = corruptions.corrupt(d, "blur", corruptions.SEVERITIES["blur"].index(sigma) + 1)[0, 0]
        assert float(k.sum()) == pytest.approx(1, rel=1e-12)
        if sigma >= 1:
            assert float((k.sum(0) * t**2).sum()) == pytest.approx(sigma**2, rel=0.03)
            assert float((k.sum(1) * t**2).sum()) == pytest.approx(sigma**2, rel=0.03)
    x = _standardized(2, 3, 20, 20)
    for sigma in corruptions.SEVERITIES["blur"]:
        ref = scipy.ndimage.gaussian_filter(x.numpy(), sigma=(0, 0, sigma, sigma), mode="mirror", truncate=3.0)
        assert np.allclose(corruptions.blur(x, sigma).numpy(), ref, rtol=0, atol=1e-12)


def test_contrast_scales_a_standardized_image_by_the_factor():
    """x → c·x about the image mean (0 here), the same c for every channel, whatever the channels' own means."""
    x = _standardized(2, 3, 8, 8)
    for sev, c in enumerate(corruptions.SEVERITIES["contrast"], start=1):
        assert torch.allclose(corruptions.corrupt(x, "contrast", sev), c * x, rtol=0, atol=1e-12)


@pytest.fixture
def stripe_textures(monkeypatch):
    """Textures whose left 70% varies only across columns and whose right 30% only across rows."""
    H, W = 64, 100
    cut = round(data.TRAIN_FRACTION * W)
    rng = np.random.default_rng(5)

    def image(name):
        a, b = rng.random(W).astype(np.float32), rng.random(H).astype(np.float32)
        im = np.empty((H, W), np.float32)
        im[:, :cut] = a[None, :cut]
        im[:, cut:] = b[:, None]
        return im

    monkeypatch.setattr(data, "_texture_image", image)
    data.textures.cache_clear()
    try:
        yield data.load("textures", 8, train_per_class=20, val_per_class=20)
    finally:
        data.textures.cache_clear()


def test_texture_patches_of_the_two_splits_never_share_pixels(stripe_textures):
    ds = stripe_textures
    assert ds.train_y.bincount().tolist() == [20] * 5 and ds.val_y.bincount().tolist() == [20] * 5
    # a training patch lies in the column-striped part (constant down each column), a validation patch in
    # the row-striped part (constant along each row); one that crossed the cut would vary both ways
    assert float(ds.train_x.std(dim=2).max()) < 1e-4 < float(ds.train_x.std(dim=3).min())
    assert float(ds.val_x.std(dim=3).max()) < 1e-4 < float(ds.val_x.std(dim=2).min())


def test_every_image_is_standardized_on_its_own(stripe_textures):
    """Zero mean and unit variance per image (each patch has its own brightness: a mean shared by the dataset would leave it)."""
    for x in (stripe_textures.train_x, stripe_textures.val_x):
        assert float(x.mean(dim=(1, 2, 3)).abs().max()) < 1e-5
        assert float((x.std(dim=(1, 2, 3)) - 1).abs().max()) < 1e-4


def test_tensors_split_is_a_partition_drawn_from_split_seed_alone(tmp_path):
    N = 50
    ids = torch.arange(N, dtype=torch.float32)
    path = str(tmp_path / "d.pt")
    torch.save({"images": ids.view(N, 1, 1, 1).expand(N, 1, 8, 8).clone(), "labels": torch.arange(N) % 5}, path)

    def split(split_seed, torch_seed):
        torch.manual_seed(torch_seed)  # the training seed must not move the split
        ds = data.load(f"tensors:{path}", 8, split_seed=split_seed)
        mean, std = ds.channel_stats  # (the images are standardized by the training split's statistics)
        t, v = ((ds.train_x[:, 0, 0, 0].double() * std + mean).round().long(),
                (ds.val_x[:, 0, 0, 0].double() * std + mean).round().long())
        assert torch.equal(ds.train_y, t % 5) and torch.equal(ds.val_y, v % 5)  # labels follow their images
        return sorted(t.tolist()), sorted(v.tolist())

    t, v = split(0, 0)
    assert len(v) == round(data.VAL_FRACTION * N) and not set(t) & set(v) and sorted(t + v) == list(range(N))
    assert split(0, 1) == (t, v) and split(1, 0) != (t, v)


def _save(path, images, labels, **extra):
    torch.save({"images": images, "labels": labels, **extra}, path)
    return f"tensors:{path}"


def test_tensors_are_standardized_per_channel_by_the_training_split(tmp_path):
    """uint8 images 0..255: each training channel gets mean 0 and std 1; validation uses the training statistics."""
    g = torch.Generator().manual_seed(0)
    tx = torch.randint(0, 256, (40, 3, 8, 8), generator=g, dtype=torch.uint8)
    tx[:, 1] = tx[:, 1] // 4 + 100  # channels of different means and spreads
    vx = torch.full((4, 3, 8, 8), 200, dtype=torch.uint8)
    ds = data.load(_save(tmp_path / "d.pt", tx, torch.arange(40) % 4, val_images=vx, val_labels=torch.arange(4)), 8)
    x = ds.train_x.double()
    assert float(x.mean(dim=(0, 2, 3)).abs().max()) < 1e-6
    assert float((x.std(dim=(0, 2, 3)) - 1).abs().max()) < 1e-6
    mean, std = ds.channel_stats
    raw = tx.double()
    assert torch.allclose(mean, raw.mean(dim=(0, 2, 3)), rtol=1e-12)
    assert torch.allclose(std, raw.std(dim=(0, 2, 3)), rtol=1e-12)
    # a constant validation image is (200 − mean)/std per channel: the training statistics, not its own (0 and 0)
    expect = ((200.0 - mean) / std).float()
    assert torch.allclose(ds.val_x[:, :, 0, 0], expect.expand(4, 3), rtol=1e-6)


@pytest.mark.parametrize("scale,dtype", [(1e-30, torch.float32), (1e30, torch.float32), (1e-300, torch.float64),
                                         (1e300, torch.float64), (1.0, torch.float64)])
def test_tensors_of_any_scale_train_alike(tmp_path, scale, dtype):
    """The same images at 1e±30 (float32) and 1e±300 (float64) load to the same standardized tensors as at 1."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(20, 2, 8, 8, generator=g, dtype=torch.float64) + 3.0
    y = torch.arange(20) % 2
    ref = data.load(_save(tmp_path / "ref.pt", x, y), 8)
    ds = data.load(_save(tmp_path / "s.pt", (x * scale).to(dtype), y), 8)
    for a, b in ((ds.train_x, ref.train_x), (ds.val_x, ref.val_x)):
        assert a.dtype == torch.float32 and bool(torch.isfinite(a).all())
        assert float((a - b).abs().max()) < 1e-5  # (float32 rounding of the scaled input)


def test_a_constant_channel_is_centred_not_divided_by_zero(tmp_path):
    x = torch.randn(10, 2, 8, 8, generator=torch.Generator().manual_seed(2))
    x[:, 1] = 7.0
    ds = data.load(_save(tmp_path / "d.pt", x, torch.arange(10) % 2), 8)
    assert bool(torch.isfinite(ds.train_x).all()) and bool((ds.train_x[:, 1] == 0).all())
    assert float(ds.channel_stats[0][1]) == 7.0


def test_validation_beyond_float32_after_standardizing_is_refused(tmp_path):
    x = torch.randn(10, 1, 8, 8, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    vx = torch.full((2, 1, 8, 8), 1e60, dtype=torch.float64)
    with pytest.raises(SvdgradError, match="validation images on the scale of the training images"):
        data.load(_save(tmp_path / "d.pt", x, torch.arange(10) % 2, val_images=vx, val_labels=torch.tensor([0, 1])), 8)


def test_standardize_false_keeps_the_images_as_they_are(tmp_path):
    x = torch.randn(10, 2, 8, 8, generator=torch.Generator().manual_seed(4)) * 50 + 9
    for flag in (False, torch.tensor(False), torch.tensor(0)):
        ds = data.load(_save(tmp_path / "d.pt", x, torch.arange(10) % 2, standardize=flag), 8)
        assert ds.channel_stats is None
        assert torch.equal(torch.sort(torch.cat([ds.train_x, ds.val_x]).flatten())[0], torch.sort(x.flatten())[0])
    np.savez(tmp_path / "d.npz", images=x.numpy(), labels=np.arange(10) % 2, standardize=False)
    assert data.load(f"tensors:{tmp_path / 'd.npz'}", 8).channel_stats is None
    assert data.load(_save(tmp_path / "t.pt", x, torch.arange(10) % 2, standardize=True), 8).channel_stats is not None
    with pytest.raises(SvdgradError, match="Expected 'standardize' in .* to be True or False; received 'no'"):
        data.load(_save(tmp_path / "b.pt", x, torch.arange(10) % 2, standardize="no"), 8)
    with pytest.raises(SvdgradError, match="within float32's range"):
        data.load(_save(tmp_path / "h.pt", x.double() * 1e300, torch.arange(10) % 2, standardize=False), 8)
