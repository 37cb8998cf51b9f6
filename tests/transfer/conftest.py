"""A small VOC-layout tree of real BCCD images (including one with a degenerate box) for the detection
tests, and the same images described by COCO instance files (ellipse masks, sparse category ids)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from coco_files import voc_to_coco

BCCD = Path(__file__).resolve().parents[3] / "shared" / "data" / "bccd"
DEGENERATE = "BloodImage_00343"  # xmax == xmin, in BCCD's train split


@pytest.fixture(scope="session")
def bccd_mini(tmp_path_factory) -> Path:
    if not (BCCD / "Annotations").is_dir():
        pytest.skip(f"shared BCCD set not found at {BCCD}")
    root = tmp_path_factory.mktemp("bccd") / "bccd"
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (root / sub).mkdir(parents=True)
    test_ids = (BCCD / "ImageSets/Main/test.txt").read_text().split()[:4]
    train_ids = [DEGENERATE] + [
        i for i in (BCCD / "ImageSets/Main/train.txt").read_text().split() if i != DEGENERATE
    ][:5]
    for i in train_ids + test_ids:
        shutil.copy(BCCD / "Annotations" / f"{i}.xml", root / "Annotations")
        shutil.copy(BCCD / "JPEGImages" / f"{i}.jpg", root / "JPEGImages")
    (root / "ImageSets/Main/train.txt").write_text("\n".join(train_ids) + "\n")
    (root / "ImageSets/Main/test.txt").write_text("\n".join(test_ids) + "\n")
    return root


@pytest.fixture(scope="session")
def bccd_coco(bccd_mini) -> Path:
    """bccd_mini with COCO instance files beside it.

    train.json (with the degenerate box), test.json (with a crowd region)."""
    for split, crowd in (("train", False), ("test", True)):
        (bccd_mini / f"{split}.json").write_text(json.dumps(voc_to_coco(bccd_mini, split, crowd)))
    return bccd_mini
