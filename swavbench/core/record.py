"""The result record every protocol writes (one JSON file, atomically); results/ reads only these.

Schema (version 3): protocol (the registry name of what ran; a backend entry's records name the protocol it
is a backend of: DETR's say detection), benchmark (its report key: the column the
report gives it), status ("ok" | "failed"), metrics {name: value}, checkpoint,
checkpoint_sha256, trunk_kind, arch, dataset, splits {split: n_images}, config (the protocol's
full settings, including its ``mode``), seed, wall_time_s, device, model (the report's row
name), pretrain_epochs, versions, error, created; and how it ran: world_size (processes of the
data-parallel run), devices (one name per process), global_batch (images per optimisation step, all
processes together; None for protocols without one), gpu_hours (wall time x the GPUs of the whole
allocation, idle ones included); and what was evaluated: trunk_arch (the table's architecture name, with
width and stem), pretrain_batch, trunk_provenance (a converted file's source). Records written before these
fields read with their defaults.
"""

from __future__ import annotations

import functools
import json
import os
import platform
import subprocess
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
import torchvision

from swavbench.core import durable
from swavbench.core.paths import RECORD

SCHEMA_VERSION = 3
# version 1 named a record by its report key (``detection-frcnn-c4``, ``detection-detr``; ``linear`` for both
# probes, the transfer one told apart by these datasets), version 2 DETR's by its own registry name (detr):
# ``upgrade`` renames them
V1_TRANSFER_DATASETS = {"places205", "inat18", "voc07", "voc0712", "coco", "scene15", "bccd"}


@dataclass
class ResultRecord:
    protocol: str
    status: str
    metrics: dict[str, float]
    checkpoint: str
    checkpoint_sha256: str | None
    trunk_kind: str
    arch: str
    dataset: str
    splits: dict[str, int]
    config: dict[str, Any]
    seed: int
    wall_time_s: float
    device: str
    model: str = ""  # report row: random, supervised, the pretraining run's folder name, or trunk.label
    pretrain_epochs: int | None = None
    versions: dict[str, str] = field(default_factory=lambda: library_versions())
    error: str | None = None
    world_size: int = 1
    devices: list[str] = field(default_factory=list)
    global_batch: int | None = None
    gpu_hours: float = 0.0
    # what was evaluated: the trunk as the tables name it (resnet50, resnet50w0.125-smallstem), the
    # pretraining's global batch, and a converted file's provenance (source kind, sha256, label)
    trunk_arch: str = ""
    pretrain_batch: int | None = None
    trunk_provenance: dict[str, Any] | None = None
    # which pretraining made the trunk, its seed aside: runs of one recipe at several seeds are averaged,
    # runs of different recipes under one row name are not (results.collect)
    trunk_recipe: str | None = None
    # images the trunk's pretraining actually trained on (unreadable ones left out), when its checkpoint says
    pretrain_images_seen: int | None = None
    created: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    schema_version: int = SCHEMA_VERSION
    benchmark: str = ""  # the report key (registry.benchmark_id); written by run_and_record


def library_versions() -> dict[str, str]:
    """Versions that change the numbers: Python, PyTorch, torchvision, scikit-learn, faiss, Detectron2 (those
    installed), and this harness (package version and git commit when run from a checkout)."""
    out = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
    }
    for name, dist in (
        ("scikit-learn", "scikit-learn"),
        ("faiss", "faiss-cpu"),
        ("faiss", "faiss-gpu"),
        ("detectron2", "detectron2"),
        ("swav-bench", "swav-bench"),
    ):
        try:
            out[name] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    commit = code_commit()
    if commit:
        out["swav-bench-commit"] = commit
    return out


@functools.cache
def code_commit() -> str | None:
    """The git commit of the checkout this code runs from ('+dirty' with local changes), if it is one."""
    repo = Path(__file__).resolve().parents[2]
    if not (repo / ".git").exists():
        return None
    try:
        head = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10
        )
        dirty = subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if head.returncode != 0:
        return None
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({torch.get_num_threads()} threads)"


def allocation_gpus(world_size: int, device: torch.device) -> int:
    """GPUs of the whole allocation: SLURM's count per node x nodes inside a job, else one per process on
    GPUs (torchrun), else none."""
    per_node, nodes = os.environ.get("SLURM_GPUS_ON_NODE", ""), os.environ.get("SLURM_JOB_NUM_NODES", "1")
    if per_node.isdigit() and nodes.isdigit():
        return int(per_node) * int(nodes)
    return world_size if device.type == "cuda" else 0


def write_record(record: ResultRecord, out_dir: str | Path) -> Path:
    """Write ``out_dir/result.json`` durably (``swavbench.core.durable``)."""
    return durable.write_json(Path(out_dir) / RECORD, asdict(record))


def upgrade(data: dict) -> dict:
    """A record dict of an earlier schema in today's: the protocol's registry name in ``protocol`` (version 2
    named DETR's records by its own registry name, ``detr``), the report key in ``benchmark``. Other versions
    are returned unchanged (readers refuse them)."""
    version, old = data.get("schema_version"), data.get("protocol")
    if version not in (1, 2) or not isinstance(old, str):
        return data
    from swavbench.core.registry import PROTOCOLS, benchmark_id

    config, new = data.get("config") or {}, old
    if version == 1:
        new = "detection" if old.startswith("detection-") else old
        if old == "linear" and (data.get("dataset") in V1_TRANSFER_DATASETS or "root" in config):
            new = "transfer-linear"
        data = {**data, "benchmark": benchmark_id(old, config)}
    new = PROTOCOLS[new].record_name if new in PROTOCOLS else new
    return {**data, "protocol": new, "schema_version": SCHEMA_VERSION}


def read_record(path: str | Path) -> ResultRecord:
    data = upgrade(json.loads(Path(path).read_text()))
    if data.get("schema_version") != SCHEMA_VERSION:
        raise ValueError(f"{path}: record schema {data.get('schema_version')!r}, expected {SCHEMA_VERSION}")
    return ResultRecord(**data)
