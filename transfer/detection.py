"""Detection transfer (paper Table 3): fine-tune a Faster / Mask R-CNN on the trunk and report AP.

One protocol description, two backends: ``detectron2`` (the reference: the MoCo/SwAV recipes are
Detectron2 configs) and ``torchvision`` (the same model assembled from torchvision parts, runs
wherever torch does). Both read the same data (VOC layout, or COCO instances json), skip degenerate
boxes the same way, are scored by the same evaluator (VOC AP: transfer/voc_eval.py; COCO box and
mask AP: transfer/coco_eval.py) and write the same record.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from benchmark.protocol import run_and_record
from swavbench.core import durable
from swavbench.core.data_root import resolve_fields
from swavbench.core.record import ResultRecord
from transfer.detection_config import DetectionConfig, resolve_backend, validate

__all__ = ["DetectionConfig", "run_detection", "validate"]


def run_detection(cfg: DetectionConfig, checkpoint: str, out_dir: str | Path) -> ResultRecord:
    """Fine-tune and evaluate with the configured backend; write out_dir/result.json (+ the merged config)."""
    validate(cfg)
    cfg = resolve_fields(cfg)
    backend = resolve_backend(cfg)
    cfg.backend = backend
    out_dir = Path(out_dir)
    durable.write_json(out_dir / "detection_config.json", asdict(cfg))

    def body(loaded, device):
        if backend == "detectron2":
            from transfer.detection_detectron2 import train_and_evaluate
        else:
            from transfer.detection_torchvision import train_and_evaluate
        return train_and_evaluate(cfg, loaded, device, out_dir=out_dir)

    return run_and_record("detection", cfg, checkpoint, out_dir=out_dir, body=body)
