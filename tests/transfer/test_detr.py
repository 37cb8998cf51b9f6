"""COCO DETR transfer: the official augmentation moves boxes with their pixels, the set loss equals a
hand-written Hungarian matching and loss, the backbone is the trunk (frozen BatchNorm, frozen stem and res2),
and the protocol runs end to end on a COCO-format tree and on VOC-layout BCCD, resumes at the signal as if
never stopped, and runs data-parallel in 2 gloo processes with the numbers of one process."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment
from torchvision.ops import box_convert, generalized_box_iou

from benchmark.trunk import TrunkSpec, load_trunk
from swavbench.checks import rehearsal_data
from swavbench.core import interrupt
from swavbench.core.config import load_dataclass
from transfer.cli import TRANSFER_CONFIGS
from transfer.detr import DetrTransferConfig, SetLoss, augment, build_detr, resized_size, run_detr

TINY = [  # the smoke preset at seconds: 2 epochs of 3 batches of 2 on 6-8 small images
    "epochs=2",
    "lr_drop=1",
    "batch_size=2",
    "hidden_dim=32",
    "enc_layers=1",
    "dec_layers=2",
    "ffn_dim=64",
    "num_queries=30",
    "scales=[96,128]",
    "max_size=160",
    "crop_scales=[96]",
    "crop_size=[64,96]",
    "test_size=128",
    "num_workers=0",
    "checkpoint_every=0",
]


def config(*overrides: str) -> DetrTransferConfig:
    return load_dataclass(
        DetrTransferConfig, TRANSFER_CONFIGS, "detr-bccd-small", overrides=[*TINY, *overrides]
    )


def coco_overrides(root: Path) -> list[str]:
    return [
        "format=coco",
        "classes=[]",
        f"train_roots=[{root}]",
        f"train_annotations=[{root / 'train.json'}]",
        f"test_root={root}",
        f"test_annotations={root / 'test.json'}",
    ]


def test_resized_size_is_the_official_rule():
    # shorter side to 800 unless the longer would pass 1333 (then round(1333 * short / long))
    assert resized_size(480, 640, 800, max_size=1333) == (800, 1066)
    assert resized_size(1000, 100, 800, max_size=1333) == (1330, 133)
    assert resized_size(600, 400, 400, max_size=None) == (600, 400)  # already there: unchanged
    assert resized_size(300, 500, 450, max_size=None) == (450, 750)


def test_augmentation_moves_boxes_with_their_pixels():
    """Each box painted in its own colour: after flip / resize / crop the colour inside each returned box is
    still its own, dropped boxes are the ones cropped away, and sizes follow the configured scales."""
    cfg = DetrTransferConfig(scales=[96, 128], max_size=200, crop_scales=[120], crop_size=[70, 110])
    h, w = 150, 210
    boxes = torch.tensor([[10, 20, 60, 90], [120, 30, 200, 140], [70, 100, 110, 148]], dtype=torch.float32)
    colours = torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0]])
    img = torch.zeros(3, h, w)
    for (x0, y0, x1, y1), c in zip(boxes.int().tolist(), colours):
        img[:, y0:y1, x0:x1] = c[:, None, None]
    labels = torch.tensor([0, 1, 2])
    seen_crop = seen_flip = 0
    for seed in range(40):
        out, out_boxes, out_labels = augment(
            img, boxes, labels, cfg=cfg, g=torch.Generator().manual_seed(seed)
        )
        oh, ow = out.shape[-2:]
        assert max(oh, ow) <= 200 and (min(oh, ow) in (96, 128) or max(oh, ow) >= 199)
        assert len(out_boxes) == len(out_labels) and (out_boxes[:, 2:] > out_boxes[:, :2]).all()
        assert (out_boxes[:, [0, 2]] <= ow + 1e-4).all() and (out_boxes[:, [1, 3]] <= oh + 1e-4).all()
        seen_crop += len(out_labels) < 3
        for (x0, y0, x1, y1), k in zip(out_boxes.tolist(), out_labels.tolist()):
            # the inner half of the box: away from resampled edges
            cx, cy, hw, hh = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 4, (y1 - y0) / 4
            patch = out[:, int(cy - hh) : int(math.ceil(cy + hh)), int(cx - hw) : int(math.ceil(cx + hw))]
            if patch.numel() == 0:
                continue
            assert torch.allclose(patch.mean((1, 2)), colours[k], atol=0.15), (seed, k, patch.mean((1, 2)))
            if k == 0 and cx > ow / 2:
                seen_flip += 1
    assert seen_crop > 0 and seen_flip > 0  # both branches drawn over 40 seeds


def hand_set_loss(logits, boxes, targets, *, eos: float, num_boxes: float) -> float:
    """Independent DETR loss: scipy Hungarian matching on -p(class) + 5 L1 - 2 GIoU, weighted cross-entropy
    (no-object weight ``eos``), 5 L1 + 2 (1 - GIoU) over matched boxes / num_boxes, summed over layers."""
    total = 0.0
    n_cls = logits.shape[-1] - 1
    for layer in range(logits.shape[0]):
        ce_num = ce_den = l1 = giou = 0.0
        for b, t in enumerate(targets):
            prob = logits[layer, b].softmax(-1)
            pred = boxes[layer, b]
            cost = (
                -prob[:, t["class_labels"]]
                + 5 * torch.cdist(pred, t["boxes"], p=1)
                - 2
                * generalized_box_iou(
                    box_convert(pred, "cxcywh", "xyxy"), box_convert(t["boxes"], "cxcywh", "xyxy")
                )
            )
            rows, cols = linear_sum_assignment(cost.numpy())
            target = torch.full((logits.shape[2],), n_cls)
            target[rows] = t["class_labels"][cols]
            nll = -logits[layer, b].log_softmax(-1)[torch.arange(len(target)), target]
            weight = torch.where(target == n_cls, eos, 1.0)
            ce_num += float((weight * nll).sum())
            ce_den += float(weight.sum())
            l1 += float((pred[rows] - t["boxes"][cols]).abs().sum())
            g = generalized_box_iou(
                box_convert(pred[rows], "cxcywh", "xyxy"), box_convert(t["boxes"][cols], "cxcywh", "xyxy")
            )
            giou += float((1 - g.diag()).sum())
        total += ce_num / ce_den + 5 * l1 / num_boxes + 2 * giou / num_boxes
    return total


def test_set_loss_equals_a_hand_written_matching_and_loss():
    gen = torch.Generator().manual_seed(0)
    layers, batch, queries, classes = 3, 2, 7, 4
    logits = torch.randn(layers, batch, queries, classes + 1, generator=gen)
    centres = 0.2 + 0.6 * torch.rand(layers, batch, queries, 2, generator=gen)
    boxes = torch.cat([centres, 0.05 + 0.3 * torch.rand(layers, batch, queries, 2, generator=gen)], -1)
    targets = []
    for n in (3, 5):
        c = 0.2 + 0.6 * torch.rand(n, 2, generator=gen)
        wh = 0.05 + 0.3 * torch.rand(n, 2, generator=gen)
        targets.append(
            {"class_labels": torch.randint(classes, (n,), generator=gen), "boxes": torch.cat([c, wh], 1)}
        )
    cfg = DetrTransferConfig()
    ours = SetLoss(cfg, classes)(logits, boxes, targets)
    expected = hand_set_loss(logits, boxes, targets, eos=cfg.eos_coef, num_boxes=8.0)
    assert float(ours["loss"]) == pytest.approx(expected, rel=1e-5)


def test_backbone_is_the_trunk_with_frozen_batchnorm():
    from pretrain.model import build_trunk

    trunk = build_trunk("resnet18", width_multiplier=0.25)
    with torch.no_grad():  # non-trivial BatchNorm statistics and affine parameters
        for m in trunk.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5), m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5), m.bias.uniform_(-0.2, 0.2)
    reference = build_trunk("resnet18", width_multiplier=0.25)
    reference.load_state_dict(trunk.state_dict())
    reference.eval()
    detr = build_detr(trunk, config(), 3)
    features = detr.model.backbone.model
    x = torch.randn(2, 3, 64, 96)
    r = reference
    expected = r.layer4(r.layer3(r.layer2(r.layer1(r.maxpool(r.relu(r.bn1(r.conv1(x))))))))
    detr.train()  # frozen BatchNorm: the trunk's statistics even in training mode
    with torch.no_grad():
        assert torch.allclose(features(x)[0], expected, atol=1e-5)
    trainable = {n.split(".")[0] for n, p in features.trunk.named_parameters() if p.requires_grad}
    assert trainable == {"layer2", "layer3", "layer4"}  # stem and res2 frozen, as the official backbone
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in detr.modules())


def check_record(out: Path, *, train: int, test: int) -> dict:
    rec = json.loads((out / "result.json").read_text())
    assert rec["status"] == "ok" and (rec["protocol"], rec["benchmark"]) == ("detection", "detection-detr"), (
        rec.get("error")
    )
    assert rec["config"]["backend"] == "transformers" and rec["splits"] == {"train": train, "test": test}
    for key in ("box_AP", "box_AP50", "box_AP75"):
        assert 0.0 <= rec["metrics"][key] <= 100.0
    return rec


def test_smoke_on_a_coco_tree_resumes_at_the_signal_as_if_never_stopped(bccd_coco, tmp_path, monkeypatch):
    """2 epochs x 3 iterations on the 6 BCCD training images in COCO format (the degenerate box skipped);
    a stop requested during iteration 3 saves there, and the re-run continues to the uninterrupted losses
    (dropout 0: dropout draws are not part of the saved state)."""
    import transfer.detr as detr_module

    cfg = config(*coco_overrides(bccd_coco), "dropout=0")
    with pytest.warns(UserWarning, match="no area"):
        run_detr(cfg, "random", tmp_path / "full")
    full = torch.load(tmp_path / "full" / "detr_state.pth", weights_only=True)
    assert full["batch"] == 6 and len(full["history"]) == 6
    rec = check_record(tmp_path / "full", train=6, test=4)
    assert (
        rec["metrics"]["skipped_boxes"] == 1.0 and rec["metrics"]["final_loss"] == full["history"][-1]["loss"]
    )

    original = detr_module.lr_factor

    def stop_during_third(it, ipe, c):
        if it == 2:
            interrupt.request()
        return original(it, ipe, c)

    monkeypatch.setattr(detr_module, "lr_factor", stop_during_third)
    try:
        with pytest.raises(interrupt.Interrupted, match="iteration 3"), pytest.warns(UserWarning):
            run_detr(cfg, "random", tmp_path / "stopped")
    finally:
        interrupt.clear()
    assert torch.load(tmp_path / "stopped" / "detr_state.pth", weights_only=True)["batch"] == 3
    monkeypatch.setattr(detr_module, "lr_factor", original)
    with pytest.warns(UserWarning):
        run_detr(cfg, "random", tmp_path / "stopped")
    resumed = torch.load(tmp_path / "stopped" / "detr_state.pth", weights_only=True)
    for a, b in zip(resumed["history"], full["history"], strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5), (a, b)
    assert check_record(tmp_path / "stopped", train=6, test=4)["metrics"]["box_AP"] == pytest.approx(
        rec["metrics"]["box_AP"], abs=1e-6
    )


def test_voc_layout_is_scored_with_coco_ap_on_its_own_boxes(bccd_mini, tmp_path):
    """The smoke preset's layout: VOC data, written as a COCO file of the test boxes (difficult as crowd)."""
    cfg = config(f"train_roots=[{bccd_mini}]", f"test_root={bccd_mini}", "epochs=1")
    with pytest.warns(UserWarning):
        run_detr(cfg, "random", tmp_path / "voc")
    check_record(tmp_path / "voc", train=6, test=4)
    gt = json.loads((tmp_path / "voc" / "test_instances.json").read_text())
    from transfer.voc_detection import load_voc_detection

    voc = load_voc_detection([bccd_mini], "test", ["RBC", "WBC", "Platelets"])
    assert len(gt["annotations"]) == sum(len(im.boxes) for im in voc.images)
    first = voc.images[0]
    x0, y0, x1, y1 = first.boxes[0]
    assert gt["annotations"][0]["bbox"] == pytest.approx([x0 - 1, y0 - 1, x1 - x0 + 1, y1 - y0 + 1])


