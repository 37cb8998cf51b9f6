"""Detection transfer (paper Table 3): fine-tune a Faster R-CNN on the trunk and report VOC AP.

One protocol description, two backends: ``detectron2`` (the reference: the MoCo/SwAV recipes are
Detectron2 configs) and ``torchvision`` (the same model assembled from torchvision parts, runs
wherever torch does). Both read the same VOC-layout data, skip degenerate boxes the same way,
are scored by the same VOC evaluator (transfer/voc_eval.py) and write the same record.
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from benchmark.protocol import TrunkConfig, run_and_record
from benchmark.record import ResultRecord

VOC_CLASSES_DEFAULT = [
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable", "dog",
    "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
]


@dataclass
class DetectionConfig:
    """Defaults: the MoCo/SwAV VOC07+12 Faster R-CNN R50-C4 recipe (24k iterations, batch 16, lr 0.02)."""

    dataset: str = "voc0712"
    train_roots: list[str] = field(default_factory=lambda: ["/datasets/VOCdevkit/VOC2007", "/datasets/VOCdevkit/VOC2012"])
    train_split: str = "trainval"
    test_root: str = "/datasets/VOCdevkit/VOC2007"
    test_split: str = "test"
    classes: list[str] = field(default_factory=lambda: list(VOC_CLASSES_DEFAULT))
    use_07_metric: bool = True  # VOC2007 test: 11-point AP (as Detectron2 does for year 2007)
    head: str = "c4"  # c4 (res5 RoI head + extra BatchNorm, the MoCo/SwAV recipe) | fpn
    extra_norm: bool = True  # BatchNorm after res5 in the C4 box head
    norm: str = "syncbn"  # syncbn | bn | frozen: trunk normalisation while fine-tuning
    freeze_at: int = 0  # 0: every stage trains (the recipe); 2: stem + res2 frozen (Detectron2's default)
    iterations: int = 24000
    batch_size: int = 16
    lr: float = 0.02
    steps: list[int] = field(default_factory=lambda: [18000, 22000])
    gamma: float = 0.1
    warmup_iters: int = 100
    momentum: float = 0.9
    weight_decay: float = 1e-4
    clip_grad_norm: float = 0.0  # 0 = off
    min_size_train: list[int] = field(default_factory=lambda: list(range(480, 801, 32)))
    max_size_train: int = 1333
    min_size_test: int = 800
    max_size_test: int = 1333
    rois_per_image: int = 512
    proposals_test: int = 1000  # RPN proposals kept per image at test time (after NMS)
    detections_per_image: int = 100
    checkpoint_every: int = 1000  # iterations between resumable states (0 = only at the end)
    num_workers: int = 4
    seed: int = 0
    backend: str = "auto"  # auto (detectron2 when installed) | detectron2 | torchvision
    detectron2_overrides: list[str] = field(default_factory=list)  # extra KEY VALUE pairs for the Detectron2 config
    trunk: TrunkConfig = field(default_factory=TrunkConfig)

    @property
    def protocol(self) -> str:
        """Record name, the results layer's name for the paper's rows."""
        return "detection-frcnn-c4" if self.head == "c4" else "detection-frcnn-fpn"


def detectron2_available() -> bool:
    return importlib.util.find_spec("detectron2") is not None


def resolve_backend(cfg: DetectionConfig) -> str:
    if cfg.backend == "auto":
        return "detectron2" if detectron2_available() else "torchvision"
    if cfg.backend not in ("detectron2", "torchvision"):
        raise ValueError(f"backend must be auto, detectron2 or torchvision, got {cfg.backend!r}")
    if cfg.backend == "detectron2" and not detectron2_available():
        raise ValueError("backend detectron2 is not installed: install Detectron2 from its repository "
                         "(or `bash .ci/install-detectron2 .venv` here), or use backend=torchvision")
    return cfg.backend


def validate(cfg: DetectionConfig) -> None:
    if cfg.head not in ("c4", "fpn"):
        raise ValueError(f"head must be c4 or fpn, got {cfg.head!r}")
    if cfg.norm not in ("syncbn", "bn", "frozen"):
        raise ValueError(f"norm must be syncbn, bn or frozen, got {cfg.norm!r}")
    if not cfg.classes:
        raise ValueError("classes is empty: list the detection classes of the dataset")
    if cfg.iterations < 1 or cfg.batch_size < 1:
        raise ValueError("iterations and batch_size must be >= 1")


def run_detection(cfg: DetectionConfig, checkpoint: str, out_dir: str | Path) -> ResultRecord:
    """Fine-tune and evaluate with the configured backend; writes out_dir/result.json (+ the merged config)."""
    validate(cfg)
    backend = resolve_backend(cfg)
    cfg.backend = backend
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "detection_config.json").write_text(json.dumps(asdict(cfg), indent=2))

    def body(loaded, device):
        if backend == "detectron2":
            from transfer.detection_detectron2 import train_and_evaluate
        else:
            from transfer.detection_torchvision import train_and_evaluate
        return train_and_evaluate(cfg, loaded, device, out_dir)

    return run_and_record(cfg.protocol, cfg, checkpoint, out_dir, cfg.dataset, cfg.seed, body)
