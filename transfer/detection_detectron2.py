"""Detectron2 backend of the detection protocol (the reference: MoCo/SwAV's VOC recipe is a Detectron2
config). The DetectionConfig is translated into a Detectron2 CfgNode (written beside the results as
``detectron2_config.yaml``; ``detectron2_overrides`` edits any other key), the trunk is converted to
a Detectron2 .pkl, and Detectron2's DefaultTrainer trains (resuming from its last checkpoint in
``out/detectron2/``). Test predictions are scored twice: by our evaluator (the record's numbers) and
by Detectron2's PascalVOCDetectionEvaluator or COCOEvaluator (``d2_`` metrics) — they agree.

The C4 box head with the extra BatchNorm after res5 (``Res5ROIHeadsExtraNorm``) is written here:
the original lives in non-commercially licensed code.

Data-parallel: when the processes of the job already form a group (torchrun, SLURM tasks), Detectron2 gets
its per-machine group and trains with its own DistributedDataParallel, sampler sharding and evaluator
gathering (IMS_PER_BATCH is the global batch); on CPU its SyncBatchNorm layers become GlobalBatchNorm.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

import torch
from detectron2.config import CfgNode, get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.engine import DefaultTrainer, hooks
from detectron2.evaluation import (
    COCOEvaluator,
    DatasetEvaluator,
    DatasetEvaluators,
    PascalVOCDetectionEvaluator,
)
from detectron2.layers import get_norm
from detectron2.modeling.roi_heads import ROI_HEADS_REGISTRY, Res5ROIHeads
from detectron2.structures import BoxMode
from torch import nn

from benchmark.protocol import state_key
from benchmark.trunk import LoadedTrunk
from benchmark.voc import voc_root
from pretrain.model import parse_arch
from swavbench.core import durable, interrupt, ranks
from transfer.coco_detection import COCODetectionSet
from transfer.coco_eval import STATS, encode_masks
from transfer.convert import convert
from transfer.detection_config import RESUMABLE_CHANGES, DetectionConfig, DetectionSet, load_sets, score
from transfer.voc_detection import VOCDetectionSet
from transfer.voc_eval import Detections


class Res5ROIHeadsExtraNorm(Res5ROIHeads):
    """C4 RoI head whose res5 output goes through one more normalisation layer (of MODEL.RESNETS.NORM),
    named ``res5.norm`` as in MoCo's detection/train_net.py, so MoCo-style Detectron2 checkpoints load."""

    @classmethod
    def _build_res5_block(cls, cfg):
        blocks, out_channels = super()._build_res5_block(cfg)
        blocks = blocks if isinstance(blocks, nn.Sequential) else nn.Sequential(*blocks)
        blocks.add_module("norm", get_norm(cfg.MODEL.RESNETS.NORM, out_channels))
        return blocks, out_channels


if "Res5ROIHeadsExtraNorm" not in ROI_HEADS_REGISTRY:
    ROI_HEADS_REGISTRY.register(Res5ROIHeadsExtraNorm)

_NORMS = {"syncbn": "SyncBN", "bn": "BN", "frozen": "FrozenBN"}


def register(name: str, data: DetectionSet, **metadata) -> None:
    """Register our parsed annotations under ``name``.

    Degenerate boxes are skipped; COCO crowd regions are left to the evaluator."""
    coco = isinstance(data, COCODetectionSet)
    dicts = []
    for im in data.images:
        annos = [
            {"bbox": box.tolist(), "bbox_mode": BoxMode.XYXY_ABS, "category_id": int(c), "iscrowd": 0}
            for box, c in zip(im.boxes_0based(), im.labels)
        ]
        if coco and data.has_masks:
            for a, seg in zip(annos, im.segmentations):
                a["segmentation"] = seg
        dicts.append(
            {
                "file_name": str(im.path),
                "image_id": im.image_id,
                "height": im.height,
                "width": im.width,
                "annotations": annos,
            }
        )
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    DatasetCatalog.register(name, lambda: dicts)
    if coco:
        metadata.update(
            json_file=str(data.annotation_file),
            thing_dataset_id_to_contiguous_id={cid: i for i, cid in enumerate(data.category_ids)},
        )
    MetadataCatalog.get(name).set(thing_classes=list(data.classes), **metadata)


