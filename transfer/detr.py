"""COCO DETR transfer (SwAV paper Table 3: 42.1 box AP for SwAV vs 40.8 supervised): DETR with our trunk as
its backbone, fine-tuned end to end, scored with COCO box AP by transfer/coco_eval.py.

The detector is Hugging Face transformers' ``DetrForObjectDetection`` (a port of the official DETR code:
transformer, sine position embedding, Hungarian matcher and set losses). Around it, what the official
``main.py`` does and the port leaves to the user: the backbone is our trunk with frozen BatchNorm and its stem
and res2 frozen; the official initialisation (Xavier on the transformer); auxiliary decoding losses computed
from each decoder layer's output as the official decoder does (the port's auxiliary path feeds normalised
outputs to the next layer); the box count normalising the losses summed over processes; the official
augmentation (flip, multi-scale resize or resize-crop-resize); AdamW with its own backbone lr, gradient
clipping and one lr drop. Resumable like the detection protocol: the state is saved every
``checkpoint_every`` iterations and at the scheduler's signal, with the same data order on resume.
"""

from __future__ import annotations

import importlib.util
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import ClassVar

import torch
from torch import nn
from torch.utils.data import Dataset
from torchvision.ops import box_convert
from torchvision.transforms.v2.functional import resize
from tqdm import tqdm

from benchmark.protocol import TrunkConfig, run_and_record, state_key
from benchmark.trunk import LoadedTrunk
from pretrain.model import Trunk
from swavbench.core import durable, ranks
from swavbench.core.data_root import resolve_fields
from swavbench.core.epochs import EpochLoop
from swavbench.core.record import ResultRecord
from transfer.coco_detection import COCODetectionSet, coco_from_voc
from transfer.coco_eval import coco_metrics
from transfer.detection_config import DetectionSet, check_data_format, load_sets
from transfer.detection_torchvision import load_image
from transfer.fine_tune import fine_tune
from transfer.voc_eval import Detections

# fields a run may change and still continue from its state (how it runs)
RESUMABLE_CHANGES = ("checkpoint_every", "num_workers")
IMAGENET_MEAN = (0.485, 0.456, 0.406)  # the official DETR input normalisation (datasets/coco.py)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class DetrTransferConfig:
    """Defaults: the official DETR R50 COCO recipe (facebookresearch/detr main.py), as in SwAV's Table 3."""

    DATASET_FIELDS: ClassVar[tuple[str, ...]] = (
        "train_roots",
        "test_root",
        "train_annotations",
        "test_annotations",
    )
    masks: ClassVar[bool] = False  # boxes only (what load_sets reads)

    dataset: str = "coco"
    format: str = "coco"  # coco (roots are image folders + instances json) | voc (roots are VOC roots)
    train_roots: list[str] = field(default_factory=lambda: ["coco/train2017"])
    train_split: str = "trainval"  # voc only
    test_root: str = "coco/val2017"
    test_split: str = "test"  # voc only
    train_annotations: list[str] = field(
        default_factory=lambda: ["coco/annotations/instances_train2017.json"]
    )
    test_annotations: str = "coco/annotations/instances_val2017.json"
    classes: list[str] = field(default_factory=list)  # [] = every category of the annotation files
    epochs: int = 300
    lr_drop: int = 200  # epoch after which every lr is x0.1
    batch_size: int = 64  # global (official: 16 GPUs x 4 images)
    lr: float = 1e-4  # transformer, input projection, heads
    lr_backbone: float = 1e-5  # trunk (SwAV's Table 3 chose it from {1e-5, 5e-5, 1e-4})
    weight_decay: float = 1e-4
    clip_max_norm: float = 0.1  # gradient norm clipping (0 = off)
    num_queries: int = 100
    hidden_dim: int = 256
    enc_layers: int = 6
    dec_layers: int = 6
    ffn_dim: int = 2048
    nheads: int = 8
    dropout: float = 0.1
    aux_loss: bool = True  # a set loss on every decoder layer's output
    class_cost: float = 1.0  # matcher costs and loss weights (official defaults)
    bbox_cost: float = 5.0
    giou_cost: float = 2.0
    bbox_loss_coef: float = 5.0
    giou_loss_coef: float = 2.0
    eos_coef: float = 0.1  # weight of the no-object class in the classification loss
    # augmentation (datasets/coco.py make_coco_transforms): flip, then either a resize of the shorter side to
    # one of ``scales`` (longer side <= max_size), or a resize to one of ``crop_scales``, a random crop with
    # sides in ``crop_size`` and a resize to one of ``scales``; test: shorter side test_size
    scales: list[int] = field(default_factory=lambda: list(range(480, 801, 32)))
    max_size: int = 1333
    crop_scales: list[int] = field(default_factory=lambda: [400, 500, 600])
    crop_size: list[int] = field(default_factory=lambda: [384, 600])
    test_size: int = 800
    freeze_at: int = 2  # stem and res2 frozen, res3-res5 trained (official: only layer2-4 train)
    init: str = "detr"  # detr (the official initialisation) | transformers (the port's)
    checkpoint_every: int = 1000  # iterations between resumable states (0 = only at the end)
    num_workers: int = 4
    seed: int = 0
    # a run too short to rank trunks (CPU presets): the report lists it as a smoke check, apart
    smoke: bool = False
    backend: str = "transformers"  # the implementation (recorded, for the report)
    trunk: TrunkConfig = field(default_factory=TrunkConfig)


