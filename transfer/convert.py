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

import json
import pickle
import re
from pathlib import Path

import torch

from benchmark.trunk import LoadedTrunk, provenance_path, sha256_of
from swavbench.core import durable
from swavbench.core.state import atomic_save, load_checkpoint


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


def provenance(loaded: LoadedTrunk, fmt: str, out: Path) -> dict:
    """What the converted file is: its source (path, kind, sha256, the swav-bench config), the label its
    rows get in reports, and whether it was trained with labels; keyed by the output's sha256."""
    source = Path(loaded.source)
    config = None
    if loaded.kind == "swav-bench":
        config = load_checkpoint(source).get("config")
    return {
        "sha256": sha256_of(out),
        "format": fmt,
        "source": str(source.resolve()),
        "source_kind": loaded.kind,
        "source_sha256": loaded.sha256,
        "source_config": config,
        "arch": loaded.spec.name(),
        "label": loaded.label(),
        "supervised": loaded.supervised,
        "pretrain_epochs": loaded.pretrain_epochs,
        "pretrain_batch": loaded.pretrain_batch,
        "converted_by": "swavbench convert",
    }


def convert(loaded: LoadedTrunk, fmt: str, out: str | Path) -> Path:
    """Write the trunk of ``loaded`` as ``torchvision`` (.pth) or ``detectron2`` (.pkl), atomically, with
    ``<out>.provenance.json`` beside it, so that the converted file keeps its source's label (a converted
    SwAV trunk is never taken for the supervised baseline)."""
    out = Path(out)
    state = loaded.trunk.state_dict()
    if fmt == "torchvision":
        atomic_save(torchvision_state(state), out)
    elif fmt == "detectron2":
        weights = detectron2_weights(state)
        durable.write_with(out, lambda f: pickle.dump(weights, f))
    else:
        raise ValueError(f"unknown format {fmt!r}: use torchvision or detectron2")
    text = json.dumps(provenance(loaded, fmt, out), indent=1, sort_keys=True, default=str)
    durable.write_bytes(provenance_path(out), text.encode())
    return out
