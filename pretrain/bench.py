"""Pretraining throughput benchmark (``swavbench pretrain-bench``). Not a test: it prints tables
for BENCHMARKS.md.

1. Multi-crop data pipeline, images/s on one core, variants interleaved on the same images:
   the reference (torchvision on PIL per crop, as the paper's code), the fast loader part
   (decode once, crop + flip + uint8), the fast loader plus the batch-wise colour / blur run on
   this CPU (what a CPU-only machine pays), and a bare decode (the floor).
2. Training step images/s on one fixed batch, interleaved: our step (one trunk call per resolution)
   versus the straightforward step (fp32, one trunk call per crop), with the bare trunk's forward +
   backward as the floor (torchvision's ResNet: our trunk is it without ``fc``) and, with --compile,
   ours with a torch.compile'd trunk.
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
from pretrain.train import Trainer, mixed_precision, resolve_data_path


def _rate(fn, n: int) -> float:
    t0 = time.perf_counter()
    fn()
    return n / (time.perf_counter() - t0)


def time_pipelines(
    cfg: PretrainConfig, root: Path, n_images: int, *, repeats: int = 3
) -> dict[str, list[float]]:
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


OURS, PLAIN, COMPILED, FLOOR = (
    "ours (one trunk call per resolution)",
    "straightforward (per crop)",
    "ours + torch.compile (trunk)",
    "trunk forward+backward only (floor)",
)


def time_steps(
    cfg: PretrainConfig,
    steps: int,
    warmup: int = 2,
    *,
    compile_variant: bool = False,
    peaks: dict[str, int] | None = None,
) -> dict[str, list[float]]:
    """Seconds per training step on one fixed batch, interleaved: our step (grouped trunk calls; on CUDA
    channels_last and the preset's precision), the straightforward step (fp32, NCHW, one trunk call per
    crop), optionally ours with a compiled trunk, and the floor: the bare trunk's forward + backward on
    the same crops with our memory format and precision (no head, Sinkhorn, loss or optimizer). ``peaks``
    (CUDA): filled with each variant's peak allocated bytes over its timed steps."""
    with tempfile.TemporaryDirectory() as tmp:
        cfg = copy.deepcopy(cfg)
        cfg.data.num_workers = 0
        cfg.optim.lr_scaling = cfg.optim.lr_scaling or "none"  # speed does not depend on the lr of the batch
        ours = Trainer(cfg, Path(tmp) / "ours", progress=False)
        plain_cfg = copy.deepcopy(cfg)
        plain_cfg.run.precision, plain_cfg.run.channels_last, plain_cfg.run.compile = "fp32", False, False
        plain = Trainer(plain_cfg, Path(tmp) / "plain", progress=False)
        ours.sampler.set_epoch(0)
        crops, _ = next(iter(ours.loader))
        model = plain.model

        def per_crop_forward(cs):  # the straightforward step: one trunk call per crop
            feats = torch.cat([model.trunk(c) for c in cs])
            return torch.nn.functional.normalize(model.projection_head(feats), dim=1)

        plain.ddp = per_crop_forward
        trainers = {OURS: ours, PLAIN: plain}
        if compile_variant and not cfg.run.compile:
            compiled_cfg = copy.deepcopy(cfg)
            compiled_cfg.run.compile = True
            trainers[COMPILED] = Trainer(compiled_cfg, Path(tmp) / "compiled", progress=False)

        float_crops = [c.to(ours.device) for c in crops]
        if ours.augment is not None:
            g = torch.Generator().manual_seed(0)
            float_crops = [ours.augment(c, g) for c in float_crops]
        if ours.channels_last:
            float_crops = [c.contiguous(memory_format=torch.channels_last) for c in float_crops]

        def floor_step() -> None:  # the same grouped trunk calls as our step, nothing else
            with mixed_precision(ours.device, cfg.run.precision):
                loss = ours.model.trunk_features(float_crops).float().mean()
            ours.model.trunk.zero_grad(set_to_none=True)
            loss.backward()

        def trainer_step(tr: Trainer):
            def run_one() -> None:
                tr.step(crops, epoch=0)
                tr.state.iteration += 1

            return run_one

        variants = {name: trainer_step(tr) for name, tr in trainers.items()}
        variants[FLOOR] = floor_step
        times: dict[str, list[float]] = {name: [] for name in variants}
        cuda = ours.device.type == "cuda"
        for i in range(warmup + steps):
            for name, fn in variants.items():
                if cuda:
                    torch.cuda.synchronize()
                    torch.cuda.reset_peak_memory_stats()
                t0 = time.perf_counter()
                fn()
                if cuda:
                    torch.cuda.synchronize()
                if i >= warmup:
                    times[name].append(time.perf_counter() - t0)
                    if cuda and peaks is not None:
                        peaks[name] = max(peaks.get(name, 0), torch.cuda.max_memory_allocated())
        return times


def _table(title: str, rows: dict[str, list[float]], unit: str, *, ref: str | None) -> None:
    print(f"\n{title}")
    print(f"{'variant':<42}{unit + ' median':>16}{'min':>9}{'max':>9}{'ratio':>8}")
    base = statistics.median(rows[ref]) if ref else None
    for name, v in rows.items():
        ratio = f"{statistics.median(v) / base:.2f}x" if base else ""
        print(f"{name:<42}{statistics.median(v):>16.1f}{min(v):>9.1f}{max(v):>9.1f}{ratio:>8}")


def run(
    cfg: PretrainConfig, steps: int, images: int, *, repeats: int = 3, compile_variant: bool = False
) -> None:
    device = (
        torch.cuda.get_device_name()
        if torch.cuda.is_available()
        else f"CPU ({torch.get_num_threads()} threads)"
    )
    crops = " + ".join(f"{n}x{s}" for n, s in zip(cfg.data.nmb_crops, cfg.data.size_crops))
    print(
        f"device: {device}; arch {cfg.model.arch} (width x{cfg.model.width_multiplier}), "
        f"batch {cfg.optim.batch_size}, "
        f"crops {crops}, precision {cfg.run.precision}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        root = resolve_data_path(cfg.data, Path(tmp), cfg.run.seed)
        print(f"data: {root}")
        pipes = time_pipelines(cfg, root, images, repeats=repeats)
        cfg.data.path = str(root)
        step = time_steps(cfg, steps, compile_variant=compile_variant)
    _table("multi-crop pipeline, one core", pipes, "images/s", ref="reference (PIL per crop)")
    bs = cfg.optim.batch_size
    ips = {k: [bs / t for t in v] for k, v in step.items()}
    _table("training step (data loading excluded)", ips, "images/s", ref=PLAIN)
    fraction = statistics.median(ips[OURS]) / statistics.median(ips[FLOOR])
    print(f"ours reaches {100 * fraction:.0f}% of the bare trunk's forward+backward rate (the floor)")
    ms = {k: [1000 * t for t in v] for k, v in step.items()}
    _table("training step time", ms, "ms", ref=None)