def validate(cfg: DetrTransferConfig) -> None:
    """Clear errors for settings the run cannot use, before anything is loaded."""
    check_data_format(cfg)
    if cfg.epochs < 1 or cfg.batch_size < 1 or not 0 < cfg.lr_drop:
        raise ValueError("epochs, batch_size and lr_drop must be >= 1")
    if cfg.init not in ("detr", "transformers"):
        raise ValueError(f"init must be detr or transformers, got {cfg.init!r}")
    if cfg.backend != "transformers":
        raise ValueError(
            f"backend must be transformers (the only DETR implementation here), got {cfg.backend!r}"
        )
    if not 0 <= cfg.freeze_at <= 5:
        raise ValueError(f"freeze_at must be 0-5 (stages frozen from the stem), got {cfg.freeze_at}")
    if (
        len(cfg.crop_size) != 2
        or cfg.crop_size[0] > cfg.crop_size[1]
        or not cfg.scales
        or not cfg.crop_scales
    ):
        raise ValueError("crop_size is [min, max] side of the random crop; scales and crop_scales are lists")
    if cfg.hidden_dim % cfg.nheads:
        raise ValueError(f"hidden_dim {cfg.hidden_dim} must be a multiple of nheads {cfg.nheads}")


class TrunkFeatures(nn.Module):
    """The trunk as DETR's convolutional backbone: the res5 feature map (a one-element list, as the port's
    backbone returns its feature maps)."""

    def __init__(self, trunk: Trunk):
        super().__init__()
        self.trunk = trunk

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        t = self.trunk
        x = t.maxpool(t.relu(t.bn1(t.conv1(x))))
        return [t.layer4(t.layer3(t.layer2(t.layer1(x))))]


def _official_init(detr: nn.Module) -> None:
    """The official DETR initialisation: Xavier-uniform on the transformer's matrices, PyTorch's defaults on
    the input projection and the heads, N(0, 1) object queries."""
    for part in (detr.model.encoder, detr.model.decoder):
        for p in part.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)
    for m in (detr.model.input_projection, detr.class_labels_classifier, *detr.bbox_predictor.layers):
        m.reset_parameters()
    nn.init.normal_(detr.model.query_position_embeddings.weight)


