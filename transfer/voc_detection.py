"""Pascal VOC detection annotations (VOC2007/2012 layout, or any set in it such as BCCD).

Boxes are read as VOC writes them (1-based inclusive pixel corners) and handed to the models
0-based, ``(xmin - 1, ymin - 1, xmax, ymax)``, the convention Detectron2's VOC loader uses, so
the evaluators can undo it exactly. A degenerate box (xmax <= xmin or ymax <= ymin) is skipped
with a warning naming its file: it has no area to learn or match.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from benchmark.voc import annotation, read_split, voc_root


@dataclass
class VOCImage:
    """One annotated image: raw VOC boxes (N, 4), class indices (N,), difficult flags (N,)."""

    image_id: str
    path: Path
    width: int
    height: int
    boxes: np.ndarray
    labels: np.ndarray
    difficult: np.ndarray

    def boxes_0based(self) -> np.ndarray:
        """Continuous 0-based corners, the models' convention."""
        b = self.boxes.astype(np.float32).copy()
        b[:, :2] -= 1.0
        return b


@dataclass
class VOCDetectionSet:
    """Every image of one or more VOC splits, with the degenerate boxes that were skipped."""

    classes: list[str]
    images: list[VOCImage]
    skipped: list[str] = field(default_factory=list)


def _parse(root: Path, image_id: str, index: dict[str, int], *, skipped: list[str]) -> VOCImage:
    path, tree = annotation(root, image_id)
    try:
        width, height = int(tree.findtext("size/width")), int(tree.findtext("size/height"))
    except (TypeError, ValueError) as e:
        raise ValueError(
            f"annotation {path} is not a valid VOC annotation (size/width, size/height): {e}"
        ) from None
    boxes, labels, difficult = [], [], []
    for n, obj in enumerate(tree.iter("object")):
        name = (obj.findtext("name") or "").strip()
        if name not in index:
            continue
        try:
            box = [float(obj.findtext(f"bndbox/{k}")) for k in ("xmin", "ymin", "xmax", "ymax")]
        except (TypeError, ValueError):
            raise ValueError(
                f"annotation {path}: object {n} ({name}) has a missing or non-numeric bndbox"
            ) from None
        if box[2] <= box[0] or box[3] <= box[1]:
            skipped.append(f"{path} object {n} ({name}) {box}")
            continue
        boxes.append(box)
        labels.append(index[name])
        difficult.append((obj.findtext("difficult") or "0").strip() == "1")
    image = root / "JPEGImages" / f"{image_id}.jpg"
    if not image.is_file():
        raise FileNotFoundError(f"image {image} of split entry {image_id} is missing")
    return VOCImage(
        image_id,
        image,
        width,
        height,
        np.array(boxes, dtype=np.float64).reshape(-1, 4),
        np.array(labels, dtype=np.int64),
        np.array(difficult, dtype=bool),
    )


def load_voc_detection(roots: list[str | Path], split: str, classes: list[str]) -> VOCDetectionSet:
    """Images of ``split`` in each VOC root (e.g. VOC2007 + VOC2012 trainval), boxes of ``classes`` only."""
    index = {c: i for i, c in enumerate(classes)}
    images: list[VOCImage] = []
    skipped: list[str] = []
    for r in roots:
        root = voc_root(r)
        images += [_parse(root, i, index, skipped=skipped) for i in read_split(root, split)]
    if skipped:
        warnings.warn(
            f"skipped {len(skipped)} degenerate box(es) (xmax <= xmin or ymax <= ymin): "
            + "; ".join(skipped),
            stacklevel=2,
        )
    return VOCDetectionSet(list(classes), images, skipped)
