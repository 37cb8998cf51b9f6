"""Typed pretraining configuration: dataclass defaults are the paper's ResNet-50 800-epoch
recipe (official ``swav_800ep_pretrain.sh``); YAML presets in ``configs/pretrain/`` override
a few keys; ``section.key=value`` strings override from the command line. Unknown keys are
an error that lists the valid ones."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from swavbench.core.config import ConfigError, dataclass_from_dict, load_dataclass
from swavbench.core.paths import CONFIGS

CONFIG_DIR = CONFIGS / "pretrain"
PIPELINES = ("fast", "device-decode", "reference")


@dataclass
class DataConfig:
    """Multi-crop data. ``path``: an ImageFolder tree, a flat image folder, 'generated', or
    'auto' (the shared CIFAR-10 subset when present, else the generated set)."""

    path: str = "auto"
    # fast: workers decode once and crop / flip on uint8 tensors; device-decode: workers read JPEG bytes and
    # draw the crops, the training device decodes (nvJPEG) and cuts them; reference: PIL per crop (paper code)
    pipeline: str = "fast"
    # where colour jitter / grayscale / blur run with fast pipelines: device (batch-wise where training runs),
    # workers (PIL per crop, in parallel in the loader workers), auto (device on a GPU, else workers)
    color_on: str = "auto"
    num_workers: int = 10
    nmb_crops: list[int] = field(default_factory=lambda: [2, 6])
    size_crops: list[int] = field(default_factory=lambda: [224, 96])
    min_scale_crops: list[float] = field(default_factory=lambda: [0.14, 0.05])
    max_scale_crops: list[float] = field(default_factory=lambda: [1.0, 0.14])
    color_strength: float = 1.0
    color_prob: float = 0.8
    grayscale_prob: float = 0.2
    blur_prob: float = 0.5
    blur_radius: list[float] = field(default_factory=lambda: [0.1, 2.0])
    generated_size: int = 32
    generated_images: int = 2000


@dataclass
class ModelConfig:
    arch: str = "resnet50"  # resnet18/34/50/101, or SwAV's widened resnet50w2 / w4 / w5
    width_multiplier: float = 1.0  # extra width factor, for CPU-sized trunks
    small_stem: bool = False  # 3x3 stride-1 stem, no max-pool (32 px images)
    hidden_mlp: int = 2048
    feat_dim: int = 128
    n_prototypes: list[int] = field(default_factory=lambda: [3000])


@dataclass
class SwavConfig:
    crops_for_assign: list[int] = field(default_factory=lambda: [0, 1])
    temperature: float = 0.1
    epsilon: float = 0.05
    sinkhorn_iterations: int = 3
    queue_length: int = 0
    epoch_queue_starts: int = 15
    freeze_prototypes_niters: int = 313


@dataclass
class OptimConfig:
    epochs: int = 800
    batch_size: int = 64  # per process; the paper's 4096 = 64 GPUs x 64
    base_lr: float = 4.8
    final_lr: float = 0.0048
    warmup_epochs: float = 10
    start_warmup: float = 0.3
    weight_decay: float = 1e-6
    momentum: float = 0.9
    lars: bool = True
    lars_trust: float = 0.001
    lars_exclude_bias_bn: bool = False  # official SwAV wraps every parameter in LARC
    # the global batch (batch_size x processes) the preset's learning rates and iteration counts were
    # published with; 0: not stated, no check. A run at another global batch stops unless lr_scaling says
    # how to adapt: linear | sqrt (lrs x ratio or its root) | none (as written). Iteration counts
    # (swav.freeze_prototypes_niters) are kept in images seen, so they scale inversely with the batch
    global_batch: int = 0
    lr_scaling: str = ""


LR_SCALINGS = ("linear", "sqrt", "none")


@dataclass(frozen=True)
class BatchPlan:
    """What a run at ``world_size`` processes trains with: the resolved global batch, learning rates and
    prototype-freeze iterations (logged, saved in the checkpoint and the run's config.yaml)."""

    world_size: int
    global_batch: int
    published_global_batch: int
    lr_scaling: str
    base_lr: float
    final_lr: float
    start_warmup: float
    freeze_prototypes_niters: int


def plan_batch(cfg: PretrainConfig, world_size: int) -> BatchPlan:
    """The batch plan of ``cfg`` at ``world_size`` processes; ConfigError when the global batch differs from
    the published one and ``optim.lr_scaling`` does not say how to adapt."""
    o, actual = cfg.optim, cfg.optim.batch_size * world_size
    published = o.global_batch or actual
    if o.lr_scaling and o.lr_scaling not in LR_SCALINGS:
        raise ConfigError(
            f"optim.lr_scaling must be one of {', '.join(LR_SCALINGS)} (or unset), got {o.lr_scaling!r}"
        )
    if actual != published and not o.lr_scaling:
        keep = published // world_size
        keep_hint = (
            f"optim.batch_size={keep} keeps it at {world_size} processes"
            if published % world_size == 0
            else f"no per-process batch keeps it at {world_size} processes"
        )
        raise ConfigError(
            f"this preset was published at a global batch of {published} (optim.global_batch) with lr "
            f"{o.base_lr}; this run is {world_size} process(es) x optim.batch_size={o.batch_size} = "
            f"{actual}. "
            f"Choose how to adapt: {keep_hint}, or set optim.lr_scaling=linear (lr x {actual}/{published}), "
            "sqrt, or none (lr as written); prototype-freeze iterations then keep their number of images"
        )
    ratio = actual / published
    factor = {"linear": ratio, "sqrt": math.sqrt(ratio)}.get(o.lr_scaling, 1.0)
    return BatchPlan(
        world_size=world_size,
        global_batch=actual,
        published_global_batch=published,
        lr_scaling=o.lr_scaling or "none",
        base_lr=o.base_lr * factor,
        final_lr=o.final_lr * factor,
        start_warmup=o.start_warmup * factor,
        freeze_prototypes_niters=round(cfg.swav.freeze_prototypes_niters / ratio),
    )


@dataclass
class RunConfig:
    seed: int = 31
    precision: str = "bf16"  # fp32 | bf16 | fp16 (fp16 uses a GradScaler)
    sync_bn: bool = True
    channels_last: bool = True  # NHWC trunk and crops on CUDA (tensor-core convolutions); ignored on CPU
    # torch.compile the trunk (one graph per crop resolution); measure with pretrain-bench --compile
    compile: bool = False
    checkpoint_every_iters: int = 0  # 0: only at epoch ends
    keep_epoch_checkpoints: int = 50  # also keep ckp-<epoch>.pth every this many epochs (0: never)
    log_every_iters: int = 10
    collapse_patience: int = 2000  # iterations with loss within collapse_tol of ln K
    collapse_tol: float = 0.01
    deterministic: bool = False
    max_iters: int = 0  # stop after this many iterations in total (0: run all epochs); for smoke runs
    # data gone mid-run (scratch purge, moved folder, NFS EIO): stop once more than this share of an epoch's
    # images was unreadable (1.0: never), or after this many batches in a row with nothing readable (0: never)
    max_unreadable: float = 0.01
    max_empty_batches: int = 5
    wandb: str = ""  # a W&B project to log into besides TensorBoard (pip install -e '.[wandb]')


@dataclass
class PretrainConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    swav: SwavConfig = field(default_factory=SwavConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def validate(self) -> PretrainConfig:
        d = self.data
        n = len(d.nmb_crops)
        if not (len(d.size_crops) == len(d.min_scale_crops) == len(d.max_scale_crops) == n):
            raise ConfigError(
                "data.nmb_crops, size_crops, min_scale_crops, max_scale_crops must have equal lengths"
            )
        n_crops = sum(d.nmb_crops)
        if n_crops < 2:
            raise ConfigError("SwAV needs at least 2 crops in total (data.nmb_crops)")
        bad = [c for c in self.swav.crops_for_assign if not 0 <= c < n_crops]
        if bad or not self.swav.crops_for_assign:
            raise ConfigError(
                f"swav.crops_for_assign must index the {n_crops} crops, got {self.swav.crops_for_assign}"
            )
        if d.pipeline not in PIPELINES:
            raise ConfigError(f"data.pipeline must be one of {', '.join(PIPELINES)}, got {d.pipeline!r}")
        if d.color_on not in ("auto", "device", "workers"):
            raise ConfigError(f"data.color_on must be auto, device or workers, got {d.color_on!r}")
        if d.pipeline == "device-decode" and d.color_on == "workers":
            raise ConfigError(
                "data.color_on=workers needs decoded images in the workers: with data.pipeline=device-decode "
                "colour runs on the device (data.color_on=auto or device), or use data.pipeline=fast"
            )
        if self.run.precision not in ("fp32", "bf16", "fp16"):
            raise ConfigError(f"run.precision must be fp32, bf16 or fp16, got {self.run.precision!r}")
        if self.swav.queue_length and self.swav.queue_length % self.optim.batch_size:
            raise ConfigError("swav.queue_length must be a multiple of optim.batch_size (per process)")
        from pretrain.model import parse_arch

        try:
            parse_arch(self.model.arch)
        except ValueError as e:
            raise ConfigError(str(e)) from None
        return self


def load_config(preset: str | None = None, overrides: list[str] | None = None) -> PretrainConfig:
    """Pretraining config: dataclass defaults <- preset YAML <- ``section.key=value`` overrides, validated."""
    return load_dataclass(PretrainConfig, CONFIG_DIR, preset, overrides=overrides).validate()


def config_from_dict(d: dict[str, Any]) -> PretrainConfig:
    """Rebuild a config saved in a checkpoint."""
    return dataclass_from_dict(PretrainConfig, d)
