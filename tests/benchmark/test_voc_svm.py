import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.model_selection import cross_val_score

from benchmark import svm as svm_module
from benchmark.svm import SvmConfig, fit_class, low_shot_draw, low_shot_metrics, run_svm, train_labels
from benchmark.voc import all_points_ap, image_labels, read_split, voc07_ap, voc_root

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


def test_all_points_ap_by_hand_and_against_a_per_positive_sum():
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
    labels = np.array([1, -1, 0, 1, -1, 1])  # the 0.7 one is 'difficult': ignored
    # kept, ranked: +,-,+,-,+ ; precision at the three positives 1, 2/3, 3/5, each already the best at
    # its recall or beyond: the area is the mean over positives
    assert all_points_ap(scores, labels) == pytest.approx(100 * (1 + 2 / 3 + 3 / 5) / 3, abs=1e-9)
    rng = np.random.default_rng(0)
    for _ in range(20):
        s, y = rng.normal(size=200), rng.choice([1, -1, -1, 0], size=200)
        kept = y != 0
        order = np.argsort(-s[kept], kind="stable")
        pos = y[kept][order] > 0
        prec = np.cumsum(pos) / np.arange(1, len(pos) + 1)
        # interpolated precision at each positive: the best precision at that rank or any later one
        want = np.mean([prec[i:].max() for i in np.flatnonzero(pos)])
        assert all_points_ap(s, y) == pytest.approx(100 * want, abs=1e-9)
        assert all_points_ap(s, y) >= voc07_ap(s, y) - 100 / 11  # the 11-point sum undershoots by <= 1/11


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


def test_difficult_images_are_training_negatives_as_in_the_reference_code():
    y = np.array([1, 0, -1, 0], dtype=np.int8)
    assert train_labels(y, SvmConfig()).tolist() == [1, -1, -1, -1]
    assert train_labels(y, SvmConfig(difficult_in_training="ignore")).tolist() == [1, 0, -1, 0]


def test_cost_by_cross_validation_in_file_order():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(90, 6))
    y = np.where(x[:, 0] + 0.8 * rng.normal(size=90) > 0, 1, -1)
    cfg = SvmConfig(costs=[0.001, 0.1, 10.0])
    # sklearn's cv=3 for a classifier: stratified folds in file order, as the reference passes it
    cv = [
        cross_val_score(svm_module._svm(c, cfg), x, y, cv=3, scoring="average_precision").mean()
        for c in cfg.costs
    ]
    assert fit_class(x, y, cfg).C == cfg.costs[int(np.argmax(cv))]


def test_low_shot_draw_samples_k_positives_and_classes_minus_one_times_k_negatives():
    rng = np.random.default_rng(0)
    y = rng.choice(np.array([1, -1, -1, -1, 0], dtype=np.int8), size=(60, 3))
    d = low_shot_draw(y, 2, np.random.default_rng(0), negatives="sampled")
    assert ((d > 0).sum(axis=0) == 2).all() and ((d < 0).sum(axis=0) == 4).all()
    assert (y[d > 0] > 0).all() and (y[d < 0] < 0).all()  # never a difficult image, never a wrong label
    every = low_shot_draw(y, 2, np.random.default_rng(0), negatives="all")
    assert ((every < 0) == (y < 0)).all() and ((every > 0).sum(axis=0) == 2).all()
    hard = low_shot_draw(y, 2, np.random.default_rng(0), negatives="all", difficult_negative=True)
    assert ((hard < 0) == (y <= 0)).all()  # difficult images are negatives, as in the full-data training
    with pytest.raises(ValueError, match="at least 2 classes"):
        low_shot_draw(y[:, :1], 1, np.random.default_rng(0), negatives="sampled")
    with pytest.raises(ValueError, match="fewer than k=40"):
        low_shot_draw(y, 40, np.random.default_rng(0), negatives="sampled")
    few = np.array([[1, -1], [1, 1], [1, 1], [-1, 1], [0, 1]], dtype=np.int8)
    with pytest.raises(ValueError, match="low_shot_negatives=all"):
        low_shot_draw(few, 2, np.random.default_rng(0), negatives="sampled")


def test_low_shot_reports_the_cost_with_the_best_mean_test_map(monkeypatch):
    per_draw = iter(
        [
            np.array([[50.0, 70.0, 60.0], [50.0, 70.0, 60.0]]),  # draw 0: (classes, costs)
            np.array([[50.0, 40.0, 66.0], [50.0, 40.0, 66.0]]),  # draw 1: cost 1 mean 55, cost 2 mean 63
        ]
    )
    monkeypatch.setattr(svm_module, "low_shot_aps", lambda *a, **k: next(per_draw))
    y = np.array([[1, -1], [-1, 1], [1, -1], [-1, 1], [-1, -1]], dtype=np.int8)
    cfg = SvmConfig(costs=[0.1, 1.0, 10.0], low_shot_ks=[1], low_shot_samples=2, low_shot_negatives="all")
    m = low_shot_metrics(None, y, None, yte=None, cfg=cfg)
    assert m == {"lowshot_k1_mAP_mean": 63.0, "lowshot_k1_mAP_std": 3.0, "lowshot_k1_cost": 10.0}


@pytest.mark.skipif(not SHARED_BCCD.is_dir(), reason=f"shared BCCD data not found at {SHARED_BCCD}")
def test_svm_end_to_end_on_bccd(tmp_path):
    cfg = SvmConfig(
        dataset="bccd",
        root=str(SHARED_BCCD),
        classes=[],
        resize=48,
        crop=48,
        costs=[0.1, 1.0],
        low_shot_ks=[1],  # the published draw: 1 positive and (3 - 1) x 1 negatives (WBC has 2 in trainval)
        low_shot_samples=2,
        num_workers=0,
    )
    cfg.trunk.arch, cfg.trunk.width_multiplier, cfg.trunk.small_stem = "resnet18", 0.25, True
    rec = run_svm(cfg, "random", tmp_path)
    data = json.loads((tmp_path / "result.json").read_text())
    assert data["status"] == "ok" and data["trunk_kind"] == "random"
    assert set(k for k in rec.metrics if k.startswith("AP_")) == {"AP_Platelets", "AP_RBC", "AP_WBC"}
    m = rec.metrics
    assert m["mAP"] == pytest.approx(np.mean([m[f"AP_{c}"] for c in ("Platelets", "RBC", "WBC")]))
    assert m["mAP_11point"] == pytest.approx(np.mean([m[f"AP11_{c}"] for c in ("Platelets", "RBC", "WBC")]))
    assert 0 < m["mAP"] <= 100 and m["lowshot_k1_mAP_std"] >= 0 and m["lowshot_k1_cost"] in (0.1, 1.0)
    assert (
        data["config"]["low_shot_negatives"] == "sampled"
        and data["config"]["difficult_in_training"] == "negative"
    )
    assert data["splits"]["trainval"] + data["splits"]["test"] == 364
