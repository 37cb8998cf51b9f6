"""File names of a run directory and where the presets live, defined once for every stage."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "configs"  # configs/<pretrain|supervised|eval|transfer|suites|sweeps|main>/<preset>.yaml

# pretraining run directory (pretrain/train.py, pretrain/supervised.py)
CHECKPOINT = "checkpoint.pth"  # latest checkpoint, written atomically
PREVIOUS_SUFFIX = ".prev"  # checkpoint.pth.prev: the one the latest replaced
TRAIN_LOG = "train_log.jsonl"
RUN_CONFIG = "config.yaml"
# evaluation / transfer output folder (core/record.py)
RECORD = "result.json"
# launch run directory (slurm/launch.py)
LAUNCH_STATE = "launch.json"
LAUNCH_LOCK = ".launch.lease"  # held (slurm/lease.py) by the one launcher working on the run directory
ARRAYS = ".arrays"  # <tag>.json: the job keys of a SLURM array by task index, written before submitting it
PRETRAIN_SETTINGS = "settings.json"  # in a launched pretraining folder: the configuration it holds
REPLACED = "replaced"  # --force: finished output folders are moved here (reports skip it)


def epoch_checkpoint(epoch: int) -> str:
    """Name of the checkpoint kept at the end of ``epoch`` (``run.keep_epoch_checkpoints``)."""
    return f"ckp-{epoch}.pth"


def previous(path: str | Path) -> Path:
    """``checkpoint.pth`` -> ``checkpoint.pth.prev``."""
    path = Path(path)
    return path.with_name(path.name + PREVIOUS_SUFFIX)


def file_part(text: str) -> str:
    """``text`` (a label read from a record or a preset) as one safe file-name part: anything but
    letters, digits, ``.``, ``_``, ``-`` becomes ``_``, and it never starts with a dot, so it cannot leave
    its folder."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(text)).lstrip(".") or "_"
