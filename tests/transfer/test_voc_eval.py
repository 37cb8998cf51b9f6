"""VOC detection AP against hand computations, and against Detectron2's PascalVOCDetectionEvaluator
on identical predictions (when Detectron2 is installed, as in CI)."""

import numpy as np
import pytest

from transfer.voc_detection import VOCImage, load_voc_detection
from transfer.voc_eval import Detections, voc_ap, voc_detection_metrics


def image(image_id, boxes, labels, difficult=None):
    boxes = np.array(boxes, dtype=float).reshape(-1, 4)
    return VOCImage(
        image_id, None, 100, 100, boxes, np.array(labels), np.array(difficult or [False] * len(labels))
    )


def test_hand_computed_ap():
    # two objects of class 0; detections by score: hit, miss, hit
    # -> precision 1, 1/2, 2/3 at recall 1/2, 1/2, 1
    gt = [image("a", [[11, 11, 30, 30], [51, 51, 80, 80]], [0, 0])]
    pred = {
        "a": Detections(
            np.array([[10, 10, 30, 30], [0, 0, 5, 5], [50, 50, 80, 80]], float),
            np.array([0.9, 0.8, 0.7]),
            np.array([0, 0, 0]),
        )
    }
    m07 = voc_detection_metrics(pred, gt, ["x"], use_07_metric=True)
    assert m07["AP50"] == pytest.approx(100 * (6 * 1 + 5 * 2 / 3) / 11)
    m12 = voc_detection_metrics(pred, gt, ["x"], use_07_metric=False)
    assert m12["AP50"] == pytest.approx(100 * (0.5 * 1 + 0.5 * 2 / 3))
    assert m12["AP"] == pytest.approx(m12["AP50"])  # exact boxes: the same at every IoU threshold


def test_duplicates_and_difficult_boxes():
    gt = [image("a", [[11, 11, 30, 30], [51, 51, 80, 80]], [0, 0], [False, True])]
    boxes = np.array([[10, 10, 30, 30], [10, 10, 30, 30], [50, 50, 80, 80]], float)
    pred = {"a": Detections(boxes, np.array([0.9, 0.8, 0.7]), np.array([0, 0, 0]))}
    # hit (recall 1), duplicate = false positive, difficult match = ignored: 11-point AP = 1
    assert voc_detection_metrics(pred, gt, ["x"])["AP50"] == pytest.approx(100.0)
    # a class without predictions scores 0; an image without predictions is fine
    two = [image("a", [[11, 11, 30, 30]], [0]), image("b", [[1, 1, 9, 9]], [1])]
    m = voc_detection_metrics({"a": Detections(boxes[:1], np.array([0.5]), np.array([0]))}, two, ["x", "y"])
    assert m["AP50_x"] == pytest.approx(100.0) and m["AP50_y"] == 0.0 and m["AP50"] == pytest.approx(50.0)
    with pytest.raises(ValueError, match="not in the ground truth"):
        voc_detection_metrics({"zzz": Detections(boxes, np.ones(3), np.zeros(3))}, two, ["x", "y"])


def test_voc_ap_area_is_the_envelope_integral():
    rec, prec = np.array([0.25, 0.5, 0.5, 0.75]), np.array([1.0, 0.5, 0.67, 0.6])
    assert voc_ap(rec, prec, use_07_metric=False) == pytest.approx(0.25 * 1 + 0.25 * 0.67 + 0.25 * 0.6)


def random_predictions(images, n_classes, seed):
    rng = np.random.default_rng(seed)
    out = {}
    for im in images:
        jitter = im.boxes_0based() + rng.normal(0, 6, im.boxes.shape)
        noise = rng.uniform(0, 300, (5, 2))
        noise = np.concatenate([noise, noise + rng.uniform(10, 120, (5, 2))], axis=1)
        boxes = np.concatenate([jitter, noise]).astype(np.float32)
        labels = np.concatenate([im.labels, rng.integers(0, n_classes, 5)])
        out[im.image_id] = Detections(boxes, rng.uniform(0, 1, len(boxes)).astype(np.float32), labels)
    return out


@pytest.mark.parametrize("year", [2007, 2012])
def test_agrees_with_detectron2(bccd_mini, year):
    pytest.importorskip("detectron2", reason="no Detectron2 (tests/install-detectron2.sh installs it)")
    import torch
    from detectron2.data import MetadataCatalog
    from detectron2.evaluation import PascalVOCDetectionEvaluator
    from detectron2.structures import Boxes, Instances

    classes = ["RBC", "WBC", "Platelets"]
    data = load_voc_detection([bccd_mini], "test", classes)
    name = f"test_bccd_mini_{year}"
    MetadataCatalog.get(name).set(thing_classes=classes, dirname=str(bccd_mini), split="test", year=year)
    preds = random_predictions(data.images, 3, seed=year)
    ev = PascalVOCDetectionEvaluator(name)
    ev.reset()
    for image_id, det in preds.items():
        inst = Instances(
            (480, 640),
            pred_boxes=Boxes(torch.from_numpy(det.boxes)),
            scores=torch.from_numpy(det.scores),
            pred_classes=torch.from_numpy(det.labels),
        )
        ev.process([{"image_id": image_id}], [{"instances": inst}])
    theirs = ev.evaluate()["bbox"]
    ours = voc_detection_metrics(preds, data.images, classes, use_07_metric=year == 2007)
    assert 0 < ours["AP50"] < 100
    for key in ("AP", "AP50", "AP75"):
        assert ours[key] == pytest.approx(theirs[key], abs=1e-9)
