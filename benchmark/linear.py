"""Linear probe on a frozen trunk (paper Sec. 4.1; official ``eval_linear.py``).

The trunk stays in eval mode (BatchNorm statistics frozen, no gradients); globally pooled
features feed linear heads. A grid of heads (learning rate x weight decay) trains in one pass:
every head sees the same features, so the grid costs about one probe. ``mode``:
- ``augmented``: RandomResizedCrop + flip each epoch, trunk forward every step (the paper);
- ``cached``: features of the un-augmented images extracted once, cached on disk, heads trained
  on the cache (cheap; numbers are not the paper's protocol, and the record says so).
Data-parallel (torchrun / SLURM tasks): ``batch_size`` is the global batch; each process takes every
world_size-th image of each batch, the heads' gradients are summed over processes, and validation hits are
counted on shards and summed, so N processes compute what one does.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Subset, TensorDataset

from benchmark import feature_cache
from benchmark.features import eval_transform, image_folder_splits
from benchmark.protocol import ImageFolderSplits, TrunkConfig, run_and_record
from pretrain.data import labelled_train_transform
from swavbench.core import interrupt, ranks, tracking
from swavbench.core.data_root import resolve_fields
from swavbench.core.epochs import EpochLoop
from swavbench.core.order import epoch_batches, epoch_loader
from swavbench.core.record import ResultRecord
from swavbench.core.state import atomic_save, load_checkpoint


@dataclass
class LinearConfig(ImageFolderSplits):
    """The paper's ImageNet probe defaults (SGD 0.3, momentum 0.9, wd 1e-6, cosine, 100 epochs, batch 256)."""

    mode: str = "augmented"  # augmented | cached
    epochs: int = 100
    batch_size: int = 256
    lrs: list[float] = field(default_factory=lambda: [0.3])
    weight_decays: list[float] = field(default_factory=lambda: [1e-6])
    momentum: float = 0.9
    final_lr: float = 0.0
    schedule: str = "cosine"  # cosine (to final_lr) | multistep (x gamma at each milestone epoch)
    # cosine: once per epoch (the official eval_linear.py's CosineAnnealingLR(epochs)) or per iteration
    cosine_step: str = "epoch"
    milestones: list[int] = field(default_factory=list)
    gamma: float = 0.1
    nesterov: bool = False
    crop: int = 224
    resize: int = 256
    min_scale: float = 0.08
    num_workers: int = 8
    eval_every: int = 1
    seed: int = 0
    trunk: TrunkConfig = field(default_factory=TrunkConfig)


class LinearHeads(nn.Module):
    """N independent linear classifiers over the same features (N(0, 0.01) weights, zero bias).

    Every head starts from the same seeded weights, so head i of a grid is exactly the probe
    that would have been trained alone with its (lr, wd)."""

    def __init__(self, n_heads: int, dim: int, n_classes: int, *, seed: int = 0):
        super().__init__()
        self.heads = nn.ModuleList(nn.Linear(dim, n_classes) for _ in range(n_heads))
        for h in self.heads:
            with torch.no_grad():
                h.weight.copy_(
                    torch.randn(h.weight.shape, generator=torch.Generator().manual_seed(seed)) * 0.01
                )
            nn.init.zeros_(h.bias)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [h(x) for h in self.heads]


def topk_hits(logits: torch.Tensor, y: torch.Tensor, k: int) -> int:
    k = min(k, logits.shape[1])
    return int((logits.topk(k, dim=1).indices == y[:, None]).any(dim=1).sum())


def grid(cfg: LinearConfig) -> list[tuple[float, float]]:
    return list(itertools.product(cfg.lrs, cfg.weight_decays))


