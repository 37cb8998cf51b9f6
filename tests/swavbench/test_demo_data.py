"""Preparing the demo datasets from local archives (no network): CIFAR-10's binary batches, a 15-Scene folder
archive, BCCD's repository archive; what the main job keeps and skips without them."""

import io
import tarfile
import zipfile

import numpy as np
import pytest
from PIL import Image

from slurm.main_job import load_main_config, plan_data
from swavbench import demo_data
from swavbench.core import data_root
from swavbench.demo_data import CIFAR_CLASSES, prepare


def jpeg(size=(20, 14), color=(90, 140, 200)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "JPEG")
    return buf.getvalue()


def cifar_archive(path, *, with_test=True, per_class=3):
    """cifar-10-binary.tar.gz's layout: each record 1 label byte + 3072 bytes (R, G, B planes of 32x32)."""
    rng = np.random.default_rng(0)
    rows = {}
    for name, n in (
        ("data_batch_1.bin", per_class),
        ("data_batch_2.bin", per_class),
        ("test_batch.bin", per_class),
    ):
        if name == "test_batch.bin" and not with_test:
            continue
        recs = []
        for label in range(10):
            for _ in range(n):
                img = np.full((3, 32, 32), 25 * label, np.uint8)
                img[:, :16] = rng.integers(0, 255, (3, 16, 32), dtype=np.uint8)
                recs.append(np.concatenate([[label], img.reshape(-1)]).astype(np.uint8))
        rows[name] = np.stack(recs)
    with tarfile.open(path, "w:gz") as t:
        for name, arr in rows.items():
            data = arr.tobytes()
            info = tarfile.TarInfo(f"cifar-10-batches-bin/{name}")
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    return rows


def scene_archive(path):
    with zipfile.ZipFile(path, "w") as z:
        for cls in ("Bedroom", "coast"):
            for i in range(102):
                z.writestr(f"Landscape-main/15-Scene/{cls}/image_{i:04d}.jpg", jpeg((64, 48)))
        z.writestr("Landscape-main/README.md", "not an image")


def bccd_archive(path):
    with zipfile.ZipFile(path, "w") as z:
        for i in range(3):
            z.writestr(f"BCCD_Dataset-master/BCCD/JPEGImages/BloodImage_{i:05d}.jpg", jpeg())
            z.writestr(f"BCCD_Dataset-master/BCCD/Annotations/BloodImage_{i:05d}.xml", "<annotation/>")
        for split in ("train", "test", "trainval", "val"):
            z.writestr(f"BCCD_Dataset-master/BCCD/ImageSets/Main/{split}.txt", "BloodImage_00000\n")
        z.writestr("BCCD_Dataset-master/LICENSE", "MIT")


@pytest.fixture
def archives(tmp_path):
    out = {"cifar10-subset": tmp_path / "c.tar.gz", "scene15": tmp_path / "s.zip", "bccd": tmp_path / "b.zip"}
    rows = cifar_archive(out["cifar10-subset"])
    scene_archive(out["scene15"])
    bccd_archive(out["bccd"])
    return out, rows


def test_prepare_from_local_archives(tmp_path, archives):
    paths, rows = archives
    root = tmp_path / "root"
    assert prepare(root, archives=paths) == {n: "prepared" for n in ("cifar10-subset", "scene15", "bccd")}
    # CIFAR: 3 + 3 training images per class from the two batches, 3 validation ones, class folders by name
    for split, n in (("train", 6), ("val", 3)):
        assert sorted(p.name for p in (root / "cifar10-subset" / split).iterdir()) == sorted(CIFAR_CLASSES)
        assert len(list((root / "cifar10-subset" / split / "cat").glob("*.jpg"))) == n
    cat = rows["data_batch_1.bin"][3 * 3]  # the first record of label 3 (cat)
    assert cat[0] == 3
    want = cat[1:].reshape(3, 32, 32).transpose(1, 2, 0).astype(float)
    got = np.asarray(Image.open(root / "cifar10-subset/train/cat/0000.jpg"), dtype=float)
    assert got.shape == (32, 32, 3) and np.abs(got - want)[16:].mean() < 2.0  # JPEG q95, flat rows
    # 15-Scene: lower-cased classes, greyscale, shorter side 128, first 100 by name train, the rest val
    assert sorted(p.name for p in (root / "scene15/train").iterdir()) == ["bedroom", "coast"]
    assert len(list((root / "scene15/train/coast").iterdir())) == 100
    assert sorted(p.name for p in (root / "scene15/val/coast").iterdir()) == [
        "image_0100.jpg",
        "image_0101.jpg",
    ]
    with Image.open(root / "scene15/val/coast/image_0100.jpg") as im:
        assert im.mode == "L" and im.size == (171, 128)  # 64x48 scaled by 128/48
    # BCCD: the VOC folders wherever the archive put them, and its licence
    assert len(list((root / "bccd/JPEGImages").glob("*.jpg"))) == 3
    assert (root / "bccd/ImageSets/Main/test.txt").is_file() and (root / "bccd/LICENSE").read_text() == "MIT"
    assert prepare(root, archives=paths) == {n: "ready" for n in paths}  # a second call changes nothing
    assert not [p for p in root.iterdir() if p.name.startswith(".")]  # no temporary folder left


def test_bad_archive_offline_and_no_half_dataset(tmp_path):
    cifar_archive(tmp_path / "c.tar.gz", with_test=False)
    root = tmp_path / "root"
    status = prepare(root, archives={"cifar10-subset": tmp_path / "c.tar.gz"}, offline=True)
    assert "test_batch.bin" in status["cifar10-subset"] and "--cifar10 FILE" in status["cifar10-subset"]
    assert status["scene15"].startswith("not available (offline)") and "--scene15 FILE" in status["scene15"]
    assert sorted(p.name for p in root.iterdir()) == []  # neither a half dataset nor a temporary folder


def test_main_job_prepares_the_demo_data_or_names_what_it_skips(tmp_path, archives, monkeypatch):
    """Without ../shared/data: the demo data goes to the cache, which becomes the data root; offline with
    only BCCD, the protocols on the other sets and the supervised baseline are named and skipped."""
    paths, _ = archives
    monkeypatch.setenv(data_root.ENV, "")  # unset; restored after the test
    monkeypatch.setattr(data_root, "DEFAULT", tmp_path / "no-shared-data")
    monkeypatch.setattr(demo_data, "CACHE", tmp_path / "cache")
    cfg = load_main_config("cpu-small", [])
    only_bccd = plan_data(cfg, archives={"bccd": paths["bccd"]}, offline=True)
    kept = {e.protocol for e in only_bccd.suite.entries}
    assert kept == {"svm", "detection"} and not only_bccd.supervised
    assert data_root.data_root()[0] == tmp_path / "cache"
    text = "\n".join(only_bccd.lines)
    for skipped in ("knn", "linear", "semisup", "transfer-linear", "the supervised baseline"):
        assert f"skipped: {skipped}" in text or f"({skipped} " in text, (skipped, text)
    assert "cifar10-subset: not available (offline)" in text and "--data-root DIR" in text
    monkeypatch.setenv(data_root.ENV, "")
    full = plan_data(cfg, archives=paths)
    assert len(full.suite.entries) == 6 and full.supervised
    assert full.lines[0].startswith("bccd, cifar10-subset, scene15 not under")
    assert full.lines[1:] == ["cifar10-subset: prepared", "scene15: prepared"]  # bccd: ready
