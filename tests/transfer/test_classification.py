"""Places205-list and iNat18-json loaders on tiny trees in those exact formats (real scene images),
clear errors on malformed files, and the transfer linear probe end to end."""

import json
import math
import shutil
from pathlib import Path

import pytest

from benchmark.linear import LinearConfig, lr_at
from swavbench.core.config import load_dataclass
from transfer.classification import (
    TransferLinearConfig,
    read_inat_json,
    read_places205_list,
    run_transfer_linear,
)
from transfer.cli import TRANSFER_CONFIGS

SCENE = Path(__file__).resolve().parents[3] / "shared" / "data" / "scene15"
pytestmark = pytest.mark.skipif(not SCENE.is_dir(), reason=f"shared 15-Scene set not found at {SCENE}")
CLASSES = ["bedroom", "coast", "forest"]


def scene_images(root: Path, per_class: int) -> dict[str, list[str]]:
    """Copy per_class train and val images of 3 scene classes under root/images/<class>/.

    Returns the relative paths by split."""
    out = {"train": [], "val": []}
    for split in out:
        for c in CLASSES:
            (root / "images" / c).mkdir(parents=True, exist_ok=True)
            for src in sorted((SCENE / split / c).iterdir())[:per_class]:
                rel = f"{c}/{split}_{src.name}"
                shutil.copy(src, root / "images" / rel)
                out[split].append(rel)
    return out


