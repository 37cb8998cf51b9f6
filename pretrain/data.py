"""Multi-crop pretraining data: image files -> list of augmented crops (paper Sec. 3.2).

Every sample's augmentation is seeded from (seed, epoch, index), so a resumed run sees the
same crops as an uninterrupted one whatever the number of loader workers. Unreadable images
are skipped with a warning naming the file; the collate function counts them, and DataGuard stops a
run whose data went away instead of training on nothing.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image, ImageFilter
from torch.utils.data import Dataset, Sampler
from torchvision import transforms

from pretrain.config import DataConfig
from pretrain.crops import (
    JPEG_MAGIC,
    CropBox,
    CropSpec,
    apply_crops,
    crop_specs,
    decode,
    decode_on_device,
    draw_crops,
    image_size,
    read_bytes,
)
from pretrain.worker_colour import WorkerColour

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".webp", ".tif", ".tiff")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.228, 0.224, 0.225)  # 0.228 (not 0.229) as in the official SwAV code


def labelled_train_transform(crop: int, min_scale: float = 0.08) -> transforms.Compose:
    """The standard supervised / linear-probe training augmentation: RandomResizedCrop + flip."""
    return transforms.Compose(
        [
            transforms.RandomResizedCrop(crop, scale=(min_scale, 1.0)),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )


class EmptyDatasetError(FileNotFoundError):
    """No image files where the data path points."""


def find_images(root: str | Path) -> list[Path]:
    """All image files of an ImageFolder tree (root/class/img) or a flat folder, sorted."""
    root = Path(root)
    if not root.is_dir():
        raise EmptyDatasetError(
            f"data path {root} is not a directory: pass an ImageFolder tree or a folder of images"
        )
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
    if not files:
        raise EmptyDatasetError(
            f"no images ({', '.join(IMAGE_EXTENSIONS)}) found under {root}: expected root/class/img.jpg "
            "or a flat folder of images"
        )
    return files


class RandomGaussianBlur:
    """PIL Gaussian blur with probability p and radius ~ U(radius_min, radius_max) (as the paper)."""

    def __init__(self, p: float = 0.5, radius_min: float = 0.1, radius_max: float = 2.0):
        self.p, self.radius_min, self.radius_max = p, radius_min, radius_max

    def draw(self) -> float | None:
        """The radius to blur with, or None for no blur (the workers' OpenCV path makes the same draws)."""
        if torch.rand(()) >= self.p:
            return None
        return self.radius_min + (self.radius_max - self.radius_min) * torch.rand(()).item()

    def __call__(self, img: Image.Image) -> Image.Image:
        radius = self.draw()
        return img if radius is None else img.filter(ImageFilter.GaussianBlur(radius=radius))


def colour_transform(cfg: DataConfig) -> transforms.Compose:
    """The paper's per-crop colour distortion on PIL: jitter (p ``color_prob``), grayscale, blur."""
    s = cfg.color_strength
    steps = [
        transforms.RandomApply(
            [transforms.ColorJitter(0.8 * s, 0.8 * s, 0.8 * s, 0.2 * s)], p=cfg.color_prob
        ),
        transforms.RandomGrayscale(p=cfg.grayscale_prob),
    ]
    if cfg.blur_prob > 0:
        steps.append(RandomGaussianBlur(cfg.blur_prob, *cfg.blur_radius))
    return transforms.Compose(steps)


def crop_transforms(cfg: DataConfig) -> list[transforms.Compose]:
    """The reference pipeline: one torchvision PIL pipeline per crop, in crop order (e.g. 2 x 224 then
    6 x 96), as the paper's code; float normalised output."""
    colour = colour_transform(cfg)
    out = []
    for n, size, lo, hi in zip(cfg.nmb_crops, cfg.size_crops, cfg.min_scale_crops, cfg.max_scale_crops):
        steps = [
            transforms.RandomResizedCrop(size, scale=(lo, hi)),
            transforms.RandomHorizontalFlip(),
            colour,
        ]
        steps += [transforms.ToTensor(), transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
        out += [transforms.Compose(steps)] * n
    return out


# Without a GPU, colour / blur run where they cost a core least (pretrain-bench, one core, BENCHMARKS.md):
# 2x224 + 6x96 crops: OpenCV per crop in the workers 3.05x the reference vs batch-wise in the training
# process 0.67x; 2x32 + 4x16 crops: OpenCV 2.27x vs batch-wise 2.51x (per-crop overhead on tiny crops).
WORKER_COLOUR_MIN_CROP = 96


def color_placement(cfg: DataConfig, device: torch.device) -> str:
    """Where colour / grayscale / blur run: ``device`` (batch-wise where training runs: on a GPU it has time
    to spare) or ``workers`` (OpenCV per crop in the loader workers, in parallel). ``auto``: the device on a
    GPU; on a CPU the workers for crops of ``WORKER_COLOUR_MIN_CROP`` px and more, else batch-wise."""
    if cfg.pipeline == "reference":
        return "workers"
    if cfg.color_on != "auto":
        return cfg.color_on
    if device.type == "cuda" or cfg.pipeline == "device-decode":
        return "device"
    return "workers" if max(cfg.size_crops) >= WORKER_COLOUR_MIN_CROP else "device"


def describe_pipeline(cfg: DataConfig, color_on: str, device: torch.device) -> str:
    """One line for the log: what runs where."""
    if cfg.pipeline == "reference":
        return "reference (PIL per crop in the loader workers, as the paper's code)"
    where = "in the loader workers" if color_on == "workers" else f"batch-wise on {device.type}"
    auto = " (auto)" if cfg.color_on == "auto" else ""
    if cfg.pipeline == "device-decode":
        return (
            f"device-decode (workers read bytes; {device.type} decodes, crops); colour / blur {where}{auto}"
        )
    return f"fast (workers decode once, crop and flip uint8); colour / blur {where}{auto}"


def sample_seed(seed: int, epoch: int, index: int) -> int:
    return (seed * 1_000_003 + epoch) * 2_654_435_761 + index & 0x7FFF_FFFF_FFFF_FFFF


@dataclass
class EncodedImage:
    """A sample for ``device-decode``: JPEG bytes (1-D) or an image the worker decoded (other formats),
    with its crops already drawn; the training process decodes and cuts."""

    data: torch.Tensor
    boxes: list[CropBox]
    path: Path


@dataclass
class EncodedBatch:
    """Encoded samples collated for ``decode_crops``."""

    items: list[EncodedImage]


class MultiCropDataset(Dataset):
    """Image files -> list of crops; indexed by (epoch, index) pairs from ``EpochSampler``.

    ``data.pipeline``: ``reference`` (PIL per crop, float normalised crops), ``fast`` (decode once,
    uint8 crops; with ``colour_in_workers`` the colour distortion too (OpenCV), else it runs batch-wise on the
    training device), ``device-decode`` (an ``EncodedImage``: the training device decodes and crops)."""

    def __init__(self, root: str | Path, cfg: DataConfig, seed: int = 0, *, colour_in_workers: bool = False):
        self.files = find_images(root)
        self.root = Path(root)
        self.mode = cfg.pipeline
        self.specs = crop_specs(cfg)
        self.transforms = crop_transforms(cfg) if self.mode == "reference" else None
        worker_colour = colour_in_workers and self.mode == "fast"
        self.colour = WorkerColour(colour_transform(cfg)) if worker_colour else None
        self.seed = seed

    def __len__(self) -> int:
        return len(self.files)

    def _read(self, path: Path) -> tuple[Image.Image | torch.Tensor, int, int]:
        """The decoded image (PIL for the reference, uint8 tensor) or, for device-decode, JPEG bytes."""
        if self.mode == "reference":
            with Image.open(path) as im:
                img = im.convert("RGB")
            return img, img.height, img.width
        data = read_bytes(path)
        if self.mode == "device-decode" and bytes(data[:2].tolist()) == JPEG_MAGIC:
            return data, *image_size(data, path)
        img = decode(data, path)
        return img, img.shape[-2], img.shape[-1]

    def __getitem__(self, key: tuple[int, int] | int) -> list[torch.Tensor] | EncodedImage | None:
        epoch, index = key if isinstance(key, tuple) else (0, key)
        path = self.files[index]
        try:
            img, h, w = self._read(path)
        except (OSError, ValueError, Image.DecompressionBombError) as e:
            warnings.warn(
                f"skipping unreadable image {path}: {e} (remove or re-encode the file)", stacklevel=1
            )
            return None
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(sample_seed(self.seed, epoch, index))
            if self.transforms is not None:
                return [t(img) for t in self.transforms]
            boxes = draw_crops(h, w, self.specs)
            if self.mode == "device-decode":
                return EncodedImage(img, boxes, path)
            crops = apply_crops(img, boxes, self.specs)
            if self.colour is not None:
                crops = [self.colour(c) for c in crops]
            return crops


def collate_crops(
    batch: Sequence[list[torch.Tensor] | EncodedImage | None],
) -> tuple[list[torch.Tensor] | EncodedBatch, int]:
    """Stack crop i of every readable sample (device-decode: keep the encoded samples); also return how
    many samples were unreadable."""
    good = [b for b in batch if b is not None]
    skipped = len(batch) - len(good)
    if not good:
        return [], skipped
    if isinstance(good[0], EncodedImage):
        return EncodedBatch(good), skipped
    return [torch.stack(c) for c in zip(*good)], skipped


@dataclass
class DataGuard:
    """Counts unreadable images per epoch and says when the data is gone rather than damaged in a few files:
    more than ``max_unreadable`` of the epoch's ``epoch_images`` unreadable, or ``max_empty`` batches in a
    row with nothing readable. Fed with counts every process agrees on, so every process stops together."""

    root: Path
    epoch_images: int  # images one epoch draws, over all processes
    max_unreadable: float
    max_empty: int
    skipped: int = 0  # unreadable so far in this epoch
    empty_run: int = 0  # consecutive batches with nothing readable

    def new_epoch(self) -> None:
        self.skipped = 0

    def check(self, skipped: int, *, empty: bool) -> str | None:
        """None while the data looks present, else why the run must stop (naming the data path)."""
        self.skipped += skipped
        self.empty_run = self.empty_run + 1 if empty else 0
        if self.skipped > self.max_unreadable * self.epoch_images:
            why = (
                f"{self.skipped} of the {self.epoch_images} images of this epoch were unreadable, more than "
                f"run.max_unreadable={self.max_unreadable}"
            )
        elif self.max_empty and self.empty_run >= self.max_empty:
            why = f"{self.empty_run} batches in a row had no readable image (run.max_empty_batches)"
        else:
            return None
        return (
            f"{why}: the data under {self.root} went missing or is damaged (a scratch purge, a moved folder, "
            "a network filesystem error; the warnings above name files). Restore it and continue with "
            "--resume, or raise run.max_unreadable if a few damaged files are expected"
        )


def decode_crops(
    batch: EncodedBatch, specs: Sequence[CropSpec], device: torch.device
) -> tuple[list[torch.Tensor], int]:
    """Device-decode's second half, in the training process: decode the batch on ``device``, cut every
    sample's drawn crops there and stack them; also return how many samples failed to decode."""
    images = decode_on_device([s.data for s in batch.items], [s.path for s in batch.items], device)
    per_sample = []
    for s, img in zip(batch.items, images):
        if img is None:
            warnings.warn(f"skipping unreadable image {s.path} (remove or re-encode the file)", stacklevel=1)
            continue
        per_sample.append(apply_crops(img, s.boxes, specs))
    if not per_sample:
        return [], len(images)
    return [torch.stack(c) for c in zip(*per_sample)], len(images) - len(per_sample)


class EpochSampler(Sampler):
    """Shuffled, rank-sharded indices as (epoch, index); can start mid-epoch for exact resume."""

    def __init__(self, n: int, batch_size: int, seed: int, *, rank: int = 0, world_size: int = 1):
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.rank, self.world_size = rank, world_size
        self.per_rank = math.ceil(n / world_size)
        self.epoch, self.start_batch = 0, 0

    def batches_per_epoch(self) -> int:
        return self.per_rank // self.batch_size

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch, self.start_batch = epoch, start_batch

    def __iter__(self) -> Iterator[tuple[int, int]]:
        g = torch.Generator().manual_seed(self.seed * 7919 + self.epoch)
        perm = torch.randperm(self.n, generator=g).tolist()
        perm += perm[: self.per_rank * self.world_size - self.n]
        mine = perm[self.rank :: self.world_size][: self.batches_per_epoch() * self.batch_size]
        for i in mine[self.start_batch * self.batch_size :]:
            yield (self.epoch, i)

    def __len__(self) -> int:
        return (self.batches_per_epoch() - self.start_batch) * self.batch_size
