"""A protocol written the way a new one is added (one module: config dataclass + run function), used by
tests/swavbench/test_registry.py to show that one registry entry wires it into every layer."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from benchmark.protocol import TrunkConfig, run_and_record
from swavbench.core.data_root import resolve_fields


@dataclass
class ToyConfig:
    """Counts the images of a folder and the trunk's parameters."""

    DATASET_FIELDS: ClassVar[tuple[str, ...]] = ("images",)

    dataset: str = "toyset"
    images: str = "toyset/val"
    seed: int = 0
    trunk: TrunkConfig = field(default_factory=TrunkConfig)


def run_toy(cfg: ToyConfig, checkpoint: str, out_dir: str | Path):
    cfg = resolve_fields(cfg)

    def body(loaded, device):
        if not Path(cfg.images).is_dir():
            raise FileNotFoundError(f"image folder {cfg.images} does not exist")
        n = sum(1 for p in Path(cfg.images).rglob("*") if p.is_file())
        params = sum(p.numel() for p in loaded.trunk.parameters())
        return {"images": float(n), "trunk_kparams": params / 1e3}, {"val": n}

    return run_and_record("toy", cfg, checkpoint, out_dir=out_dir, body=body)
