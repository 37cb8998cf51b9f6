"""Detectron2 backend of the detection protocol (the reference: MoCo/SwAV's VOC recipe is a Detectron2
config). The DetectionConfig is translated into a Detectron2 CfgNode (written beside the results as
``detectron2_config.yaml``; ``detectron2_overrides`` edits any other key), the trunk is converted to
a Detectron2 .pkl, and Detectron2's DefaultTrainer trains (resuming from its last checkpoint in
``out/detectron2/``). Test predictions are scored twice: by our VOC evaluator (the record's
numbers) and by Detectron2's PascalVOCDetectionEvaluator (``d2_`` metrics) — they agree.

The C4 box head with the extra BatchNorm after res5 (``Res5ROIHeadsExtraNorm``) is written here:
the original lives in non-commercially licensed code.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from detectron2.config import CfgNode, get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.engine import DefaultTrainer, hooks
from detectron2.evaluation import DatasetEvaluator, DatasetEvaluators, PascalVOCDetectionEvaluator
from detectron2.layers import get_norm
from detectron2.modeling.roi_heads import ROI_HEADS_REGISTRY, Res5ROIHeads
from detectron2.structures import BoxMode
from torch import nn

from benchmark.trunk import LoadedTrunk
from benchmark.voc import voc_root
from pretrain.data import IMAGENET_MEAN, IMAGENET_STD
from pretrain.model import parse_arch
from transfer.convert import convert
from transfer.detection import DetectionConfig
from transfer.voc_detection import VOCDetectionSet, load_voc_detection
from transfer.voc_eval import Detections, voc_detection_metrics


class Res5ROIHeadsExtraNorm(Res5ROIHeads):
    """C4 RoI head whose res5 output goes through one more normalisation layer (of MODEL.RESNETS.NORM)."""

    @classmethod
    def _build_res5_block(cls, cfg):
        blocks, out_channels = super()._build_res5_block(cfg)
        return nn.Sequential(*blocks, get_norm(cfg.MODEL.RESNETS.NORM, out_channels)), out_channels


if "Res5ROIHeadsExtraNorm" not in ROI_HEADS_REGISTRY:
    ROI_HEADS_REGISTRY.register(Res5ROIHeadsExtraNorm)

_NORMS = {"syncbn": "SyncBN", "bn": "BN", "frozen": "FrozenBN"}


def register_voc(name: str, data: VOCDetectionSet, dirname: str, split: str, year: int) -> None:
    """Register our parsed annotations (degenerate boxes already skipped) under ``name``."""
    dicts = [
        {"file_name": str(im.path), "image_id": im.image_id, "height": im.height, "width": im.width,
         "annotations": [{"bbox": box.tolist(), "bbox_mode": BoxMode.XYXY_ABS, "category_id": int(c)}
                         for box, c in zip(im.boxes_0based(), im.labels)]}
        for im in data.images
    ]
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    DatasetCatalog.register(name, lambda: dicts)
    MetadataCatalog.get(name).set(thing_classes=list(data.classes), dirname=dirname, split=split, year=year)


def detectron2_config(cfg: DetectionConfig, loaded: LoadedTrunk, weights: Path, device: torch.device,
                      train_name: str, test_name: str, output_dir: Path) -> CfgNode:
    """The Detectron2 config equivalent to ``cfg`` for this trunk (torchvision layout: RGB, stride in 3x3)."""
    depth, arch_width = parse_arch(loaded.spec.arch)
    width = arch_width * loaded.spec.width_multiplier
    if loaded.spec.small_stem:
        raise ValueError("Detectron2's ResNet has no small (3x3, stride 1) stem: use backend=torchvision for this trunk")
    if depth in (18, 34) and (cfg.head == "c4" or width != 1):
        raise ValueError(f"Detectron2 supports resnet{depth} only at width 1 with the FPN head: use backend=torchvision")
    d2 = get_cfg()
    d2.MODEL.DEVICE = device.type
    d2.MODEL.WEIGHTS = str(weights)
    d2.MODEL.PIXEL_MEAN = [255.0 * m for m in IMAGENET_MEAN]
    d2.MODEL.PIXEL_STD = [255.0 * s for s in IMAGENET_STD]
    d2.INPUT.FORMAT = "RGB"
    r = d2.MODEL.RESNETS
    r.DEPTH, r.STRIDE_IN_1X1, r.NORM = depth, False, _NORMS[cfg.norm]
    r.STEM_OUT_CHANNELS = int(round(64 * width))
    r.RES2_OUT_CHANNELS = int(round(64 * width)) * (4 if depth >= 50 else 1)
    r.WIDTH_PER_GROUP = int(round(64 * width))
    d2.MODEL.BACKBONE.FREEZE_AT = cfg.freeze_at
    if cfg.head == "c4":
        d2.MODEL.ROI_HEADS.NAME = "Res5ROIHeadsExtraNorm" if cfg.extra_norm else "Res5ROIHeads"
        d2.MODEL.RPN.PRE_NMS_TOPK_TEST, d2.MODEL.RPN.POST_NMS_TOPK_TEST = 6000, cfg.proposals_test
    else:
        levels = ["res2", "res3", "res4", "res5"]
        d2.MODEL.BACKBONE.NAME = "build_resnet_fpn_backbone"
        r.OUT_FEATURES = d2.MODEL.FPN.IN_FEATURES = levels
        d2.MODEL.ANCHOR_GENERATOR.SIZES = [[32], [64], [128], [256], [512]]
        d2.MODEL.RPN.IN_FEATURES = ["p2", "p3", "p4", "p5", "p6"]
        d2.MODEL.RPN.PRE_NMS_TOPK_TRAIN, d2.MODEL.RPN.PRE_NMS_TOPK_TEST = 2000, 1000
        d2.MODEL.RPN.POST_NMS_TOPK_TRAIN, d2.MODEL.RPN.POST_NMS_TOPK_TEST = 1000, cfg.proposals_test
        d2.MODEL.ROI_HEADS.NAME = "StandardROIHeads"
        d2.MODEL.ROI_HEADS.IN_FEATURES = ["p2", "p3", "p4", "p5"]
        d2.MODEL.ROI_BOX_HEAD.NAME, d2.MODEL.ROI_BOX_HEAD.NUM_FC = "FastRCNNConvFCHead", 2
        d2.MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION = 7
    d2.MODEL.ROI_HEADS.NUM_CLASSES = len(cfg.classes)
    d2.MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE = cfg.rois_per_image
    d2.TEST.DETECTIONS_PER_IMAGE = cfg.detections_per_image
    d2.INPUT.MIN_SIZE_TRAIN, d2.INPUT.MAX_SIZE_TRAIN = tuple(cfg.min_size_train), cfg.max_size_train
    d2.INPUT.MIN_SIZE_TEST, d2.INPUT.MAX_SIZE_TEST = cfg.min_size_test, cfg.max_size_test
    s = d2.SOLVER
    s.IMS_PER_BATCH, s.BASE_LR, s.STEPS, s.GAMMA, s.MAX_ITER = cfg.batch_size, cfg.lr, tuple(cfg.steps), cfg.gamma, cfg.iterations
    s.WARMUP_ITERS, s.WARMUP_FACTOR, s.MOMENTUM, s.WEIGHT_DECAY = cfg.warmup_iters, 0.001, cfg.momentum, cfg.weight_decay
    s.CHECKPOINT_PERIOD = cfg.checkpoint_every or cfg.iterations
    if cfg.clip_grad_norm > 0:  # Detectron2 clips each parameter's gradient norm (torchvision backend: the global norm)
        s.CLIP_GRADIENTS.ENABLED, s.CLIP_GRADIENTS.CLIP_TYPE, s.CLIP_GRADIENTS.CLIP_VALUE = True, "norm", cfg.clip_grad_norm
    d2.DATASETS.TRAIN, d2.DATASETS.TEST = (train_name,), (test_name,)
    d2.DATALOADER.NUM_WORKERS = cfg.num_workers
    d2.TEST.EVAL_PERIOD = 0
    d2.SEED = cfg.seed
    d2.OUTPUT_DIR = str(output_dir)
    if cfg.detectron2_overrides:
        d2.merge_from_list(list(cfg.detectron2_overrides))
    return d2


class Collect(DatasetEvaluator):
    """Keeps the predictions and scores them with our VOC evaluator (metrics under 'swavbench')."""

    def __init__(self, data: VOCDetectionSet, use_07_metric: bool):
        self.data, self.use_07_metric = data, use_07_metric
        self.predictions: dict[str, Detections] = {}

    def reset(self) -> None:
        self.predictions = {}

    def process(self, inputs, outputs) -> None:
        for inp, out in zip(inputs, outputs):
            inst = out["instances"].to("cpu")
            self.predictions[inp["image_id"]] = Detections(inst.pred_boxes.tensor.numpy(), inst.scores.numpy(),
                                                           inst.pred_classes.numpy())

    def evaluate(self):
        return {"swavbench": voc_detection_metrics(self.predictions, self.data.images, self.data.classes, self.use_07_metric)}


class _Trainer(DefaultTrainer):
    def build_hooks(self):  # evaluation runs once, explicitly, after training
        return [h for h in super().build_hooks() if not isinstance(h, hooks.EvalHook)]


def train_and_evaluate(cfg: DetectionConfig, loaded: LoadedTrunk, device: torch.device, out_dir: Path):
    """(metrics, split sizes); Detectron2's own numbers are kept as d2_AP / d2_AP50 / d2_AP75."""
    train_set = load_voc_detection(cfg.train_roots, cfg.train_split, cfg.classes)
    test_set = load_voc_detection([cfg.test_root], cfg.test_split, cfg.classes)
    train_name, test_name = f"swavbench_{cfg.dataset}_{cfg.train_split}", f"swavbench_{cfg.dataset}_{cfg.test_split}"
    register_voc(train_name, train_set, str(cfg.train_roots[0]), cfg.train_split, 2007 if cfg.use_07_metric else 2012)
    register_voc(test_name, test_set, str(voc_root(cfg.test_root)), cfg.test_split, 2007 if cfg.use_07_metric else 2012)
    weights = convert(loaded, "detectron2", out_dir / "trunk_detectron2.pkl")
    d2 = detectron2_config(cfg, loaded, weights, device, train_name, test_name, out_dir / "detectron2")
    Path(d2.OUTPUT_DIR).mkdir(parents=True, exist_ok=True)
    (out_dir / "detectron2_config.yaml").write_text(d2.dump())
    logging.getLogger("detectron2").setLevel(logging.WARNING)
    trainer = _Trainer(d2)
    trainer.resume_or_load(resume=True)
    trainer.train()
    collect = Collect(test_set, cfg.use_07_metric)
    results = _Trainer.test(d2, trainer.model, [DatasetEvaluators([PascalVOCDetectionEvaluator(test_name), collect])])
    res = results[test_name] if test_name in results else results
    metrics = dict(res["swavbench"])
    metrics.update({f"d2_{k}": float(v) for k, v in res["bbox"].items()})
    metrics["skipped_boxes"] = float(len(train_set.skipped) + len(test_set.skipped))
    return metrics, {"train": len(train_set.images), "test": len(test_set.images)}