def build_detr(trunk: Trunk, cfg: DetrTransferConfig, n_classes: int) -> nn.Module:
    """transformers' DetrForObjectDetection with ``trunk`` (weights as loaded, BatchNorm frozen, stages below
    ``freeze_at`` fixed) as its backbone, for ``n_classes`` + no-object."""
    from transformers import DetrConfig, DetrForObjectDetection, ResNetConfig
    from transformers.models.detr.modeling_detr import replace_batch_norm

    hf = DetrConfig(
        # a minimal placeholder backbone (the port builds one from its config), replaced by the trunk below
        use_timm_backbone=False,
        backbone_config=ResNetConfig(
            embedding_size=8, hidden_sizes=[8] * 4, depths=[1] * 4, out_features=["stage4"]
        ),
        num_labels=n_classes,
        num_queries=cfg.num_queries,
        d_model=cfg.hidden_dim,
        encoder_layers=cfg.enc_layers,
        decoder_layers=cfg.dec_layers,
        encoder_ffn_dim=cfg.ffn_dim,
        decoder_ffn_dim=cfg.ffn_dim,
        encoder_attention_heads=cfg.nheads,
        decoder_attention_heads=cfg.nheads,
        dropout=cfg.dropout,
        auxiliary_loss=False,  # auxiliary outputs are taken from the raw layer outputs (DetrWithAux)
        position_embedding_type="sine",
    )  # matcher costs and loss weights: SetLoss
    detr = DetrForObjectDetection(hf)
    with torch.no_grad():
        replace_batch_norm(trunk)  # DETR's FrozenBatchNorm2d: the trunk's statistics and affine kept
    stages = [[trunk.conv1], [trunk.layer1], [trunk.layer2], [trunk.layer3], [trunk.layer4]]
    for stage in stages[: cfg.freeze_at]:
        for m in stage:
            m.requires_grad_(False)
    encoder = detr.model.backbone
    encoder.model = TrunkFeatures(trunk)
    encoder.intermediate_channel_sizes = [trunk.num_features]
    detr.model.input_projection = nn.Conv2d(trunk.num_features, cfg.hidden_dim, kernel_size=1)
    if cfg.init == "detr":
        _official_init(detr)
    return detr


