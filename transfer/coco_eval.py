"""COCO box / mask AP with pycocotools' COCOeval (the evaluator Detectron2's COCOEvaluator wraps).

Predictions become a COCO result list (xywh boxes, COCO category ids, RLE masks) scored against
the original annotation file, so crowd regions and the official area ranges apply. Reported per
IoU type (``box`` / ``mask``): AP (IoU 0.50:0.95), AP50, AP75, APs, APm, APl in percent, and box AP
per class. A statistic with no ground truth (e.g. APl without large objects) is NaN, as in Detectron2.
"""

from __future__ import annotations

import contextlib
import io
from typing import Any

import numpy as np

from transfer.coco_detection import COCODetectionSet
from transfer.voc_eval import Detections

STATS = ["AP", "AP50", "AP75", "APs", "APm", "APl"]


def encode_masks(masks: np.ndarray) -> list[dict]:
    """(N, H, W) binary masks -> COCO RLEs with str counts (JSON-serialisable)."""
    from pycocotools import mask as mask_utils

    if len(masks) == 0:
        return []
    rles = mask_utils.encode(np.asfortranarray(masks.astype(np.uint8).transpose(1, 2, 0)))
    for r in rles:
        r["counts"] = r["counts"].decode("ascii")
    return rles


def coco_results(
    predictions: dict[int, Detections], data: COCODetectionSet, iou_type: str
) -> list[dict[str, Any]]:
    """The COCO result-file entries of ``predictions`` for ``iou_type`` bbox or segm (masks without
    boxes, so COCOeval takes the mask area for the size ranges, as Detectron2 does)."""
    out = []
    for image_id, det in predictions.items():
        for k in range(len(det.scores)):
            entry = {
                "image_id": int(image_id),
                "category_id": data.category_ids[int(det.labels[k])],
                "score": float(det.scores[k]),
            }
            if iou_type == "segm":
                entry["segmentation"] = det.masks[k]
            else:
                x0, y0, x1, y1 = (float(v) for v in det.boxes[k])
                entry["bbox"] = [x0, y0, x1 - x0, y1 - y0]
            out.append(entry)
    return out


def coco_metrics(
    predictions: dict[int, Detections], data: COCODetectionSet, *, masks: bool
) -> dict[str, float]:
    """box_* (and mask_* when ``masks``) COCO metrics in percent over the images of ``data``."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(data.annotation_file))
    metrics: dict[str, float] = {}
    for iou_type, prefix in [("bbox", "box"), ("segm", "mask")][: 1 + masks]:
        results = coco_results(predictions, data, iou_type)
        if not results:
            metrics.update({f"{prefix}_{s}": 0.0 for s in STATS})
            continue
        with contextlib.redirect_stdout(io.StringIO()):
            dt = gt.loadRes(results)
            ev = COCOeval(gt, dt, iou_type)
            ev.params.imgIds = [im.image_id for im in data.images]
            ev.params.catIds = list(data.category_ids)
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
        metrics.update(
            {f"{prefix}_{s}": float(100 * v) if v >= 0 else float("nan") for s, v in zip(STATS, ev.stats[:6])}
        )
        if iou_type == "bbox":
            precision = ev.eval["precision"]  # (iou, recall, class, area, max dets)
            for k, name in enumerate(data.classes):
                p = precision[:, :, k, 0, -1]
                metrics[f"box_AP_{name}"] = float(100 * p[p > -1].mean()) if (p > -1).any() else float("nan")
    return metrics
