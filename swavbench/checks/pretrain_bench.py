"""Pretraining throughput benchmark (``swavbench pretrain-bench``). Not a test: it prints tables
for BENCHMARKS.md.

1. Multi-crop data pipeline, images/s on one core, variants interleaved on the same images: the
   reference (torchvision on PIL per crop, as the paper's code); the fast loader's worker share (decode
   once, crops + flips on uint8 tensors), with the colour / blur in the worker (the CPU placement) and
   with the batch colour / blur in the training process instead; device-decode's two halves (the worker
   reads bytes and draws boxes; the device decodes, cuts and colours); bare decodes (the floor); and, when
   installed, NVIDIA DALI's build of the same augmentation (``dali_pipeline.py`` beside it), the anchor.
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
import warnings
from pathlib import Path

import torch
from PIL import Image

from pretrain.batch_augment import BatchAugment
from pretrain.config import PretrainConfig
from pretrain.crops import decode, read_bytes
from pretrain.data import EncodedBatch, MultiCropDataset, collate_crops, decode_crops, find_images
from pretrain.train import Trainer, mixed_precision, resolve_data_path


def _rate(fn, n: int) -> float:
    """Images/s of ``fn`` over ``n`` images; a variant that measures itself returns its own rate."""
    t0 = time.perf_counter()
    own = fn()
    return own if isinstance(own, float) else n / (time.perf_counter() - t0)


def dali_variants(cfg: PretrainConfig, files: list[Path], *, cuda: bool) -> dict:
    """NVIDIA DALI's build of the same augmentation (issue #20's anchor), when DALI is installed: on the CPU
    with one worker thread, and with a GPU, nvJPEG decode + every op on it. Rates are images per CPU second
    of this process (DALI keeps helper threads), i.e. per loader core."""
    try:
        from swavbench.checks import dali_pipeline
    except ImportError as exc:
        print(f"DALI variants left out: {exc}")
        return {}
    batch = min(32, len(files))
    out = {}
    for device in ("cpu", "gpu") if cuda else ("cpu",):
        pipe = dali_pipeline.build(cfg.data, files, batch, device=device, num_threads=1)
        name = (
            "DALI on CPU, 1 thread: decode + all ops"
            if device == "cpu"
            else "DALI: nvJPEG decode + all ops on GPU (per CPU s)"
        )
        out[name] = lambda pipe=pipe: dali_pipeline.images_per_core_second(pipe, len(files))
    return out


REFERENCE, DECODE_FLOOR = "reference (PIL per crop, all ops)", "decode only, torchvision (floor)"


def time_pipelines(
    cfg: PretrainConfig, root: Path, n_images: int, *, repeats: int = 3, device: torch.device | None = None
) -> dict[str, list[float]]:
    """Images/s on one thread for each pipeline variant, interleaved repeats over the same files.

    Worker shares (what one loader core does) and whole augmentations (what a CPU-only machine pays per
    core) side by side; device-decode's second half runs on ``device`` (default: CUDA when present)."""
    device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    data = {}
    for name, over in (
        ("reference", {"pipeline": "reference"}),
        ("fast", {"pipeline": "fast"}),
        ("device-decode", {"pipeline": "device-decode", "color_on": "device"}),
    ):
        data[name] = copy.deepcopy(cfg.data)
        for k, v in over.items():
            setattr(data[name], k, v)
    ref = MultiCropDataset(root, data["reference"], 0)
    fast = MultiCropDataset(root, data["fast"], 0)
    fast_colour = MultiCropDataset(root, data["fast"], 0, colour_in_workers=True)
    dev = MultiCropDataset(root, data["device-decode"], 0)
    files = find_images(root)
    n = min(n_images, len(files))
    aug = BatchAugment(data["fast"])
    batch = 32

    def decode_pil():
        for f in files[:n]:
            with Image.open(f) as im:
                im.convert("RGB")

    def decode_ours():
        for f in files[:n]:
            decode(read_bytes(f), f)

    def batches(ds):
        for start in range(0, n, batch):
            yield collate_crops([ds[(0, i)] for i in range(start, min(n, start + batch))])[0]

    def fast_with_batch_aug():
        for b in batches(fast):
            g = torch.Generator().manual_seed(0)
            for c in b:
                aug(c, g)

    encoded = list(batches(dev))

    def device_half():
        for b in encoded:
            g = torch.Generator().manual_seed(0)
            for c in decode_crops(b, dev.specs, device)[0]:
                aug(c, g)
        if device.type == "cuda":
            torch.cuda.synchronize()

    variants = {
        REFERENCE: lambda: [ref[(0, i)] for i in range(n)],
        "fast: decode + crops + flips (worker share, GPU colour)": lambda: [fast[(0, i)] for i in range(n)],
        "fast + colour/blur in the worker (OpenCV)": lambda: [fast_colour[(0, i)] for i in range(n)],
        "fast + batch colour/blur in training process": fast_with_batch_aug,
        "device-decode: worker share (bytes, header, boxes)": lambda: [dev[(0, i)] for i in range(n)],
        f"device-decode: decode + crops + colour on {device.type}": device_half,
        DECODE_FLOOR: decode_ours,
        "decode only, PIL": decode_pil,
        **dali_variants(cfg, files[:n], cuda=device.type == "cuda"),
    }
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # torchvision.io's notice about torchcodec
            device_half()  # warm-up (CUDA context, nvJPEG handles)
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
        if isinstance(crops, EncodedBatch):
            crops, _ = decode_crops(crops, ours.dataset.specs, ours.device)
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


def _table(
    title: str, rows: dict[str, list[float]], unit: str, *, ref: str | None, floor: str | None = None
) -> None:
    print(f"\n{title}")
    head = f"{'variant':<56}{unit + ' median':>16}{'min':>9}{'max':>9}{'ratio':>8}"
    print(head + (f"{'of floor':>10}" if floor else ""))
    base = statistics.median(rows[ref]) if ref else None
    top = statistics.median(rows[floor]) if floor else None
    for name, v in rows.items():
        m = statistics.median(v)
        ratio = f"{m / base:.2f}x" if base else ""
        line = f"{name:<56}{m:>16.1f}{min(v):>9.1f}{max(v):>9.1f}{ratio:>8}"
        print(line + (f"{100 * m / top:>9.0f}%" if top else ""))


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
    _table(
        "multi-crop pipeline, one core (ratio: to the reference; of floor: to torchvision's bare decode)",
        pipes,
        "images/s",
        ref=REFERENCE,
        floor=DECODE_FLOOR,
    )
    bs = cfg.optim.batch_size
    ips = {k: [bs / t for t in v] for k, v in step.items()}
    _table("training step (data loading excluded)", ips, "images/s", ref=PLAIN)
    fraction = statistics.median(ips[OURS]) / statistics.median(ips[FLOOR])
    print(f"ours reaches {100 * fraction:.0f}% of the bare trunk's forward+backward rate (the floor)")
    ms = {k: [1000 * t for t in v] for k, v in step.items()}
    _table("training step time", ms, "ms", ref=None)
