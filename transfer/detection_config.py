"""What both detection backends and the protocol share: the config (one description of the recipe),
its validation, the backend choice, the annotation sets and the scoring (VOC AP or COCO box / mask AP)."""

from __future__ import annotations

import dataclasses
import importlib.util
from dataclasses import dataclass, field
from typing import Any, ClassVar, Union

from benchmark.protocol import TrunkConfig
from benchmark.voc import VOC07_CLASSES
from transfer.coco_detection import COCODetectionSet, load_coco_detection
from transfer.coco_eval import coco_metrics
from transfer.voc_detection import VOCDetectionSet, load_voc_detection
from transfer.voc_eval import voc_detection_metrics

VOC_CLASSES_DEFAULT = list(VOC07_CLASSES)  # the 20 Pascal VOC classes


# config fields a fine-tuning run may change and still continue from its state: how it runs, and a longer
# schedule (``iterations``) that extends it
RESUMABLE_CHANGES = ("iterations", "checkpoint_every", "num_workers")


@dataclass
class DetectionConfig:
    """Defaults: the MoCo/SwAV VOC07+12 Faster R-CNN R50-C4 recipe (24k iterations, batch 16, lr 0.02)."""

    # named under the data root (swavbench.core.data_root)
    DATASET_FIELDS: ClassVar[tuple[str, ...]] = (
        "train_roots",
        "test_root",
        "train_annotations",
        "test_annotations",
    )

    dataset: str = "voc0712"
    format: str = (
        "voc"  # voc (VOC layout: train_roots / test_root are VOC roots) | coco (roots are image folders)
    )
    train_roots: list[str] = field(default_factory=lambda: ["VOCdevkit/VOC2007", "VOCdevkit/VOC2012"])
    train_split: str = "trainval"
    test_root: str = "VOCdevkit/VOC2007"
    test_split: str = "test"
    train_annotations: list[str] = field(default_factory=list)  # coco: one instances json per train root
    test_annotations: str = ""  # coco: the instances json of test_root
    classes: list[str] = field(default_factory=lambda: list(VOC_CLASSES_DEFAULT))  # coco: [] = every category
    use_07_metric: bool = True  # VOC2007 test: 11-point AP (as Detectron2 does for year 2007)
    head: str = "c4"  # c4 (res5 RoI head + extra BatchNorm, the MoCo/SwAV recipe) | fpn
    extra_norm: bool = True  # BatchNorm after res5 in the C4 box head
    masks: bool = False  # Mask R-CNN (fpn head, coco format): box and mask AP
    box_head: str = "2fc"  # fpn box head: 2fc (Detectron2's default) | 4conv1fc (the MoCo/SwAV COCO recipe)
    head_norm: str = (
        "none"  # none | bn | syncbn: normalisation in the FPN, a 4conv1fc box head and the mask head
    )
    norm: str = "syncbn"  # syncbn | bn | frozen: trunk normalisation while fine-tuning
    freeze_at: int = 0  # 0: every stage trains (the recipe); 2: stem + res2 frozen (Detectron2's default)
    iterations: int = 24000
    batch_size: int = 16
    lr: float = 0.02
    steps: list[int] = field(default_factory=lambda: [18000, 22000])
    gamma: float = 0.1
    warmup_iters: int = 100
    warmup_factor: float = 0.001  # lr multiplier at iteration 0, linear to 1 at warmup_iters (Detectron2's)
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
    # input normalisation on 0-255 RGB: torchvision's ImageNet statistics, as MoCo's detection configs
    # (pascal_voc_R_50_C4_24k_moco.yaml) use for every torchvision-style trunk
    pixel_mean: list[float] = field(default_factory=lambda: [123.675, 116.28, 103.53])
    pixel_std: list[float] = field(default_factory=lambda: [58.395, 57.12, 57.375])
    seed: int = 0
    # a run too short to rank trunks (CPU presets): the report lists it as a smoke check, apart
    smoke: bool = False
    backend: str = "auto"  # auto (detectron2 when installed) | detectron2 | torchvision
    detectron2_overrides: list[str] = field(
        default_factory=list
    )  # extra KEY VALUE pairs for the Detectron2 config
    trunk: TrunkConfig = field(default_factory=TrunkConfig)

    @property
    def report_key(self) -> str:
        """The report key of its records (the paper's rows: Faster R-CNN C4 / FPN, Mask R-CNN FPN)."""
        if self.masks:
            return "detection-maskrcnn-fpn"
        return "detection-frcnn-c4" if self.head == "c4" else "detection-frcnn-fpn"


def detectron2_available() -> bool:
    return importlib.util.find_spec("detectron2") is not None


