"""Atomic checkpoints and the on-disk layout.

A swav-bench checkpoint is a ``torch.save`` dict::

    {"format": "swav-bench/1",
     "state_dict": {<torchvision ResNet keys: conv1.weight, layer1.0.conv1.weight, ...>,
                    "projection_head.0.weight", ..., "prototypes.weight"},
     "optimizer": ..., "scaler": ..., "queue": ..., "epoch": int, "iteration": int,
     "config": {...}, "rng": {...}}

``state_dict`` is exactly the official SwAV release layout without DDP's ``module.`` prefix,
so ``load_trunk_state_dict`` reads both: it strips ``module.`` and drops the head and
prototypes, leaving keys equal to torchvision's resnet50 minus ``fc.*``.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from swavbench import durable
from swavbench.paths import previous

FORMAT = "swav-bench/1"
HEAD_PREFIXES = ("projection_head.", "prototypes.")


class CheckpointError(RuntimeError):
    """A checkpoint cannot be read or does not fit; the message names the file and the fix."""


def atomic_save(obj: Any, path: str | Path) -> Path:
    """``torch.save`` through the durable writer: the file at ``path`` is always whole."""
    return durable.torch_save(obj, path)


def save_rotating(obj: Any, path: str | Path) -> Path:
    """Write ``path`` durably, keeping the one it replaces as ``<name>.prev``; ``path`` exists (old or
    new) at every moment."""
    durable.keep_previous(path, previous(path))
    return durable.torch_save(obj, path)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Load a checkpoint, turning truncation and corruption into a CheckpointError."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=False)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, OSError, ValueError) as e:
        prev = previous(path)
        hint = (
            f"; the previous good checkpoint is {prev}: resume from it with --resume {prev}"
            if prev.is_file()
            else ""
        )
        raise CheckpointError(
            f"checkpoint {path} is truncated or corrupt ({type(e).__name__}: {e}){hint}"
        ) from e
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"checkpoint {path} holds a {type(ckpt).__name__}, not a dict of tensors")
    return ckpt


def release_state_dict(model_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """SwAVModel state dict -> official layout (trunk keys without the ``trunk.`` prefix)."""
    return {k.removeprefix("trunk."): v for k, v in model_state.items()}


def model_state_dict(release: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official layout (``module.`` optional) -> SwAVModel state dict."""
    out = {}
    for k, v in release.items():
        k = k.removeprefix("module.")
        out[k if k.startswith(HEAD_PREFIXES) else "trunk." + k] = v
    return out


def split_trunk_state(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Strip DDP's ``module.`` prefix and set aside the projection head, prototypes and ``fc``:
    (trunk state with torchvision keys, names of the keys set aside)."""
    trunk, ignored = {}, []
    for k, v in state.items():
        k = k.removeprefix("module.")
        if k.startswith(HEAD_PREFIXES) or k.startswith("fc."):
            ignored.append(k)
        else:
            trunk[k] = v
    return trunk, ignored


def load_trunk_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Trunk weights (torchvision resnet keys, no fc) from a swav-bench or official SwAV file."""
    ckpt = load_checkpoint(path)
    state = ckpt.get("state_dict", ckpt)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(
            f"{path}: no state dict of tensors found (expected 'state_dict' or a flat dict)"
        )
    return split_trunk_state(state)[0]
