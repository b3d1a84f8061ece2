"""Offline datasets; nothing is downloaded.

- ``textures``: patches cropped from texture photographs that ship inside
  scikit-image's wheel (read from the package's data folder; images that
  ``skimage.data`` would download are never used).  Each image is a class.
  The left part of each image (``TRAIN_FRACTION`` of the width) gives the
  training patches and the right part the validation patches, so the two
  splits never share pixels.  A patch is a square window of random side in
  [``image_size``, 3·``image_size``] resized to ``image_size``, then
  standardized to zero mean and unit variance (so brightness alone does not
  tell the classes apart).
- ``digits``: scikit-learn's bundled 8x8 digits, resized to ``image_size``.
- ``elpv``: the 2,624 electroluminescence images of solar cells shipped in
  the ``elpv-dataset`` package (the ``elpv`` extra; data CC BY-NC-SA 4.0,
  code Apache-2.0), four classes by defect probability (0, 1/3, 2/3, 1),
  resized to ``image_size``; a fixed 20% validation split per class.
- ``secondorder[:kappa=K]``: synthetic images generated from ``split_seed``
  whose classes differ only in second-order statistics (``secondorder``).
- ``tensors:PATH``: a user ``.pt`` (a dict, or a tuple ``(images, labels)``)
  or ``.npz`` file with ``images`` (N, H, W) or (N, C, H, W) and integer
  ``labels`` (N,); optional ``val_images`` / ``val_labels`` give the
  validation split, otherwise it is a fixed 20% of the data.  Labels must
  be 0 … K−1 with every class present in the training split (K is then the
  number of classes); anything else is an error naming the offending
  labels, before any model is built.  Both splits are standardized per
  channel by the training images' mean and standard deviation (the
  ``Normalize`` convention; ``Dataset.channel_stats`` keeps them), computed
  in float64 after scaling by the largest |value|, so images of any scale
  (uint8 0–255, 1e-30, 1e300 in float64) train alike.  A file entry
  ``standardize=False`` keeps the images as they are (they must then fit
  float32).

Every split is deterministic: it depends only on ``split_seed`` (default 0),
not on the training seed.
"""

from __future__ import annotations

import dataclasses
import functools
import os

import numpy as np
import torch
import torch.nn.functional as F

from .._errors import SvdgradError

#: Texture photographs bundled in scikit-image's wheel; one class each.
TEXTURES = ("brick", "grass", "gravel", "moon", "immunohistochemistry")
_TEXTURE_FILES = {"brick": "brick.png", "grass": "grass.png", "gravel": "gravel.png", "moon": "moon.png",
                  "immunohistochemistry": "ihc.png"}
TRAIN_FRACTION = 0.7
VAL_FRACTION = 0.2
DATASETS = ("textures", "digits", "elpv", "secondorder[:kappa=K]", "tensors:PATH")
#: The synthetic second-order dataset: classes, channels, images per class, spatial blur (pixels).
SECOND_ORDER = dict(classes=4, channels=4, train_per_class=200, val_per_class=100, blur=1.0, kappa=100.0)


@dataclasses.dataclass
class Dataset:
    """In-memory split: float32 images (N, C, H, W), int64 labels (N,)."""

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    classes: tuple[str, ...]
    #: ``tensors:PATH`` only: the per-channel (mean, std) of the training images, float64 (C,), by which both
    #: splits were standardized; x_raw = x·std + mean (apply the same to new images at inference).
    channel_stats: tuple[torch.Tensor, torch.Tensor] | None = None

    @property
    def in_channels(self) -> int:
        return self.train_x.shape[1]

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def _standardize(x: torch.Tensor) -> torch.Tensor:
    m = x.mean(dim=(1, 2, 3), keepdim=True)
    s = x.std(dim=(1, 2, 3), keepdim=True).clamp_min(1e-6)
    return (x - m) / s


def _resize(x: torch.Tensor, size: int) -> torch.Tensor:
    if x.shape[-1] == size and x.shape[-2] == size:
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