def lr_at(lr: float, step: int, total: int, *, epoch: int, cfg: LinearConfig) -> float:
    """Learning rate of a head with base ``lr`` at ``step`` of ``total`` iterations in ``epoch``: multistep by
    epoch; cosine by epoch (``cosine_step='epoch'``, the official probe) or by iteration."""
    if cfg.schedule == "multistep":
        return lr * cfg.gamma ** sum(epoch >= m for m in cfg.milestones)
    progress = epoch / cfg.epochs if cfg.cosine_step == "epoch" else step / total
    return cfg.final_lr + 0.5 * (lr - cfg.final_lr) * (1 + math.cos(math.pi * progress))


def train_heads(
    batches_per_epoch,
    train_batches,
    eval_fn,
    *,
    dim: int,
    n_classes: int,
    cfg: LinearConfig,
    device: torch.device,
    desc: str = "linear",
    state_path: Path | None = None,
    state_key: object = None,
) -> list[dict[str, float]]:
    """Train one head per (lr, wd) on features from ``train_batches(epoch, start)`` -> (features, labels,
    size of the global batch) of this process' share of each batch of ``epoch`` from batch ``start`` on (the
    same ones whether or not the run was interrupted; gradients are summed over processes);
    ``eval_fn(heads)`` -> per-head (top1, top5). Returns per head: last and best top-1/top-5 and the best
    epoch. With ``state_path`` the heads, optimiser and results are saved after every epoch and, with
    the position in the epoch, at the scheduler's signal (then Interrupted is raised); a run with the
    same ``state_key`` continues from there (requeued jobs, interrupted runs)."""
    pairs = grid(cfg)
    heads = LinearHeads(len(pairs), dim, n_classes, seed=cfg.seed).to(device)
    opt = torch.optim.SGD(
        [{"params": h.parameters(), "lr": lr, "weight_decay": wd} for h, (lr, wd) in zip(heads.heads, pairs)],
        lr=pairs[0][0],
        momentum=cfg.momentum,
        nesterov=cfg.nesterov,
    )
    total = cfg.epochs * batches_per_epoch
    loop = EpochLoop(
        state_path,
        state_key,
        epochs=cfg.epochs,
        per_epoch=batches_per_epoch,
        parts={"heads": heads, "optimizer": opt},
        desc=desc,
    )
    first_results = [{"lr": lr, "weight_decay": wd, "top1_best": -1.0, "best_epoch": 0} for lr, wd in pairs]
    v = loop.resume(step=0, results=first_results)
    step, results = v["step"], v["results"]
    for epoch, first in loop.run(saving=lambda: {"step": step, "results": results}):
        heads.train()
        epoch_loss, steps = 0.0, 0
        for b, (feats, y, n_global) in enumerate(train_batches(epoch, first), start=first):
            for g, (lr, _) in zip(opt.param_groups, pairs):
                g["lr"] = lr_at(lr, step, total, epoch=epoch, cfg=cfg)
            feats, y = feats.to(device), y.to(device)
            # the mean over the global batch: this share's sum / its size, summed over processes below
            loss = sum(F.cross_entropy(out, y, reduction="sum") for out in heads(feats)) / n_global
            opt.zero_grad(set_to_none=False)
            loss.backward()
            if ranks.active():
                for p in heads.parameters():
                    torch.distributed.all_reduce(p.grad)
            opt.step()
            step += 1
            epoch_loss, steps = epoch_loss + float(loss.detach()), steps + 1
            loop.stepped(epoch, b)
        if (epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs:
            heads.eval()
            for r, (top1, top5) in zip(results, eval_fn(heads)):
                r["top1_last"], r["top5_last"] = top1, top5
                if top1 > r["top1_best"]:
                    r["top1_best"], r["top5_best"], r["best_epoch"] = top1, top5, epoch + 1
            loop.bar.set_postfix(top1=f"{max(r['top1_last'] for r in results):.2f}")
        (total_loss,) = ranks.all_sum([epoch_loss])  # each process' share of each step's global mean
        curve = {"train/loss_per_head": total_loss / max(steps, 1) / len(pairs)}
        if "top1_last" in results[0]:
            curve["val/top1_best_head"] = max(r["top1_last"] for r in results)
        tracking.log(curve, epoch + 1)
        loop.epoch_done(epoch)
    return results


@torch.no_grad()
def evaluate_heads(heads: LinearHeads, batches, device: torch.device) -> list[tuple[float, float]]:
    """Per head (top-1, top-5) in % over ``batches`` (this process' shard of the validation set: the hits
    of every process are summed)."""
    hits1 = [0] * len(heads.heads)
    hits5 = [0] * len(heads.heads)
    n = 0
    for feats, y in batches:
        feats, y = feats.to(device), y.to(device)
        for i, out in enumerate(heads(feats)):
            hits1[i] += topk_hits(out, y, 1)
            hits5[i] += topk_hits(out, y, 5)
        n += len(y)
    total = ranks.all_sum([*hits1, *hits5, n])
    k, n = len(hits1), total[-1]
    return [(100.0 * a / n, 100.0 * b / n) for a, b in zip(total[:k], total[k : 2 * k])]


def cached_features(
    loaded, ds, source: str, *, cfg: LinearConfig, device: torch.device, path: Path, trunk_key: dict
):
    """Features + labels of an un-augmented split (``ds``, read from ``source``), loaded from ``path`` when
    it was made by the same trunk (``trunk_key``: checkpoint sha256, or arch + seed for a random trunk) on
    the same images and crop."""
    key = {
        **trunk_key,
        "folder": str(Path(source).resolve()),
        "n": len(ds),
        "resize": cfg.resize,
        "crop": cfg.crop,
        "precision": cfg.trunk.feature_precision,
    }
    cache = load_checkpoint(path) if path.is_file() else None
    if ranks.all_ranks(cache is not None and cache.get("key") == key):  # every process, or none extracts
        return cache["features"], cache["labels"]
    feats, labels = feature_cache.extract(  # or from the features the run's other protocols extracted
        loaded, ds, device, cfg=cfg, desc=f"features {Path(source).name}"
    )
    if ranks.is_main():
        atomic_save({"key": key, "features": feats, "labels": labels}, path)
    return feats, labels


def summarize(results: list[dict[str, float]]) -> dict[str, float]:
    """Record metrics: the best head's numbers plus every head's, named by its lr and wd."""
    best = max(results, key=lambda r: r["top1_best"])
    out = {
        "top1": best["top1_last"],
        "top5": best["top5_last"],
        "top1_best_epoch": best["top1_best"],
        "top5_best_epoch": best["top5_best"],
        "best_epoch": best["best_epoch"],
        "best_lr": best["lr"],
        "best_weight_decay": best["weight_decay"],
    }
    for r in results:
        tag = f"lr{r['lr']:g}_wd{r['weight_decay']:g}"
        out[f"{tag}_top1"] = r["top1_last"]
        out[f"{tag}_top1_best_epoch"] = r["top1_best"]
    return out


def cached_batches(loaded, splits: tuple, *, cfg: LinearConfig, device: torch.device, out_dir: Path) -> tuple:
    """``mode: cached``: (batches per epoch, train_batches, eval_fn) on features of the un-augmented
    (train, val) ``splits`` extracted once (the run's cache file, or the feature cache)."""
    key = {"sha256": loaded.sha256, "source": loaded.source, "spec": vars(loaded.spec), "seed": cfg.seed}
    (ftr, ytr), (fva, yva) = (
        cached_features(
            loaded, ds, src, cfg=cfg, device=device, path=out_dir / "cache" / f"{name}.pt", trunk_key=key
        )
        for ds, src, name in zip(splits, (cfg.train, cfg.val), ("train", "val"))
    )

    def train_batches(epoch, start):
        for idx in epoch_batches(len(ytr), cfg.batch_size, seed=cfg.seed, epoch=epoch, start=start):
            mine = ranks.my_part(idx)
            yield ftr[mine], ytr[mine], len(idx)

    def eval_fn(heads):
        mine = ranks.shard(len(yva))
        return evaluate_heads(heads, DataLoader(TensorDataset(fva[mine], yva[mine]), batch_size=1024), device)

    return math.ceil(len(ytr) / cfg.batch_size), train_batches, eval_fn


def augmented_batches(trunk: nn.Module, splits: tuple, *, cfg: LinearConfig, device: torch.device) -> tuple:
    """``mode: augmented`` (the paper's): (batches per epoch, train_batches, eval_fn) with the frozen trunk
    run every step on RandomResizedCrop + flip views of train, and on the center crops of val."""
    train_ds, val_ds = splits
    train_ds.transform = labelled_train_transform(cfg.crop, cfg.min_scale)
    val_loader = DataLoader(
        Subset(val_ds, ranks.shard(len(val_ds))),
        batch_size=ranks.per_process_batch(cfg.batch_size),
        num_workers=cfg.num_workers,
        worker_init_fn=interrupt.quiet_worker,
    )

    def frozen(batches):
        trunk.eval()  # every epoch: BN statistics stay frozen
        for x, y in batches:
            with torch.no_grad():
                feats = trunk(x.to(device)).float()
            yield feats, y  # outside no_grad: the heads train on them

    def train_batches(epoch, start):
        loader = epoch_loader(
            train_ds,
            cfg.batch_size,
            seed=cfg.seed,
            epoch=epoch,
            start=start,
            num_workers=cfg.num_workers,
            pin=device.type == "cuda",
            share=True,
        )
        for (feats, y), n_global in zip(frozen(loader), loader.global_sizes):
            yield feats, y, n_global

    def eval_fn(heads):
        return evaluate_heads(heads, frozen(val_loader), device)

    return math.ceil(len(train_ds) / cfg.batch_size), train_batches, eval_fn


def run_linear(
    cfg: LinearConfig,
    checkpoint: str,
    out_dir: str | Path,
    *,
    make_splits=image_folder_splits,
    protocol: str = "linear",
) -> ResultRecord:
    """Train the head grid on the frozen trunk and write the record (of ``protocol``).

    ``make_splits(cfg, transform)`` -> (train, val) datasets with ``.classes`` and a settable ``.transform``
    (ImageFolder by default; transfer/ passes other formats, as the transfer-linear protocol)."""
    cfg = resolve_fields(cfg)
    if cfg.mode not in ("augmented", "cached"):
        raise ValueError(f"mode must be 'augmented' or 'cached', got {cfg.mode!r}")
    if cfg.schedule not in ("cosine", "multistep"):
        raise ValueError(f"schedule must be 'cosine' or 'multistep', got {cfg.schedule!r}")
    if cfg.cosine_step not in ("epoch", "iteration"):
        raise ValueError(f"cosine_step must be 'epoch' or 'iteration', got {cfg.cosine_step!r}")
    out_dir = Path(out_dir)

    def body(loaded, device):
        ranks.per_process_batch(cfg.batch_size)  # a batch that does not split over the processes stops here
        trunk = loaded.trunk.to(device).eval()
        for p in trunk.parameters():
            p.requires_grad_(False)
        splits = make_splits(cfg, eval_transform(cfg.resize, cfg.crop))
        if cfg.mode == "cached":
            n_batches, train_batches, eval_fn = cached_batches(
                loaded, splits, cfg=cfg, device=device, out_dir=out_dir
            )
        else:
            n_batches, train_batches, eval_fn = augmented_batches(trunk, splits, cfg=cfg, device=device)
        key = {"sha256": loaded.sha256, "source": loaded.source, "config": asdict(cfg)}
        results = train_heads(
            n_batches,
            train_batches,
            eval_fn,
            dim=trunk.num_features,
            n_classes=len(splits[0].classes),
            cfg=cfg,
            device=device,
            state_path=out_dir / "linear_state.pt",
            state_key=key,
        )
        return summarize(results), {"train": len(splits[0]), "val": len(splits[1])}

    return run_and_record(protocol, cfg, checkpoint, out_dir=out_dir, body=body, global_batch=cfg.batch_size)
