"""Built-in procedurally generated image set, written to disk as an ImageFolder tree.

Ten pattern classes (stripes at four angles, checkerboard, rings, blobs, grid, gradient,
noise) with random colours, phases and scales: enough structure that SwAV's loss drops, and
real files so the same loader code path runs as on ImageNet. Deterministic for a seed.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from swavbench.core import durable

CLASSES = (
    "stripes0",
    "stripes45",
    "stripes90",
    "stripes135",
    "checker",
    "rings",
    "blobs",
    "grid",
    "gradient",
    "noise",
)


def _pattern(cls: str, size: int, rng: np.random.Generator) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    freq = rng.uniform(2.5, 5.0)
    phase = rng.uniform(0, 2 * np.pi)
    if cls.startswith("stripes"):
        a = np.deg2rad(float(cls[7:]))
        v = np.sin(2 * np.pi * freq * (xx * np.cos(a) + yy * np.sin(a)) + phase)
    elif cls == "checker":
        v = np.sign(np.sin(2 * np.pi * freq * xx + phase) * np.sin(2 * np.pi * freq * yy + phase))
    elif cls == "rings":
        cx, cy = rng.uniform(0.3, 0.7, 2)
        v = np.sin(2 * np.pi * freq * np.hypot(xx - cx, yy - cy) * 1.5 + phase)
    elif cls == "blobs":
        v = -np.ones_like(xx)
        for _ in range(rng.integers(2, 5)):
            cx, cy, r = *rng.uniform(0.15, 0.85, 2), rng.uniform(0.08, 0.2)
            v = np.maximum(v, np.where(np.hypot(xx - cx, yy - cy) < r, 1.0, -1.0))
    elif cls == "grid":
        v = np.where(
            (np.sin(2 * np.pi * freq * xx + phase) > 0.8) | (np.sin(2 * np.pi * freq * yy + phase) > 0.8),
            1.0,
            -1.0,
        )
    elif cls == "gradient":
        a = rng.uniform(0, 2 * np.pi)
        v = 2 * ((xx - 0.5) * np.cos(a) + (yy - 0.5) * np.sin(a))
    else:  # noise: low-frequency random field
        coarse = rng.uniform(-1, 1, (4, 4)).astype(np.float32)
        v = np.asarray(Image.fromarray(coarse).resize((size, size), Image.BICUBIC))
    fg, bg = rng.uniform(0, 1, 3), rng.uniform(0, 1, 3)
    t = (np.clip(v, -1, 1)[..., None] + 1) / 2
    img = t * fg + (1 - t) * bg + rng.normal(0, 0.03, (size, size, 3))
    return (np.clip(img, 0, 1) * 255).astype(np.uint8)


def generate_dataset(
    root: str | Path, n_images: int = 2000, size: int = 32, *, seed: int = 0, val_fraction: float = 0.2
) -> Path:
    """Write ``root/{train,val}/<class>/<i>.png`` once; reuse it if it already matches."""
    root = Path(root)
    spec = {
        "n_images": n_images,
        "size": size,
        "seed": seed,
        "val_fraction": val_fraction,
        "classes": list(CLASSES),
    }
    marker = root / "generated.json"
    if marker.is_file() and json.loads(marker.read_text()) == spec:
        return root
    rng = np.random.default_rng(seed)
    for i in range(n_images):
        cls = CLASSES[i % len(CLASSES)]
        split = "val" if (i // len(CLASSES)) % round(1 / val_fraction) == 0 else "train"
        out = root / split / cls / f"{i:06d}.png"
        out.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(_pattern(cls, size, rng)).save(out)
    durable.write_text(marker, json.dumps(spec))
    return root
