"""A small VOC-layout tree of real BCCD images (including one with a degenerate box) for the detection tests."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

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
    train_ids = [DEGENERATE] + [i for i in (BCCD / "ImageSets/Main/train.txt").read_text().split() if i != DEGENERATE][:5]
    for i in train_ids + test_ids:
        shutil.copy(BCCD / "Annotations" / f"{i}.xml", root / "Annotations")
        shutil.copy(BCCD / "JPEGImages" / f"{i}.jpg", root / "JPEGImages")
    (root / "ImageSets/Main/train.txt").write_text("\n".join(train_ids) + "\n")
    (root / "ImageSets/Main/test.txt").write_text("\n".join(test_ids) + "\n")
    return root
