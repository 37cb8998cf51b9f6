"""Supervised baseline: the same trunk trained with labels (cross-entropy; SGD momentum 0.9,
wd 1e-4, cosine lr; RandomResizedCrop + flip), so small-scale tables have a supervised row
measured on the same data. Writes a swav-bench checkpoint (``"supervised": True``, trunk keys
plus ``fc.*``) that every protocol loads like a SwAV one. Data-parallel like SwAV pretraining (torchrun or
SLURM tasks, DistributedDataParallel): ``optim.global_batch`` is the global batch, each process takes every
world_size-th image of each batch, BatchNorm statistics over the global batch (``sync_bn``), so N processes
train what one does; the first process writes the checkpoint."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim import SGD
from torchvision import datasets

from pretrain.checkpoint import FORMAT, discard_run, newest_valid_checkpoint, run_files
from pretrain.config import ModelConfig
from pretrain.data import labelled_train_transform
from pretrain.model import build_trunk
from pretrain.synthetic import generate_dataset
from pretrain.train import AUTO_DATASET
from swavbench.core import ranks
from swavbench.core.data_root import existing, resolve
from swavbench.core.distributed import init_distributed
from swavbench.core.epochs import EpochLoop
from swavbench.core.order import epoch_loader
from swavbench.core.paths import CHECKPOINT, CONFIGS
from swavbench.core.state import CheckpointError, load_checkpoint, save_rotating
from swavbench.core.tracking import Tracker

CONFIG_DIR = CONFIGS / "supervised"


@dataclass
class SupervisedData:
    path: str = "auto"  # labelled ImageFolder; 'auto' = shared CIFAR-10 subset, else the generated set
    num_workers: int = 8
    crop: int = 224  # RandomResizedCrop size and smallest area
    min_scale: float = 0.08


@dataclass
class SupervisedOptim:
    epochs: int = 90
    global_batch: int = 256  # all processes together (torchvision's recipe: 32 per GPU x 8)
    base_lr: float = 0.1  # cosine to 0
    momentum: float = 0.9
    weight_decay: float = 1e-4


@dataclass
class SupervisedRun:
    seed: int = 0
    # statistics over the global batch, so the numbers do not depend on the number of processes (torchvision's
    # recipe normalised over each GPU's 32 images: set false for that)
    sync_bn: bool = True
    wandb: str = ""  # a W&B project besides TensorBoard (swavbench.core.tracking)


@dataclass
class SupervisedConfig:
    """Defaults: the standard torchvision ImageNet recipe (90 epochs, batch 256, lr 0.1). The sections and
    the keys they share with SwAV pretraining mean the same (data.path, model.*, optim.epochs, optim.base_lr,
    run.seed, ...), so one override works for both."""

    data: SupervisedData = field(default_factory=SupervisedData)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: SupervisedOptim = field(default_factory=SupervisedOptim)
    run: SupervisedRun = field(default_factory=SupervisedRun)


# the flat layout of configs before the shared schema -> its key now (settings.json of older run folders)
FLAT_KEYS = {
    "data": "data.path",
    "num_workers": "data.num_workers",
    "crop": "data.crop",
    "min_scale": "data.min_scale",
    "epochs": "optim.epochs",
    "batch_size": "optim.global_batch",
    "lr": "optim.base_lr",
    "momentum": "optim.momentum",
    "weight_decay": "optim.weight_decay",
    "seed": "run.seed",
    "sync_bn": "run.sync_bn",
}


def upgrade(flat: dict) -> dict:
    """A supervised config dict of the flat layout in the sectioned one (unchanged if it is already)."""
    if not isinstance(flat.get("data"), str):
        return flat
    out: dict = {"model": flat.get("model", {})}
    for old, new in FLAT_KEYS.items():
        if old in flat:
            section, key = new.split(".")
            out.setdefault(section, {})[key] = flat[old]
    return out


def _labelled_root(cfg: SupervisedConfig, out_dir: Path) -> Path:
    """The labelled ImageFolder: data.path, or for 'auto' the shared subset (else one generated here)."""
    if cfg.data.path != "auto":
        root = existing(cfg.data.path, "labelled data (data.path)")
    else:
        auto = resolve(AUTO_DATASET)
        if not auto.is_dir() and ranks.is_main():
            generate_dataset(out_dir / "generated-data")
        ranks.barrier()  # the other processes read what the first generated
        root = auto if auto.is_dir() else out_dir / "generated-data" / "train"
    if not root.is_dir():
        raise FileNotFoundError(f"labelled data {root} is not a directory (expected root/<class>/<image>)")
    return root


def _claim(out_dir: Path, *, resume: bool, restart: bool) -> Path:
    """The run's checkpoint path in ``out_dir``: a run there is discarded with ``restart``, an error
    without ``resume``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path = out_dir / CHECKPOINT
    if restart and ranks.is_main():
        discard_run(out_dir)
    elif run_files(out_dir) and not (resume or restart):
        raise CheckpointError(
            f"{ckpt_path} already exists: pass --resume to continue it, --restart to discard it, "
            "or another --out"
        )
    return ckpt_path


def _labelled_set(cfg: SupervisedConfig, out_dir: Path) -> tuple[datasets.ImageFolder, int]:
    """The augmented labelled ImageFolder and its batches per epoch (the last, partial one dropped)."""
    root = _labelled_root(cfg, out_dir)
    ranks.per_process_batch(cfg.optim.global_batch)  # checks it splits evenly
    torch.manual_seed(cfg.run.seed)
    ds = datasets.ImageFolder(
        str(root), transform=labelled_train_transform(cfg.data.crop, cfg.data.min_scale)
    )
    if len(ds) < cfg.optim.global_batch:
        raise ValueError(
            f"{root}: {len(ds)} images, fewer than one batch of optim.global_batch={cfg.optim.global_batch}"
        )
    return ds, len(ds) // cfg.optim.global_batch