def detectron2_config(
    cfg: DetectionConfig,
    loaded: LoadedTrunk,
    weights: Path,
    *,
    device: torch.device,
    train_name: str,
    test_name: str,
    output_dir: Path,
    n_classes: int,
    mask_format: str = "polygon",
) -> CfgNode:
    """The Detectron2 config equivalent to ``cfg`` for this trunk (torchvision layout: RGB, stride in 3x3)."""
    d2 = get_cfg()
    d2.MODEL.DEVICE = device.type
    d2.MODEL.WEIGHTS = str(weights)
    d2.MODEL.PIXEL_MEAN, d2.MODEL.PIXEL_STD = list(cfg.pixel_mean), list(cfg.pixel_std)
    d2.INPUT.FORMAT = "RGB"
    _set_trunk(d2, cfg, loaded)
    _set_heads(d2, cfg, mask_format=mask_format)
    d2.MODEL.ROI_HEADS.NUM_CLASSES = n_classes
    d2.MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE = cfg.rois_per_image
    d2.TEST.DETECTIONS_PER_IMAGE = cfg.detections_per_image
    d2.INPUT.MIN_SIZE_TRAIN, d2.INPUT.MAX_SIZE_TRAIN = tuple(cfg.min_size_train), cfg.max_size_train
    d2.INPUT.MIN_SIZE_TEST, d2.INPUT.MAX_SIZE_TEST = cfg.min_size_test, cfg.max_size_test
    s = d2.SOLVER
    s.IMS_PER_BATCH, s.BASE_LR, s.STEPS, s.GAMMA = cfg.batch_size, cfg.lr, tuple(cfg.steps), cfg.gamma
    s.MAX_ITER, s.WARMUP_ITERS, s.WARMUP_FACTOR = cfg.iterations, cfg.warmup_iters, cfg.warmup_factor
    s.MOMENTUM, s.WEIGHT_DECAY = cfg.momentum, cfg.weight_decay
    s.CHECKPOINT_PERIOD = cfg.checkpoint_every or cfg.iterations
    if (
        cfg.clip_grad_norm > 0
    ):  # Detectron2 clips each parameter's gradient norm (torchvision: the global norm)
        clip = s.CLIP_GRADIENTS
        clip.ENABLED, clip.CLIP_TYPE, clip.CLIP_VALUE = True, "norm", cfg.clip_grad_norm
    d2.DATASETS.TRAIN, d2.DATASETS.TEST = (train_name,), (test_name,)
    d2.DATALOADER.NUM_WORKERS = cfg.num_workers
    d2.TEST.EVAL_PERIOD = 0
    d2.SEED = cfg.seed
    d2.OUTPUT_DIR = str(output_dir)
    if cfg.detectron2_overrides:
        d2.merge_from_list(list(cfg.detectron2_overrides))
    return d2


def _set_trunk(d2: CfgNode, cfg: DetectionConfig, loaded: LoadedTrunk) -> None:
    """Detectron2's ResNet of the trunk's depth and width (refused where Detectron2 has none)."""
    depth, arch_width = parse_arch(loaded.spec.arch)
    width = arch_width * loaded.spec.width_multiplier
    if loaded.spec.small_stem:
        raise ValueError(
            "Detectron2's ResNet has no small (3x3, stride 1) stem: use backend=torchvision for this trunk"
        )
    if depth in (18, 34) and (cfg.head == "c4" or width != 1):
        raise ValueError(
            f"Detectron2 supports resnet{depth} only at width 1 with the FPN head: use backend=torchvision"
        )
    r = d2.MODEL.RESNETS
    r.DEPTH, r.STRIDE_IN_1X1, r.NORM = depth, False, _NORMS[cfg.norm]
    r.STEM_OUT_CHANNELS = int(round(64 * width))
    r.RES2_OUT_CHANNELS = int(round(64 * width)) * (4 if depth >= 50 else 1)
    r.WIDTH_PER_GROUP = int(round(64 * width))
    d2.MODEL.BACKBONE.FREEZE_AT = cfg.freeze_at


