"""One data-root rule: presets name datasets under a root chosen by --data-root, then $SWAVBENCH_DATA,
then ../shared/data beside the checkout; commands work from any working directory."""

import json
import os
import subprocess
import sys
from pathlib import Path

from benchmark.knn import KnnConfig
from pretrain.config import DataConfig
from pretrain.synthetic import generate_dataset
from pretrain.train import resolve_data_path
from swavbench.core.data_root import DEFAULT, ENV, data_root, resolve, resolve_fields
from transfer.detection_config import DetectionConfig

REPO = Path(__file__).resolve().parents[2]


def test_root_order_and_resolution(tmp_path, monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    assert data_root() == (DEFAULT, "the default beside the repository checkout")
    assert DEFAULT == REPO.parent / "shared" / "data"
    monkeypatch.setenv(ENV, str(tmp_path))
    assert data_root()[0] == tmp_path
    assert resolve("imagenet/train") == tmp_path / "imagenet" / "train"
    assert resolve("/abs/imagenet") == Path("/abs/imagenet")
    assert resolve("~/x") == Path.home() / "x"
    knn = resolve_fields(KnnConfig(train="cifar10-subset/train", val="/elsewhere/val"))
    assert (knn.train, knn.val) == (str(tmp_path / "cifar10-subset" / "train"), "/elsewhere/val")
    det = resolve_fields(
        DetectionConfig(train_roots=["VOCdevkit/VOC2007", "/v/VOC2012"], test_annotations="")
    )
    assert det.train_roots == [str(tmp_path / "VOCdevkit" / "VOC2007"), "/v/VOC2012"]
    assert det.test_root == str(tmp_path / "VOCdevkit" / "VOC2007") and det.test_annotations == ""
    assert (
        KnnConfig().train == "imagenet/train"
    )  # the config itself keeps the name (launch keys are root-free)


def test_pretraining_auto_data_follows_the_root(tmp_path, monkeypatch):
    monkeypatch.setenv(ENV, str(tmp_path))
    generate_dataset(tmp_path / "cifar10-subset", n_images=20, size=8, seed=0)
    assert (
        resolve_data_path(DataConfig(path="auto"), tmp_path / "run") == tmp_path / "cifar10-subset" / "train"
    )
    assert resolve_data_path(DataConfig(path="cifar10-subset/val"), tmp_path / "run") == (
        tmp_path / "cifar10-subset" / "val"
    )
    monkeypatch.setenv(ENV, str(tmp_path / "empty"))
    generated = resolve_data_path(
        DataConfig(path="auto", generated_images=20, generated_size=8), tmp_path / "run"
    )
    assert generated == tmp_path / "run" / "generated-data" / "train"


def test_eval_runs_from_any_working_directory(tmp_path):
    """The small kNN preset from a folder that is not the checkout, its data under --data-root."""
    root = tmp_path / "my-data"
    generate_dataset(root / "cifar10-subset", n_images=60, size=32, seed=0)
    work = tmp_path / "somewhere" / "else"
    work.mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if k != ENV}
    cmd = [
        sys.executable,
        "-m",
        "swavbench",
        "eval",
        "knn",
        "--data-root",
        str(root),
        "--checkpoint",
        "random",
        "--config",
        "knn-cifar10-small",
        "--out",
        "out",
        "num_workers=0",
        "batch_size=16",
    ]
    proc = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rec = json.loads((work / "out" / "result.json").read_text())
    n_train = len(list((root / "cifar10-subset" / "train").rglob("*.png")))
    n_val = len(list((root / "cifar10-subset" / "val").rglob("*.png")))
    assert rec["status"] == "ok" and rec["splits"] == {"train": n_train, "val": n_val}
    assert rec["config"]["train"] == str(root / "cifar10-subset" / "train")
