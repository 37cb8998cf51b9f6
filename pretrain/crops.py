"""Multi-crop geometry on uint8 tensors: decode once, draw every crop's box and flip, resize.

The fast pipelines split SwAV's augmentation (paper Sec. 3.2) in two: ``draw_crops`` draws what
torchvision's RandomResizedCrop and RandomHorizontalFlip draw (same calls, same distribution), and
``apply_crops`` cuts and resizes with torchvision's tensor kernels (bilinear, antialiased, as the PIL
path). Drawing needs only the image size, so a loader worker can draw from a JPEG header and leave
the decode to the GPU (``data.pipeline=device-decode``); both paths give the same crops for a seed.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torchvision.transforms.v2.functional as TF
from PIL import Image
from torch import Tensor
from torchvision import transforms
from torchvision.io import ImageReadMode, decode_image, decode_jpeg

from pretrain.config import DataConfig

# torchvision decodes these itself (libjpeg-turbo / libpng / libwebp, about 1.5-4x PIL's rate);
# the others (bmp, ppm, tif) go through PIL.
TORCHVISION_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".gif")
JPEG_MAGIC = b"\xff\xd8"


class UnreadableImage(ValueError):
    """An image file that neither torchvision nor PIL can decode."""


@dataclass(frozen=True)
class CropSpec:
    """One crop of the multi-crop recipe: output side and RandomResizedCrop's area scale range."""

    size: int
    scale: tuple[float, float]


@dataclass(frozen=True)
class CropBox:
    """Where one crop is cut (top, left, height, width) and whether it is mirrored."""

    top: int
    left: int
    height: int
    width: int
    flip: bool


def crop_specs(cfg: DataConfig) -> list[CropSpec]:
    """Every crop in order (e.g. 2 x 224 then 6 x 96)."""
    out: list[CropSpec] = []
    for n, size, lo, hi in zip(cfg.nmb_crops, cfg.size_crops, cfg.min_scale_crops, cfg.max_scale_crops):
        out += [CropSpec(size, (lo, hi))] * n
    return out


def read_bytes(path: Path) -> Tensor:
    """The file's bytes as a 1-D uint8 tensor (what torchvision's decoders take)."""
    return torch.frombuffer(bytearray(path.read_bytes()), dtype=torch.uint8)


def decode(data: Tensor, path: Path) -> Tensor:
    """Encoded bytes -> uint8 (3, H, W) RGB; torchvision's decoder where it has one, else PIL."""
    try:
        if path.suffix.lower() in TORCHVISION_SUFFIXES:
            return decode_image(data, mode=ImageReadMode.RGB)
        with Image.open(io.BytesIO(data.numpy().tobytes())) as im:
            return TF.pil_to_tensor(im.convert("RGB"))
    except (RuntimeError, OSError, ValueError, Image.DecompressionBombError) as e:
        raise UnreadableImage(f"{path}: {e}") from e


def image_size(data: Tensor, path: Path) -> tuple[int, int]:
    """(height, width) from the header alone (PIL parses it lazily, no decode)."""
    try:
        with Image.open(io.BytesIO(data.numpy().tobytes())) as im:
            w, h = im.size
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise UnreadableImage(f"{path}: {e}") from e
    return h, w


def draw_crops(height: int, width: int, specs: Sequence[CropSpec]) -> list[CropBox]:
    """Each crop's box and flip from torch's global generator, with torchvision's own sampling
    (RandomResizedCrop.get_params, aspect ratio 3/4-4/3; flip with p 0.5 after each box)."""
    probe = torch.empty(0, height, width)  # get_params reads only the size
    boxes = []
    for s in specs:
        i, j, h, w = transforms.RandomResizedCrop.get_params(probe, list(s.scale), [3 / 4, 4 / 3])
        boxes.append(CropBox(i, j, h, w, bool(torch.rand(1) < 0.5)))
    return boxes


def apply_crops(img: Tensor, boxes: Sequence[CropBox], specs: Sequence[CropSpec]) -> list[Tensor]:
    """Cut, resize (bilinear, antialiased) and mirror every crop of one decoded image, on its device."""
    out = []
    for b, s in zip(boxes, specs):
        c = TF.resized_crop(img, b.top, b.left, b.height, b.width, [s.size, s.size], antialias=True)
        out.append(c.flip(-1) if b.flip else c)
    return out


def decode_on_device(
    items: Sequence[Tensor], paths: Sequence[Path], device: torch.device
) -> list[Tensor | None]:
    """Decode a batch where training runs: JPEG bytes together through ``decode_jpeg`` (nvJPEG on a GPU),
    images a worker already decoded (other formats) moved over; None for a file that does not decode."""
    jpeg = [k for k, x in enumerate(items) if x.dim() == 1]
    out: list[Tensor | None] = [None if x.dim() == 1 else x.to(device, non_blocking=True) for x in items]
    if not jpeg:
        return out
    try:
        decoded = decode_jpeg([items[k] for k in jpeg], mode=ImageReadMode.RGB, device=device)
    except RuntimeError:  # one bad file fails the batch call: decode one by one, on the CPU if need be
        decoded = []
        for k in jpeg:
            try:
                decoded.append(decode(items[k], paths[k]).to(device))
            except UnreadableImage:
                decoded.append(None)
    for k, x in zip(jpeg, decoded):
        out[k] = x
    return out
