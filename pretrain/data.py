"""Multi-crop pretraining data: image files -> list of augmented crops (paper Sec. 3.2).

Every sample's augmentation is seeded from (seed, epoch, index), so a resumed run sees the
same crops as an uninterrupted one whatever the number of loader workers. Unreadable images
are skipped with a warning naming the file; the collate function counts them.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from PIL import Image, ImageFilter
from torch.utils.data import Dataset, Sampler
from torchvision import transforms

from pretrain.config import DataConfig

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

    def __call__(self, img: Image.Image) -> Image.Image:
        if torch.rand(()) >= self.p:
            return img
        radius = self.radius_min + (self.radius_max - self.radius_min) * torch.rand(()).item()
        return img.filter(ImageFilter.GaussianBlur(radius=radius))


def crop_transforms(cfg: DataConfig) -> list[transforms.Compose]:
    """One torchvision pipeline per crop, in crop order (e.g. 2 x 224 then 6 x 96).

    ``reference``: the paper's per-crop PIL pipeline, float normalised output. ``fast``: crop,
    flip and uint8 tensor only; colour, grayscale, blur and normalisation follow batch-wise
    (``pretrain.batch_augment``)."""
    if cfg.pipeline == "fast":
        out = []
        for n, size, lo, hi in zip(cfg.nmb_crops, cfg.size_crops, cfg.min_scale_crops, cfg.max_scale_crops):
            out += [
                transforms.Compose(
                    [
                        transforms.RandomResizedCrop(size, scale=(lo, hi)),
                        transforms.RandomHorizontalFlip(),
                        transforms.PILToTensor(),
                    ]
                )
            ] * n
        return out
    s = cfg.color_strength
    color = transforms.Compose(
        [
            transforms.RandomApply(
                [transforms.ColorJitter(0.8 * s, 0.8 * s, 0.8 * s, 0.2 * s)], p=cfg.color_prob
            ),
            transforms.RandomGrayscale(p=cfg.grayscale_prob),
        ]
    )
    out = []
    for n, size, lo, hi in zip(cfg.nmb_crops, cfg.size_crops, cfg.min_scale_crops, cfg.max_scale_crops):
        steps = [transforms.RandomResizedCrop(size, scale=(lo, hi)), transforms.RandomHorizontalFlip(), color]
        if cfg.blur_prob > 0:
            steps.append(RandomGaussianBlur(cfg.blur_prob, *cfg.blur_radius))
        steps += [transforms.ToTensor(), transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
        out += [transforms.Compose(steps)] * n
    return out


def sample_seed(seed: int, epoch: int, index: int) -> int:
    return (seed * 1_000_003 + epoch) * 2_654_435_761 + index & 0x7FFF_FFFF_FFFF_FFFF


class MultiCropDataset(Dataset):
    """Image files -> list of crops; indexed by (epoch, index) pairs from ``EpochSampler``."""

    def __init__(self, root: str | Path, cfg: DataConfig, seed: int = 0):
        self.files = find_images(root)
        self.root = Path(root)
        self.transforms = crop_transforms(cfg)
        self.seed = seed

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, key: tuple[int, int] | int) -> list[torch.Tensor] | None:
        epoch, index = key if isinstance(key, tuple) else (0, key)
        path = self.files[index]
        try:
            with Image.open(path) as im:
                img = im.convert("RGB")
        except (OSError, ValueError, Image.DecompressionBombError) as e:
            warnings.warn(
                f"skipping unreadable image {path}: {e} (remove or re-encode the file)", stacklevel=1
            )
            return None
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(sample_seed(self.seed, epoch, index))
            return [t(img) for t in self.transforms]


def collate_crops(batch: Sequence[list[torch.Tensor] | None]) -> tuple[list[torch.Tensor], int]:
    """Stack crop i of every readable sample; also return how many samples were unreadable."""
    good = [b for b in batch if b is not None]
    skipped = len(batch) - len(good)
    if not good:
        return [], skipped
    return [torch.stack(c) for c in zip(*good)], skipped


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
