import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from benchmark.svm import SvmConfig, low_shot_draw, run_svm
from benchmark.voc import image_labels, read_split, voc07_ap, voc_root

SHARED_BCCD = Path(__file__).resolve().parents[3] / "shared" / "data" / "bccd"


def test_voc07_11_point_ap_by_hand_with_difficult():
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
    labels = np.array([1, -1, 0, 1, -1, 1])  # the 0.7 one is 'difficult': ignored
    # kept, ranked: +,-,+,-,+ -> recall 1/3,1/3,2/3,2/3,1 ; precision 1,1/2,2/3,1/2,3/5
    # t = 0..0.3 -> 1 (4 points); t = 0.4..0.6 -> 2/3 (3 points); t = 0.7..1.0 -> 3/5 (4 points)
    want = 100 * (4 * 1 + 3 * 2 / 3 + 4 * 3 / 5) / 11
    assert voc07_ap(scores, labels) == pytest.approx(want, abs=1e-9)
    # counting the difficult image as a negative or a positive would give other values
    assert voc07_ap(scores, np.where(labels == 0, -1, labels)) != pytest.approx(want)
    assert voc07_ap(scores, np.where(labels == 0, 1, labels)) != pytest.approx(want)


def write_voc(root: Path, images: dict[str, list[tuple[str, int]]], split: str = "trainval") -> None:
    for d in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (root / d).mkdir(parents=True, exist_ok=True)
    for image_id, objs in images.items():
        Image.new("RGB", (48, 40), (len(objs) * 40, 80, 120)).save(root / "JPEGImages" / f"{image_id}.jpg")
        body = "".join(f"<object><name>{n}</name><difficult>{d}</difficult></object>" for n, d in objs)
        (root / "Annotations" / f"{image_id}.xml").write_text(f"<annotation>{body}</annotation>")
    (root / "ImageSets" / "Main" / f"{split}.txt").write_text("\n".join(images) + "\n")


def test_labels_from_annotations_and_clear_errors(tmp_path):
    root = tmp_path / "VOCdevkit" / "VOC2007"
    write_voc(root, {"a": [("cat", 0), ("dog", 1)], "b": [("dog", 1), ("dog", 0)], "c": [("cat", 1)]})
    assert voc_root(tmp_path / "VOCdevkit") == root
    labels = image_labels(root, read_split(root, "trainval"), ["cat", "dog"])
    assert labels.tolist() == [[1, 0], [-1, 1], [0, -1]]
    with pytest.raises(FileNotFoundError, match=r"ImageSets/Main/test.txt"):
        read_split(root, "test")
    (root / "Annotations" / "b.xml").unlink()
    with pytest.raises(FileNotFoundError, match=r"annotation .*b.xml is missing"):
        image_labels(root, ["a", "b"], ["cat"])
    with pytest.raises(FileNotFoundError, match="not a Pascal VOC tree"):
        voc_root(tmp_path)


def test_empty_class_is_a_clear_error(tmp_path):
    write_voc(tmp_path, {"a": [("cat", 0)], "b": [("dog", 0)]}, "trainval")
    write_voc(tmp_path, {"c": [("cat", 0)], "d": [("cat", 0)]}, "test")
    cfg = SvmConfig(
        root=str(tmp_path), classes=["cat", "dog"], resize=32, crop=32, num_workers=0, costs=[1.0]
    )
    cfg.trunk.arch = "resnet18"
    with pytest.raises(ValueError, match="class 'dog' has no positive image"):
        run_svm(cfg, "random", tmp_path / "out")
    assert json.loads((tmp_path / "out" / "result.json").read_text())["status"] == "failed"
    cfg.classes = ["cat"]  # cat is in every trainval image: no negatives to train on
    write_voc(tmp_path, {"a": [("cat", 0)], "b": [("cat", 0), ("dog", 0)]}, "trainval")
    with pytest.raises(ValueError, match="class 'cat' is in every trainval image"):
        run_svm(cfg, "random", tmp_path / "out")


def test_low_shot_draw_keeps_k_positives_and_all_negatives():
    y = np.array([[1, -1], [1, 1], [1, 1], [-1, 1], [0, 1]], dtype=np.int8)
    d = low_shot_draw(y, 2, np.random.default_rng(0))
    assert ((d > 0).sum(axis=0) == 2).all() and ((d < 0) == (y < 0)).all()
    with pytest.raises(ValueError, match="fewer than k=4"):
        low_shot_draw(y, 4, np.random.default_rng(0))


@pytest.mark.skipif(not SHARED_BCCD.is_dir(), reason=f"shared BCCD data not found at {SHARED_BCCD}")
def test_svm_end_to_end_on_bccd(tmp_path):
    cfg = SvmConfig(
        dataset="bccd",
        root=str(SHARED_BCCD),
        classes=[],
        resize=48,
        crop=48,
        costs=[0.1, 1.0],
        low_shot_ks=[2],
        low_shot_samples=2,
        num_workers=0,
    )
    cfg.trunk.arch, cfg.trunk.width_multiplier, cfg.trunk.small_stem = "resnet18", 0.25, True
    rec = run_svm(cfg, "random", tmp_path)
    data = json.loads((tmp_path / "result.json").read_text())
    assert data["status"] == "ok" and data["trunk_kind"] == "random"
    assert set(k for k in rec.metrics if k.startswith("AP_")) == {"AP_Platelets", "AP_RBC", "AP_WBC"}
    assert 0 < rec.metrics["mAP"] <= 100 and rec.metrics["lowshot_k2_mAP_std"] >= 0
    assert data["splits"]["trainval"] + data["splits"]["test"] == 364
