"""COCO instance annotations (``instances_train2017.json`` layout) for the detection protocol.

Boxes are COCO's ``[x, y, w, h]`` in continuous pixels, handed to the models as ``(x, y, x + w, y + h)``
(Detectron2's conversion, so evaluation round-trips exactly). Category ids, sparse in COCO, map to
contiguous indices in id order. Crowd regions are kept out of the training targets (they only mark
regions COCOeval ignores); boxes with no area are skipped with a warning naming the file. Masks
are decoded from polygons or RLE with pycocotools when a run asks for them.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


@dataclass
class COCOImage:
    """One image: (N, 4) xyxy boxes, (N,) contiguous labels, N segmentations (polygon lists or RLE)."""

    image_id: int
    path: Path
    width: int
    height: int
    boxes: np.ndarray
    labels: np.ndarray
    segmentations: list[Any]

    def boxes_0based(self) -> np.ndarray:
        """The models' box convention (continuous xyxy: COCO boxes already are)."""
        return self.boxes

    def masks(self) -> np.ndarray:
        """(N, H, W) uint8 instance masks decoded from the segmentations."""
        from pycocotools import mask as mask_utils

        out = np.zeros((len(self.segmentations), self.height, self.width), dtype=np.uint8)
        for i, seg in enumerate(self.segmentations):
            if isinstance(seg, list):  # polygons
                rle = mask_utils.merge(mask_utils.frPyObjects(seg, self.height, self.width))
            elif isinstance(seg.get("counts"), list):  # uncompressed RLE
                rle = mask_utils.frPyObjects(seg, self.height, self.width)
            else:
                rle = seg
            out[i] = mask_utils.decode(rle)
        return out


@dataclass
class COCODetectionSet:
    """The images of one annotation file; ``category_ids[i]`` is the COCO id of class ``i``."""

    annotation_file: Path
    classes: list[str]
    category_ids: list[int]
    images: list[COCOImage]
    skipped: list[str] = field(default_factory=list)
    crowd: int = 0
    has_masks: bool = True


def _read(path: Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(
            f"COCO annotation file {path} is missing: set train_annotations / test_annotations"
        )
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"COCO annotation file {path} is not valid JSON: {e}") from None
    missing = [k for k in ("images", "annotations", "categories") if k not in data]
    if missing:
        raise ValueError(f"COCO annotation file {path} lacks {missing}: give an instances_*.json file")
    return data


def _instances(
    path: Path, im: dict, annotations: list[dict], *, index: dict[int, int], skipped: list[str]
) -> tuple[list, list, list, int]:
    """The boxes (x1 y1 x2 y2), labels and segmentations of image ``im``'s non-crowd instances of the kept
    categories (``index``: category id -> label) and its crowd count; boxes with no area go to ``skipped``."""
    boxes, labels, segs, crowd = [], [], [], 0
    for a in annotations:
        if a["category_id"] not in index:
            continue
        if a.get("iscrowd", 0):
            crowd += 1
            continue
        try:
            x, y, w, h = (float(v) for v in a["bbox"])
        except (KeyError, TypeError, ValueError):
            raise ValueError(
                f"{path}: annotation {a.get('id')} has a missing or malformed bbox {a.get('bbox')!r}"
            ) from None
        if w <= 0 or h <= 0:
            skipped.append(f"{path} annotation {a.get('id')} (image {im['id']}) bbox {[x, y, w, h]}")
            continue
        boxes.append([x, y, x + w, y + h])
        labels.append(index[a["category_id"]])
        segs.append(a.get("segmentation"))
    return boxes, labels, segs, crowd


def load_coco_detection(
    annotation_file: str | Path,
    image_root: str | Path,
    classes: list[str] | None = None,
    *,
    keep_empty: bool = True,
) -> COCODetectionSet:
    """Images and non-crowd instances of ``annotation_file`` (images under ``image_root``); ``classes``
    (names) restricts to those categories, None or [] keeps every category. ``keep_empty=False``
    drops images left without instances (what Detectron2 does for training)."""
    path, root = Path(annotation_file), Path(image_root)
    data = _read(path)
    cats = sorted(data["categories"], key=lambda c: c["id"])
    names = [c["name"] for c in cats]
    if classes:
        unknown = [c for c in classes if c not in names]
        if unknown:
            raise ValueError(f"classes {unknown} are not categories of {path} (it has {names})")
        cats = [c for c in cats if c["name"] in classes]
    index = {c["id"]: i for i, c in enumerate(cats)}
    all_ids = {c["id"] for c in data["categories"]}
    per_image: dict[int, list[dict]] = {}
    for a in data["annotations"]:
        if a.get("category_id") not in all_ids:
            raise ValueError(
                f"{path}: annotation {a.get('id')} has category_id {a.get('category_id')} "
                f"that is not in 'categories'"
            )
        per_image.setdefault(a.get("image_id"), []).append(a)
    known = {im["id"] for im in data["images"]}
    orphans = set(per_image) - known
    if orphans:
        raise ValueError(
            f"{path}: annotations refer to image ids {sorted(orphans)[:5]} that are not in 'images'"
        )
    images: list[COCOImage] = []
    skipped: list[str] = []
    crowd, has_masks = 0, True
    for im in data["images"]:
        boxes, labels, segs, crowded = _instances(
            path, im, per_image.get(im["id"], []), index=index, skipped=skipped
        )
        crowd, has_masks = crowd + crowded, has_masks and all(bool(seg) for seg in segs)
        if not boxes and not keep_empty:
            continue
        file = root / im["file_name"]
        if not file.is_file():
            raise FileNotFoundError(f"image {file} of {path} (id {im['id']}) is missing: check image_root")
        images.append(
            COCOImage(
                int(im["id"]),
                file,
                int(im["width"]),
                int(im["height"]),
                np.array(boxes, dtype=np.float32).reshape(-1, 4),
                np.array(labels, dtype=np.int64),
                segs,
            )
        )
    if skipped:
        warnings.warn(
            f"skipped {len(skipped)} box(es) with no area (w <= 0 or h <= 0): " + "; ".join(skipped),
            stacklevel=2,
        )
    return COCODetectionSet(
        path, [c["name"] for c in cats], [c["id"] for c in cats], images, skipped, crowd, has_masks
    )


def coco_from_voc(data: Any, path: str | Path) -> COCODetectionSet:
    """A VOC detection set (transfer.voc_detection) written as a COCO instances file at ``path`` and read
    back, so COCO AP is computed on VOC-layout data: boxes 0-based as the models see them, "difficult"
    objects as crowd regions (COCOeval ignores detections on them, as VOC AP ignores difficult objects)."""
    from swavbench.core import durable

    images, annotations = [], []
    for n, im in enumerate(data.images):
        images.append(
            {"id": n + 1, "file_name": str(Path(im.path).resolve()), "width": im.width, "height": im.height}
        )
        for box, label, difficult in zip(im.boxes_0based(), im.labels, im.difficult):
            x0, y0, x1, y1 = (float(v) for v in box)
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": n + 1,
                    "category_id": int(label) + 1,
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "area": (x1 - x0) * (y1 - y0),
                    "iscrowd": int(difficult),
                }
            )
    categories = [{"id": i + 1, "name": c} for i, c in enumerate(data.classes)]
    durable.write_json(path, {"images": images, "annotations": annotations, "categories": categories})
    return load_coco_detection(path, "/")