def resolve_backend(cfg: DetectionConfig) -> str:
    if cfg.backend == "auto":
        return "detectron2" if detectron2_available() else "torchvision"
    if cfg.backend not in ("detectron2", "torchvision"):
        raise ValueError(f"backend must be auto, detectron2 or torchvision, got {cfg.backend!r}")
    if cfg.backend == "detectron2" and not detectron2_available():
        raise ValueError(
            "backend detectron2 is not installed: install Detectron2 from its repository "
            "(or `bash tests/install-detectron2.sh .venv` here), or use backend=torchvision"
        )
    return cfg.backend


def validate(cfg: DetectionConfig) -> None:
    if cfg.head not in ("c4", "fpn"):
        raise ValueError(f"head must be c4 or fpn, got {cfg.head!r}")
    if cfg.norm not in ("syncbn", "bn", "frozen"):
        raise ValueError(f"norm must be syncbn, bn or frozen, got {cfg.norm!r}")
    if cfg.head_norm not in ("none", "bn", "syncbn"):
        raise ValueError(f"head_norm must be none, bn or syncbn, got {cfg.head_norm!r}")
    if cfg.box_head not in ("2fc", "4conv1fc") or (cfg.box_head == "4conv1fc" and cfg.head != "fpn"):
        raise ValueError(
            f"box_head must be 2fc or 4conv1fc (4conv1fc with head=fpn only), got {cfg.box_head!r}"
        )
    check_data_format(cfg)
    if cfg.masks and (cfg.head != "fpn" or cfg.format != "coco"):
        raise ValueError(
            "masks=true needs head=fpn and format=coco (instance masks come from COCO annotations)"
        )
    if cfg.iterations < 1 or cfg.batch_size < 1:
        raise ValueError("iterations and batch_size must be >= 1")
    if not 0.0 < cfg.warmup_factor <= 1.0:
        raise ValueError(f"warmup_factor must be in (0, 1], got {cfg.warmup_factor}")
    if len(cfg.pixel_mean) != 3 or len(cfg.pixel_std) != 3 or min(cfg.pixel_std) <= 0:
        raise ValueError(
            "pixel_mean and pixel_std are three 0-255 RGB values each (std > 0), e.g. "
            "pixel_std=[58.395,57.12,57.375]"
        )


def check_data_format(cfg: Any) -> None:
    """The data fields of a detection config (this protocol's or DETR's): VOC with its classes, or COCO
    with one annotation file per train root and the test's."""
    if cfg.format not in ("voc", "coco"):
        raise ValueError(f"format must be voc or coco, got {cfg.format!r}")
    if cfg.format == "voc" and not cfg.classes:
        raise ValueError("classes is empty: list the detection classes of the VOC-layout dataset")
    if cfg.format == "coco" and (
        len(cfg.train_annotations) != len(cfg.train_roots) or not cfg.test_annotations
    ):
        raise ValueError(
            "format=coco needs train_annotations (one instances json per train_roots entry, the image "
            "folders) and test_annotations (the json of test_root)"
        )


DetectionSet = Union[VOCDetectionSet, COCODetectionSet]


def load_sets(cfg: DetectionConfig) -> tuple[DetectionSet, DetectionSet]:
    """(train, test) annotations of the configured format.

    For COCO, training drops images without instances."""
    if cfg.format == "voc":
        return (
            load_voc_detection(cfg.train_roots, cfg.train_split, cfg.classes),
            load_voc_detection([cfg.test_root], cfg.test_split, cfg.classes),
        )
    parts = [
        load_coco_detection(a, r, cfg.classes, keep_empty=False)
        for a, r in zip(cfg.train_annotations, cfg.train_roots)
    ]
    test = load_coco_detection(cfg.test_annotations, cfg.test_root, cfg.classes)
    for p in parts:
        if p.classes != test.classes:
            raise ValueError(
                f"{p.annotation_file} and {test.annotation_file} have different categories: "
                f"{p.classes} vs {test.classes}"
            )
        if cfg.masks and not p.has_masks:
            raise ValueError(
                f"{p.annotation_file} has instances without 'segmentation': set masks=false for boxes only"
            )
    train = dataclasses.replace(
        parts[0], images=[im for p in parts for im in p.images], skipped=[s for p in parts for s in p.skipped]
    )
    return train, test


def score(cfg: DetectionConfig, predictions: dict, test: DetectionSet) -> dict[str, float]:
    """VOC AP (voc format) or COCO box / mask AP (coco format) of the test predictions."""
    if isinstance(test, COCODetectionSet):
        return coco_metrics(predictions, test, masks=cfg.masks)
    return voc_detection_metrics(predictions, test.images, test.classes, use_07_metric=cfg.use_07_metric)
