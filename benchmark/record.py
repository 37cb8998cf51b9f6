"""The result record every protocol writes (one JSON file, atomically); results/ reads only these.

Schema (version 1): protocol, status ("ok" | "failed"), metrics {name: value}, checkpoint,
checkpoint_sha256, trunk_kind, arch, dataset, splits {split: n_images}, config (the protocol's
full settings, including its ``mode``), seed, wall_time_s, device, model (the report's row
name), pretrain_epochs, versions, error, created.
"""

from __future__ import annotations

import json
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


def write_record(record: ResultRecord, out_dir: str | Path) -> Path:
    """Write ``out_dir/result.json`` durably (``swavbench.durable``)."""
    return durable.write_json(Path(out_dir) / RECORD, asdict(record))


def read_record(path: str | Path) -> ResultRecord:
    data = json.loads(Path(path).read_text())
    if data.get("schema_version") != SCHEMA_VERSION:
        raise ValueError(f"{path}: record schema {data.get('schema_version')!r}, expected {SCHEMA_VERSION}")
    return ResultRecord(**data)
