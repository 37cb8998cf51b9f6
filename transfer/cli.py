"""``swavbench transfer detection|linear``: transfer protocols on a checkpoint; ``swavbench convert``:
trunk checkpoint -> torchvision .pth / Detectron2 .pkl."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from benchmark.cli import add_protocol_group
from swavbench.core.commands import command
from swavbench.core.paths import CONFIGS

TRANSFER_CONFIGS = CONFIGS / "transfer"


def add_parsers(sub: argparse._SubParsersAction) -> None:
    doc = "Transfer protocols: detection, linear classification on other datasets\n\nRun a transfer protocol "
    add_protocol_group(
        sub,
        "transfer",
        doc + "on a checkpoint and write result.json to --out. VOC07 classification is `swavbench eval svm`.",
    )
    add_convert_parser(sub)


def add_convert_parser(sub: argparse._SubParsersAction) -> None:
    p = command(sub, "convert", run=run_convert)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--to", choices=["torchvision", "detectron2"], required=True)
    p.add_argument("--out", required=True, help="file to write (.pth for torchvision, .pkl for detectron2)")
    p.add_argument(
        "--arch", default="resnet50", help="architecture for files that do not name it (default resnet50)"
    )
    p.add_argument("--small-stem", action="store_true")
    p.add_argument("--width-multiplier", type=float, default=1.0)
    p.add_argument("--key", default="", help="the dict holding the trunk (e.g. teacher); default: found")
    p.add_argument("--strip-prefix", default="", help="key prefix of the trunk (e.g. module.encoder_q.)")


def run_convert(args: argparse.Namespace) -> int:
    """Convert a trunk checkpoint to a torchvision .pth or a Detectron2 .pkl

    Load a trunk from a swav-bench, official SwAV, torchvision / timm, VISSL, DINO, MoCo v2 / v3 or
    Lightning (solo-learn, stable-pretraining) checkpoint, or a .safetensors file, and write it as a
    torchvision ResNet state dict (no fc) or a Detectron2 weights file. For Detectron2 set
    MODEL.RESNETS.STRIDE_IN_1X1=False, INPUT.FORMAT=RGB and torchvision's pixel mean/std (see
    transfer/convert.py).
    """
    from benchmark.trunk import TrunkLoadError, TrunkSpec, load_trunk
    from swavbench.core.state import CheckpointError
    from transfer.convert import convert

    try:
        spec = TrunkSpec(args.arch, args.small_stem, args.width_multiplier)
        loaded = load_trunk(args.checkpoint, spec, key=args.key, strip_prefix=args.strip_prefix)
        out = convert(loaded, args.to, args.out)
    except (CheckpointError, TrunkLoadError, ValueError) as e:
        print(f"swavbench convert: error: {e}", file=sys.stderr)
        return 2
    print(f"{args.to} weights ({loaded.kind} {loaded.spec.arch} trunk): {Path(out).resolve()}")
    return 0
