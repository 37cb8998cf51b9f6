"""Frozen-trunk feature extraction: eval-mode trunk, global-average-pooled features, no augmentation
(resize + center crop), inference mode, channels_last, fp32 (bf16 autocast on GPU only when asked). In a
data-parallel job each process extracts every world_size-th image and all of them get the whole set back
in dataset order."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, Subset
from torchvision import datasets, transforms
from tqdm import tqdm

from pretrain.data import IMAGENET_MEAN, IMAGENET_STD
from swavbench.core import interrupt, ranks

# torchvision's ImageNet std (DINO's eval_knn.py); SwAV's own code uses 0.228 for red (IMAGENET_STD)
TORCHVISION_STD = (0.229, 0.224, 0.225)
INTERPOLATIONS = {
    "bilinear": transforms.InterpolationMode.BILINEAR,
    "bicubic": transforms.InterpolationMode.BICUBIC,
}


def eval_transform(
    resize: int,
    crop: int,
    *,
    interpolation: str = "bilinear",
    std: tuple[float, float, float] = IMAGENET_STD,
) -> transforms.Compose:
    """Resize the shorter side, center crop, normalise: the evaluation view of the frozen protocols
    (bilinear, SwAV's statistics, as eval_linear.py; kNN: bicubic, torchvision's, as DINO's eval_knn.py)."""
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"interpolation must be one of {', '.join(INTERPOLATIONS)}, got {interpolation!r}")
    return transforms.Compose(
        [
            transforms.Resize(resize, interpolation=INTERPOLATIONS[interpolation]),
            transforms.CenterCrop(crop),
            transforms.ToTensor(),
            transforms.Normalize(IMAGENET_MEAN, std),
        ]
    )


def image_folder(root: str | Path, transform: transforms.Compose) -> datasets.ImageFolder:
    """A labelled ImageFolder split, with a clear error when it is missing or empty."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(
            f"split folder {root} does not exist: pass a folder laid out as root/<class>/<image>"
        )
    try:
        return datasets.ImageFolder(str(root), transform=transform)
    except FileNotFoundError as e:
        raise FileNotFoundError(f"{root}: {e} (every class folder needs at least one image)") from None


def image_folder_splits(cfg, transform: transforms.Compose) -> tuple:  # noqa: ANN001 - ImageFolderSplits
    """(train, val) ImageFolder datasets of a config's ``train`` / ``val`` folders through ``transform``,
    with the same class folders."""
    train, val = image_folder(cfg.train, transform), image_folder(cfg.val, transform)
    if train.classes != val.classes:
        raise ValueError(f"class folders differ between {cfg.train} and {cfg.val}")
    return train, val


@torch.inference_mode()
def extract_features(
    trunk: nn.Module,
    dataset,
    device: torch.device,
    *,
    batch_size: int = 256,
    num_workers: int = 4,
    desc: str = "features",
    precision: str = "fp32",
) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, D) float32 pooled features and (N,) labels, in dataset order, on the CPU of every process (each
    process of a data-parallel job extracts its shard). ``precision``: fp32, or bf16 (autocast on a GPU)."""
    if precision not in ("fp32", "bf16"):
        raise ValueError(f"trunk.feature_precision must be fp32 or bf16, got {precision!r}")
    n = len(dataset)
    if ranks.active():
        dataset = Subset(dataset, ranks.shard(n))
    trunk.eval().to(device)
    if device.type == "cuda":
        trunk = trunk.to(memory_format=torch.channels_last)
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        pin_memory=device.type == "cuda",
        worker_init_fn=interrupt.quiet_worker,
    )
    feats, labels = [], []
    amp = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda" and precision == "bf16")
    for x, y in tqdm(loader, desc=desc, unit="batch", leave=False):
        x = x.to(device, non_blocking=True)
        if device.type == "cuda":
            x = x.to(memory_format=torch.channels_last)
        with amp:
            f = trunk(x)
        feats.append(f.float().cpu())
        labels.append(y)
    if not feats:  # a shard with no image (fewer images than processes)
        with amp:
            dim = trunk(torch.zeros(1, *dataset.dataset[0][0].shape, device=device)).shape[1]
        feats, labels = [torch.zeros(0, dim)], [torch.zeros(0, dtype=torch.long)]
    f, y = torch.cat(feats), torch.cat(labels)
    return ranks.gather_rows(f, n), ranks.gather_rows(y, n)
