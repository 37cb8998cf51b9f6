"""Torchvision backend of the detection protocol: Faster R-CNN R50-C4 (res5 + extra BatchNorm as the
RoI head, the MoCo/SwAV recipe), R50-FPN or Mask R-CNN R50-FPN (4conv1fc box head and normalised
FPN / heads as the COCO recipe asks), assembled from ``torchvision.models.detection`` parts around
our trunk, trained with SGD (linear warm-up, step decay, optional gradient clipping) and scored by
transfer/voc_eval.py or transfer/coco_eval.py. Resumable: the state is saved atomically every
``checkpoint_every`` iterations and a re-run continues from it, with the same data order.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import torch
from PIL import Image
from torch import nn
from torch.utils.data import Dataset
from torchvision.models.detection import FasterRCNN, MaskRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.models.detection.faster_rcnn import FastRCNNConvFCHead, FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.models.detection.rpn import RPNHead
from torchvision.ops import FrozenBatchNorm2d, MultiScaleRoIAlign
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool
from torchvision.transforms.functional import pil_to_tensor
from tqdm import tqdm

from benchmark.protocol import state_key
from benchmark.trunk import LoadedTrunk
from pretrain.model import Trunk
from swavbench.core import ranks
from swavbench.core.epochs import EpochLoop
from transfer.coco_eval import encode_masks
from transfer.detection_config import RESUMABLE_CHANGES, DetectionConfig, DetectionSet, load_sets, score
from transfer.fine_tune import fine_tune
from transfer.voc_eval import Detections


def freeze_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every BatchNorm2d by a FrozenBatchNorm2d holding its statistics and affine parameters."""
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            frozen = FrozenBatchNorm2d(child.num_features, eps=child.eps)
            for key in ("weight", "bias", "running_mean", "running_var"):
                getattr(frozen, key).copy_(getattr(child, key).detach())
            setattr(module, name, frozen)
        else:
            freeze_batchnorm(child)
    return module


def prepare_trunk(trunk: Trunk, cfg: DetectionConfig) -> Trunk:
    """Normalisation and frozen stages as the config asks (freeze_at 1: stem, 2: stem + res2, ...)."""
    if cfg.norm == "frozen":
        freeze_batchnorm(trunk)
    elif cfg.norm == "syncbn" and ranks.active():  # statistics over the global batch (also on CPU)
        trunk = ranks.sync_batchnorm(trunk)
    stages = [[trunk.conv1, trunk.bn1], [trunk.layer1], [trunk.layer2], [trunk.layer3], [trunk.layer4]]
    for stage in stages[: cfg.freeze_at]:
        for m in stage:
            for p in m.parameters():
                p.requires_grad_(False)
    return trunk