def test_bad_settings_are_refused_before_loading_anything(tmp_path):
    for bad, match in (
        ("format=yolo", "format must be voc or coco"),
        ("init=kaiming", "init must be detr or transformers"),
        ("backend=official", "backend must be transformers"),
        ("hidden_dim=30", "multiple of nheads"),
        ("crop_size=[200,100]", "crop_size"),
    ):
        with pytest.raises(ValueError, match=match):
            run_detr(config(bad), "random", tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_two_processes_run_as_one(tmp_path):
    """One job in 2 gloo processes (one image each per batch) equals one process: same losses at every
    iteration and the same AP. As in the official code, the classification loss is averaged per process
    and images are zero-padded to their batch's largest: so the generated tree has 2 boxes in every image
    of one size, crops never cut one (crop_size over the image) and one training scale keeps the sizes
    equal, the case where the official recipe is world-size free."""
    from ddp_helpers import run_ddp, run_protocols

    root = rehearsal_data.write_all(tmp_path / "data") / "coco"
    cfg = config(
        "format=coco",
        "classes=[]",
        f"train_roots=[{root / 'train2017'}]",
        f"train_annotations=[{root / 'annotations' / 'instances_train2017.json'}]",
        f"test_root={root / 'val2017'}",
        f"test_annotations={root / 'annotations' / 'instances_val2017.json'}",
        "dropout=0",
        "crop_size=[1000,1000]",
        "scales=[128]",
        "epochs=2",
        "num_queries=10",
    )
    one = run_detr(cfg, "random", tmp_path / "one")
    two = run_ddp(run_protocols, 2, [("detection", cfg, "random", str(tmp_path / "two"))])
    assert json.dumps(two[0][0].metrics, sort_keys=True) == json.dumps(two[1][0].metrics, sort_keys=True)
    rec = check_record(tmp_path / "two", train=8, test=4)
    assert rec["world_size"] == 2 and rec["global_batch"] == 2
    h1 = torch.load(tmp_path / "one" / "detr_state.pth", weights_only=True)["history"]
    h2 = torch.load(tmp_path / "two" / "detr_state.pth", weights_only=True)["history"]
    assert len(h1) == len(h2) == 8
    worst = max(abs(a[k] - b[k]) / max(abs(a[k]), 1e-12) for a, b in zip(h1, h2) for k in a)
    print(f"largest relative loss difference, 2 processes vs 1: {worst:.2e}")
    assert worst < 1e-4  # measured 1.3e-7 with 1 and 2 threads: float summation order only
    for k in ("box_AP", "box_AP50"):
        assert one.metrics[k] == pytest.approx(rec["metrics"][k], abs=1e-3)


def test_random_and_loaded_trunks_differ_only_by_weights(tmp_path):
    """A trunk file's weights reach the detector (not a fresh initialisation)."""
    from pretrain.model import build_trunk

    trunk = build_trunk("resnet18", width_multiplier=0.25)
    torch.save(trunk.state_dict(), tmp_path / "tv.pth")
    loaded = load_trunk(tmp_path / "tv.pth", TrunkSpec("resnet18", False, 0.25))
    detr = build_detr(loaded.trunk, config(), 3)
    got = detr.model.backbone.model.trunk.layer3[0].conv1.weight
    assert torch.equal(got, trunk.layer3[0].conv1.weight)
    assert np.isfinite(got.detach().numpy()).all()