def _set_heads(d2: CfgNode, cfg: DetectionConfig, *, mask_format: str) -> None:
    """The C4 heads, or the FPN with its box head and (with ``masks``) the mask head."""
    if cfg.head == "c4":
        d2.MODEL.ROI_HEADS.NAME = "Res5ROIHeadsExtraNorm" if cfg.extra_norm else "Res5ROIHeads"
        d2.MODEL.RPN.PRE_NMS_TOPK_TEST, d2.MODEL.RPN.POST_NMS_TOPK_TEST = 6000, cfg.proposals_test
        return
    levels = ["res2", "res3", "res4", "res5"]
    d2.MODEL.BACKBONE.NAME = "build_resnet_fpn_backbone"
    d2.MODEL.RESNETS.OUT_FEATURES = d2.MODEL.FPN.IN_FEATURES = levels
    d2.MODEL.ANCHOR_GENERATOR.SIZES = [[32], [64], [128], [256], [512]]
    d2.MODEL.RPN.IN_FEATURES = ["p2", "p3", "p4", "p5", "p6"]
    d2.MODEL.RPN.PRE_NMS_TOPK_TRAIN, d2.MODEL.RPN.PRE_NMS_TOPK_TEST = 2000, 1000
    d2.MODEL.RPN.POST_NMS_TOPK_TRAIN, d2.MODEL.RPN.POST_NMS_TOPK_TEST = 1000, cfg.proposals_test
    d2.MODEL.ROI_HEADS.NAME = "StandardROIHeads"
    d2.MODEL.ROI_HEADS.IN_FEATURES = ["p2", "p3", "p4", "p5"]
    box = d2.MODEL.ROI_BOX_HEAD
    box.NAME, box.POOLER_RESOLUTION = "FastRCNNConvFCHead", 7
    box.NUM_CONV, box.NUM_FC = (4, 1) if cfg.box_head == "4conv1fc" else (0, 2)
    head_norm = "" if cfg.head_norm == "none" else _NORMS[cfg.head_norm]
    d2.MODEL.FPN.NORM = box.NORM = d2.MODEL.ROI_MASK_HEAD.NORM = head_norm
    if cfg.masks:
        d2.MODEL.MASK_ON = True
        m = d2.MODEL.ROI_MASK_HEAD
        m.NAME, m.NUM_CONV, m.POOLER_RESOLUTION = "MaskRCNNConvUpsampleHead", 4, 14
        d2.INPUT.MASK_FORMAT = mask_format


class Collect(DatasetEvaluator):
    """Keeps the predictions and scores them with our evaluator (metrics under 'swavbench')."""

    def __init__(self, cfg: DetectionConfig, data: DetectionSet):
        self.cfg, self.data = cfg, data
        self.predictions: dict = {}

    def reset(self) -> None:
        self.predictions = {}

    def process(self, inputs, outputs) -> None:
        for inp, out in zip(inputs, outputs):
            inst = out["instances"].to("cpu")
            masks = encode_masks(inst.pred_masks.numpy()) if inst.has("pred_masks") else None
            self.predictions[inp["image_id"]] = Detections(
                inst.pred_boxes.tensor.numpy(), inst.scores.numpy(), inst.pred_classes.numpy(), masks
            )

    def evaluate(self):
        every = {k: v for part in ranks.all_gather_objects(self.predictions) for k, v in part.items()}
        return {"swavbench": score(self.cfg, every, self.data)}


class _StopOnSignal(hooks.HookBase):
    """At the scheduler's signal: checkpoint this iteration (resume_or_load continues after it) and stop."""

    def after_step(self):
        t = self.trainer
        if t.iter + 1 < t.max_iter:
            interrupt.check(
                lambda: t.checkpointer.save(f"model_{t.iter:07d}", iteration=t.iter),
                f"iteration {t.iter + 1}",
            )


class _Trainer(DefaultTrainer):
    def build_hooks(self):  # evaluation runs once, explicitly, after training
        return [h for h in super().build_hooks() if not isinstance(h, hooks.EvalHook)] + [_StopOnSignal()]

    @classmethod
    def build_model(cls, cfg):
        """On CPU processes, SyncBatchNorm (which refuses CPU tensors) becomes GlobalBatchNorm."""
        model = super().build_model(cfg)
        return ranks.sync_batchnorm(model, only_sync=True) if ranks.active() else model