def _classifier(
    cfg: SupervisedConfig, n_classes: int, device: torch.device
) -> tuple[nn.Module, nn.Module, SGD]:
    """The trunk with its linear classifier on ``device`` (SyncBN and DDP across processes) and its SGD."""
    m, o = cfg.model, cfg.optim
    trunk = build_trunk(m.arch, small_stem=m.small_stem, width_multiplier=m.width_multiplier)
    trunk.fc = nn.Linear(trunk.num_features, n_classes)
    if ranks.world_size() > 1 and cfg.run.sync_bn:
        trunk = ranks.sync_batchnorm(trunk)
    model = trunk.to(device)
    ddp = ranks.data_parallel(model, device)
    opt = SGD(model.parameters(), lr=o.base_lr, momentum=o.momentum, weight_decay=o.weight_decay)
    return model, ddp, opt


def _resumed(out_dir: Path, model: ModelConfig) -> dict | None:
    """The checkpoint a resumed run goes on from (the first process picks it, setting unreadable ones aside;
    the others load the same one), or None; one of another model stops every process."""
    ckpt_path, found, wrong = out_dir / CHECKPOINT, None, ""
    if ranks.is_main():
        try:
            found = newest_valid_checkpoint(out_dir, map_location="cpu")
        except CheckpointError as e:  # stops every process, not only this one
            wrong = str(e)
    if found is not None:
        if not found.ckpt.get("supervised") or found.ckpt.get("config", {}).get("model") != asdict(model):
            wrong = (
                f"{found.path} is not a supervised run of model {asdict(model)}: "
                "use another --out or --restart"
            )
        else:
            found.set_aside_unreadable()
            if found.path.resolve() != ckpt_path.resolve():  # the run's latest: the one it goes on from
                save_rotating(found.ckpt, ckpt_path)
    path, wrong = ranks.all_gather_objects((str(ckpt_path) if found is not None else None, wrong))[0]
    if wrong:  # on every process
        raise CheckpointError(wrong)
    if path is None:
        return None
    return found.ckpt if found is not None else load_checkpoint(path, map_location="cpu")


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
    info = init_distributed()
    ckpt_path = _claim(out_dir, resume=resume, restart=restart)
    ds, per_epoch = _labelled_set(cfg, out_dir)
    device = ranks.local_device(info.local_rank)
    m, o = cfg.model, cfg.optim
    model, ddp, opt = _classifier(cfg, len(ds.classes), device)
    ckpt = _resumed(out_dir, m) if resume and not restart else None
    if ckpt is not None:
        model.load_state_dict(ckpt["state_dict"])
        opt.load_state_dict(ckpt["optimizer"])
    # TensorBoard, and W&B with run.wandb: a resumed run continues its W&B run (its id is in the checkpoint)
    run_id = str(ckpt.get("wandb_id") or "") if ckpt is not None else ""
    tracker = Tracker(out_dir, name=out_dir.name, kind="supervised", project=cfg.run.wandb, run_id=run_id)
    epoch_loss = ckpt.get("epoch_loss", 0.0) if ckpt is not None else 0.0

    def write(epoch: int, batch: int) -> None:
        if info.is_main:
            state = {"state_dict": model.state_dict(), "optimizer": opt.state_dict(), "epoch": epoch}
            config = {"config": {"model": asdict(m)}, "supervised_config": asdict(cfg)}
            extra = {"batch": batch, "epoch_loss": epoch_loss, "wandb_id": tracker.id or run_id}
            save_rotating(
                {"format": FORMAT, "supervised": True, **state, **config, **extra, "classes": ds.classes},
                ckpt_path,
            )

    loop = EpochLoop(
        None,
        None,
        epochs=o.epochs,
        per_epoch=per_epoch,
        desc=f"supervised {m.arch}",
        writer=write,
        progress=progress,
    )
    if ckpt is not None:
        loop.start, loop.start_batch = ckpt["epoch"], ckpt.get("batch", 0)
    for epoch, first in loop.run():
        model.train()
        loader = epoch_loader(
            ds,
            o.global_batch,
            seed=cfg.run.seed,
            epoch=epoch,
            start=first,
            num_workers=cfg.data.num_workers,
            pin=device.type == "cuda",
            drop_last=True,
            share=True,
        )
        for i, (x, y) in enumerate(loader, start=first):
            for group in opt.param_groups:
                group["lr"] = 0.5 * o.base_lr * (1 + math.cos(math.pi * (epoch * per_epoch + i) / loop.total))
            loss = F.cross_entropy(ddp(x.to(device)), y.to(device))  # equal shares: DDP's mean is the batch's
            loop.finite(loss.item(), f"epoch {epoch}, batch {i}", f"lower optim.base_lr (now {o.base_lr})")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loop.bar.set_postfix(loss=f"{loss.item():.3f}")
            epoch_loss += loss.item()
            loop.stepped(epoch, i)
        tracker.log({"train/loss": epoch_loss / per_epoch, "train/lr": opt.param_groups[0]["lr"]}, epoch + 1)
        epoch_loss = 0.0
        loop.epoch_done(epoch)
    tracker.close()
    return ckpt_path
