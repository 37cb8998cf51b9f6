"""Semi-supervised fine-tuning (paper Sec. 4.1, Table 2; official ``eval_semisup.py``): trunk and a
linear head trained end to end on a labelled subset (1% / 10% of ImageNet), BatchNorm in train
mode; SGD with separate trunk / head learning rates, x0.2 at epochs 12 and 16, no weight decay.
Data-parallel as the official code (DistributedDataParallel, SyncBatchNorm): ``batch_size`` is the global
batch (the paper: 32 per GPU x 8), each process takes every world_size-th image of each batch, and
BatchNorm statistics are taken over the whole batch, so N processes compute what one does."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Subset

from benchmark.features import eval_transform, image_folder_splits
from benchmark.linear import topk_hits
from benchmark.protocol import ImageFolderSplits, TrunkConfig, run_and_record
from benchmark.subsets import make_balanced_subset, select
from pretrain.data import labelled_train_transform
from swavbench.core import interrupt, ranks, tracking
from swavbench.core.data_root import resolve_fields
from swavbench.core.epochs import EpochLoop
from swavbench.core.order import epoch_loader
from swavbench.core.record import ResultRecord


@dataclass
class SemisupConfig(ImageFolderSplits):
    """Defaults: the paper's 1% preset (20 epochs, trunk lr 0.02, head lr 5)."""

    subset: str = (
        "subset:imagenet-1pct"  # a list file, a shipped subset, or "balanced:N" (N per class, seeded)
    )
    epochs: int = 20
    batch_size: int = 256
    trunk_lr: float = 0.02
    head_lr: float = 5.0
    milestones: list[int] = field(default_factory=lambda: [12, 16])
    gamma: float = 0.2
    momentum: float = 0.9
    weight_decay: float = 0.0
    crop: int = 224
    resize: int = 256
    min_scale: float = 0.08
    num_workers: int = 8
    seed: int = 0
    mode: str = "finetune"
    trunk: TrunkConfig = field(default_factory=TrunkConfig)


@torch.no_grad()
def evaluate(model: nn.Module, loader: DataLoader, device: torch.device) -> tuple[float, float]:
    """(top-1, top-5) in % over ``loader`` (this process' shard of the validation set; hits are summed)."""
    model.eval()
    h1 = h5 = n = 0
    for x, y in loader:
        out = model(x.to(device))
        y = y.to(device)
        h1, h5, n = h1 + topk_hits(out, y, 1), h5 + topk_hits(out, y, 5), n + len(y)
    h1, h5, n = ranks.all_sum([h1, h5, n])
    return 100.0 * h1 / n, 100.0 * h5 / n


def labelled_splits(cfg: SemisupConfig, out_dir: Path) -> tuple:
    """(the labelled train subset, val) as ImageFolders: ``cfg.subset``'s list, or a balanced subset drawn
    from the seed (``balanced:N``, written to out_dir/subset.txt)."""
    train, val = image_folder_splits(cfg, eval_transform(cfg.resize, cfg.crop))
    train.transform = labelled_train_transform(cfg.crop, cfg.min_scale)
    subset = cfg.subset
    if subset.startswith("balanced:"):
        per_class = int(subset.removeprefix("balanced:"))
        subset = str(
            make_balanced_subset(cfg.train, out_dir / "subset.txt", per_class=per_class, seed=cfg.seed)
        )
    train.samples = select(train.samples, cfg.train, subset)
    train.targets = [c for _, c in train.samples]
    return train, val


