"""Colour distortion and Gaussian blur applied batch-wise to crops on the training device.

The fast pipeline leaves only decode, random-resized-crop, flip and uint8 conversion to the
loader workers; these ops follow on the batch, on the GPU when there is one. Per sample they
draw what torchvision's ColorJitter / RandomGrayscale and the paper's PIL blur draw (jitter with
probability p, factors b, c, s ~ U[1-0.8s, 1+0.8s], hue ~ U[-0.2s, 0.2s], the four in a random
order; grayscale with p 0.2; blur with p 0.5 and sigma ~ U[0.1, 2]) and compute torchvision's
tensor formulas, so the augmentation distribution is the paper's.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from pretrain.config import DataConfig
from pretrain.data import IMAGENET_MEAN, IMAGENET_STD

GRAY = (0.2989, 0.587, 0.114)  # torchvision's rgb_to_grayscale weights


def grayscale(x: Tensor) -> Tensor:
    w = x.new_tensor(GRAY).view(1, 3, 1, 1)
    return (x * w).sum(dim=1, keepdim=True)


def brightness(x: Tensor, f: Tensor) -> Tensor:
    return (x * f.view(-1, 1, 1, 1)).clamp_(0, 1)


def contrast(x: Tensor, f: Tensor) -> Tensor:
    mean = grayscale(x).mean(dim=(1, 2, 3), keepdim=True)
    f = f.view(-1, 1, 1, 1)
    return (f * x + (1 - f) * mean).clamp_(0, 1)


def saturation(x: Tensor, f: Tensor) -> Tensor:
    f = f.view(-1, 1, 1, 1)
    return (f * x + (1 - f) * grayscale(x)).clamp_(0, 1)


def hue(x: Tensor, f: Tensor) -> Tensor:
    """Shift the HSV hue by f (in turns), as torchvision's tensor adjust_hue."""
    r, g, b = x.unbind(1)
    maxc, _ = x.max(dim=1)
    minc, _ = x.min(dim=1)
    eqc = maxc == minc
    cr = maxc - minc
    ones = torch.ones_like(maxc)
    s = cr / torch.where(eqc, ones, maxc)
    cr_div = torch.where(eqc, ones, cr)
    rc, gc, bc = (maxc - r) / cr_div, (maxc - g) / cr_div, (maxc - b) / cr_div
    hr = (maxc == r) * (bc - gc)
    hg = ((maxc == g) & (maxc != r)) * (2.0 + rc - bc)
    hb = ((maxc != g) & (maxc != r)) * (4.0 + gc - rc)
    h = torch.fmod((hr + hg + hb) / 6.0 + 1.0, 1.0)
    h = torch.remainder(h + f.view(-1, 1, 1), 1.0)
    v = maxc
    i = torch.floor(h * 6.0)
    fr = h * 6.0 - i
    i = i.to(torch.int64) % 6
    p = (v * (1.0 - s)).clamp(0, 1)
    q = (v * (1.0 - s * fr)).clamp(0, 1)
    t = (v * (1.0 - s * (1.0 - fr))).clamp(0, 1)
    mask = i.unsqueeze(1) == torch.arange(6, device=x.device).view(1, -1, 1, 1)
    a1 = torch.stack((v, q, p, p, t, v), dim=1)
    a2 = torch.stack((t, v, v, q, p, p), dim=1)
    a3 = torch.stack((p, p, t, v, v, q), dim=1)
    return torch.stack([(mask * a).sum(dim=1) for a in (a1, a2, a3)], dim=1)


OPS = (brightness, contrast, saturation, hue)


def gaussian_blur(x: Tensor, sigma: Tensor) -> Tensor:
    """Per-sample separable Gaussian blur (kernel 2*ceil(3*max sigma)+1, reflect padding)."""
    b, c, h, w = x.shape
    radius = min(int(math.ceil(3 * float(sigma.max()))), (min(h, w) - 1))
    if radius < 1:
        return x
    t = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    k = torch.exp(-(t.view(1, -1) ** 2) / (2 * sigma.view(-1, 1).to(x.dtype) ** 2))
    k = (k / k.sum(dim=1, keepdim=True)).repeat_interleave(c, dim=0)  # (b*c, 2r+1)
    y = F.pad(x.reshape(1, b * c, h, w), (radius, radius, radius, radius), mode="reflect")
    y = F.conv2d(y, k.view(b * c, 1, 1, -1), groups=b * c)
    y = F.conv2d(y, k.view(b * c, 1, -1, 1), groups=b * c)
    return y.view(b, c, h, w)


class BatchAugment:
    """Colour jitter, grayscale, blur and ImageNet normalisation for uint8 crop batches."""

    def __init__(self, cfg: DataConfig, *, colour: bool = True):
        """``colour`` False: the loader workers did colour / blur; only convert and normalise."""
        self.colour = colour
        self.s = cfg.color_strength
        self.color_prob, self.gray_prob = cfg.color_prob, cfg.grayscale_prob
        self.blur_prob, (self.blur_min, self.blur_max) = cfg.blur_prob, cfg.blur_radius

    def sample(self, n: int, g: torch.Generator) -> dict[str, Tensor]:
        """Per-sample parameters, drawn on the CPU from ``g`` (deterministic for a seed)."""
        s = self.s
        lo, hi = max(0.0, 1 - 0.8 * s), 1 + 0.8 * s
        u = lambda a, b: a + (b - a) * torch.rand(n, generator=g)  # noqa: E731
        return {
            "jitter": torch.rand(n, generator=g) < self.color_prob,
            "order": torch.stack([torch.randperm(4, generator=g) for _ in range(n)])
            if n
            else torch.zeros(0, 4, dtype=torch.long),
            "factors": torch.stack([u(lo, hi), u(lo, hi), u(lo, hi), u(-0.2 * s, 0.2 * s)], dim=1),
            "gray": torch.rand(n, generator=g) < self.gray_prob,
            "blur": torch.rand(n, generator=g) < self.blur_prob,
            "sigma": u(self.blur_min, self.blur_max),
        }

    def apply(self, x: Tensor, p: dict[str, Tensor]) -> Tensor:
        """uint8 (B, 3, H, W) -> float normalised, with the sampled parameters."""
        x = x.float().div_(255.0)
        if not self.colour:
            return self._normalise(x)
        p = {k: v.to(x.device) for k, v in p.items()}
        if self.s > 0:
            for pos in range(4):
                for op_id, op in enumerate(OPS):
                    idx = torch.nonzero(p["jitter"] & (p["order"][:, pos] == op_id)).flatten()
                    if idx.numel():
                        x[idx] = op(x[idx], p["factors"][idx, op_id])
        idx = torch.nonzero(p["gray"]).flatten()
        if idx.numel():
            x[idx] = grayscale(x[idx]).expand(-1, 3, -1, -1)
        idx = torch.nonzero(p["blur"]).flatten()
        if self.blur_prob > 0 and idx.numel():
            x[idx] = gaussian_blur(x[idx], p["sigma"][idx])
        return self._normalise(x)

    @staticmethod
    def _normalise(x: Tensor) -> Tensor:
        mean = x.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        std = x.new_tensor(IMAGENET_STD).view(1, 3, 1, 1)
        return (x - mean) / std

    def __call__(self, x: Tensor, g: torch.Generator) -> Tensor:
        return self.apply(x, self.sample(x.shape[0], g))
