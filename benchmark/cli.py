"""``swavbench eval <protocol>``: run one evaluation protocol on a checkpoint and write its record."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from benchmark.trunk import TrunkLoadError
from pretrain.checkpoint import CheckpointError
from pretrain.config import ConfigError, list_presets, load_dataclass

EVAL_CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "eval"


def add_parsers(sub: argparse._SubParsersAction) -> None:
    ev = sub.add_parser("eval", help="evaluation protocols on a frozen or fine-tuned trunk",
                        description="Run an evaluation protocol on a checkpoint and write result.json to --out.")
    protocols = ev.add_subparsers(dest="protocol", required=True, metavar="PROTOCOL")
    presets = ", ".join(p for p in list_presets(EVAL_CONFIGS) if p.startswith("knn-"))
    k = protocols.add_parser(
        "knn", help="weighted kNN (k = 10/20/100/200, T = 0.07) on L2-normalised frozen features",
        description="Weighted kNN top-1/top-5 per k on frozen, globally pooled trunk features (faiss exact "
        "inner-product search; torch fallback).",
        epilog=f"presets: {presets}\nexample:\n  swavbench eval knn --checkpoint runs/pretrain-cpu-small/checkpoint.pth "
        "--config knn-cifar10-small --out runs/knn",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    k.add_argument("--checkpoint", required=True,
                   help="swav-bench / official SwAV / torchvision / VISSL file, or 'random' for a seeded random trunk")
    k.add_argument("--config", default="knn-imagenet", help="preset from configs/eval/ or a YAML path")
    k.add_argument("--out", required=True, help="folder for result.json")
    k.add_argument("overrides", nargs="*", metavar="key=value", help="e.g. ks=[20] trunk.arch=resnet18")
    k.set_defaults(func=run_knn_cli)


def run_knn_cli(args: argparse.Namespace) -> int:
    from benchmark.knn import KnnConfig, run_knn

    try:
        cfg = load_dataclass(KnnConfig, EVAL_CONFIGS, args.config, list(args.overrides))
        rec = run_knn(cfg, args.checkpoint, args.out)
    except (ConfigError, CheckpointError, TrunkLoadError, FileNotFoundError, ValueError) as e:
        print(f"swavbench eval knn: error: {e}", file=sys.stderr)
        return 2
    print(f"kNN on {rec.dataset} ({rec.trunk_kind} trunk):")
    for key, value in rec.metrics.items():
        print(f"  {key:<12}{value:6.2f}")
    print(f"record: {Path(args.out).resolve() / 'result.json'}")
    return 0
