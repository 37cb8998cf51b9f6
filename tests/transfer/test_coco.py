"""COCO format: the instances loader (sparse ids, crowd, degenerate boxes, masks, errors), COCO box / mask
AP against hand-computed values and against Detectron2's COCOEvaluator, and Mask R-CNN end to end with
both backends on real BCCD images described by COCO files."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from coco_files import COCO_IDS, ellipse

from swavbench.core.config import load_dataclass
from transfer.cli import TRANSFER_CONFIGS
from transfer.coco_detection import load_coco_detection
from transfer.coco_eval import coco_metrics, encode_masks
from transfer.detection import DetectionConfig, run_detection
from transfer.voc_eval import Detections


def write_json(path: Path, data: dict) -> Path:
    path.write_text(json.dumps(data))
    return path


def shoelace(poly: list[float]) -> float:
    xs, ys = np.array(poly[0::2]), np.array(poly[1::2])
    return 0.5 * abs(float(np.dot(xs, np.roll(ys, -1)) - np.dot(ys, np.roll(xs, -1))))


def test_loader_maps_ids_drops_crowd_and_degenerate_boxes(bccd_coco):
    raw = json.loads((bccd_coco / "train.json").read_text())
    with pytest.warns(UserWarning, match="skipped 1 box"):
        train = load_coco_detection(bccd_coco / "train.json", bccd_coco)
    assert train.classes == list(COCO_IDS) and train.category_ids == [3, 7, 11]
    assert (
        sum(len(im.labels) for im in train.images) == len(raw["annotations"]) - 1
    )  # BloodImage_00343's empty box
    first = train.images[0]
    annos = [a for a in raw["annotations"] if a["image_id"] == first.image_id and a["bbox"][2] > 0]
    x, y, w, h = annos[0]["bbox"]
    np.testing.assert_allclose(first.boxes[0], [x, y, x + w, y + h])
    assert first.labels[0] == list(COCO_IDS.values()).index(annos[0]["category_id"])
    masks = first.masks()
    assert masks.shape == (len(annos), first.height, first.width) and masks.dtype == np.uint8
    for m, a in zip(masks, annos):  # rasterised ellipse area ~ its polygon area (boundary pixels aside)
        assert (
            abs(int(m.sum()) - shoelace(a["segmentation"][0])) <= 0.06 * shoelace(a["segmentation"][0]) + 40
        )
    test = load_coco_detection(bccd_coco / "test.json", bccd_coco)
    assert test.crowd == 1 and len(test.images) == 4
    only_wbc = load_coco_detection(bccd_coco / "test.json", bccd_coco, ["WBC"])
    assert only_wbc.category_ids == [7] and all((im.labels == 0).all() for im in only_wbc.images)


def test_loader_errors_name_the_file(bccd_coco, tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.json is missing"):
        load_coco_detection(tmp_path / "missing.json", bccd_coco)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="bad.json is not valid JSON"):
        load_coco_detection(tmp_path / "bad.json", bccd_coco)
    data = json.loads((bccd_coco / "test.json").read_text())
    data["annotations"][0]["category_id"] = 99
    with pytest.raises(ValueError, match="category_id 99"):
        load_coco_detection(write_json(tmp_path / "cat.json", data), bccd_coco)
    data = json.loads((bccd_coco / "test.json").read_text())
    data["images"][0]["file_name"] = "JPEGImages/nope.jpg"
    with pytest.raises(FileNotFoundError, match="nope.jpg"):
        load_coco_detection(write_json(tmp_path / "img.json", data), bccd_coco)
    with pytest.raises(ValueError, match="not categories"):
        load_coco_detection(bccd_coco / "test.json", bccd_coco, ["dog"])


def tiny_gt(tmp_path: Path, crowd: bool = False) -> Path:
    """One 100x100 image, category id 5.

    GT A = [10, 10, 20, 20] and B = [50, 50, 30, 30] (xywh), or A + a crowd region."""
    (tmp_path / "img.jpg").write_bytes(b"")  # only the path is checked
    boxes = [[10, 10, 20, 20], [50, 50, 30, 30]]
    annos = [
        {
            "id": i + 1,
            "image_id": 1,
            "category_id": 5,
            "bbox": b,
            "area": b[2] * b[3],
            "iscrowd": int(crowd and i == 1),
            "segmentation": [[b[0], b[1], b[0] + b[2], b[1], b[0] + b[2], b[1] + b[3], b[0], b[1] + b[3]]],
        }
        for i, b in enumerate(boxes)
    ]
    return write_json(
        tmp_path / "gt.json",
        {
            "images": [{"id": 1, "file_name": "img.jpg", "width": 100, "height": 100}],
            "annotations": annos,
            "categories": [{"id": 5, "name": "cell"}],
        },
    )


def box_mask(box: list[float]) -> np.ndarray:
    m = np.zeros((100, 100), dtype=np.uint8)
    m[int(box[1]) : int(box[3]), int(box[0]) : int(box[2])] = 1
    return m


def test_hand_computed_coco_ap(tmp_path):
    data = load_coco_detection(tiny_gt(tmp_path), tmp_path)
    fp, tp = [70.0, 0.0, 90.0, 20.0], [10.0, 10.0, 30.0, 30.0]  # no overlap; exactly A
    det = {
        1: Detections(
            np.array([fp, tp]),
            np.array([0.9, 0.8]),
            np.array([0, 0]),
            encode_masks(np.stack([box_mask(fp), box_mask(tp)])),
        )
    }
    m = coco_metrics(det, data, masks=True)
    # ranked FP, TP: recall 0 -> 0.5 with precision 0.5; COCO's 101 recall points, those <= 0.5 get 0.5
    expected = 100 * 0.5 * sum(r <= 0.5 + 1e-12 for r in np.linspace(0, 1, 101)) / 101
    for key in ("box_AP", "box_AP50", "box_AP75", "box_APs", "mask_AP", "mask_AP50"):
        assert m[key] == pytest.approx(expected, abs=1e-6), key
    assert math.isnan(m["box_APm"]) and math.isnan(m["box_APl"])  # no medium / large ground truth
    assert m["box_AP_cell"] == pytest.approx(expected, abs=1e-6)
    perfect = {
        1: Detections(
            np.array([tp, [50.0, 50.0, 80.0, 80.0]]),
            np.array([0.9, 0.8]),
            np.array([0, 0]),
            encode_masks(np.stack([box_mask(tp), box_mask([50, 50, 80, 80])])),
        )
    }
    m = coco_metrics(perfect, data, masks=True)
    assert m["box_AP"] == pytest.approx(100.0) and m["mask_AP"] == pytest.approx(100.0)


def test_detections_on_crowd_regions_are_ignored(tmp_path):
    data = load_coco_detection(tiny_gt(tmp_path, crowd=True), tmp_path)
    assert data.crowd == 1 and len(data.images[0].labels) == 1
    det = {
        1: Detections(
            np.array([[52.0, 52.0, 78.0, 78.0], [10.0, 10.0, 30.0, 30.0]]),
            np.array([0.9, 0.8]),
            np.array([0, 0]),
        )
    }
    assert coco_metrics(det, data, masks=False)["box_AP"] == pytest.approx(
        100.0
    )  # the crowd hit is neither TP nor FP


def random_predictions(data, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    out = {}
    for im in data.images:
        jitter = im.boxes + rng.normal(0, 4, im.boxes.shape)
        extra = rng.uniform(0, 200, (6, 2))
        boxes = np.concatenate(
            [jitter, np.concatenate([extra, extra + rng.uniform(10, 80, (6, 2))], 1)]
        ).astype(np.float32)
        boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, im.width)
        boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, im.height)
        from pycocotools import mask as mask_utils

        masks = np.stack(
            [
                mask_utils.decode(
                    mask_utils.merge(mask_utils.frPyObjects([ellipse(b.tolist())], im.height, im.width))
                )
                for b in boxes
            ]
        )
        labels = np.concatenate([im.labels, rng.integers(0, 3, 6)])
        out[im.image_id] = (
            Detections(boxes, rng.uniform(0, 1, len(boxes)).astype(np.float32), labels, encode_masks(masks)),
            masks,
        )
    return out


def test_agrees_with_detectron2_coco_evaluator(bccd_coco, tmp_path):
    pytest.importorskip("detectron2", reason="no Detectron2 (tests/install-detectron2.sh installs it)")
    from detectron2.data import MetadataCatalog
    from detectron2.evaluation import COCOEvaluator
    from detectron2.structures import Boxes, Instances

    data = load_coco_detection(bccd_coco / "test.json", bccd_coco)
    name = "test_bccd_coco_agreement"
    MetadataCatalog.get(name).set(
        json_file=str(data.annotation_file),
        thing_classes=data.classes,
        thing_dataset_id_to_contiguous_id={c: i for i, c in enumerate(data.category_ids)},
    )
    preds = random_predictions(data, seed=0)
    ev = COCOEvaluator(
        name, tasks=("bbox", "segm"), distributed=False, output_dir=str(tmp_path), use_fast_impl=False
    )
    ev.reset()
    for im in data.images:
        det, masks = preds[im.image_id]
        inst = Instances(
            (im.height, im.width),
            pred_boxes=Boxes(torch.from_numpy(det.boxes)),
            scores=torch.from_numpy(det.scores),
            pred_classes=torch.from_numpy(det.labels),
            pred_masks=torch.from_numpy(masks).bool(),
        )
        ev.process([{"image_id": im.image_id}], [{"instances": inst}])
    theirs = ev.evaluate()
    ours = coco_metrics({k: v[0] for k, v in preds.items()}, data, masks=True)
    assert 0 < ours["box_AP50"] < 100 and 0 < ours["mask_AP50"] < 100
    for task, prefix in (("bbox", "box"), ("segm", "mask")):
        for key in ("AP", "AP50", "AP75", "APs", "APm"):
            a, b = ours[f"{prefix}_{key}"], theirs[task][key]
            assert (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, abs=1e-9), (task, key)


TINY = [
    "iterations=3",
    "checkpoint_every=2",
    "min_size_train=[160]",
    "max_size_train=224",
    "min_size_test=160",
    "max_size_test=224",
    "rois_per_image=32",
    "num_workers=0",
    "steps=[2]",
    "warmup_iters=1",
    "proposals_test=100",
    "norm=bn",
    "head_norm=bn",
    "lr=0.005",
    "clip_grad_norm=5",
    "batch_size=2",
    "dataset=bccd-coco",
    "detectron2_overrides=[TEST.PRECISE_BN.ENABLED,True,TEST.PRECISE_BN.NUM_ITER,2]",
]


def coco_config(root: Path, *extra: str) -> DetectionConfig:
    return load_dataclass(
        DetectionConfig,
        TRANSFER_CONFIGS,
        "detection-coco-maskrcnn-fpn",
        overrides=[
            f"train_roots=[{root}]",
            f"train_annotations=[{root / 'train.json'}]",
            f"test_root={root}",
            f"test_annotations={root / 'test.json'}",
            *TINY,
            *extra,
        ],
    )


def check_record(out: Path, backend: str) -> dict:
    rec = json.loads((out / "result.json").read_text())
    assert (
        rec["status"] == "ok"
        and (rec["protocol"], rec["benchmark"]) == ("detection", "detection-maskrcnn-fpn")
        and rec["dataset"] == "bccd-coco"
    )
    assert rec["config"]["backend"] == backend and rec["splits"] == {"train": 6, "test": 4}
    for key in ("box_AP", "box_AP50", "box_AP75", "mask_AP", "mask_AP50", "mask_AP75"):
        assert 0.0 <= rec["metrics"][key] <= 100.0, key
    assert rec["metrics"]["skipped_boxes"] == 1.0
    return rec


def test_torchvision_mask_rcnn_end_to_end(bccd_coco, tmp_path):
    cfg = coco_config(
        bccd_coco,
        "backend=torchvision",
        "trunk.arch=resnet18",
        "trunk.small_stem=false",
        "trunk.width_multiplier=0.25",
    )
    out = tmp_path / "mrcnn"
    run_detection(cfg, "random", out)
    check_record(out, "torchvision")
    state = torch.load(out / "detection_state.pth", weights_only=False)
    assert state["batch"] == 3 and all(math.isfinite(h["loss_mask"]) for h in state["history"])


def test_torchvision_mask_rcnn_heads():
    from benchmark.trunk import TrunkSpec, load_trunk
    from transfer.detection_torchvision import build_model

    loaded = load_trunk("random", TrunkSpec("resnet18", True, 0.25), seed=1)
    model = build_model(
        loaded.trunk,
        DetectionConfig(head="fpn", masks=True, format="coco", box_head="4conv1fc", head_norm="bn"),
        3,
    )
    assert (
        model.roi_heads.box_predictor.cls_score.out_features == 4
        and model.roi_heads.mask_predictor.mask_fcn_logits.out_channels == 4
    )
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    trunk_norms = [m for m in loaded.trunk.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(norms) == len(trunk_norms) + 8 + 4 + 4  # + FPN (4 inner, 4 layer) + 4 box convs + 4 mask convs


def test_detectron2_mask_rcnn_end_to_end(bccd_coco, tmp_path):
    pytest.importorskip("detectron2", reason="no Detectron2 (tests/install-detectron2.sh installs it)")
    cfg = coco_config(
        bccd_coco,
        "backend=detectron2",
        "trunk.arch=resnet50",
        "trunk.small_stem=false",
        "trunk.width_multiplier=0.25",
    )
    out = tmp_path / "d2"
    run_detection(cfg, "random", out)
    m = check_record(out, "detectron2")["metrics"]
    for key in (
        "box_AP",
        "box_AP50",
        "mask_AP",
        "mask_AP50",
    ):  # Detectron2's COCOEvaluator on the same predictions
        assert m[key] == pytest.approx(m[f"d2_{key}"], abs=1e-9)
    d2_cfg = (out / "detectron2_config.yaml").read_text()
    assert "MASK_ON: true" in d2_cfg and "NUM_CONV: 4" in d2_cfg and "STRIDE_IN_1X1: false" in d2_cfg


def test_mask_config_is_validated():
    from transfer.detection import validate

    with pytest.raises(ValueError, match="masks=true needs head=fpn"):
        validate(DetectionConfig(masks=True))
    with pytest.raises(ValueError, match="train_annotations"):
        validate(DetectionConfig(format="coco", head="fpn", classes=[]))
