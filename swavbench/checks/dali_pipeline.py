"""NVIDIA DALI's build of the paper's multi-crop augmentation: the anchor a user would pick instead of our
loader, measured side by side in ``pretrain-bench`` (issue #20). A comparison, not a dependency: DALI is
the optional ``dali`` extra, and importing this module without it names the fix.

One pipeline per run: read files, decode once (``device="cpu"``: on the CPU; ``"gpu"``: nvJPEG through
DALI's mixed decoder, then every op on the GPU), then per crop, in ``pretrain.data.crop_transforms``'s
order: RandomResizedCrop (area fraction, aspect ratio in [3/4, 4/3], bilinear with antialiasing), colour
jitter with probability ``color_prob``, grayscale (``grayscale_prob``), Gaussian blur (``blur_prob``,
sigma uniform in ``blur_radius``), flip (0.5), ImageNet normalisation to float CHW. The random draws are
DALI's own (per-sample conditionals, so a skipped op costs nothing), not our generator's.

Differences from torchvision that stay (DALI 2.4's ``color_twist.h`` and crop generator): the jitter is one
fused linear map clamped once (torchvision clamps after each op, in an order shuffled per crop); contrast
pivots on mid-grey, not the crop's mean; hue is a rotation in YIQ space (luma kept), not a shift of HSV
hue; grayscale is the ITU-R 601 luma within 1 level (rounded matrix); a crop whose 10 draws all miss the
image falls back to a random placement at the largest area (torchvision: a centred crop; rare here).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

from pretrain.config import DataConfig
from pretrain.data import IMAGENET_MEAN, IMAGENET_STD, colour_transform

try:
    import nvidia.dali.fn as fn
    import nvidia.dali.types as types
    from nvidia.dali import pipeline_def
except ImportError as exc:  # the message is the point: what is missing and how to add it
    raise ModuleNotFoundError(
        "swavbench.checks.dali_pipeline needs NVIDIA DALI (a comparison only): pip install -e '.[dali]' "
        f"(nvidia-dali-cuda130; it also runs on CPUs); import failed: {exc}",
        name="nvidia.dali",
    ) from exc

ASPECT_RATIO = (3 / 4, 4 / 3)  # torchvision RandomResizedCrop's default, which the paper's code keeps


def jitter_ranges(cfg: DataConfig) -> dict[str, tuple[float, float]]:
    """DALI ``color_twist``'s factor ranges, read from the PIL pipeline's ColorJitter (``colour_transform``):
    the same factors, hue converted from turns to degrees; an op torchvision leaves out (None) is identity."""
    jitter = colour_transform(cfg).transforms[0].transforms[0]
    out = {k: tuple(getattr(jitter, k) or (1.0, 1.0)) for k in ("brightness", "contrast", "saturation")}
    out["hue"] = tuple(360 * h for h in jitter.hue or (0.0, 0.0))
    return out


def _uniform(lo: float, hi: float):
    """A per-sample draw from U(lo, hi), ``lo == hi`` allowed (DALI's uniform wants an open range)."""
    return lo + (hi - lo) * fn.random.uniform(range=[0.0, 1.0])


def _colour(crop, cfg: DataConfig):
    """Jitter, grayscale and blur, each under its own per-sample coin (DALI conditionals: a skipped op costs
    nothing). Every draw is made whatever the probabilities, so two pipelines with one seed and different
    probabilities cut the same crops with the same parameters (the tests pair them)."""
    jitter = fn.random.coin_flip(probability=cfg.color_prob)
    factors = {k: _uniform(*r) for k, r in jitter_ranges(cfg).items()}
    gray = fn.random.coin_flip(probability=cfg.grayscale_prob)
    blur = fn.random.coin_flip(probability=cfg.blur_prob)
    sigma = _uniform(*cfg.blur_radius)
    if jitter:
        crop = fn.color_twist(crop, **factors)
    if gray:
        crop = fn.color_twist(crop, saturation=0.0)  # ITU-R 601 luma, each channel within 1 level
    if blur:
        crop = fn.gaussian_blur(crop, sigma=sigma)
    return crop


def build(
    cfg: DataConfig,
    files: Sequence[Path],
    batch_size: int,
    *,
    device: str = "cpu",
    num_threads: int = 1,
    seed: int = 0,
    normalize: bool = True,
):
    """A built DALI pipeline yielding, per batch, every crop in crop order (float CHW, normalised; with
    ``normalize=False``, uint8 HWC). ``device``: ``cpu`` (DALI's CPU-only mode, no GPU needed) or ``gpu``."""
    if device not in ("cpu", "gpu"):
        raise ValueError(f"DALI device must be cpu or gpu, got {device!r}")
    if not files:
        raise ValueError("DALI pipeline: no image files given")

    @pipeline_def(enable_conditionals=True)
    def multicrop():
        data, _ = fn.readers.file(files=[str(f) for f in files], random_shuffle=False, name="reader")
        image = fn.decoders.image(data, device="mixed" if device == "gpu" else "cpu", output_type=types.RGB)
        out = []
        for n, size, lo, hi in zip(cfg.nmb_crops, cfg.size_crops, cfg.min_scale_crops, cfg.max_scale_crops):
            for _ in range(n):
                crop = fn.random_resized_crop(
                    image, size=[size, size], random_area=[lo, hi], random_aspect_ratio=list(ASPECT_RATIO)
                )
                crop = _colour(crop, cfg)
                flip = fn.random.coin_flip(probability=0.5)
                if normalize:
                    crop = fn.crop_mirror_normalize(
                        crop,
                        mirror=flip,
                        mean=[255 * m for m in IMAGENET_MEAN],
                        std=[255 * s for s in IMAGENET_STD],
                        dtype=types.FLOAT,
                        output_layout="CHW",
                    )
                else:
                    crop = fn.flip(crop, horizontal=flip)
                out.append(crop)
        return tuple(out)

    pipe = multicrop(
        batch_size=batch_size,
        num_threads=num_threads,
        device_id=0 if device == "gpu" else None,
        seed=seed,
        prefetch_queue_depth=1,
    )
    pipe.build()
    return pipe


def images_per_core_second(pipe, n_images: int) -> float:
    """Images per CPU second of this process over ``n_images`` images, after one warm-up batch: DALI keeps
    helper threads besides its ``num_threads`` workers, so a pipeline's cost per core is its CPU time, not
    its wall time."""
    pipe.run()
    batch = pipe.max_batch_size
    steps = max(1, -(-n_images // batch))
    cpu = time.process_time()  # every thread's user + system time
    for _ in range(steps):
        pipe.run()  # returns once the batch is ready, GPU work included
    return steps * batch / max(time.process_time() - cpu, 1e-9)
