"""The paper's per-crop colour distortion (jitter, grayscale, blur) on uint8 crops, with OpenCV kernels.

Where training runs on a CPU, colour / blur run in the loader workers (``data.color_on=workers``). PIL's
ops cost ~80% of a worker's time there (hue's HSV round trip and the blur alone ~3.5 ms per 224 px crop);
OpenCV's SIMD kernels do the same ops 3-15x faster. Each crop draws exactly what the PIL pipeline
(``pretrain.data.colour_transform``) draws, in the same order from the same generator, so a seed gives
the same parameters on both paths. Brightness and contrast are PIL's arithmetic (truncating blends) as
look-up tables, bit-identical; saturation and grayscale are within 1 grey level; hue (OpenCV's 8-bit HSV)
and blur (an exact Gaussian, where PIL approximates it with three box blurs) differ from PIL about as much
as torchvision's own tensor kernels do (tests/pretrain/test_worker_colour.py measures both).
"""

from __future__ import annotations

import os

import cv2
import numpy as np
import torch
from torch import Tensor
from torchvision import transforms

_LEVELS = np.arange(256, dtype=np.float32)


def brightness(a: np.ndarray, f: float) -> np.ndarray:
    """PIL ImageEnhance.Brightness: blend with black, truncated to uint8."""
    return cv2.LUT(a, np.clip(_LEVELS * np.float32(f), 0, 255).astype(np.uint8))


def contrast(a: np.ndarray, f: float) -> np.ndarray:
    """PIL ImageEnhance.Contrast: blend with the rounded mean of the L channel, truncated."""
    mean = np.float32(int(cv2.cvtColor(a, cv2.COLOR_RGB2GRAY).mean() + 0.5))
    return cv2.LUT(a, np.clip(mean + np.float32(f) * (_LEVELS - mean), 0, 255).astype(np.uint8))


def grayscale(a: np.ndarray) -> np.ndarray:
    """ITU-R 601 luma copied to three channels (PIL's ``convert("L")``, within 1 level)."""
    return cv2.cvtColor(cv2.cvtColor(a, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)


def saturation(a: np.ndarray, f: float) -> np.ndarray:
    """PIL ImageEnhance.Color: blend with the grayscale image; OpenCV rounds, so -0.4999 truncates."""
    return cv2.addWeighted(a, f, grayscale(a), 1.0 - f, -0.4999)


def hue(a: np.ndarray, f: float) -> np.ndarray:
    """Shift the 8-bit HSV hue by ``f`` turns, wrapping, as torchvision's PIL ``adjust_hue``."""
    hsv = cv2.cvtColor(a, cv2.COLOR_RGB2HSV_FULL)
    hsv[..., 0] += np.uint8(int(f * 255) & 0xFF)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB_FULL)


def blur(a: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of standard deviation ``sigma`` px, edges replicated (PIL's GaussianBlur(radius))."""
    return cv2.GaussianBlur(a, (0, 0), sigma, borderType=cv2.BORDER_REPLICATE)


JITTER_OPS = (brightness, contrast, saturation, hue)  # torchvision ColorJitter's fn_idx order


class WorkerColour:
    """Callable uint8 (3, H, W) crop -> uint8 crop following a PIL colour pipeline: its parameters and its
    draws (torch's global generator), OpenCV's kernels."""

    def __init__(self, pil: transforms.Compose):
        """``pil``: ``pretrain.data.colour_transform(cfg)``, RandomApply([ColorJitter]), RandomGrayscale and
        optionally the paper's RandomGaussianBlur; read, never run."""
        apply_jitter, gray, *blur = pil.transforms
        self.jitter_prob, self.jitter = apply_jitter.p, apply_jitter.transforms[0]
        self.gray_prob = gray.p
        self.blur = blur[0] if blur else None
        self._pid = -1

    def __call__(self, crop: Tensor) -> Tensor:
        if self._pid != os.getpid():  # one thread per loader worker: the workers are the parallelism
            cv2.setNumThreads(1)
            self._pid = os.getpid()
        a = np.ascontiguousarray(crop.permute(1, 2, 0).numpy())
        # The draws below are, call for call, those of the PIL pipeline's RandomApply, ColorJitter,
        # RandomGrayscale and RandomGaussianBlur.
        if not self.jitter_prob < torch.rand(1):
            j = self.jitter
            order, *factors = j.get_params(j.brightness, j.contrast, j.saturation, j.hue)
            for op_id in order.tolist():
                if factors[op_id] is not None:
                    a = JITTER_OPS[op_id](a, factors[op_id])
        if torch.rand(1) < self.gray_prob:
            a = grayscale(a)
        radius = self.blur.draw() if self.blur is not None else None
        if radius is not None:
            a = blur(a, radius)
        return torch.from_numpy(a).permute(2, 0, 1)
