"""Supervised baseline: the same trunk trained with labels (cross-entropy; SGD momentum 0.9,
wd 1e-4, cosine lr; RandomResizedCrop + flip), so small-scale tables have a supervised row
measured on the same data. Writes a swav-bench checkpoint (``"supervised": True``, trunk keys
plus ``fc.*``) that every protocol loads like a SwAV one."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader
from torchvision import datasets
from tqdm import tqdm

from pretrain.checkpoint import (
    FORMAT,
    CheckpointError,
    discard_run,
    newest_valid_checkpoint,
    run_files,
    save_rotating,
)
from pretrain.config import ModelConfig
from pretrain.data import labelled_train_transform
from pretrain.model import build_trunk
from pretrain.synthetic import generate_dataset
from pretrain.train import AUTO_DATASET
from swavbench import interrupt
from swavbench.data_root import existing, resolve
from swavbench.paths import CHECKPOINT, CONFIGS

CONFIG_DIR = CONFIGS / "supervised"


@dataclass
class SupervisedConfig:
    """Defaults: the standard torchvision ImageNet recipe (90 epochs, batch 256, lr 0.1)."""

    data: str = "auto"  # labelled ImageFolder; 'auto' = shared CIFAR-10 subset, else the generated set
    model: ModelConfig = field(default_factory=ModelConfig)
    epochs: int = 90
    batch_size: int = 256
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4
    crop: int = 224
    min_scale: float = 0.08
    num_workers: int = 8
    seed: int = 0


def train_supervised(
    cfg: SupervisedConfig,
    out_dir: str | Path,
    *,
    resume: bool = False,
    restart: bool = False,
    progress: bool = True,
) -> Path:
    """Train trunk + linear classifier on the labelled data; returns the checkpoint path. ``resume``
    continues from the newest readable checkpoint in ``out_dir``; ``restart`` discards the run there."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path = out_dir / CHECKPOINT
    if restart:
        discard_run(out_dir)
    elif run_files(out_dir) and not resume:
        raise CheckpointError(
            f"{ckpt_path} already exists: pass --resume to continue it, --restart to discard it, "
            "or another --out"
        )
    if cfg.data == "auto":
        auto = resolve(AUTO_DATASET)
        root = auto if auto.is_dir() else generate_dataset(out_dir / "generated-data") / "train"
    else:
        root = existing(cfg.data, "labelled data (data)")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(cfg.seed)
    tf = labelled_train_transform(cfg.crop, cfg.min_scale)
    if not root.is_dir():
        raise FileNotFoundError(f"labelled data {root} is not a directory (expected root/<class>/<image>)")
    ds = datasets.ImageFolder(str(root), transform=tf)
    m = cfg.model
    trunk = build_trunk(m.arch, small_stem=m.small_stem, width_multiplier=m.width_multiplier)
    trunk.fc = nn.Linear(trunk.num_features, len(ds.classes))
    model = trunk.to(device)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    g = torch.Generator().manual_seed(cfg.seed)
    loader = DataLoader(
        ds,
        batch_size=cfg.batch_size,
        shuffle=True,
        drop_last=True,
        generator=g,
        num_workers=cfg.num_workers,
        pin_memory=device.type == "cuda",
        worker_init_fn=interrupt.quiet_worker,
    )
    start = 0
    found = newest_valid_checkpoint(out_dir, map_location="cpu") if resume and not restart else None
    if found is not None:
        ckpt = found.ckpt
        if not ckpt.get("supervised") or ckpt.get("config", {}).get("model") != asdict(m):
            raise CheckpointError(
                f"{found.path} is not a supervised run of model {asdict(m)}: use another --out or --restart"
            )
        found.set_aside_unreadable()
        if found.path.resolve() != ckpt_path.resolve():  # the run's latest is the one it goes on from
            save_rotating(ckpt, ckpt_path)
        model.load_state_dict(ckpt["state_dict"])
        opt.load_state_dict(ckpt["optimizer"])
        g.set_state(ckpt["generator"])
        start = ckpt["epoch"]
    total = cfg.epochs * len(loader)
    bar = tqdm(
        total=total, initial=start * len(loader), desc=f"supervised {m.arch}", unit="it", disable=not progress
    )
    for epoch in range(start, cfg.epochs):
        model.train()
        for i, (x, y) in enumerate(loader):
            step = epoch * len(loader) + i
            for group in opt.param_groups:
                group["lr"] = 0.5 * cfg.lr * (1 + math.cos(math.pi * step / total))
            loss = F.cross_entropy(model(x.to(device)), y.to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}")
        save_rotating(
            {
                "format": FORMAT,
                "supervised": True,
                "state_dict": model.state_dict(),
                "optimizer": opt.state_dict(),
                "generator": g.get_state(),
                "epoch": epoch + 1,
                "config": {"model": asdict(m)},
                "supervised_config": asdict(cfg),
                "classes": ds.classes,
            },
            ckpt_path,
        )
    bar.close()
    return ckpt_path