def build_model(trunk: Trunk, cfg: DetectionConfig, n_classes: int) -> FasterRCNN:
    """Faster (or Mask) R-CNN on ``trunk`` (its weights are used as is) for ``n_classes`` + background."""
    trunk = prepare_trunk(trunk, cfg)
    c5 = trunk.num_features
    common = dict(
        min_size=tuple(cfg.min_size_train),
        max_size=cfg.max_size_train,
        image_mean=[m / 255.0 for m in cfg.pixel_mean],
        image_std=[s / 255.0 for s in cfg.pixel_std],
        box_batch_size_per_image=cfg.rois_per_image,
        box_detections_per_img=cfg.detections_per_image,
    )
    if cfg.head == "fpn":
        norm_layer = (
            None if cfg.head_norm == "none" else nn.BatchNorm2d
        )  # syncbn: converted in train_and_evaluate
        backbone = BackboneWithFPN(
            trunk,
            {"layer1": "0", "layer2": "1", "layer3": "2", "layer4": "3"},
            [c5 // 8, c5 // 4, c5 // 2, c5],
            256,
            extra_blocks=LastLevelMaxPool(),
            norm_layer=norm_layer,
        )
        if cfg.box_head == "4conv1fc":
            box_head: nn.Module = FastRCNNConvFCHead((256, 7, 7), [256] * 4, [1024], norm_layer=norm_layer)
        else:
            box_head = TwoMLPHead(256 * 7 * 7, 1024)
        heads = dict(
            box_head=box_head,
            box_predictor=FastRCNNPredictor(1024, n_classes + 1),
            rpn_post_nms_top_n_test=cfg.proposals_test,
            **common,
        )
        if cfg.masks:
            return MaskRCNN(
                backbone,
                mask_head=MaskRCNNHeads(256, [256] * 4, 1, norm_layer=norm_layer),
                mask_predictor=MaskRCNNPredictor(256, 256, n_classes + 1),
                **heads,
            )
        return FasterRCNN(backbone, **heads)
    body = nn.Sequential(
        OrderedDict(
            conv1=trunk.conv1,
            bn1=trunk.bn1,
            relu=trunk.relu,
            maxpool=trunk.maxpool,
            layer1=trunk.layer1,
            layer2=trunk.layer2,
            layer3=trunk.layer3,
        )
    )
    body.out_channels = c5 // 2
    norm: list[nn.Module] = []
    if cfg.extra_norm:
        norm = [FrozenBatchNorm2d(c5) if cfg.norm == "frozen" else nn.BatchNorm2d(c5)]
    box_head = nn.Sequential(trunk.layer4, *norm, nn.AdaptiveAvgPool2d(1), nn.Flatten())
    anchors = AnchorGenerator(((32, 64, 128, 256, 512),), ((0.5, 1.0, 2.0),))
    return FasterRCNN(
        body,
        rpn_anchor_generator=anchors,
        rpn_head=RPNHead(c5 // 2, anchors.num_anchors_per_location()[0]),
        rpn_pre_nms_top_n_train=12000,
        rpn_post_nms_top_n_train=2000,
        rpn_pre_nms_top_n_test=6000,
        rpn_post_nms_top_n_test=cfg.proposals_test,
        box_roi_pool=MultiScaleRoIAlign(["0"], 14, 0),
        box_head=box_head,
        box_predictor=FastRCNNPredictor(c5, n_classes + 1),
        **common,
    )


def load_image(im) -> torch.Tensor:
    """An annotated image (VOCImage or COCOImage) as a float RGB tensor in [0, 1]."""
    try:
        with Image.open(im.path) as pil:
            return pil_to_tensor(pil.convert("RGB")).float().div_(255)
    except OSError as e:
        raise OSError(
            f"cannot read image {im.path}: {e} (re-export it or drop {im.image_id} from the split file)"
        ) from None


class TrainStream(Dataset):
    """Sample ``position`` of the training stream: epoch-wise seeded permutations, seeded flips,
    so iteration i sees the same images whether or not the run was interrupted before it. In a data-parallel
    run, item i of process r is position r + world_size x k of its iteration's global batch (the processes
    together see the batch one process would)."""

    def __init__(
        self,
        data: DetectionSet,
        seed: int,
        start: int,
        *,
        length: int,
        masks: bool = False,
        batch: int = 1,
        rank: int = 0,
        world: int = 1,
    ):
        """``start``: first iteration; ``length``: items of this process; ``batch``: the global batch."""
        self.data, self.seed, self.start, self.length, self.masks = data, seed, start, length, masks
        self.batch, self.rank, self.world = batch, rank, world

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int):
        per = self.batch // self.world
        pos = (self.start + i // per) * self.batch + self.rank + (i % per) * self.world
        n = len(self.data.images)
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed * 100003 + pos // n))
        im = self.data.images[int(perm[pos % n])]
        x = load_image(im)
        boxes = torch.from_numpy(im.boxes_0based())
        target = {"labels": torch.from_numpy(im.labels) + 1}
        if self.masks:
            target["masks"] = torch.from_numpy(im.masks())
        if torch.rand((), generator=torch.Generator().manual_seed(self.seed * 7919 + pos)) < 0.5:
            x = x.flip(-1)
            boxes = torch.stack(
                [x.shape[-1] - boxes[:, 2], boxes[:, 1], x.shape[-1] - boxes[:, 0], boxes[:, 3]], dim=1
            )
            if self.masks:
                target["masks"] = target["masks"].flip(-1)
        return x, {"boxes": boxes, **target}


def lr_at(it: int, cfg: DetectionConfig) -> float:
    """Linear warm-up from lr x warmup_factor over warmup_iters, then x gamma at each step.

    The same schedule as Detectron2's WarmupMultiStepLR."""
    lr = cfg.lr * cfg.gamma ** sum(it >= s for s in cfg.steps)
    if it < cfg.warmup_iters:
        alpha = it / cfg.warmup_iters
        lr *= cfg.warmup_factor * (1 - alpha) + alpha
    return lr


def _collate(batch):
    return tuple(zip(*batch))


def train(
    model: FasterRCNN,
    data: DetectionSet,
    cfg: DetectionConfig,
    *,
    device: torch.device,
    state_path: Path,
    key: str = "",
) -> dict:
    """Fine-tune; ``state_path`` holds the model and optimiser every ``checkpoint_every`` iterations and a
    run of the same ``key`` (trunk + config) continues from it; state of another key is started over."""
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    per = ranks.per_process_batch(cfg.batch_size)
    ddp = ranks.data_parallel(model, device)
    loop = EpochLoop(
        state_path,
        key,
        iterations=cfg.iterations,
        desc="detection",
        parts={"model": model, "optimizer": opt},
        every=cfg.checkpoint_every,
    )

    def stream(start: int) -> TrainStream:
        n = (cfg.iterations - start) * per
        rank, world = ranks.rank(), ranks.world_size()
        return TrainStream(
            data, cfg.seed, start, length=n, masks=cfg.masks, batch=cfg.batch_size, rank=rank, world=world
        )

    def losses_of(it: int, batch: tuple) -> dict[str, torch.Tensor]:
        for g in opt.param_groups:
            g["lr"] = lr_at(it, cfg)
        images, targets = batch
        targets = [{k: v.to(device) for k, v in t.items()} for t in targets]
        losses = ddp([x.to(device) for x in images], targets)
        return {"loss": sum(losses.values()), **losses}

    model.train()
    fix = f"lower lr (now {cfg.lr}) or set clip_grad_norm"
    loader = {"batch_size": per, "num_workers": cfg.num_workers, "collate_fn": _collate}
    history = fine_tune(
        loop, stream, losses_of, loader=loader, opt=opt, clip=cfg.clip_grad_norm, clipped=params, fix=fix
    )
    return {"iterations": cfg.iterations, "final_loss": history[-1]["loss"] if history else float("nan")}


@torch.inference_mode()
def predict(model: FasterRCNN, data: DetectionSet, cfg: DetectionConfig, *, device: torch.device) -> dict:
    """Detections per image id (each process of a data-parallel run predicts a shard; every process gets
    them all). Mask R-CNN masks are thresholded at 0.5 (as Detectron2 does) and RLE-encoded."""
    model.eval()
    model.transform.min_size, model.transform.max_size = (cfg.min_size_test,), cfg.max_size_test
    out: dict = {}
    mine = [data.images[i] for i in ranks.shard(len(data.images))]
    for im in tqdm(mine, desc="detection eval", unit="img", leave=False, disable=not ranks.is_main()):
        pred = model([load_image(im).to(device)])[0]
        masks = encode_masks((pred["masks"][:, 0] > 0.5).cpu().numpy()) if "masks" in pred else None
        out[im.image_id] = Detections(
            pred["boxes"].cpu().numpy(), pred["scores"].cpu().numpy(), pred["labels"].cpu().numpy() - 1, masks
        )
    return {k: v for part in ranks.all_gather_objects(out) for k, v in part.items()}


def train_and_evaluate(cfg: DetectionConfig, loaded: LoadedTrunk, device: torch.device, *, out_dir: Path):
    """(metrics, split sizes) of the run; the protocol wrapper writes the record."""
    torch.manual_seed(cfg.seed)
    train_set, test_set = load_sets(cfg)
    model = build_model(loaded.trunk, cfg, len(train_set.classes))
    if cfg.head_norm == "syncbn" and ranks.active():
        model = ranks.sync_batchnorm(model)
    model = model.to(device)
    summary = train(
        model,
        train_set,
        cfg,
        device=device,
        state_path=out_dir / "detection_state.pth",
        key=state_key(loaded, cfg, ignore=RESUMABLE_CHANGES),
    )
    metrics = score(cfg, predict(model, test_set, cfg, device=device), test_set)
    metrics.update(
        final_loss=summary["final_loss"], skipped_boxes=float(len(train_set.skipped) + len(test_set.skipped))
    )
    return metrics, {"train": len(train_set.images), "test": len(test_set.images)}
