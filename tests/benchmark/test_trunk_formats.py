"""Checkpoints of the harnesses researchers compare with, built here in their real layouts (no download):
DINO, MoCo v2 / v3, Lightning (solo-learn, stable-pretraining), safetensors (timm). The trunk loaded from
each equals its source tensor for tensor; foreign objects in the files are never run."""

from __future__ import annotations

import argparse
import os
import sys
import types

import pytest
import torch
from safetensors.torch import save_file

import swavbench
from benchmark.trunk import TrunkLoadError, TrunkSpec, load_trunk
from pretrain.model import build_trunk
from swavbench.core.state import UnsafeCheckpointError, load_checkpoint

SPEC = TrunkSpec("resnet18", small_stem=True, width_multiplier=0.125)


def trunk_state(seed: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return build_trunk(SPEC.arch, small_stem=True, width_multiplier=0.125).state_dict()


def under(prefix: str, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {prefix + k: v for k, v in state.items()}


def assert_same(loaded, source: dict[str, torch.Tensor]) -> None:
    got = loaded.trunk.state_dict()
    assert set(got) == set(source)
    for k, v in source.items():
        assert torch.equal(got[k], v), k


def fake_module(name: str, cls_name: str) -> type:
    """A class that pickles under ``name.cls_name`` (as if the library were installed); removed afterwards."""
    parts = name.split(".")
    for i in range(1, len(parts) + 1):
        sys.modules.setdefault(".".join(parts[:i]), types.ModuleType(".".join(parts[:i])))
    cls = type(cls_name, (dict,), {"__module__": name})
    setattr(sys.modules[name], cls_name, cls)
    return cls


def drop_fake_modules(root: str) -> None:
    for name in [m for m in sys.modules if m == root or m.startswith(root + ".")]:
        del sys.modules[name]


class RunsCode:
    """What a hostile file would carry: unpickling it calls os.system."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_dino_teacher_by_default_student_by_key(tmp_path, caplog):
    """main_dino.py's checkpoint: both networks DDP-wrapped (module.backbone.), heads, an argparse.Namespace
    of arguments; a hostile object in it stays inert."""
    teacher, student = trunk_state(0), trunk_state(1)
    marker = tmp_path / "ran"
    ckpt = {
        "student": {**under("module.backbone.", student), "module.head.mlp.0.weight": torch.randn(4, 8)},
        "teacher": {**under("module.backbone.", teacher), "module.head.last_layer.weight": torch.randn(4, 8)},
        "optimizer": {"state": {}, "param_groups": []},
        "epoch": 100,
        "args": argparse.Namespace(arch="resnet50", out_dim=65536, extra=RunsCode(str(marker))),
        "dino_loss": {"center": torch.zeros(1, 4)},
    }
    torch.save(ckpt, tmp_path / "checkpoint.pth")
    with pytest.raises(UnsafeCheckpointError):  # a training resume still refuses such a file
        load_checkpoint(tmp_path / "checkpoint.pth")
    with caplog.at_level("INFO", logger="swavbench.trunk"):
        got = load_trunk(tmp_path / "checkpoint.pth", SPEC)
    assert got.kind == "dino" and "key 'teacher', prefix 'module.backbone.'" in caplog.text
    assert_same(got, teacher)
    assert_same(load_trunk(tmp_path / "checkpoint.pth", SPEC, key="student"), student)
    assert not marker.exists()  # os.system was never called


def test_moco_v2_and_v3_take_the_online_encoder(tmp_path):
    q, k = trunk_state(2), trunk_state(3)
    v2 = {
        "epoch": 200,
        "arch": "resnet50",
        "state_dict": {
            **under("module.encoder_q.", q),
            "module.encoder_q.fc.0.weight": torch.randn(8, 8),
            **under("module.encoder_k.", k),
            "module.queue": torch.randn(8, 16),
            "module.queue_ptr": torch.zeros(1, dtype=torch.long),
        },
        "optimizer": {"state": {}, "param_groups": []},
    }
    torch.save(v2, tmp_path / "moco_v2_200ep_pretrain.pth.tar")
    got = load_trunk(tmp_path / "moco_v2_200ep_pretrain.pth.tar", SPEC)
    assert got.kind == "moco-v2"
    assert_same(got, q)
    v3 = {
        "epoch": 300,
        "arch": "resnet50",
        "state_dict": {
            **under("module.base_encoder.", q),
            **under("module.momentum_encoder.", k),
            "module.predictor.0.weight": torch.randn(8, 8),
        },
    }
    torch.save(v3, tmp_path / "r-50-300ep.pth.tar")
    got = load_trunk(tmp_path / "r-50-300ep.pth.tar", SPEC)
    assert got.kind == "moco-v3"
    assert_same(got, q)
    assert_same(load_trunk(tmp_path / "r-50-300ep.pth.tar", SPEC, strip_prefix="module.momentum_encoder."), k)


def test_lightning_checkpoints_of_solo_learn_and_stable_pretraining(tmp_path):
    """A Lightning .ckpt carries Lightning's AttributeDict and an OmegaConf config in its hyper-parameters;
    read on a machine without Lightning, they stand in inertly and the backbone loads."""
    from omegaconf import OmegaConf

    online, momentum = trunk_state(4), trunk_state(5)
    attribute_dict = fake_module("lightning.fabric.utilities.data", "AttributeDict")
    cfg = OmegaConf.create({"method": "byol", "optimizer": {"name": "lars", "lr": 1.0}, "crops": [2, 6]})
    ckpt = {
        "epoch": 399,
        "global_step": 1000,
        "pytorch-lightning_version": "2.4.0",
        "state_dict": {
            **under("backbone.", online),
            **under("momentum_backbone.", momentum),
            "projector.0.weight": torch.randn(8, 8),
        },
        "hyper_parameters": attribute_dict(cfg=cfg),
        "optimizer_states": [{"state": {}, "param_groups": []}],
        "lr_schedulers": [],
        "callbacks": {"ModelCheckpoint{'monitor': None}": {"best_model_score": None}},
    }
    torch.save(ckpt, tmp_path / "byol-400ep.ckpt")
    drop_fake_modules("lightning")
    got = load_trunk(tmp_path / "byol-400ep.ckpt", SPEC)
    assert got.kind == "lightning"
    assert_same(got, online)


def test_safetensors_timm_layout_and_ambiguity(tmp_path, capsys):
    """timm ResNets use torchvision's names (fc included); two trunks under unknown prefixes are listed."""
    state = trunk_state(6)
    save_file(
        {**state, "fc.weight": torch.randn(10, 64), "fc.bias": torch.zeros(10)}, tmp_path / "m.safetensors"
    )
    got = load_trunk(tmp_path / "m.safetensors", SPEC)
    assert got.kind == "torchvision" and {"fc.weight", "fc.bias"} <= set(got.ignored_keys)
    assert_same(got, state)
    other = trunk_state(7)
    torch.save({**under("net_a.", state), **under("net_b.", other)}, tmp_path / "two.pth")
    with pytest.raises(TrunkLoadError, match=r"several trunks.*strip_prefix=net_a\..*strip_prefix=net_b\."):
        load_trunk(tmp_path / "two.pth", SPEC)
    assert_same(load_trunk(tmp_path / "two.pth", SPEC, strip_prefix="net_b."), other)
    # the command line: convert a MoCo-style file by naming the prefix; the result loads as torchvision
    out = tmp_path / "b.pth"
    argv = ["convert", "--checkpoint", str(tmp_path / "two.pth"), "--to", "torchvision", "--out", str(out)]
    sizes = ["--arch", "resnet18", "--small-stem", "--width-multiplier", "0.125"]
    assert swavbench.main([*argv, *sizes, "--strip-prefix", "net_b."]) == 0
    assert_same(load_trunk(out, SPEC), other)


def test_a_file_of_another_architecture_names_the_first_keys_and_shapes(tmp_path):
    torch.save({"state_dict": under("backbone.", trunk_state(8))}, tmp_path / "r18.ckpt")
    wide = TrunkSpec("resnet18", small_stem=True, width_multiplier=0.25)
    with pytest.raises(TrunkLoadError, match=r"wrong shape \(first: bn1.bias \[8\] in the file, \[16\] here"):
        load_trunk(tmp_path / "r18.ckpt", wide)
