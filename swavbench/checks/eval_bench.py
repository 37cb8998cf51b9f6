"""Evaluation speed benchmark (``swavbench eval-bench``): feature-extraction images/s and the
cost of an N-head lr x wd grid relative to one linear head, measured interleaved on the same
batches of the real augmented probe. Not a test: it prints figures for BENCHMARKS.md."""

from __future__ import annotations

import statistics
import time

import torch
from torch.utils.data import DataLoader, Subset

from benchmark.features import eval_transform, extract_features, image_folder
from benchmark.linear import LinearConfig, train_heads
from benchmark.trunk import TrunkSpec, load_trunk
from pretrain.data import labelled_train_transform
from swavbench.core.data_root import resolve_fields
from swavbench.core.ranks import local_device


def run(checkpoint: str, cfg: LinearConfig, n_images: int, *, n_heads: int, repeats: int) -> None:
    """Print the feature-extraction rate and the N-head / 1-head probe cost on ``cfg.train``."""
    cfg = resolve_fields(cfg)
    device = local_device()
    t = cfg.trunk
    trunk = (
        load_trunk(checkpoint, TrunkSpec(t.arch, t.small_stem, t.width_multiplier)).trunk.to(device).eval()
    )
    for p in trunk.parameters():
        p.requires_grad_(False)
    full = image_folder(cfg.train, eval_transform(cfg.resize, cfg.crop))
    ds = Subset(full, range(0, len(full), max(1, len(full) // n_images)))
    n_classes = len(full.classes)

    extract = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        extract_features(
            trunk,
            ds,
            device,
            batch_size=cfg.batch_size,
            num_workers=cfg.num_workers,
            desc="extract",
            precision=cfg.trunk.feature_precision,
        )
        extract.append(len(ds) / (time.perf_counter() - t0))

    full.transform = labelled_train_transform(cfg.crop, cfg.min_scale)
    loader = DataLoader(
        ds,
        batch_size=cfg.batch_size,
        shuffle=True,
        num_workers=cfg.num_workers,
        generator=torch.Generator().manual_seed(0),
    )

    def batches(epoch, start):  # noqa: ARG001 - one epoch, from its start
        for x, y in loader:
            with torch.no_grad():
                feats = trunk(x.to(device)).float()
            yield feats, y, len(y)

    times: dict[int, list[float]] = {1: [], n_heads: []}
    lrs = [0.01 * 2**i for i in range(n_heads)]
    for _ in range(repeats):
        for n in (1, n_heads):  # interleaved, same batches and augmentation distribution
            c = LinearConfig(epochs=1, batch_size=cfg.batch_size, lrs=lrs[:n], weight_decays=[0.0], seed=0)
            t0 = time.perf_counter()
            train_heads(
                len(loader),
                batches,
                lambda heads: [(0.0, 0.0)] * n,
                dim=trunk.num_features,
                n_classes=n_classes,
                cfg=c,
                device=device,
            )
            times[n].append(time.perf_counter() - t0)

    print(
        f"device: {device}; trunk {t.arch} (width x{t.width_multiplier}) from {checkpoint}; {len(ds)} images "
        f"at {cfg.crop} px, batch {cfg.batch_size}, {repeats} repeats"
    )
    print(f"{'measure':<40}{'median':>10}{'min':>10}{'max':>10}")
    print(
        f"{'feature extraction images/s':<40}{statistics.median(extract):>10.1f}"
        f"{min(extract):>10.1f}{max(extract):>10.1f}"
    )
    for n, ts in times.items():
        ips = [len(ds) / x for x in ts]
        print(
            f"{f'augmented probe, {n} head(s), images/s':<40}{statistics.median(ips):>10.1f}"
            f"{min(ips):>10.1f}{max(ips):>10.1f}"
        )
    ratio = statistics.median(times[n_heads]) / statistics.median(times[1])
    print(f"cost of the {n_heads}-head grid relative to one head: {ratio:.3f}x (target <= 1.3x)")