class DetrWithAux(nn.Module):
    """Class logits and boxes (cx, cy, w, h in [0, 1]) of every decoder layer, (L, B, Q, .), the last layer
    last: the official decoder's outputs (each layer's output through the shared final LayerNorm)."""

    def __init__(self, detr: nn.Module, *, aux: bool):
        super().__init__()
        self.detr, self.aux = detr, aux

    def forward(
        self, pixel_values: torch.Tensor, pixel_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.detr.model(pixel_values, pixel_mask=pixel_mask, output_hidden_states=self.aux)
        hidden = [out.last_hidden_state]
        if self.aux:  # decoder_hidden_states: (queries in, layer 1, ..., layer L); the last is already final
            norm = self.detr.model.decoder.layernorm
            hidden = [norm(h) for h in out.decoder_hidden_states[1:-1]] + hidden
        h = torch.stack(hidden)
        return self.detr.class_labels_classifier(h), self.detr.bbox_predictor(h).sigmoid()


class SetLoss(nn.Module):
    """The official set criterion: Hungarian matching per decoder layer, then cross-entropy (no-object
    weighted eos_coef), L1 and GIoU box losses, normalised by the mean box count per process over all
    processes (so data-parallel gradients equal one process's). The port's matcher and loss terms."""

    def __init__(self, cfg: DetrTransferConfig, n_classes: int):
        super().__init__()
        from transformers.loss.loss_for_object_detection import HungarianMatcher, ImageLoss

        matcher = HungarianMatcher(
            class_cost=cfg.class_cost, bbox_cost=cfg.bbox_cost, giou_cost=cfg.giou_cost
        )
        self.terms = ImageLoss(matcher, n_classes, cfg.eos_coef, ["labels", "boxes"])
        self.weights = {"loss_ce": 1.0, "loss_bbox": cfg.bbox_loss_coef, "loss_giou": cfg.giou_loss_coef}

    def forward(
        self, logits: torch.Tensor, boxes: torch.Tensor, targets: list[dict]
    ) -> dict[str, torch.Tensor]:
        """Weighted loss terms summed over layers (``loss`` their total, as the official weight_dict)."""
        local = float(sum(len(t["class_labels"]) for t in targets))
        num_boxes = max(ranks.all_sum([local])[0] / ranks.world_size(), 1.0)
        out: dict[str, torch.Tensor] = {}
        for layer in range(len(logits)):
            outputs = {"logits": logits[layer], "pred_boxes": boxes[layer]}
            indices = self.terms.matcher(outputs, targets)
            for term in ("labels", "boxes"):
                for name, value in self.terms.get_loss(term, outputs, targets, indices, num_boxes).items():
                    if name in self.weights:
                        out[name] = out.get(name, 0.0) + self.weights[name] * value
        out["loss"] = sum(out.values())
        return out


def resized_size(h: int, w: int, size: int, *, max_size: int | None) -> tuple[int, int]:
    """The official get_size_with_aspect_ratio: shorter side ``size``, longer side at most ``max_size``."""
    if max_size is not None:
        lo, hi = float(min(h, w)), float(max(h, w))
        if hi / lo * size > max_size:
            size = int(round(max_size * lo / hi))
    if (w <= h and w == size) or (h <= w and h == size):
        return h, w
    if w < h:
        return int(size * h / w), size
    return size, int(size * w / h)


def resize_with_boxes(img: torch.Tensor, boxes: torch.Tensor, size: int, *, max_size: int | None):
    """Image (3, H, W) and its xyxy pixel boxes resized to shorter side ``size`` (antialiased bilinear)."""
    h, w = img.shape[-2:]
    oh, ow = resized_size(h, w, size, max_size=max_size)
    scale = torch.tensor([ow / w, oh / h, ow / w, oh / h])
    return resize(img, [oh, ow], antialias=True), boxes * scale


def augment(img: torch.Tensor, boxes: torch.Tensor, labels: torch.Tensor, *, cfg: DetrTransferConfig, g):
    """The official training transform, drawn from the generator ``g``: horizontal flip (p 0.5), then (p 0.5
    each) a multi-scale resize, or a resize, a random crop (boxes clipped, emptied ones dropped) and a
    multi-scale resize. Returns (image, xyxy boxes, labels)."""

    def pick(options: list[int]) -> int:
        return int(options[int(torch.randint(len(options), (), generator=g))])

    if torch.rand((), generator=g) < 0.5:
        w = img.shape[-1]
        img, boxes = (
            img.flip(-1),
            torch.stack([w - boxes[:, 2], boxes[:, 1], w - boxes[:, 0], boxes[:, 3]], 1),
        )
    if torch.rand((), generator=g) < 0.5:
        return (*resize_with_boxes(img, boxes, pick(cfg.scales), max_size=cfg.max_size), labels)
    img, boxes = resize_with_boxes(img, boxes, pick(cfg.crop_scales), max_size=None)
    h, w = img.shape[-2:]
    lo, hi = cfg.crop_size
    ch = int(torch.randint(min(lo, h), min(h, hi) + 1, (), generator=g))
    cw = int(torch.randint(min(lo, w), min(w, hi) + 1, (), generator=g))
    top = int(torch.randint(h - ch + 1, (), generator=g))
    left = int(torch.randint(w - cw + 1, (), generator=g))
    img = img[:, top : top + ch, left : left + cw]
    boxes = boxes - torch.tensor([left, top, left, top], dtype=boxes.dtype)
    boxes = torch.minimum(boxes, torch.tensor([cw, ch, cw, ch], dtype=boxes.dtype)).clamp(min=0)
    keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    img, boxes = resize_with_boxes(img, boxes[keep], pick(cfg.scales), max_size=cfg.max_size)
    return img, boxes, labels[keep]


def normalize(img: torch.Tensor) -> torch.Tensor:
    return (img - torch.tensor(IMAGENET_MEAN)[:, None, None]) / torch.tensor(IMAGENET_STD)[:, None, None]


def target_of(boxes: torch.Tensor, labels: torch.Tensor, size: tuple[int, int]) -> dict[str, torch.Tensor]:
    """The port's target format: contiguous class labels and (cx, cy, w, h) boxes relative to the image."""
    h, w = size
    rel = box_convert(boxes, "xyxy", "cxcywh") / torch.tensor([w, h, w, h], dtype=boxes.dtype)
    return {"class_labels": labels.long(), "boxes": rel.float()}


class DetrStream(Dataset):
    """Item i of this process from iteration ``start`` on: a per-epoch seeded permutation of the training
    images (``iters_per_epoch`` global batches of ``batch``, the rest dropped as the official sampler does),
    augmentations drawn from (seed, position), so an interrupted run sees the same batches. In a data-parallel
    run process r takes positions r, r + world, ... of each global batch."""

    def __init__(self, data: DetectionSet, cfg: DetrTransferConfig, start: int, *, total: int):
        self.data, self.cfg, self.start = data, cfg, start
        self.world, self.rank = ranks.world_size(), ranks.rank()
        self.per = cfg.batch_size // self.world
        self.ipe = len(data.images) // cfg.batch_size
        self.length = (total - start) * self.per

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int):
        it = self.start + i // self.per
        slot = (it % self.ipe) * self.cfg.batch_size + self.rank + (i % self.per) * self.world
        epoch = it // self.ipe
        perm = torch.randperm(
            len(self.data.images), generator=torch.Generator().manual_seed(self.cfg.seed * 100003 + epoch)
        )
        im = self.data.images[int(perm[slot])]
        g = torch.Generator().manual_seed(self.cfg.seed * 7919 + epoch * len(self.data.images) + slot + 1)
        img, boxes, labels = augment(
            load_image(im),
            torch.from_numpy(im.boxes_0based()).float(),
            torch.from_numpy(im.labels),
            cfg=self.cfg,
            g=g,
        )
        h, w = img.shape[-2:]
        return normalize(img), target_of(boxes, labels, (h, w))