def finetuning(trunk: nn.Module, n_classes: int, *, cfg: SemisupConfig, device: torch.device) -> tuple:
    """(model, what trains it: DistributedDataParallel across processes or the model, optimiser, schedule):
    the trunk and a linear head initialised from the seed, BatchNorm synchronised across processes."""
    with torch.random.fork_rng(devices=[]):  # PyTorch's default init, as the official eval_semisup.py,
        torch.manual_seed(cfg.seed)  # drawn from the run's seed (the same head in every process)
        head = nn.Linear(trunk.num_features, n_classes)
    model = nn.Sequential(trunk, head)
    if ranks.active():  # BatchNorm statistics over the global batch, as one process would see them
        model = ranks.sync_batchnorm(model)
    model = model.to(device)
    ddp = ranks.data_parallel(model, device)
    groups = [
        {"params": trunk.parameters(), "lr": cfg.trunk_lr},
        {"params": head.parameters(), "lr": cfg.head_lr},
    ]
    opt = torch.optim.SGD(groups, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    return model, ddp, opt, torch.optim.lr_scheduler.MultiStepLR(opt, cfg.milestones, cfg.gamma)


def run_semisup(cfg: SemisupConfig, checkpoint: str, out_dir: str | Path) -> ResultRecord:
    """Fine-tune on the labelled subset, evaluate on val each epoch, write the record."""
    cfg = resolve_fields(cfg)

    def body(loaded, device):
        per_process = ranks.per_process_batch(cfg.batch_size)
        torch.manual_seed(cfg.seed)
        train, val = labelled_splits(cfg, Path(out_dir))
        model, ddp, opt, sched = finetuning(loaded.trunk, len(train.classes), cfg=cfg, device=device)
        # every labelled image every epoch, the last batch smaller, as the official eval_semisup.py (no
        # drop_last); a process left without an image of that batch takes an empty share
        per_epoch = math.ceil(len(train) / cfg.batch_size)
        val_loader = DataLoader(
            Subset(val, ranks.shard(len(val))),
            batch_size=per_process,
            num_workers=cfg.num_workers,
            worker_init_fn=interrupt.quiet_worker,
        )
        loop = EpochLoop(
            Path(out_dir) / "semisup_state.pt",
            {"sha256": loaded.sha256, "source": loaded.source, "config": asdict(cfg)},
            epochs=cfg.epochs,
            per_epoch=per_epoch,
            parts={"model": model, "optimizer": opt, "scheduler": sched},
            desc="semisup",
            map_location=device,
        )
        v = loop.resume(best=[-1.0, 0.0, 0], last=(0.0, 0.0))
        best, (top1, top5) = tuple(v["best"]), v["last"]
        for epoch, first in loop.run(saving=lambda: {"best": list(best), "last": (top1, top5)}):
            model.train()  # fine-tuning: BatchNorm statistics update
            loader = epoch_loader(
                train,
                cfg.batch_size,
                seed=cfg.seed,
                epoch=epoch,
                start=first,
                num_workers=cfg.num_workers,
                pin=device.type == "cuda",
                drop_last=False,
                share=True,
            )
            epoch_loss, steps = 0.0, 0
            for b, ((x, y), n_global) in enumerate(zip(loader, loader.global_sizes), start=first):
                # the mean over the global batch: DistributedDataParallel averages the processes' gradients
                out = ddp(x.to(device))
                scale = ranks.world_size() / n_global
                loss = F.cross_entropy(out, y.to(device), reduction="sum") * scale
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                epoch_loss, steps = epoch_loss + float(loss.detach()), steps + 1
                loop.stepped(epoch, b)
            sched.step()
            top1, top5 = evaluate(model, val_loader, device)
            if top1 > best[0]:
                best = (top1, top5, epoch + 1)
            loop.bar.set_postfix(top1=f"{top1:.2f}")
            (total,) = ranks.all_sum([epoch_loss])  # the processes' losses average to the global batch's
            train_loss = total / ranks.world_size() / max(steps, 1)
            tracking.log({"train/loss": train_loss, "val/top1": top1, "val/top5": top5}, epoch + 1)
            loop.epoch_done(epoch)
        metrics = {
            "top1": top1,
            "top5": top5,
            "top1_best_epoch": best[0],
            "top5_best_epoch": best[1],
            "best_epoch": best[2],
        }
        return metrics, {"train_labelled": len(train), "val": len(val)}

    return run_and_record(
        "semisup",
        cfg,
        checkpoint,
        out_dir=out_dir,
        body=body,
        global_batch=cfg.batch_size,
    )
