"""Pascal VOC detection AP, computed as the VOC devkit (and Detectron2's PascalVOCDetectionEvaluator) does.

Per class and IoU threshold: detections of all images sorted by score; a detection is a true
positive when its best-overlapping ground-truth box (IoU with VOC's +1 pixel widths) exceeds
the threshold, is not ``difficult`` and was not matched before; matching a difficult box counts
neither way. AP is the 11-point VOC07 metric or the area under the interpolated curve (VOC2010+).
Reported: AP (mean over IoU 0.50:0.95), AP50, AP75, and AP50 per class. Predictions are rounded
as VOC result files write them (score to 3 decimals, corners to 0.1 px) so the numbers are
identical to Detectron2's evaluator on the same predictions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from transfer.voc_detection import VOCImage


@dataclass
class Detections:
    """One image's predictions: 0-based (N, 4) xyxy boxes, (N,) scores, (N,) class indices, and for
    Mask R-CNN N COCO RLE masks (scored by transfer/coco_eval.py)."""

    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    masks: list[dict] | None = None


def voc_ap(recall: np.ndarray, precision: np.ndarray, *, use_07_metric: bool) -> float:
    """AP in [0, 1] from a precision/recall curve."""
    if use_07_metric:
        return float(
            sum(
                (precision[recall >= t].max() if (recall >= t).any() else 0.0)
                for t in np.arange(0.0, 1.1, 0.1)
            )
            / 11.0
        )
    mrec = np.concatenate(([0.0], recall, [1.0]))
    mpre = np.concatenate(([0.0], precision, [0.0]))
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    i = np.where(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1]))


def class_ap(
    cls: int,
    predictions: dict[str, Detections],
    ground_truth: list[VOCImage],
    *,
    iou: float,
    use_07_metric: bool,
) -> float:
    gt = {}
    n_pos = 0
    for im in ground_truth:
        keep = im.labels == cls
        gt[im.image_id] = (im.boxes[keep], im.difficult[keep], np.zeros(int(keep.sum()), dtype=bool))
        n_pos += int((~im.difficult[keep]).sum())
    ids, scores, boxes = [], [], []
    for image_id, det in predictions.items():
        keep = det.labels == cls
        ids += [image_id] * int(keep.sum())
        scores.append(np.round(det.scores[keep].astype(np.float64), 3))
        b = det.boxes[keep].astype(np.float64).copy()
        b[:, :2] += 1.0  # back to VOC's 1-based corners
        boxes.append(np.round(b, 1))
    if n_pos == 0:
        return float("nan")
    if not ids:
        return 0.0
    scores_a, boxes_a = np.concatenate(scores), np.concatenate(boxes)
    order = np.argsort(-scores_a)
    tp, fp = np.zeros(len(order)), np.zeros(len(order))
    for d, k in enumerate(order):
        gt_boxes, difficult, matched = gt[ids[k]]
        bb = boxes_a[k]
        best = -np.inf
        if len(gt_boxes):
            iw = np.maximum(np.minimum(gt_boxes[:, 2], bb[2]) - np.maximum(gt_boxes[:, 0], bb[0]) + 1.0, 0.0)
            ih = np.maximum(np.minimum(gt_boxes[:, 3], bb[3]) - np.maximum(gt_boxes[:, 1], bb[1]) + 1.0, 0.0)
            inter = iw * ih
            union = (
                (bb[2] - bb[0] + 1.0) * (bb[3] - bb[1] + 1.0)
                + (gt_boxes[:, 2] - gt_boxes[:, 0] + 1.0) * (gt_boxes[:, 3] - gt_boxes[:, 1] + 1.0)
                - inter
            )
            overlaps = inter / union
            j = int(np.argmax(overlaps))
            best = overlaps[j]
        if best > iou:
            if not difficult[j]:
                if matched[j]:
                    fp[d] = 1.0
                else:
                    tp[d], matched[j] = 1.0, True
        else:
            fp[d] = 1.0
    tp, fp = np.cumsum(tp), np.cumsum(fp)
    recall = tp / n_pos
    precision = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
    return voc_ap(recall, precision, use_07_metric=use_07_metric)


def voc_detection_metrics(
    predictions: dict[str, Detections],
    ground_truth: list[VOCImage],
    classes: list[str],
    *,
    use_07_metric: bool = True,
) -> dict[str, float]:
    """AP / AP50 / AP75 (%) over ``classes``; images absent from ``predictions`` have no detections."""
    unknown = set(predictions) - {im.image_id for im in ground_truth}
    if unknown:
        raise ValueError(f"predictions for images that are not in the ground truth: {sorted(unknown)[:5]}")
    per_iou: dict[int, list[float]] = {}
    for t in range(50, 100, 5):
        per_iou[t] = [
            100.0 * class_ap(c, predictions, ground_truth, iou=t / 100.0, use_07_metric=use_07_metric)
            for c in range(len(classes))
        ]
    out = {
        "AP": float(np.mean([np.mean(v) for v in per_iou.values()])),
        "AP50": float(np.mean(per_iou[50])),
        "AP75": float(np.mean(per_iou[75])),
    }
    for c, name in enumerate(classes):
        out[f"AP50_{name}"] = per_iou[50][c]
    return out