def _texture_image(name: str) -> np.ndarray:
    try:
        import skimage.data
        import skimage.io
    except ImportError as exc:
        raise SvdgradError("The 'textures' dataset needs scikit-image (pip install -e '.[dev]'); "
                           f"importing it failed: {exc}.") from exc
    path = os.path.join(os.path.dirname(skimage.data.__file__), _TEXTURE_FILES[name])
    if not os.path.exists(path):
        raise SvdgradError(f"Expected the texture {name!r} inside scikit-image's wheel at {path}; it is "
                           f"missing. Reinstall scikit-image, or use --dataset digits.")
    im = skimage.io.imread(path)
    if im.ndim == 3:
        im = im[..., :3].astype(np.float64) @ np.array([0.2125, 0.7154, 0.0721])
    return im.astype(np.float32) / 255.0


def _crop_patches(img: torch.Tensor, n: int, size: int, rng: np.random.Generator) -> torch.Tensor:
    H, W = img.shape
    out = []
    for _ in range(n):
        s = int(rng.integers(size, min(3 * size, H, W) + 1))
        i = int(rng.integers(0, H - s + 1))
        j = int(rng.integers(0, W - s + 1))
        out.append(_resize(img[i:i + s, j:j + s][None, None], size)[0])
    return torch.stack(out)  # (n, 1, size, size)


@functools.lru_cache(maxsize=4)
def textures(image_size: int = 32, train_per_class: int = 400, val_per_class: int = 100,
             split_seed: int = 0) -> Dataset:
    rng = np.random.default_rng(split_seed)
    xs = {"train": [], "val": []}
    ys = {"train": [], "val": []}
    images = [torch.from_numpy(_texture_image(name)) for name in TEXTURES]
    # Patches are cut from each image's train and validation strips: a side beyond the narrower strip has no
    # patch (--image-size 224 ended in numpy's 'low >= high' deep inside)
    largest = min(min(img.shape[0], int(round(TRAIN_FRACTION * img.shape[1])),
                      img.shape[1] - int(round(TRAIN_FRACTION * img.shape[1]))) for img in images)
    if image_size > largest:
        raise SvdgradError(f"Expected --image-size at most {largest} for the textures dataset (its validation "
                           f"strips are {largest} pixels wide); received {image_size}. Use a smaller size, or "
                           f"another --dataset (digits, second_order, or your own tensors).")
    for c, img in enumerate(images):
        cut = int(round(TRAIN_FRACTION * img.shape[1]))
        for split, part, n in (("train", img[:, :cut], train_per_class), ("val", img[:, cut:], val_per_class)):
            xs[split].append(_crop_patches(part, n, image_size, rng))
            ys[split].append(torch.full((n,), c, dtype=torch.int64))
    return Dataset("textures", _standardize(torch.cat(xs["train"])), torch.cat(ys["train"]),
                   _standardize(torch.cat(xs["val"])), torch.cat(ys["val"]), TEXTURES)


def _random_split(x, y, split_seed):
    g = torch.Generator().manual_seed(split_seed)
    perm = torch.randperm(len(y), generator=g)
    n_val = max(1, int(round(VAL_FRACTION * len(y))))
    return x[perm[n_val:]], y[perm[n_val:]], x[perm[:n_val]], y[perm[:n_val]]


@functools.lru_cache(maxsize=4)
def digits(image_size: int = 32, split_seed: int = 0) -> Dataset:
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:
        raise SvdgradError("The 'digits' dataset needs scikit-learn (pip install -e '.[dev]'); "
                           f"importing it failed: {exc}.") from exc
    d = load_digits()
    x = torch.as_tensor(d.images, dtype=torch.float32)[:, None] / 16.0
    y = torch.as_tensor(d.target, dtype=torch.int64)
    x = _standardize(_resize(x, image_size))
    tx, ty, vx, vy = _random_split(x, y, split_seed)
    return Dataset("digits", tx, ty, vx, vy, tuple(str(i) for i in range(10)))


