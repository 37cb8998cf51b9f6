import pytest
import torch
import torchvision

from pretrain.checkpoint import load_trunk_state_dict, model_state_dict, release_state_dict
from pretrain.model import SwAVModel, build_trunk
from swavbench.core.state import CheckpointError, atomic_save, load_checkpoint, save_rotating


def test_release_layout_round_trip_and_official_format(tmp_path):
    model = SwAVModel(build_trunk("resnet50"), hidden_mlp=64, feat_dim=16, n_prototypes=[30])
    release = release_state_dict(model.state_dict())
    assert (
        "conv1.weight" in release and "projection_head.0.weight" in release and "prototypes.weight" in release
    )
    assert model_state_dict(release).keys() == model.state_dict().keys()
    # the official release: DDP "module." prefix, flat or under "state_dict"
    official = {"module." + k: v for k, v in release.items()}
    atomic_save(official, tmp_path / "swav_800ep_pretrain.pth.tar")
    atomic_save({"state_dict": official}, tmp_path / "wrapped.pth")
    tv_keys = {k for k in torchvision.models.resnet50().state_dict() if not k.startswith("fc.")}
    for name in ("swav_800ep_pretrain.pth.tar", "wrapped.pth"):
        trunk = load_trunk_state_dict(tmp_path / name)
        assert set(trunk) == tv_keys
        torch.testing.assert_close(trunk["layer4.2.bn3.weight"], model.trunk.layer4[2].bn3.weight)


def test_rotation_keeps_previous_and_truncation_is_reported(tmp_path):
    path = tmp_path / "checkpoint.pth"
    save_rotating({"step": 1}, path)
    save_rotating({"step": 2}, path)
    assert load_checkpoint(path)["step"] == 2
    assert load_checkpoint(tmp_path / "checkpoint.pth.prev")["step"] == 1
    assert not list(tmp_path.glob("*.tmp*"))
    path.write_bytes(path.read_bytes()[:20])
    with pytest.raises(CheckpointError, match=r"truncated or corrupt.*checkpoint.pth.prev"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pth")
