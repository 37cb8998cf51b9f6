"""The pretraining checkpoint's layout and which file a run resumes from.

A swav-bench checkpoint is a ``torch.save`` dict::

    {"format": "swav-bench/1",
     "state_dict": {<torchvision ResNet keys: conv1.weight, layer1.0.conv1.weight, ...>,
                    "projection_head.0.weight", ..., "prototypes.weight"},
     "optimizer": ..., "scaler": ..., "queue": ..., "epoch": int, "iteration": int,
     "config": {...}, "rng": {...}}

``state_dict`` is exactly the official SwAV release layout without DDP's ``module.`` prefix,
so ``load_trunk_state_dict`` reads both: it strips ``module.`` and drops the head and
prototypes, leaving keys equal to torchvision's resnet50 minus ``fc.*``.

Files are read and written by ``swavbench.core.state`` (``weights_only``, durable writes).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from swavbench.core import durable
from swavbench.core.paths import CHECKPOINT, PREVIOUS_SUFFIX, TRAIN_LOG, previous
from swavbench.core.state import (
    CheckpointError,
    CheckpointUnavailable,
    UnsafeCheckpointError,
    load_checkpoint,
)

FORMAT = "swav-bench/1"
HEAD_PREFIXES = ("projection_head.", "prototypes.")


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


def _epoch_of(p: Path) -> int:
    """``ckp-<epoch>.pth`` (or its ``.prev``) -> epoch; -1 for any other file."""
    stem = p.name.removesuffix(PREVIOUS_SUFFIX).removesuffix(".pth")
    return int(stem.removeprefix("ckp-")) if stem.startswith("ckp-") and stem[4:].isdigit() else -1


def resume_candidates(out_dir: str | Path) -> list[Path]:
    """Checkpoints a run in ``out_dir`` may continue from, newest first by construction: the latest,
    the one it replaced (``.prev``), then the kept epoch checkpoints from the last epoch down."""
    out_dir = Path(out_dir)
    latest = out_dir / CHECKPOINT
    kept = sorted(
        (
            p
            for p in out_dir.glob("ckp-*.pth*")
            if _epoch_of(p) >= 0 and p.suffix in (".pth", PREVIOUS_SUFFIX)
        ),
        key=lambda p: (_epoch_of(p), p.suffix == ".pth"),
        reverse=True,
    )
    return [p for p in (latest, previous(latest), *kept) if p.is_file()]


def progress_of(ckpt: dict) -> tuple[int, int]:
    """(epoch, iteration) a training checkpoint reached; supervised checkpoints count epochs only."""
    return int(ckpt.get("epoch", 0)), int(ckpt.get("iteration", 0))


def newest_valid_checkpoint(
    out_dir: str | Path, *, map_location: str | torch.device = "cpu"
) -> Resumable | None:
    """The checkpoint to continue the run in ``out_dir`` from: the latest when it reads as a swav-bench
    training checkpoint, else the newest readable of ``.prev`` and the epoch checkpoints (the skipped
    ones and why are in ``skipped``). None when there is no checkpoint at all; CheckpointError when
    there are some and none reads (a run is never silently restarted); CheckpointUnavailable when a file
    keeps failing with an I/O error (it is not skipped: it may be the newest, and good)."""
    candidates = resume_candidates(out_dir)
    if not candidates:
        return None
    skipped: dict[Path, str] = {}
    best: Resumable | None = None
    for path in candidates:
        try:
            ckpt = load_checkpoint(path, map_location=map_location)
        except (UnsafeCheckpointError, CheckpointUnavailable):  # not damage: nothing is skipped or set aside
            raise
        except CheckpointError as e:
            skipped[path] = str(e)
            continue
        if ckpt.get("format") != FORMAT or "epoch" not in ckpt:
            skipped[path] = f"{path} is not a swav-bench training checkpoint (format {ckpt.get('format')!r})"
            continue
        if best is None or progress_of(ckpt) > progress_of(best.ckpt):
            best = Resumable(path, ckpt, skipped)
        if path.name == CHECKPOINT:  # the latest reads: it is the newest by construction
            break
    if best is None:
        listing = "; ".join(skipped.values())
        raise CheckpointError(
            f"no checkpoint in {out_dir} can be read ({listing}); nothing was changed. "
            "Resume from another file with --resume CKPT, or discard the run with --restart"
        )
    best.skipped = skipped
    return best


@dataclass
class Resumable:
    """A checkpoint chosen to continue a run from, with the newer ones that could not be read."""

    path: Path
    ckpt: dict
    skipped: dict[Path, str]

    def describe(self) -> str:
        why = "".join(f"; skipped {p.name}: {e}" for p, e in self.skipped.items())
        epoch, iteration = progress_of(self.ckpt)
        return f"{self.path} (epoch {epoch}, iteration {iteration}){why}"

    def set_aside_unreadable(self) -> list[Path]:
        """Rename the unreadable newer files (``<name>.unreadable``) so the next save cannot rotate one of
        them over the good copy; they stay for inspection."""
        moved = []
        for p in self.skipped:
            if p.is_file():
                target = p.with_name(p.name + ".unreadable")
                durable.move_aside(p, target)
                moved.append(target)
        return moved


def abandoned_epoch_checkpoints(out_dir: str | Path, start: Resumable) -> list[Path]:
    """Epoch checkpoints in ``out_dir`` past the one a run explicitly goes back to (``--resume CKPT``):
    they belong to the branch left behind, and must not be taken for the newest state later."""
    epoch = progress_of(start.ckpt)[0]
    out = []
    for p in resume_candidates(out_dir):
        if _epoch_of(p) > epoch and p.resolve() != start.path.resolve():
            out.append(p)
    return out


def run_files(out_dir: str | Path) -> list[Path]:
    """What a training run leaves in ``out_dir`` that a fresh start would throw away."""
    out_dir = Path(out_dir)
    return [*resume_candidates(out_dir), *(p for p in [out_dir / TRAIN_LOG] if p.is_file())]


def discard_run(out_dir: str | Path) -> list[Path]:
    """``--restart``: delete the checkpoints and the log of the run in ``out_dir``; returns them."""
    files = run_files(out_dir)
    for p in files:
        p.unlink(missing_ok=True)
    return files
