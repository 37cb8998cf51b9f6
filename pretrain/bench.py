"""Pretraining throughput benchmark (``swavbench pretrain-bench``): training-step images/s and
ms/step on this device for a preset, and the multi-crop data pipeline's images/s on one core.
Not a test: it prints figures for BENCHMARKS.md."""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import torch

from pretrain.config import PretrainConfig
from pretrain.data import MultiCropDataset
from pretrain.train import Trainer, resolve_data_path


def time_steps(cfg: PretrainConfig, steps: int, warmup: int = 2) -> list[float]:
    """Seconds per training step on one fixed multi-crop batch (data loading excluded)."""
    with tempfile.TemporaryDirectory() as tmp:
        cfg.data.num_workers = 0
        tr = Trainer(cfg, tmp, progress=False)
        tr.sampler.set_epoch(0)
        crops, _ = next(iter(tr.loader))
        times = []
        for i in range(warmup + steps):
            if tr.device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            tr.step(crops, epoch=0)
            if tr.device.type == "cuda":
                torch.cuda.synchronize()
            if i >= warmup:
                times.append(time.perf_counter() - t0)
            tr.state.iteration += 1
        return times


def time_pipeline(cfg: PretrainConfig, root: Path, n_images: int, repeats: int = 3) -> list[float]:
    """Images/s of the multi-crop pipeline (decode + all crops) in this process on one thread."""
    ds = MultiCropDataset(root, cfg.data, cfg.run.seed)
    n = min(n_images, len(ds))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        rates = []
        for r in range(repeats):
            t0 = time.perf_counter()
            for i in range(n):
                ds[(r, i)]
            rates.append(n / (time.perf_counter() - t0))
        return rates
    finally:
        torch.set_num_threads(threads)


def run(cfg: PretrainConfig, steps: int, images: int) -> None:
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU ({torch.get_num_threads()} threads)"
    crops = " + ".join(f"{n}x{s}" for n, s in zip(cfg.data.nmb_crops, cfg.data.size_crops))
    print(f"device: {device}; arch {cfg.model.arch} (width x{cfg.model.width_multiplier}), batch {cfg.optim.batch_size}, "
          f"crops {crops}, precision {cfg.run.precision}")
    with tempfile.TemporaryDirectory() as tmp:
        root = resolve_data_path(cfg.data, Path(tmp), cfg.run.seed)
        rates = time_pipeline(cfg, root, images)
        cfg.data.path = str(root)
        step = time_steps(cfg, steps)
    bs = cfg.optim.batch_size
    ms = [1000 * t for t in step]
    ips = [bs / t for t in step]
    print(f"{'measure':<34}{'median':>10}{'min':>10}{'max':>10}")
    print(f"{'train step ms':<34}{statistics.median(ms):>10.1f}{min(ms):>10.1f}{max(ms):>10.1f}")
    print(f"{'train images/s':<34}{statistics.median(ips):>10.1f}{min(ips):>10.1f}{max(ips):>10.1f}")
    print(f"{'pipeline images/s per core':<34}{statistics.median(rates):>10.1f}{min(rates):>10.1f}{max(rates):>10.1f}")
    print(f"data: {root}")