def second_order_covariances(classes: int, channels: int, kappa: float, seed: int) -> torch.Tensor:
    """(classes, C, C) channel correlation matrices with one spectrum and random eigenvectors per class.

    Σ_c = Q_c diag(λ) Q_cᵀ with λ geometric from 1 to 1/kappa, then scaled to unit diagonal
    (D^{-1/2} Σ_c D^{-1/2}), so every channel has variance 1 in every class: channel means and variances,
    the first-order statistics, are the same for all classes; only the correlations differ.  The scaling
    changes the spectrum a little; ``kappa`` stays the knob, and the realised κ is returned by
    ``torch.linalg.cond``.
    """
    g = torch.Generator().manual_seed(10_007 * seed + 1)
    lam = torch.tensor([kappa ** (-i / max(channels - 1, 1)) for i in range(channels)], dtype=torch.float64)
    out = []
    for _ in range(classes):
        Q, R = torch.linalg.qr(torch.randn(channels, channels, generator=g, dtype=torch.float64))
        Q = Q * torch.sign(torch.diagonal(R))  # Haar-distributed
        S = Q @ torch.diag(lam) @ Q.T
        d = torch.diagonal(S).rsqrt()
        out.append(d[:, None] * S * d[None, :])
    return torch.stack(out)


@functools.lru_cache(maxsize=4)
def second_order(image_size: int = 32, kappa: float = SECOND_ORDER["kappa"], split_seed: int = 0) -> Dataset:
    """Classes that differ only in the channel correlations of their pixels (see ``second_order_covariances``).

    Each pixel's channel vector is drawn from N(0, Σ_c), then every channel is blurred by the same Gaussian
    (``SECOND_ORDER['blur']`` px; a linear map, so the channel correlations are kept) and the image is
    standardized.  A network must compare channels with each other to tell the classes apart: the
    controlled case where covariance pooling should help and average pooling should struggle.
    """
    from .corruptions import blur

    k = SECOND_ORDER
    covs = second_order_covariances(k["classes"], k["channels"], kappa, split_seed)
    L = torch.linalg.cholesky(covs).to(torch.float32)  # (K, C, C)
    g = torch.Generator().manual_seed(10_007 * split_seed + 2)
    xs, ys = {}, {}
    for split, n in (("train", k["train_per_class"]), ("val", k["val_per_class"])):
        parts = []
        for c in range(k["classes"]):
            z = torch.randn(n, k["channels"], image_size, image_size, generator=g)
            parts.append(torch.einsum("ij,njhw->nihw", L[c], z))
        xs[split] = _standardize(blur(torch.cat(parts), k["blur"]))
        ys[split] = torch.arange(k["classes"]).repeat_interleave(n)
    return Dataset(f"secondorder:kappa={kappa:g}", xs["train"], ys["train"], xs["val"], ys["val"],
                   tuple(f"class{c}" for c in range(k["classes"])))


