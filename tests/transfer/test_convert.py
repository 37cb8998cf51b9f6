"""Conversion is lossless: converted weights give the source trunk's res4 / res5 features in
torchvision's resnet50 and in Detectron2's ResNet backbone."""

import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torchvision

from benchmark.trunk import TrunkSpec, load_trunk
from pretrain.checkpoint import release_state_dict
from pretrain.model import SwAVModel, build_trunk
from swavbench.core.state import atomic_save
from transfer.convert import convert, detectron2_name

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def official(tmp_path_factory) -> Path:
    """An official-SwAV-format file with non-trivial BN statistics."""
    torch.manual_seed(0)
    model = SwAVModel(build_trunk("resnet50"), hidden_mlp=32, feat_dim=8, n_prototypes=[10])
    with torch.no_grad():
        for m in model.trunk.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
    path = tmp_path_factory.mktemp("conv") / "swav_official.pth.tar"
    atomic_save(
        {"state_dict": {"module." + k: v for k, v in release_state_dict(model.state_dict()).items()}}, path
    )
    return path


def res45(trunk, x):
    h = trunk.maxpool(trunk.relu(trunk.bn1(trunk.conv1(x))))
    r4 = trunk.layer3(trunk.layer2(trunk.layer1(h)))
    return r4, trunk.layer4(r4)


def test_torchvision_conversion_is_lossless(official, tmp_path):
    loaded = load_trunk(official)
    out = convert(loaded, "torchvision", tmp_path / "r50.pth")
    tv = torchvision.models.resnet50().eval()
    missing, unexpected = tv.load_state_dict(torch.load(out), strict=False)
    assert set(missing) == {"fc.weight", "fc.bias"} and not unexpected  # no trunk key missing
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        for a, b in zip(res45(loaded.trunk.eval(), x), res45(tv, x)):
            torch.testing.assert_close(a, b)
    assert load_trunk(out, TrunkSpec("resnet50")).kind == "torchvision"  # and it loads back


def test_detectron2_names():
    assert detectron2_name("conv1.weight") == "stem.conv1.weight"
    assert detectron2_name("bn1.running_var") == "stem.conv1.norm.running_var"
    assert detectron2_name("layer1.0.downsample.0.weight") == "res2.0.shortcut.weight"
    assert detectron2_name("layer4.2.bn3.bias") == "res5.2.conv3.norm.bias"
    assert detectron2_name("layer2.1.bn2.num_batches_tracked") is None


def test_detectron2_conversion_is_lossless(official, tmp_path):
    pytest.importorskip("detectron2", reason="no Detectron2 (tests/install-detectron2.sh installs it)")
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.config import get_cfg
    from detectron2.layers import ShapeSpec
    from detectron2.modeling import build_resnet_backbone

    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "swavbench",
            "convert",
            "--checkpoint",
            str(official),
            "--to",
            "detectron2",
            "--out",
            str(tmp_path / "r50.pkl"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0, res.stderr
    with open(tmp_path / "r50.pkl", "rb") as f:
        data = pickle.load(f)
    assert data["matching_heuristics"] is True and data["__author__"] == "swav-bench"
    cfg = get_cfg()
    cfg.MODEL.RESNETS.DEPTH = 50
    cfg.MODEL.RESNETS.NORM = "FrozenBN"
    cfg.MODEL.RESNETS.STRIDE_IN_1X1 = False
    cfg.MODEL.RESNETS.OUT_FEATURES = ["res4", "res5"]
    backbone = build_resnet_backbone(cfg, ShapeSpec(channels=3)).eval()
    assert set(data["model"]) == set(backbone.state_dict())  # every backbone key provided, nothing extra
    backbone.load_state_dict({k: torch.as_tensor(v) for k, v in data["model"].items()})
    DetectionCheckpointer(backbone).load(str(tmp_path / "r50.pkl"))  # and Detectron2's own loader accepts it
    x = torch.randn(2, 3, 96, 96)
    trunk = load_trunk(official).trunk.eval()
    with torch.no_grad():
        out = backbone(x)
        r4, r5 = res45(trunk, x)
    torch.testing.assert_close(out["res4"], r4, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(out["res5"], r5, atol=1e-4, rtol=1e-4)


def test_round_trip_official_torchvision_detectron2(official, tmp_path):
    """official SwAV file -> our trunk -> torchvision .pth -> (loaded back) -> Detectron2 .pkl:
    same res5 features."""
    pytest.importorskip("detectron2", reason="no Detectron2 (tests/install-detectron2.sh installs it)")
    from detectron2.config import get_cfg
    from detectron2.layers import ShapeSpec
    from detectron2.modeling import build_resnet_backbone

    source = load_trunk(official)
    tv_file = convert(source, "torchvision", tmp_path / "r50.pth")
    again = load_trunk(tv_file, TrunkSpec("resnet50"))
    assert again.kind == "torchvision"
    with open(convert(again, "detectron2", tmp_path / "r50.pkl"), "rb") as f:
        weights = pickle.load(f)["model"]
    cfg = get_cfg()
    cfg.MODEL.RESNETS.DEPTH, cfg.MODEL.RESNETS.NORM, cfg.MODEL.RESNETS.STRIDE_IN_1X1 = 50, "FrozenBN", False
    cfg.MODEL.RESNETS.OUT_FEATURES = ["res5"]
    backbone = build_resnet_backbone(cfg, ShapeSpec(channels=3)).eval()
    backbone.load_state_dict({k: torch.as_tensor(v) for k, v in weights.items()})
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(
            backbone(x)["res5"], res45(source.trunk.eval(), x)[1], atol=1e-4, rtol=1e-4
        )
