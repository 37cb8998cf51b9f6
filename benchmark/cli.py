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
    "semisup": ("benchmark.semisup", "SemisupConfig", "run_semisup", "semisup-imagenet-1pct",
                "semi-supervised fine-tuning of trunk + linear head on a labelled subset (1 or 10 percent of the labels)"),
    "svm": ("benchmark.svm", "SvmConfig", "run_svm", "svm-voc07",
            "VOC07 linear SVMs per class on frozen features, C by cross-validation, 11-point AP (and low-shot)"),
}


def small_preset(protocol: str) -> str:
    return next((p for p in list_presets(EVAL_CONFIGS) if p.startswith(protocol + "-") and p.endswith("-small")), "")


def add_protocol_parser(protocols: argparse._SubParsersAction, command: str, name: str, help_: str, default: str,
                        config_dir: Path, presets: list[str], example: str) -> argparse.ArgumentParser:
    """``swavbench <command> <name>``: --checkpoint, --config (a preset of ``config_dir``), --out, key=value overrides."""
    where = f"{config_dir.parent.name}/{config_dir.name}/"
    p = protocols.add_parser(
        name, help=help_, description=help_[0].upper() + help_[1:] + ". Writes --out/result.json.",
        epilog=f"presets ({where}): {', '.join(presets)}\nexample:\n  swavbench {command} {name} --checkpoint "
        f"runs/main-cpu-small/jobs/swav-s0/checkpoint.pth --config {example or default} --out runs/{name}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--checkpoint", required=True,
                   help="swav-bench / official SwAV / torchvision / VISSL file, or 'random' for a seeded random trunk")
    p.add_argument("--config", default=default, help=f"preset from {where} or a YAML path (default: {default})")
    p.add_argument("--out", required=True, help="folder for result.json (and the protocol's resumable state)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. epochs=10 trunk.arch=resnet18")
    return p


def run_configured(label: str, config_cls: type, config_dir: Path, run, args: argparse.Namespace,
                   extra_overrides: list[str] = ()) -> int:
    """Load the config, run the protocol, print its metrics and where the record is; 2 on a user error."""
    try:
        cfg = load_dataclass(config_cls, config_dir, args.config, [*args.overrides, *extra_overrides])
        rec = run(cfg, args.checkpoint, args.out)
    except (ConfigError, CheckpointError, TrunkLoadError, FileNotFoundError, ValueError, FloatingPointError) as e:
        print(f"swavbench {label}: error: {e}", file=sys.stderr)
        return 2
    print(f"{rec.protocol} on {rec.dataset} ({rec.trunk_kind} trunk, {rec.config.get('backend') or rec.config.get('mode', '')}):")
    for key, value in rec.metrics.items():
        print(f"  {key:<28}{value:8.2f}" if isinstance(value, float) else f"  {key:<28}{value!s:>8}")
    print(f"record: {Path(args.out).resolve() / 'result.json'}")
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    ev = sub.add_parser("eval", help="evaluation protocols on a frozen or fine-tuned trunk",
                        description="Run an evaluation protocol on a checkpoint and write result.json to --out.")
    protocols = ev.add_subparsers(dest="protocol", required=True, metavar="PROTOCOL")
    for name, (_, _, _, default, help_) in PROTOCOLS.items():
        presets = [p for p in list_presets(EVAL_CONFIGS) if p.startswith(name + "-")]
        p = add_protocol_parser(protocols, "eval", name, help_, default, EVAL_CONFIGS, presets, small_preset(name))
        p.set_defaults(func=run_protocol)
    ms = protocols.add_parser("make-subset", help="write a class-balanced labelled subset file (for semisup)",
                              description="Draw a seeded class-balanced subset of an ImageFolder split and write one "
                              "class/file path per line, the format `eval semisup subset=FILE` reads.")
    ms.add_argument("--data", required=True, help="ImageFolder split, e.g. ../shared/data/cifar10-subset/train")
    ms.add_argument("--out", required=True, help="subset file to write")
    group = ms.add_mutually_exclusive_group(required=True)
    group.add_argument("--per-class", type=int, help="images per class")
    group.add_argument("--fraction", type=float, help="fraction of each class (at least one image)")
    ms.add_argument("--seed", type=int, default=0)
    ms.set_defaults(func=run_make_subset)

    b = sub.add_parser("eval-bench", help="print feature-extraction images/s and the N-head linear grid cost ratio",
                       description="Time feature extraction and one epoch of the augmented linear probe with 1 head "
                       "and with an N-head grid, interleaved on the same images. Prints a table; writes nothing.")
    b.add_argument("--checkpoint", default="random")
    b.add_argument("--config", default="linear-cifar10-small", help="linear preset giving data, crop and trunk")
    b.add_argument("--images", type=int, default=2000)
    b.add_argument("--heads", type=int, default=8)
    b.add_argument("--repeats", type=int, default=3)
    b.add_argument("overrides", nargs="*", metavar="key=value")
    b.set_defaults(func=run_eval_bench)


def run_eval_bench(args: argparse.Namespace) -> int:
    from benchmark.bench import run
    from benchmark.linear import LinearConfig

    try:
        cfg = load_dataclass(LinearConfig, EVAL_CONFIGS, args.config, list(args.overrides))
        run(args.checkpoint, cfg, args.images, args.heads, args.repeats)
    except (ConfigError, CheckpointError, TrunkLoadError, FileNotFoundError) as e:
        print(f"swavbench eval-bench: error: {e}", file=sys.stderr)
        return 2
    return 0


def run_make_subset(args: argparse.Namespace) -> int:
    from benchmark.subsets import make_balanced_subset

    try:
        path = make_balanced_subset(args.data, args.out, args.per_class, args.fraction, args.seed)
    except (FileNotFoundError, ValueError) as e:
        print(f"swavbench eval make-subset: error: {e}", file=sys.stderr)
        return 2
    print(f"subset: {path.resolve()} ({len(path.read_text().splitlines())} images)")
    return 0


def run_protocol(args: argparse.Namespace) -> int:
    module, cfg_name, fn_name, _, _ = PROTOCOLS[args.protocol]
    mod = importlib.import_module(module)
    return run_configured(f"eval {args.protocol}", getattr(mod, cfg_name), EVAL_CONFIGS, getattr(mod, fn_name), args)
