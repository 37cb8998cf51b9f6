"""A generated photo-like test image (gradients, noise, a saturated block): resampling and colour
differences show on it."""

import numpy as np
from PIL import Image


def natural_image(h: int = 480, w: int = 640, seed: int = 0) -> Image.Image:
    """Smooth gradients plus texture and edges: resampling differences show on both."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    base = np.stack([128 + 100 * np.sin(x / 37 + c) * np.cos(y / 23 - c) for c in range(3)], axis=-1)
    base += rng.normal(0, 12, size=base.shape)
    base[h // 3 : h // 2, w // 4 : w // 2] = (250, 20, 40)  # a hard-edged block
    return Image.fromarray(base.clip(0, 255).astype(np.uint8))
