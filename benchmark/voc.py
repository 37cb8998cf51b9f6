"""Pascal VOC layout for image classification: split lists, per-image class labels from the
annotations (1 = present, 0 = present only as ``difficult``, -1 = absent, as VOC's own
``<class>_<split>.txt`` files), and the two average precisions in use: VOC2007's 11-point one and the
all-points area that the published VOC07 SVM numbers use."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

VOC07_CLASSES = (
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)


def voc_root(path: str | Path) -> Path:
    """Accept VOCdevkit/, VOCdevkit/VOC2007 or any folder holding JPEGImages/ Annotations/ ImageSets/."""
    path = Path(path)
    for cand in (path, path / "VOC2007"):
        if (cand / "ImageSets" / "Main").is_dir() and (cand / "Annotations").is_dir():
            return cand
    raise FileNotFoundError(
        f"{path} is not a Pascal VOC tree: expected JPEGImages/, Annotations/ and ImageSets/Main/ "
        "(or VOCdevkit/VOC2007 holding them)"
    )


def read_split(root: Path, split: str) -> list[str]:
    path = root / "ImageSets" / "Main" / f"{split}.txt"
    if not path.is_file():
        raise FileNotFoundError(
            f"split file {path} is missing: VOC lists image ids in ImageSets/Main/<split>.txt"
        )
    ids = [ln.split()[0] for ln in path.read_text().splitlines() if ln.strip()]
    if not ids:
        raise ValueError(f"split file {path} lists no images")
    return ids


def annotation(root: Path, image_id: str) -> tuple[Path, ET.Element]:
    """(path, parsed root element) of the image's VOC annotation; a clear error when missing or not XML."""
    path = root / "Annotations" / f"{image_id}.xml"
    if not path.is_file():
        raise FileNotFoundError(
            f"annotation {path} is missing for image {image_id}: add it or drop the id from the split"
        )
    try:
        return path, ET.parse(path).getroot()
    except ET.ParseError as e:
        raise ValueError(f"annotation {path} is not valid XML: {e}") from None


def objects(root: Path, image_id: str) -> list[tuple[str, bool]]:
    """(class name, difficult) of every object in the image's annotation."""
    _, tree = annotation(root, image_id)
    return [
        ((obj.findtext("name") or "").strip(), (obj.findtext("difficult") or "0").strip() == "1")
        for obj in tree.iter("object")
    ]


def image_labels(root: Path, ids: list[str], classes: list[str]) -> np.ndarray:
    """(N, C) int8 labels in {1, 0, -1}."""
    index = {c: i for i, c in enumerate(classes)}
    labels = np.full((len(ids), len(classes)), -1, dtype=np.int8)
    for n, image_id in enumerate(ids):
        for name, difficult in objects(root, image_id):
            if name not in index:
                continue
            c = index[name]
            labels[n, c] = max(labels[n, c], 0 if difficult else 1)
    return labels


def discover_classes(root: Path, ids: list[str]) -> list[str]:
    return sorted({name for image_id in ids for name, _ in objects(root, image_id)})


class VOCImages(Dataset):
    """Images of one split, transformed; the target is the image index."""

    def __init__(self, root: Path, ids: list[str], transform):
        self.paths = [root / "JPEGImages" / f"{i}.jpg" for i in ids]
        missing = [p for p in self.paths if not p.is_file()]
        if missing:
            raise FileNotFoundError(f"{len(missing)} images of the split are missing, e.g. {missing[0]}")
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        with Image.open(self.paths[i]) as im:
            return self.transform(im.convert("RGB")), i


def _ranked(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(recall, precision) down the ranking by decreasing score; samples labelled 0 (difficult) are
    ignored, as VOC and the SVM reference code do."""
    keep = labels != 0
    scores, positive = scores[keep], labels[keep] > 0
    if positive.sum() == 0:
        raise ValueError("no positive samples: AP is undefined")
    order = np.argsort(-scores, kind="stable")
    tp = np.cumsum(positive[order])
    fp = np.cumsum(~positive[order])
    return tp / positive.sum(), tp / np.maximum(tp + fp, np.finfo(np.float64).eps)


def voc07_ap(scores: np.ndarray, labels: np.ndarray) -> float:
    """VOC2007 11-point interpolated AP (%): mean over recall t in {0, 0.1, ..., 1} of the best
    precision at recall >= t (the VOC2007 devkit's; Detectron2's VOC07 detection metric)."""
    recall, precision = _ranked(scores, labels)
    ap = 0.0
    for t in np.arange(0.0, 1.1, 0.1):
        p = precision[recall >= t - 1e-12]
        ap += (p.max() if p.size else 0.0) / 11.0
    return 100.0 * ap


def all_points_ap(scores: np.ndarray, labels: np.ndarray) -> float:
    """All-points AP (%): the area under the interpolated precision-recall curve (precision made
    monotone from the right, summed over every recall step). The definition of every published VOC07
    SVM number (Goyal et al. 2019 ``svm_helper.calculate_ap``, VISSL ``svm_utils/evaluate.py``)."""
    recall, precision = _ranked(scores, labels)
    mrec = np.concatenate(([0.0], recall, [1.0]))
    mpre = np.concatenate(([0.0], precision, [0.0]))
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    steps = np.flatnonzero(mrec[1:] != mrec[:-1]) + 1
    return 100.0 * float(np.sum((mrec[steps] - mrec[steps - 1]) * mpre[steps]))
