"""Pretraining throughput benchmark (``swavbench pretrain-bench``). Not a test: it prints tables
for BENCHMARKS.md.

1. Multi-crop data pipeline, images/s on one core, variants interleaved on the same images:
   the reference (torchvision on PIL per crop, as the paper's code), the fast loader part
   (decode once, crop + flip + uint8), the fast loader plus the batch-wise colour / blur run on
   this CPU (what a CPU-only machine pays), and a bare decode (the floor).
2. Training step images/s on one fixed batch: our step (one trunk call per resolution) versus
   the straightforward step (fp32, one trunk call per crop), interleaved.
"""

from __future__ import annotations

import copy
import statistics
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

from pretrain.batch_augment import BatchAugment
from pretrain.config import PretrainConfig
from pretrain.data import MultiCropDataset, find_images
from pretrain.train import Trainer, resolve_data_path


def _rate(fn, n: int) -> float:
    t0 = time.perf_counter()
    fn()
    return n / (time.perf_counter() - t0)


def time_pipelines(cfg: PretrainConfig, root: Path, n_images: int, repeats: int = 3) -> dict[str, list[float]]:
    """Images/s on one thread for each pipeline variant, interleaved repeats over the same files."""
    ref_cfg, fast_cfg = copy.deepcopy(cfg.data), copy.deepcopy(cfg.data)
    ref_cfg.pipeline, fast_cfg.pipeline = "reference", "fast"
    ref, fast = MultiCropDataset(root, ref_cfg, 0), MultiCropDataset(root, fast_cfg, 0)
    files = find_images(root)
    n = min(n_images, len(files))
    aug = BatchAugment(fast_cfg)
    batch = 32

    def decode():
        for f in files[:n]:
            with Image.open(f) as im:
                im.convert("RGB")

    def fast_with_batch_aug():
        for start in range(0, n, batch):
            items = [fast[(0, i)] for i in range(start, min(n, start + batch))]
            g = torch.Generator().manual_seed(start)
            for crops in zip(*items):
                aug(torch.stack(crops), g)

    variants = {
        "reference (PIL per crop)": lambda: [ref[(0, i)] for i in range(n)],
        "fast loader (crop+flip+uint8)": lambda: [fast[(0, i)] for i in range(n)],
        "fast loader + batch colour/blur on CPU": fast_with_batch_aug,
        "decode only (floor)": decode,
    }
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        rates: dict[str, list[float]] = {k: [] for k in variants}
        for _ in range(repeats):
            for name, fn in variants.items():
                rates[name].append(_rate(fn, n))
        return rates
    finally:
        torch.set_num_threads(threads)


def time_steps(cfg: PretrainConfig, steps: int, warmup: int = 2) -> dict[str, list[float]]:
    """Seconds per training step on one fixed batch: our step (grouped trunk calls; on CUDA channels_last
    and the preset's precision) vs the straightforward step (fp32, NCHW, one trunk call per crop)."""
    with tempfile.TemporaryDirectory() as tmp:
        cfg = copy.deepcopy(cfg)
        cfg.data.num_workers = 0
        ours = Trainer(cfg, Path(tmp) / "ours", progress=False)
        plain_cfg = copy.deepcopy(cfg)
        plain_cfg.run.precision, plain_cfg.run.channels_last = "fp32", False
        plain = Trainer(plain_cfg, Path(tmp) / "plain", progress=False)
        ours.sampler.set_epoch(0)
        crops, _ = next(iter(ours.loader))
        model = plain.model

        def per_crop_forward(cs):  # the straightforward step: one trunk call per crop
            feats = torch.cat([model.trunk(c) for c in cs])
            return torch.nn.functional.normalize(model.projection_head(feats), dim=1)

        plain.ddp = per_crop_forward
        trainers = {"ours (one trunk call per resolution)": ours, "straightforward (per crop)": plain}
        times: dict[str, list[float]] = {name: [] for name in trainers}
        for i in range(warmup + steps):
            for name, tr in trainers.items():
                if tr.device.type == "cuda":
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
                tr.step(crops, epoch=0)
                if tr.device.type == "cuda":
                    torch.cuda.synchronize()
                if i >= warmup:
                    times[name].append(time.perf_counter() - t0)
                tr.state.iteration += 1
        return times


def _table(title: str, rows: dict[str, list[float]], unit: str, ref: str | None) -> None:
    print(f"\n{title}")
    print(f"{'variant':<42}{unit + ' median':>16}{'min':>9}{'max':>9}{'ratio':>8}")
    base = statistics.median(rows[ref]) if ref else None
    for name, v in rows.items():
        ratio = f"{statistics.median(v) / base:.2f}x" if base else ""
        print(f"{name:<42}{statistics.median(v):>16.1f}{min(v):>9.1f}{max(v):>9.1f}{ratio:>8}")


def run(cfg: PretrainConfig, steps: int, images: int, repeats: int = 3) -> None:
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU ({torch.get_num_threads()} threads)"
    crops = " + ".join(f"{n}x{s}" for n, s in zip(cfg.data.nmb_crops, cfg.data.size_crops))
    print(f"device: {device}; arch {cfg.model.arch} (width x{cfg.model.width_multiplier}), batch {cfg.optim.batch_size}, "
          f"crops {crops}, precision {cfg.run.precision}")
    with tempfile.TemporaryDirectory() as tmp:
        root = resolve_data_path(cfg.data, Path(tmp), cfg.run.seed)
        print(f"data: {root}")
        pipes = time_pipelines(cfg, root, images, repeats)
        cfg.data.path = str(root)
        step = time_steps(cfg, steps)
    _table("multi-crop pipeline, one core", pipes, "images/s", "reference (PIL per crop)")
    bs = cfg.optim.batch_size
    ips = {k: [bs / t for t in v] for k, v in step.items()}
    _table("training step (data loading excluded)", ips, "images/s", "straightforward (per crop)")
    ms = {k: [1000 * t for t in v] for k, v in step.items()}
    _table("training step time", ms, "ms", None)