@contextlib.contextmanager
def _detectron2_group(device: torch.device):
    """Detectron2's view of an existing process group: its per-machine group, and DDP without device ids for
    CPU modules (Detectron2 passes the local rank, which DDP refuses for a CPU module)."""
    if not ranks.active():
        yield
        return
    from detectron2.engine import defaults
    from detectron2.utils import comm

    if comm._LOCAL_PROCESS_GROUP is None:
        comm.create_local_process_group(ranks.local_world_size())
    real = defaults.create_ddp_model
    if device.type == "cpu":
        defaults.create_ddp_model = lambda model, **kw: real(model, **{**kw, "device_ids": None})
    try:
        yield
    finally:
        defaults.create_ddp_model = real


def train_and_evaluate(cfg: DetectionConfig, loaded: LoadedTrunk, device: torch.device, *, out_dir: Path):
    """(metrics, split sizes).

    Detectron2's own numbers are kept with a d2_ prefix (d2_AP50, d2_box_AP, ...)."""
    train_set, test_set = load_sets(cfg)
    train_name, test_name = f"swavbench_{cfg.dataset}_train", f"swavbench_{cfg.dataset}_test"
    if isinstance(test_set, VOCDetectionSet):
        year = 2007 if cfg.use_07_metric else 2012
        register(train_name, train_set, dirname=str(cfg.train_roots[0]), split=cfg.train_split, year=year)
        register(test_name, test_set, dirname=str(voc_root(cfg.test_root)), split=cfg.test_split, year=year)
        theirs: DatasetEvaluator = PascalVOCDetectionEvaluator(test_name)
        mask_format = "polygon"
    else:
        register(train_name, train_set)
        register(test_name, test_set)
        theirs = COCOEvaluator(
            test_name,
            tasks=("bbox", "segm") if cfg.masks else ("bbox",),
            distributed=ranks.active(),  # each process predicts a shard; the first one scores them all
            output_dir=str(out_dir / "detectron2" / "eval"),
            use_fast_impl=False,
        )
        rle = any(isinstance(s, dict) for im in train_set.images for s in im.segmentations)
        mask_format = "bitmask" if rle else "polygon"
    weights = convert(loaded, "detectron2", out_dir / "trunk_detectron2.pkl")
    # Detectron2 resumes from the last checkpoint in its output folder: one folder per trunk and config,
    # so a reused --out never continues another checkpoint's fine-tuning
    d2 = detectron2_config(
        cfg,
        loaded,
        weights,
        device=device,
        train_name=train_name,
        test_name=test_name,
        output_dir=out_dir / "detectron2" / state_key(loaded, cfg, ignore=RESUMABLE_CHANGES),
        n_classes=len(train_set.classes),
        mask_format=mask_format,
    )
    Path(d2.OUTPUT_DIR).mkdir(parents=True, exist_ok=True)
    durable.write_text(out_dir / "detectron2_config.yaml", d2.dump())
    logging.getLogger("detectron2").setLevel(logging.WARNING)
    with _detectron2_group(device):
        trainer = _Trainer(d2)
        trainer.resume_or_load(resume=True)
        trainer.train()
        collect = Collect(cfg, test_set)
        results = _Trainer.test(d2, trainer.model, [DatasetEvaluators([theirs, collect])])
    metrics = None
    if ranks.is_main():  # Detectron2's evaluators answer on the first process only
        res = results[test_name] if test_name in results else results
        metrics = dict(res["swavbench"])
        if isinstance(test_set, VOCDetectionSet):
            metrics.update({f"d2_{k}": float(v) for k, v in res["bbox"].items()})
        else:
            for task, prefix in (("bbox", "box"), ("segm", "mask")):
                metrics.update({f"d2_{prefix}_{k}": float(res[task][k]) for k in STATS if task in res})
        metrics["skipped_boxes"] = float(len(train_set.skipped) + len(test_set.skipped))
    metrics = ranks.all_gather_objects(metrics)[0]
    return metrics, {"train": len(train_set.images), "test": len(test_set.images)}