@pytest.fixture(scope="module")
def places_tree(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("places205")
    files = scene_images(root, 8)
    (root / "lists").mkdir()
    for split, rels in files.items():
        (root / "lists" / f"{split}_places205.csv").write_text(
            "".join(f"{r} {CLASSES.index(r.split('/')[0])}\n" for r in rels)
        )
    return root


@pytest.fixture(scope="module")
def inat_tree(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("inat18")
    files = scene_images(root, 6)
    category_ids = {"bedroom": 7, "coast": 3, "forest": 11}  # sparse ids, as iNat's
    for split, rels in files.items():
        images = [
            {"id": 1000 + n, "file_name": f"images/{r}", "width": 1, "height": 1} for n, r in enumerate(rels)
        ]
        anns = [
            {"id": n, "image_id": 1000 + n, "category_id": category_ids[r.split("/")[0]]}
            for n, r in enumerate(rels)
        ]
        cats = [{"id": i, "name": c} for c, i in category_ids.items()]
        (root / f"{split}2018.json").write_text(
            json.dumps({"images": images, "annotations": anns, "categories": cats})
        )
    return root


def test_places205_list_parsing(places_tree, tmp_path):
    items = read_places205_list(places_tree / "lists/train_places205.csv")
    assert len(items) == 24 and items[0] == (
        "bedroom/train_" + sorted((SCENE / "train/bedroom").iterdir())[0].name,
        0,
    )
    bad = tmp_path / "bad.csv"
    bad.write_text("a/b.jpg 3\nc/d.jpg three\n")
    with pytest.raises(ValueError, match=r"bad\.csv:2: expected 'relative/path\.jpg label'"):
        read_places205_list(bad)
    with pytest.raises(FileNotFoundError, match="Places205 list"):
        read_places205_list(tmp_path / "missing.csv")


def test_inat_json_parsing(inat_tree, tmp_path):
    items, cats = read_inat_json(inat_tree / "train2018.json")
    assert cats == [3, 7, 11] and len(items) == 18
    assert items[0] == ("images/bedroom/train_" + sorted((SCENE / "train/bedroom").iterdir())[0].name, 7)
    data = json.loads((inat_tree / "val2018.json").read_text())
    data["annotations"] = data["annotations"][1:]
    (tmp_path / "v.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"v\.json: 1 image\(s\) have no annotation, e\.g\. id 1000"):
        read_inat_json(tmp_path / "v.json")
    (tmp_path / "w.json").write_text(json.dumps({"images": []}))
    with pytest.raises(ValueError, match=r"w\.json is not an iNaturalist annotation file"):
        read_inat_json(tmp_path / "w.json")


@pytest.mark.parametrize("fmt", ["places205", "inat18"])
def test_transfer_linear_end_to_end(fmt, places_tree, inat_tree, tmp_path):
    if fmt == "places205":
        files = [
            f"root={places_tree / 'images'}",
            f"train={places_tree / 'lists/train_places205.csv'}",
            f"val={places_tree / 'lists/val_places205.csv'}",
        ]
    else:
        files = [
            f"root={inat_tree}",
            f"train={inat_tree / 'train2018.json'}",
            f"val={inat_tree / 'val2018.json'}",
        ]
    cfg = load_dataclass(
        TransferLinearConfig,
        TRANSFER_CONFIGS,
        f"linear-{fmt}",
        overrides=[
            *files,
            "epochs=2",
            "milestones=[1]",
            "batch_size=8",
            "crop=32",
            "resize=36",
            "num_workers=0",
            "mode=cached",
            "trunk.arch=resnet18",
            "trunk.small_stem=true",
            "trunk.width_multiplier=0.25",
        ],
    )
    rec = run_transfer_linear(cfg, "random", tmp_path / fmt)
    assert (
        rec.status == "ok"
        and (rec.protocol, rec.benchmark) == ("transfer-linear", "linear")
        and rec.dataset == fmt
    )
    n = 8 if fmt == "places205" else 6
    assert rec.splits == {"train": 3 * n, "val": 3 * n}
    assert (
        0.0 <= rec.metrics["top1"] <= 100.0 and rec.metrics["top5"] == 100.0
    )  # 3 classes: top-5 is everything


def test_multistep_schedule():
    cfg = LinearConfig(schedule="multistep", milestones=[4, 8, 12], gamma=0.1)
    assert [lr_at(0.01, 0, 1, epoch=e, cfg=cfg) for e in (0, 3, 4, 8, 13)] == pytest.approx(
        [0.01, 0.01, 1e-3, 1e-4, 1e-5]
    )
    per_iteration = LinearConfig(final_lr=0.0, cosine_step="iteration")
    assert lr_at(1.0, 50, 100, epoch=0, cfg=per_iteration) == pytest.approx(0.5)
    # the official probe: CosineAnnealingLR(T_max=epochs) stepped once per epoch, constant within one
    per_epoch = LinearConfig(final_lr=0.0, epochs=100)
    assert [lr_at(1.0, s, 10_000, epoch=50, cfg=per_epoch) for s in (5000, 5099)] == pytest.approx([0.5, 0.5])
    assert lr_at(1.0, 0, 10_000, epoch=25, cfg=per_epoch) == pytest.approx((1 + math.cos(math.pi / 4)) / 2)


def test_cli_runs_and_names_missing_files(places_tree, tmp_path):
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[2]
    common = [
        "--checkpoint",
        "random",
        "--config",
        "linear-places205",
        "--out",
        str(tmp_path / "cli"),
        f"root={places_tree / 'images'}",
        "epochs=1",
        "milestones=[]",
        "batch_size=8",
        "crop=32",
        "resize=32",
        "num_workers=0",
        "mode=cached",
        "trunk.arch=resnet18",
        "trunk.small_stem=true",
        "trunk.width_multiplier=0.125",
    ]
    bad = subprocess.run(
        [sys.executable, "-m", "swavbench", "transfer", "linear", *common, f"train={tmp_path / 'nope.csv'}"],
        cwd=repo,
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "Places205 list" in bad.stderr and "nope.csv" in bad.stderr
    ok = subprocess.run(
        [
            sys.executable,
            "-m",
            "swavbench",
            "transfer",
            "linear",
            *common,
            f"train={places_tree / 'lists/train_places205.csv'}",
            f"val={places_tree / 'lists/val_places205.csv'}",
        ],
        cwd=repo,
        capture_output=True,
        text=True,
    )
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert (
        "linear on places205" in ok.stdout
        and json.loads((tmp_path / "cli" / "result.json").read_text())["status"] == "ok"
    )
