"""Checkpoint conversion: any trunk the harness loads -> a torchvision ResNet state dict (.pth)
or a Detectron2 weights file (.pkl).

Detectron2 names: ``conv1`` / ``bn1`` -> ``stem.conv1`` / ``stem.conv1.norm``; ``layerN`` ->
``res{N+1}``; ``bnK`` -> ``convK.norm``; ``downsample.0`` / ``.1`` -> ``shortcut`` /
``shortcut.norm``; BatchNorm's ``num_batches_tracked`` is dropped. Use the file with the
torchvision-style settings: ``MODEL.RESNETS.STRIDE_IN_1X1: False``, ``INPUT.FORMAT: RGB``,
``MODEL.PIXEL_MEAN: [123.675, 116.28, 103.53]``, ``MODEL.PIXEL_STD: [58.395, 57.12, 57.375]``
(and for SwAV's widened ResNets ``STEM_OUT_CHANNELS``, ``RES2_OUT_CHANNELS``,
``WIDTH_PER_GROUP`` multiplied by the width).
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import torch

from benchmark.trunk import LoadedTrunk
from pretrain.checkpoint import atomic_save
from swavbench import durable


def torchvision_state(trunk_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Trunk keys are already torchvision's (without ``fc``): a detached CPU copy."""
    return {k: v.detach().cpu().clone() for k, v in trunk_state.items()}


def detectron2_name(key: str) -> str | None:
    """torchvision ResNet key -> Detectron2 ResNet key (None: not carried over)."""
    if key.endswith("num_batches_tracked") or key.startswith("fc."):
        return None
    if not key.startswith("layer"):
        key = "stem." + key
    key = re.sub(r"layer(\d)", lambda m: f"res{int(m.group(1)) + 1}", key)
    key = re.sub(r"bn(\d)", r"conv\1.norm", key)
    return key.replace("downsample.0", "shortcut").replace("downsample.1", "shortcut.norm")


def detectron2_weights(trunk_state: dict[str, torch.Tensor]) -> dict:
    model = {}
    for k, v in trunk_state.items():
        name = detectron2_name(k)
        if name is not None:
            model[name] = v.detach().cpu().numpy()
    return {"model": model, "__author__": "swav-bench", "matching_heuristics": True}


def convert(loaded: LoadedTrunk, fmt: str, out: str | Path) -> Path:
    """Write the trunk of ``loaded`` as ``torchvision`` (.pth) or ``detectron2`` (.pkl), atomically."""
    out = Path(out)
    state = loaded.trunk.state_dict()
    if fmt == "torchvision":
        return atomic_save(torchvision_state(state), out)
    if fmt == "detectron2":
        weights = detectron2_weights(state)
        return durable.write_with(out, lambda f: pickle.dump(weights, f))
    raise ValueError(f"unknown format {fmt!r}: use torchvision or detectron2")
