"""Weighted kNN on L2-normalised features (Wu et al. 2018, as in DINO / lightly): the k nearest
training features by cosine similarity vote for their class with weight exp(sim / T).
Neighbours come from an exact faiss inner-product index (GPU index where CUDA and faiss-gpu
exist), or from a chunked torch matmul when faiss is missing. Data-parallel: features are extracted on
shards and gathered, each process classifies its shard of the test images, hits are summed."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from benchmark import feature_cache
from benchmark.features import TORCHVISION_STD, eval_transform, image_folder_splits
from benchmark.protocol import ImageFolderSplits, TrunkConfig, run_and_record
from swavbench.core import ranks
from swavbench.core.data_root import resolve_fields
from swavbench.core.record import ResultRecord


def nearest_neighbors(
    train: torch.Tensor, test: torch.Tensor, k: int, *, backend: str = "auto"
) -> tuple[torch.Tensor, torch.Tensor]:
    """(similarities, indices), each (n_test, k), sorted by decreasing similarity; inputs L2-normalised."""
    k = min(k, train.shape[0])
    if backend in ("auto", "faiss"):
        try:
            import faiss
        except ImportError:
            if backend == "faiss":
                raise ImportError(
                    "backend 'faiss' asked for but faiss is not installed: pip install faiss-cpu"
                ) from None
        else:
            index = faiss.IndexFlatIP(train.shape[1])
            if torch.cuda.is_available() and hasattr(faiss, "StandardGpuResources"):
                index = faiss.index_cpu_to_gpu(
                    faiss.StandardGpuResources(), torch.cuda.current_device(), index
                )
            index.add(train.float().contiguous().numpy())
            sims, idx = index.search(test.float().contiguous().numpy(), k)
            return torch.from_numpy(sims), torch.from_numpy(idx).long()
    sims, idx = [], []
    for chunk in test.split(1024):
        s, i = (chunk.float() @ train.float().t()).topk(k, dim=1)
        sims.append(s)
        idx.append(i)
    return torch.cat(sims), torch.cat(idx)


def knn_hits(
    train_feats: torch.Tensor,
    train_labels: torch.Tensor,
    test_feats: torch.Tensor,
    *,
    test_labels: torch.Tensor,
    n_classes: int,
    ks: Sequence[int] = (10, 20, 100, 200),
    temperature: float = 0.07,
    backend: str = "auto",
) -> dict[str, int]:
    """Number of top-1 / top-5 hits among the test images for each k: {'k10_top1': ..., 'k10_top5': ...}."""
    train = F.normalize(train_feats.float(), dim=1)
    test = F.normalize(test_feats.float(), dim=1)
    sims, idx = nearest_neighbors(train, test, max(ks), backend=backend)
    neighbor_labels = train_labels[idx]
    out = {}
    for k in ks:
        k_eff = min(k, sims.shape[1])
        weights = (sims[:, :k_eff] / temperature).exp()
        votes = torch.zeros(test.shape[0], n_classes).scatter_add_(1, neighbor_labels[:, :k_eff], weights)
        top_votes, top = votes.topk(min(5, n_classes), dim=1)
        hit = (top == test_labels[:, None]) & (top_votes > 0)  # a class no neighbour voted for is never a hit
        out[f"k{k}_top1"] = int(hit[:, 0].sum())
        out[f"k{k}_top5"] = int(hit.any(dim=1).sum())
    return out


def knn_accuracy(
    train_feats: torch.Tensor,
    train_labels: torch.Tensor,
    test_feats: torch.Tensor,
    *,
    test_labels: torch.Tensor,
    ks: Sequence[int] = (10, 20, 100, 200),
    temperature: float = 0.07,
    backend: str = "auto",
) -> dict[str, float]:
    """Top-1 / top-5 accuracy (%) for each k: {'k10_top1': ..., 'k10_top5': ...}. In a data-parallel run each
    process classifies every world_size-th test image and the hits are summed."""
    n_classes = int(max(train_labels.max(), test_labels.max())) + 1
    mine = ranks.shard(len(test_labels))
    hits = knn_hits(
        train_feats,
        train_labels,
        test_feats[mine],
        test_labels=test_labels[mine],
        n_classes=n_classes,
        ks=ks,
        temperature=temperature,
        backend=backend,
    )
    total = ranks.all_sum(list(hits.values()))
    return {name: 100.0 * h / len(test_labels) for name, h in zip(hits, total)}


@dataclass
class KnnConfig(ImageFolderSplits):
    """kNN protocol; defaults are the ImageNet setting (resize 256, center crop 224)."""

    resize: int = 256
    crop: int = 224
    # DINO's eval_knn.py view: bicubic resize, torchvision's ImageNet std (0.229 for red)
    interpolation: str = "bicubic"
    std: list[float] = field(default_factory=lambda: list(TORCHVISION_STD))
    ks: list[int] = field(default_factory=lambda: [10, 20, 100, 200])
    temperature: float = 0.07
    batch_size: int = 256
    num_workers: int = 8
    backend: str = "auto"  # auto | faiss | torch
    seed: int = 0
    mode: str = "frozen-features"
    trunk: TrunkConfig = field(default_factory=TrunkConfig)


def run_knn(cfg: KnnConfig, checkpoint: str, out_dir: str | Path) -> ResultRecord:
    """Extract train/val features with the frozen trunk, classify val by weighted kNN, write the record."""
    cfg = resolve_fields(cfg)

    def body(loaded, device):
        tf = eval_transform(cfg.resize, cfg.crop, interpolation=cfg.interpolation, std=tuple(cfg.std))
        train, val = image_folder_splits(cfg, tf)
        ftr, ytr = feature_cache.extract(loaded, train, device, cfg=cfg, desc="train features")
        fva, yva = feature_cache.extract(loaded, val, device, cfg=cfg, desc="val features")
        metrics = knn_accuracy(
            ftr, ytr, fva, test_labels=yva, ks=cfg.ks, temperature=cfg.temperature, backend=cfg.backend
        )
        return metrics, {"train": len(train), "val": len(val)}

    return run_and_record("knn", cfg, checkpoint, out_dir=out_dir, body=body)
