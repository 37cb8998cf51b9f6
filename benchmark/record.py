"""The result record every protocol writes (one JSON file, atomically); results/ reads only these.

Schema (version 1): protocol, status ("ok" | "failed"), metrics {name: value}, checkpoint,
checkpoint_sha256, trunk_kind, arch, dataset, splits {split: n_images}, config (the protocol's
full settings, including its ``mode``), seed, wall_time_s, device, model (the report's row
name), pretrain_epochs, versions, error, created; and how it ran: world_size (processes of the
data-parallel run), devices (one name per process), global_batch (images per optimisation step, all
processes together; None for protocols without one), gpu_hours (wall time x the GPUs of the whole
allocation, idle ones included). Records written before these fields read with their defaults.
"""

from __future__ import annotations

import json
import os
import platform
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
import torchvision

from swavbench import durable
from swavbench.paths import RECORD

SCHEMA_VERSION = 1


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
    created: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    schema_version: int = SCHEMA_VERSION


def library_versions() -> dict[str, str]:
    out = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
    }
    try:
        import faiss

        out["faiss"] = faiss.__version__
    except ImportError:
        pass
    return out


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
    """Write ``out_dir/result.json`` durably (``swavbench.durable``)."""
    return durable.write_json(Path(out_dir) / RECORD, asdict(record))


def read_record(path: str | Path) -> ResultRecord:
    data = json.loads(Path(path).read_text())
    if data.get("schema_version") != SCHEMA_VERSION:
        raise ValueError(f"{path}: record schema {data.get('schema_version')!r}, expected {SCHEMA_VERSION}")
    return ResultRecord(**data)
