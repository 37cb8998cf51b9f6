"""``swavbench eval <protocol>``: run one evaluation protocol on a checkpoint and write its record."""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

from benchmark.trunk import TrunkLoadError
from pretrain.checkpoint import CheckpointError
from pretrain.config import ConfigError, list_presets, load_dataclass

EVAL_CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "eval"

# protocol -> (module, config class, run function, default preset, one-line help)
PROTOCOLS = {
    "linear": ("benchmark.linear", "LinearConfig", "run_linear", "linear-imagenet",
               "linear probe on the frozen trunk (lr x wd grid in one pass; augmented or cached features)"),
    "knn": ("benchmark.knn", "KnnConfig", "run_knn", "knn-imagenet",
            "weighted kNN (k = 10/20/100/200, T = 0.07) on L2-normalised frozen features (faiss)"),
}


def add_parsers(sub: argparse._SubParsersAction) -> None:
    ev = sub.add_parser("eval", help="evaluation protocols on a frozen or fine-tuned trunk",
                        description="Run an evaluation protocol on a checkpoint and write result.json to --out.")
    protocols = ev.add_subparsers(dest="protocol", required=True, metavar="PROTOCOL")
    for name, (_, _, _, default, help_) in PROTOCOLS.items():
        presets = ", ".join(p for p in list_presets(EVAL_CONFIGS) if p.startswith(name + "-"))
        p = protocols.add_parser(
            name, help=help_, description=help_[0].upper() + help_[1:] + ". Writes --out/result.json.",
            epilog=f"presets: {presets}\nexample:\n  swavbench eval {name} --checkpoint runs/pretrain-cpu-small/checkpoint.pth "
            f"--config {name}-cifar10-small --out runs/{name}",
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        p.add_argument("--checkpoint", required=True,
                       help="swav-bench / official SwAV / torchvision / VISSL file, or 'random' for a seeded random trunk")
        p.add_argument("--config", default=default, help=f"preset from configs/eval/ or a YAML path (default: {default})")
        p.add_argument("--out", required=True, help="folder for result.json")
        p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. epochs=10 trunk.arch=resnet18")
        p.set_defaults(func=run_protocol)


def run_protocol(args: argparse.Namespace) -> int:
    module, cfg_name, fn_name, _, _ = PROTOCOLS[args.protocol]
    mod = importlib.import_module(module)
    try:
        cfg = load_dataclass(getattr(mod, cfg_name), EVAL_CONFIGS, args.config, list(args.overrides))
        rec = getattr(mod, fn_name)(cfg, args.checkpoint, args.out)
    except (ConfigError, CheckpointError, TrunkLoadError, FileNotFoundError, ValueError) as e:
        print(f"swavbench eval {args.protocol}: error: {e}", file=sys.stderr)
        return 2
    print(f"{args.protocol} on {rec.dataset} ({rec.trunk_kind} trunk, {rec.config.get('mode', '')}):")
    for key, value in rec.metrics.items():
        print(f"  {key:<28}{value:8.2f}" if isinstance(value, float) else f"  {key:<28}{value!s:>8}")
    print(f"record: {Path(args.out).resolve() / 'result.json'}")
    return 0
