"""Corrupted copies of validation images, generated here (CVPR20 sect. 4.2 uses ImageNet-C; this is its
small analogue): Gaussian noise, Gaussian blur, contrast reduction, each at three severities.

Pure functions of a float image batch (N, C, H, W) whose images have zero mean and unit variance (the
datasets' standardization); deterministic (the noise comes from a generator seeded by ``seed`` and the
severity).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

#: kind -> parameter per severity 1, 2, 3: noise std (in units of the image std), blur sigma in pixels,
#: contrast factor c (x -> c·x about the image mean, which is 0 after standardization).
SEVERITIES = {"noise": (0.25, 0.5, 1.0), "blur": (0.5, 1.0, 2.0), "contrast": (0.5, 0.25, 0.1)}


def _gaussian_kernel(sigma: float, dtype) -> torch.Tensor:
    r = max(1, math.ceil(3 * sigma))
    t = torch.arange(-r, r + 1, dtype=dtype)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    return k / k.sum()


def blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur with reflected borders (each channel on its own)."""
    k = _gaussian_kernel(sigma, x.dtype).to(x.device)
    C = x.shape[1]
    r = (len(k) - 1) // 2
    pad_h = min(r, x.shape[-1] - 1)
    pad_v = min(r, x.shape[-2] - 1)
    kh = k[r - pad_h:r + pad_h + 1]
    kv = k[r - pad_v:r + pad_v + 1]
    y = F.conv2d(F.pad(x, (pad_h, pad_h, 0, 0), mode="reflect"), (kh / kh.sum()).view(1, 1, 1, -1).expand(C, 1, 1, -1),
                 groups=C)
    return F.conv2d(F.pad(y, (0, 0, pad_v, pad_v), mode="reflect"),
                    (kv / kv.sum()).view(1, 1, -1, 1).expand(C, 1, -1, 1), groups=C)


def corrupt(x: torch.Tensor, kind: str, severity: int, seed: int = 0) -> torch.Tensor:
    """``x`` corrupted by ``kind`` ('noise', 'blur', 'contrast') at ``severity`` 1-3."""
    if kind not in SEVERITIES:
        raise ValueError(f"Expected a corruption in {', '.join(SEVERITIES)}; received {kind!r}.")
    if severity not in (1, 2, 3):
        raise ValueError(f"Expected severity 1, 2 or 3; received {severity!r}.")
    v = SEVERITIES[kind][severity - 1]
    if kind == "noise":
        g = torch.Generator().manual_seed(7919 * seed + severity)
        return x + v * torch.randn(x.shape, generator=g, dtype=x.dtype).to(x.device)
    if kind == "blur":
        return blur(x, v)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return mean + v * (x - mean)