@functools.lru_cache(maxsize=2)
def elpv(image_size: int = 32, split_seed: int = 0) -> Dataset:
    """ELPV solar-cell images (Deitsch et al. 2019), classes = defect probability; stratified 20% validation."""
    try:
        from elpv_dataset.utils import load_dataset
    except ImportError as exc:
        raise SvdgradError("The 'elpv' dataset needs the elpv-dataset package (pip install -e '.[elpv]'; its "
                           f"images are CC BY-NC-SA 4.0); importing it failed: {exc}.") from exc
    images, probs, _ = load_dataset()
    levels = sorted(set(np.round(probs, 4).tolist()))
    y = torch.as_tensor(np.searchsorted(levels, np.round(probs, 4)), dtype=torch.int64)
    x = torch.as_tensor(images, dtype=torch.float32)[:, None] / 255.0
    x = _standardize(torch.cat([_resize(x[i:i + 256], image_size) for i in range(0, len(x), 256)]))
    g = torch.Generator().manual_seed(split_seed)
    tr, va = [], []
    for c in range(len(levels)):
        idx = torch.nonzero(y == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        n_val = max(1, int(round(VAL_FRACTION * len(idx))))
        va.append(idx[:n_val])
        tr.append(idx[n_val:])
    tr, va = torch.cat(tr), torch.cat(va)
    return Dataset("elpv", x[tr], y[tr], x[va], y[va], tuple(f"p={p:.2f}" for p in levels))


def _parse_second_order(spec: str) -> float:
    rest = spec[len("secondorder"):]
    if not rest:
        return SECOND_ORDER["kappa"]
    if rest.startswith(":kappa="):
        try:
            v = float(rest[len(":kappa="):])
        except ValueError:
            v = float("nan")
        if v >= 1 and v < float("inf"):
            return v
    raise SvdgradError(f"Expected secondorder or secondorder:kappa=K with K >= 1 (the condition number of "
                       f"each class's channel covariance before its diagonal is scaled to 1); received {spec!r}.")


def _as_images(x, what: str, path: str) -> torch.Tensor:
    x = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
    if x.dim() == 3:
        x = x[:, None]
    if x.dim() != 4 or min(x.shape) == 0:  # (a zero C, H or W reached an IndexError in the standardization)
        raise SvdgradError(f"Expected {what} of shape (N, H, W) or (N, C, H, W) with every size > 0 in {path}; "
                           f"received shape={tuple(x.shape)}.")
    if not (x.dtype.is_floating_point or x.dtype in (torch.uint8, torch.int16, torch.int32, torch.int64)):
        raise SvdgradError(f"Expected real-valued {what} in {path}; received dtype={x.dtype}.")
    x = x.to(torch.float64)  # (exact for every accepted dtype; standardized, then float32: ``_channel_standardize``)
    if not bool(torch.isfinite(x).all()):
        raise SvdgradError(f"Expected finite {what} in {path}; they contain NaN or Inf. Clean the file first.")
    return x


def _channel_standardize(tx: torch.Tensor, vx: torch.Tensor, path: str):
    """Both splits (float64) standardized per channel by the training split's mean and std -> float32 splits, stats.

    The statistics are taken of the training images divided by their largest |value| per channel, so neither
    the squares of 1e300 (float64 overflow) nor those of 1e-200 (underflow) enter.  A constant channel is
    only centred.
    """
    c = tx.abs().amax(dim=(0, 2, 3))
    c = torch.where(c > 0, c, torch.ones_like(c))
    xs = tx / c[:, None, None]
    m = xs.mean(dim=(0, 2, 3))
    sd = xs.std(dim=(0, 2, 3)) if tx[:, 0].numel() > 1 else torch.zeros_like(m)
    sd = torch.where(sd > 0, sd, torch.ones_like(sd))

    def apply(x):
        return ((x / c[:, None, None] - m[:, None, None]) / sd[:, None, None]).to(torch.float32)

    out_t, out_v = apply(tx), apply(vx)
    if not bool(torch.isfinite(out_v).all()):
        raise SvdgradError(f"Expected validation images on the scale of the training images in {path}; some lie "
                           f"beyond float32's range once standardized by the training split's per-channel mean and "
                           f"standard deviation. Check that both splits come from the same source and units.")
    return out_t, out_v, (m * c, sd * c)


#: The largest |label| accepted from a float array: every integer up to it is exact in float64.
_LABEL_LIMIT = 2.0 ** 53


def _as_labels(y, n: int, what: str, path: str) -> torch.Tensor:
    y = torch.as_tensor(np.asarray(y) if not isinstance(y, torch.Tensor) else y)
    if y.dim() != 1 or y.shape[0] != n:
        raise SvdgradError(f"Expected {what} of shape ({n},), one per image, in {path}; received "
                           f"shape={tuple(y.shape)}.")
    if y.dtype.is_floating_point:
        if not bool(torch.isfinite(y).all()):
            raise SvdgradError(f"Expected integer class labels in {what} of {path}; received non-finite labels "
                               f"(NaN or Inf).")
        if not bool((y == y.round()).all()):
            raise SvdgradError(f"Expected integer class labels in {what} of {path}; received non-integer values.")
        # (an integer-valued float beyond int64's range casts to garbage; class indices never come near 2^53)
        far = y.double().abs().argmax() if y.numel() else None
        if far is not None and float(y[far].abs()) > _LABEL_LIMIT:
            raise SvdgradError(f"Expected class labels 0 ... K-1 in {what} of {path}; received a label of "
                               f"{float(y[far]):.3g}. Renumber the labels to 0 ... K-1, e.g. labels = "
                               f"numpy.unique(labels, return_inverse=True)[1].")
    elif y.dtype == torch.bool or y.dtype.is_complex:
        raise SvdgradError(f"Expected integer class labels in {what} of {path}; received dtype={y.dtype}.")
    y = y.to(torch.int64)
    if bool((y < 0).any()):
        raise SvdgradError(f"Expected class labels >= 0 in {what} of {path}; received min {int(y.min())}.")
    return y


def _load_user_file(path: str) -> dict:
    if not os.path.isfile(path):
        raise SvdgradError(f"Expected a .pt or .npz file of images and labels for tensors:PATH; {path!r} "
                           f"does not exist or is not a file. Check the path.")
    ext = os.path.splitext(path)[1].lower()
    try:
        if ext == ".npz":
            with np.load(path, allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
        if ext in (".pt", ".pth"):
            obj = torch.load(path, map_location="cpu", weights_only=True)
            if isinstance(obj, (tuple, list)) and len(obj) == 2:
                return {"images": obj[0], "labels": obj[1]}
            if isinstance(obj, dict):
                return dict(obj)
            raise SvdgradError(f"Expected {path} to hold a dict with 'images' and 'labels' or a tuple "
                               f"(images, labels); received {type(obj).__name__}.")
    except SvdgradError:
        raise
    except Exception as exc:  # unreadable or corrupt file
        raise SvdgradError(f"Could not read {path} as a {ext} file ({type(exc).__name__}: {exc}). Save it "
                           f"with torch.save({{'images': x, 'labels': y}}, path) or "
                           f"numpy.savez(path, images=x, labels=y).") from exc
    raise SvdgradError(f"Expected a .pt or .npz file for tensors:PATH; received {path!r} with extension "
                       f"{ext or '(none)'}.")


def _pick(d: dict, keys, path):
    for k in keys:
        if k in d:
            return d[k]
    raise SvdgradError(f"Expected a key {' or '.join(repr(k) for k in keys)} in {path}; found "
                       f"{sorted(map(str, d))}. Save images under 'images' and labels under 'labels'.")


def user_tensors(path: str, image_size: int | None = None, split_seed: int = 0) -> Dataset:
    d = _load_user_file(path)
    x = _as_images(_pick(d, ("images", "x", "X"), path), "images", path)
    y = _as_labels(_pick(d, ("labels", "y", "targets"), path), x.shape[0], "labels", path)
    if "val_images" in d or "val_labels" in d:
        vx = _as_images(_pick(d, ("val_images",), path), "val_images", path)
        vy = _as_labels(_pick(d, ("val_labels",), path), vx.shape[0], "val_labels", path)
        if vx.shape[1:] != x.shape[1:]:
            raise SvdgradError(f"Expected val_images with the shape of images {tuple(x.shape[1:])} in {path}; "
                               f"received {tuple(vx.shape[1:])}.")
        tx, ty = x, y
    else:
        if x.shape[0] < 2:
            raise SvdgradError(f"Expected at least 2 images in {path} to split off validation; received {x.shape[0]}.")
        tx, ty, vx, vy = _random_split(x, y, split_seed)
    n_classes = _check_classes(ty, vy, path, split="val_labels" if "val_labels" in d else "the 20% validation split")
    if image_size is not None:
        tx, vx = _resize(tx, image_size), _resize(vx, image_size)
    if _standardize_flag(d, path):
        tx, vx, stats = _channel_standardize(tx, vx, path)
    else:  # the images as they are (in float32, where they must fit)
        tx, vx, stats = _as_float32(tx, "images", path), _as_float32(vx, "val_images", path), None
    return Dataset(f"tensors:{path}", tx, ty, vx, vy, tuple(str(i) for i in range(n_classes)), stats)


def _standardize_flag(d: dict, path: str) -> bool:
    """The file's optional ``standardize`` entry (default True): a bool, or a 0-d bool/0/1 array or tensor."""
    if "standardize" not in d:
        return True
    v = d["standardize"]
    if isinstance(v, (np.ndarray, torch.Tensor)) and v.ndim == 0:
        v = v.item()
    if isinstance(v, (bool, np.bool_)) or (isinstance(v, int) and v in (0, 1)):
        return bool(v)
    raise SvdgradError(f"Expected 'standardize' in {path} to be True or False; received {v!r}. Save "
                       f"standardize=False to train on the images as they are (already normalized).")


def _as_float32(x: torch.Tensor, what: str, path: str) -> torch.Tensor:
    out = x.to(torch.float32)
    if not bool(torch.isfinite(out).all()):
        raise SvdgradError(f"Expected {what} within float32's range in {path} (standardize=False uses them as "
                           f"they are); some exceed 3.4e38. Drop standardize=False, or rescale them.")
    return out


def _few(values, limit: int = 8) -> str:
    values = list(values)
    text = ", ".join(str(v) for v in values[:limit])
    return text + (f", ... ({len(values)} in all)" if len(values) > limit else "")


def _check_classes(ty: torch.Tensor, vy: torch.Tensor, path: str, split: str) -> int:
    """K for training labels that are exactly {0, ..., K-1}; validation labels must lie in it."""
    present = torch.unique(ty).tolist()  # sorted; O(N), never O(max label)
    K = len(present)
    if present[-1] != K - 1:  # labels are >= 0, so {0..K-1} is present iff the largest is K-1
        have = set(present)
        missing = []
        m = 0
        while len(missing) < 8 and m < present[-1]:  # the first gaps; never a loop over range(max label)
            if m not in have:
                missing.append(m)
            m += 1
        n_missing = present[-1] + 1 - K
        raise SvdgradError(
            f"Expected class labels 0 ... K-1 with every class present in the training labels of {path}; "
            f"received {K} distinct labels ({_few(present)}), the largest {present[-1]}, so {n_missing} "
            f"class(es) below it have no training image ({_few(missing, 8)}{', ...' if n_missing > 8 else ''}). "
            f"Renumber the labels to 0 ... {K - 1}, e.g. labels = numpy.unique(labels, return_inverse=True)[1].")
    extra = [v for v in torch.unique(vy).tolist() if v >= K]
    if extra:
        raise SvdgradError(
            f"Expected validation labels in 0 ... {K - 1} (the classes of the training split) in {path}; "
            f"{split} has the labels {_few(extra)}, which no training image has. Give every class training "
            f"images, or drop those validation images.")
    return K


def load(spec: str, image_size: int = 32, *, train_per_class: int = 400, val_per_class: int = 100,
         split_seed: int = 0) -> Dataset:
    """Load a dataset by name: ``textures``, ``digits`` or ``tensors:PATH``."""
    if not isinstance(image_size, int) or image_size < 8:
        raise SvdgradError(f"Expected image_size to be an integer >= 8; received {image_size!r}.")
    if spec == "textures":
        if train_per_class < 1 or val_per_class < 1:
            raise SvdgradError(f"Expected train_per_class and val_per_class >= 1; received "
                               f"{train_per_class}, {val_per_class}.")
        return textures(image_size, train_per_class, val_per_class, split_seed)
    if spec == "digits":
        return digits(image_size, split_seed)
    if spec == "elpv":
        return elpv(image_size, split_seed)
    if spec.startswith("secondorder"):
        return second_order(image_size, _parse_second_order(spec), split_seed)
    if spec.startswith("tensors:"):
        path = spec[len("tensors:"):]
        if not path:
            raise SvdgradError("Expected a file after 'tensors:', e.g. --dataset tensors:data/my_images.pt.")
        return user_tensors(os.path.expanduser(path), image_size, split_seed)
    raise SvdgradError(f"Unknown dataset {spec!r}. Expected one of {', '.join(DATASETS)}.")