def pad_batch(images: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Images zero-padded to the batch's largest height and width, and the mask of real pixels (the
    official NestedTensor)."""
    h, w = max(x.shape[1] for x in images), max(x.shape[2] for x in images)
    batch = torch.zeros(len(images), 3, h, w)
    mask = torch.zeros(len(images), h, w, dtype=torch.long)
    for k, x in enumerate(images):
        batch[k, :, : x.shape[1], : x.shape[2]] = x
        mask[k, : x.shape[1], : x.shape[2]] = 1
    return batch, mask


def _collate(batch):
    images, targets = zip(*batch)
    return (*pad_batch(list(images)), list(targets))


def lr_factor(it: int, iters_per_epoch: int, cfg: DetrTransferConfig) -> float:
    """StepLR(lr_drop) over epochs: x0.1 from epoch ``lr_drop`` on."""
    return 0.1 if it // iters_per_epoch >= cfg.lr_drop else 1.0


def train(
    detr: nn.Module,
    data: DetectionSet,
    cfg: DetrTransferConfig,
    *,
    device: torch.device,
    state_path: Path,
    key: str,
) -> dict:
    """Fine-tune for ``cfg.epochs``; state in ``state_path`` (same ``key``: continued; another: restarted)."""
    per = ranks.per_process_batch(cfg.batch_size)
    ipe = len(data.images) // cfg.batch_size
    if ipe < 1:
        raise ValueError(
            f"batch_size {cfg.batch_size} is larger than the {len(data.images)} training images: "
            "lower batch_size"
        )
    total = cfg.epochs * ipe
    named = [(n, p) for n, p in detr.named_parameters() if p.requires_grad]
    groups = [
        {"params": [p for n, p in named if ".backbone." not in n], "lr": cfg.lr, "base": cfg.lr},
        {
            "params": [p for n, p in named if ".backbone." in n],
            "lr": cfg.lr_backbone,
            "base": cfg.lr_backbone,
        },
    ]
    opt = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    n_classes = detr.class_labels_classifier.out_features - 1
    criterion = SetLoss(cfg, n_classes).to(device)
    model = DetrWithAux(detr, aux=cfg.aux_loss)
    ddp = ranks.data_parallel(model, device)
    loop = EpochLoop(
        state_path,
        key,
        iterations=total,
        desc="detr",
        parts={"model": detr, "optimizer": opt},
        every=cfg.checkpoint_every,
    )

    def stream(start: int) -> DetrStream:
        return DetrStream(data, cfg, start, total=total)

    def losses_of(it: int, batch: tuple) -> dict[str, torch.Tensor]:
        for group in opt.param_groups:
            group["lr"] = group["base"] * lr_factor(it, ipe, cfg)
        pixels, mask, targets = batch
        targets = [{k: v.to(device) for k, v in t.items()} for t in targets]
        logits, boxes = ddp(pixels.to(device), mask.to(device))
        return criterion(logits, boxes, targets)

    detr.train()
    fix = f"lower lr (now {cfg.lr}, backbone {cfg.lr_backbone})"
    clipped = list(detr.parameters())
    loader = {"batch_size": per, "num_workers": cfg.num_workers, "collate_fn": _collate}
    history = fine_tune(
        loop, stream, losses_of, loader=loader, opt=opt, clip=cfg.clip_max_norm, clipped=clipped, fix=fix
    )
    return {
        "iterations": total,
        "final_loss": history[-1]["loss"] if history else float("nan"),
        "history": history,
    }


@torch.inference_mode()
def predict(
    detr: nn.Module, data: COCODetectionSet, cfg: DetrTransferConfig, *, device: torch.device
) -> dict:
    """Every query's detection per image id, as the official PostProcess: score and label from the softmax
    without the no-object class, boxes scaled to the original image. Processes predict a shard each and
    every process gets them all."""
    detr.eval()
    model = DetrWithAux(detr, aux=False)
    out: dict = {}
    mine = [data.images[i] for i in ranks.shard(len(data.images))]
    for im in tqdm(mine, desc="detr eval", unit="img", leave=False, disable=not ranks.is_main()):
        img = load_image(im)
        img, _ = resize_with_boxes(img, torch.zeros(0, 4), cfg.test_size, max_size=cfg.max_size)
        pixels, mask = pad_batch([normalize(img)])
        logits, boxes = model(pixels.to(device), mask.to(device))
        scores, labels = logits[-1, 0].softmax(-1)[:, :-1].max(-1)
        h, w = img.shape[-2:]
        scale = torch.tensor([im.width, im.height, im.width, im.height], device=boxes.device)
        xyxy = box_convert(boxes[-1, 0], "cxcywh", "xyxy") * scale
        out[im.image_id] = Detections(xyxy.cpu().numpy(), scores.cpu().numpy(), labels.cpu().numpy())
    return {k: v for part in ranks.all_gather_objects(out) for k, v in part.items()}


def train_and_evaluate(cfg: DetrTransferConfig, loaded: LoadedTrunk, device: torch.device, *, out_dir: Path):
    """(metrics, split sizes) of the run; the protocol wrapper writes the record."""
    torch.manual_seed(cfg.seed)
    train_set, test_set = load_sets(cfg)
    if not isinstance(test_set, COCODetectionSet):  # VOC layout: scored with COCO AP on the same boxes
        test_set = coco_from_voc(test_set, out_dir / "test_instances.json")  # same file from every process
    detr = build_detr(loaded.trunk, cfg, len(train_set.classes)).to(device)
    summary = train(
        detr,
        train_set,
        cfg,
        device=device,
        state_path=out_dir / "detr_state.pth",
        key=state_key(loaded, cfg, ignore=RESUMABLE_CHANGES),
    )
    metrics = coco_metrics(predict(detr, test_set, cfg, device=device), test_set, masks=False)
    metrics.update(
        final_loss=summary["final_loss"],
        iterations=float(summary["iterations"]),
        skipped_boxes=float(len(train_set.skipped) + len(test_set.skipped)),
    )
    return metrics, {"train": len(train_set.images), "test": len(test_set.images)}


def run_detr(cfg: DetrTransferConfig, checkpoint: str, out_dir: str | Path) -> ResultRecord:
    """Fine-tune DETR on the trunk and evaluate; write out_dir/result.json (+ the merged config)."""
    validate(cfg)
    if importlib.util.find_spec("transformers") is None:
        raise ValueError(
            "the DETR protocol needs Hugging Face transformers: pip install -e '.[detr]' (transformers>=5)"
        )
    cfg = resolve_fields(cfg)
    out_dir = Path(out_dir)
    durable.write_json(out_dir / "detr_config.json", asdict(cfg))

    def body(loaded, device):
        return train_and_evaluate(cfg, loaded, device, out_dir=out_dir)

    return run_and_record(
        "detr",
        cfg,
        checkpoint,
        out_dir=out_dir,
        body=body,
        global_batch=cfg.batch_size,
    )
