"""Handmade result records for the results tests."""

import json
from pathlib import Path


def record(
    protocol,
    dataset,
    metrics,
    model,
    seed=0,
    status="ok",
    error=None,
    epochs=800,
    config=None,
    arch="resnet50",
    batch=None,
):
    return {
        "protocol": protocol,
        "status": status,
        "metrics": metrics if status == "ok" else {},
        "checkpoint": f"/ckpt/{model}.pth",
        "checkpoint_sha256": "ab" * 32,
        "trunk_kind": "swav-bench",
        "arch": arch,
        "trunk_arch": arch,
        "dataset": dataset,
        "splits": {"train": 100, "val": 50},
        "config": config or {"mode": "augmented", "epochs": 100, "lrs": [0.3], "crop": 224},
        "seed": seed,
        "wall_time_s": 3600.0,
        "device": "NVIDIA H100",
        "model": model,
        "pretrain_epochs": None if model in ("random", "supervised") else epochs,
        "pretrain_batch": batch,
        "versions": {},
        "error": error,
        "created": "2026-11-23T00:00:00+00:00",
        "schema_version": 1,
    }


def write_handmade(root: Path) -> None:
    recs = {
        "a/linear-s0": record(
            "linear", "imagenet", {"top1": 74.0, "top5": 91.0, "top1_best_epoch": 74.2}, "swav-a", 0
        ),
        "a/linear-s1": record(
            "linear", "imagenet", {"top1": 75.0, "top5": 92.0, "top1_best_epoch": 75.2}, "swav-a", 1
        ),
        "a/semisup": record(
            "semisup",
            "imagenet",
            {"top1": 50.0, "top5": 78.0, "top1_best_epoch": 50.0, "top5_best_epoch": 78.0},
            "swav-a",
            config={
                "mode": "finetune",
                "subset": "subset:imagenet-1pct",
                "epochs": 20,
                "trunk_lr": 0.02,
                "head_lr": 5.0,
                "crop": 224,
            },
        ),
        "a/svm": record(
            "svm", "voc07", {"mAP": 88.0}, "swav-a", config={"mode": "frozen-features", "crop": 224}
        ),
        "a/knn": record(
            "knn", "imagenet", {}, "swav-a", status="failed", error="RuntimeError: out of memory"
        ),
        "sup/linear": record(
            "linear", "imagenet", {"top1": 76.0, "top5": 93.0, "top1_best_epoch": 76.0}, "supervised"
        ),
        "rand/linear": record("linear", "imagenet", {"top1": 5.0, "top5": 14.0}, "random"),
    }
    for name, rec in recs.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        (root / name / "result.json").write_text(json.dumps(rec))
    (root / "broken").mkdir()
    (root / "broken" / "result.json").write_text('{"protocol": "linear", "status": ')
