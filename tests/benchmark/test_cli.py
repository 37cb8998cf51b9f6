import json
import subprocess
import sys
from pathlib import Path

import torch
import torchvision

REPO = Path(__file__).resolve().parents[2]


def swavbench(*args):
    return subprocess.run(
        [sys.executable, "-m", "swavbench", *args], cwd=REPO, capture_output=True, text=True, timeout=600
    )


def test_eval_help_lists_protocols():
    res = swavbench("eval", "--help")
    assert res.returncode == 0
    for p in ("linear", "knn", "semisup", "svm", "make-subset"):
        assert p in res.stdout
    res = swavbench("eval", "linear", "--help")
    assert "linear-imagenet" in res.stdout and "--checkpoint" in res.stdout


def test_eval_knn_cli_random_trunk_and_wrong_checkpoint(tmp_path, generated_data):
    common = [
        f"train={generated_data}",
        f"val={generated_data.parent / 'val'}",
        "resize=32",
        "crop=32",
        "num_workers=0",
        "trunk.arch=resnet18",
        "trunk.width_multiplier=0.125",
        "ks=[5,10]",
    ]
    res = swavbench("eval", "knn", "--checkpoint", "random", "--out", str(tmp_path / "knn"), *common)
    assert res.returncode == 0, res.stderr
    assert "k5_top1" in res.stdout
    rec = json.loads((tmp_path / "knn" / "result.json").read_text())
    assert rec["status"] == "ok" and rec["splits"] == {"train": 160, "val": 40}
    wrong = tmp_path / "resnet50.pth"
    torch.save(torchvision.models.resnet50().state_dict(), wrong)
    res = swavbench("eval", "knn", "--checkpoint", str(wrong), "--out", str(tmp_path / "bad"), *common)
    assert res.returncode == 2 and "resnet50.pth (torchvision) does not match a resnet18 trunk" in res.stderr
    assert json.loads((tmp_path / "bad" / "result.json").read_text())["status"] == "failed"
    res = swavbench("eval", "knn", "--checkpoint", "random", "--out", str(tmp_path / "x"), "kk=3")
    assert res.returncode == 2 and "unknown config key 'kk'" in res.stderr and "temperature" in res.stderr


def test_empty_class_folder_is_named(tmp_path, generated_data):
    import shutil

    train = tmp_path / "train"
    shutil.copytree(generated_data, train)
    (train / "zebra").mkdir()
    res = swavbench(
        "eval",
        "knn",
        "--checkpoint",
        "random",
        "--out",
        str(tmp_path / "o"),
        f"train={train}",
        f"val={train}",
        "trunk.arch=resnet18",
        "num_workers=0",
    )
    assert res.returncode == 2 and "zebra" in res.stderr and str(train) in res.stderr
