"""``swavbench eval <protocol>``: run one evaluation protocol on a checkpoint and write its record."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import yaml

from benchmark.trunk import TrunkLoadError
from swavbench.core import registry
from swavbench.core.commands import command
from swavbench.core.config import ConfigError, load_dataclass
from swavbench.core.data_root import add_data_root_argument
from swavbench.core.paths import CHECKPOINT, CONFIGS, RECORD
from swavbench.core.registry import Protocol
from swavbench.core.state import CheckpointError

EVAL_CONFIGS = CONFIGS / "eval"


def add_protocol_parser(protocols: argparse._SubParsersAction, entry: Protocol) -> argparse.ArgumentParser:
    """``swavbench <group> <subcommand>`` of a registry entry: --checkpoint, --config (a preset of its
    folder or a YAML path), --out, key=value overrides."""
    group, name = entry.command
    where = f"configs/{group}/"
    default = entry.default_preset()
    presets = [*entry.presets, *(p for b in entry.backends for p in b.presets)]
    help_ = entry.help
    p = command(
        protocols,
        name,
        f"{help_}\n\n{help_}. Writes --out/{RECORD}.",
        examples=[  # a smoke run of each implementation (DETR of detection: a backend entry's presets)
            f"swavbench {group} {name} --checkpoint runs/main-cpu-small/jobs/swav-s0/{CHECKPOINT} "
            f"--config {impl.small_preset} --out runs/{impl.name}"
            for impl in (entry, *entry.backends)
        ],
        notes=f"presets ({where}): {', '.join(presets)}",
        run=run_protocol,
    )
    p.add_argument(
        "--checkpoint",
        help="swav-bench / official SwAV / torchvision / VISSL file, or 'random' for a seeded random trunk "
        "(required unless --print-config)",
    )
    by_backend = "".join(
        f"; {b.default_preset()} for --backend {b.backend_values[0]}" for b in entry.backends
    )
    p.add_argument("--config", help=f"preset from {where} or a YAML path (default: {default}{by_backend})")
    p.add_argument(
        "--out",
        help=f"folder for {RECORD} and the protocol's resumable state (required unless --print-config)",
    )
    p.add_argument(
        "--print-config",
        action="store_true",
        help="print the resolved config (preset + overrides) as YAML and exit",
    )
    p.add_argument(
        "overrides",
        nargs="*",
        metavar="key=value",
        help="config overrides, e.g. epochs=10 trunk.arch=resnet18",
    )
    if entry.cli_backends:
        p.add_argument(
            "--backend",
            choices=entry.cli_backends,
            help="override the preset's backend (auto: the best installed)",
        )
    add_data_root_argument(p)
    p.set_defaults(protocol_name=entry.name)
    return p


def add_protocol_group(sub: argparse._SubParsersAction, group: str, doc: str) -> argparse._SubParsersAction:
    """``swavbench <group>`` (eval, transfer), described by ``doc``: a subcommand per registry entry."""
    protocols = command(sub, group, doc).add_subparsers(dest="protocol", required=True, metavar="PROTOCOL")
    for entry in registry.in_group(group):
        add_protocol_parser(protocols, entry)
    return protocols


def run_configured(entry: Protocol, args: argparse.Namespace, extra_overrides: list[str] = ()) -> int:
    """Load the entry's config, run the protocol, print its metrics and where the record is.

    Returns 2 on a user error."""
    label = " ".join(entry.command)
    try:
        cfg = entry.load_config(args.config, [*args.overrides, *extra_overrides])
        if args.print_config:
            print(yaml.safe_dump(dataclasses.asdict(cfg), sort_keys=False), end="")
            return 0
        missing = [f"--{k}" for k in ("checkpoint", "out") if getattr(args, k) is None]
        if missing:
            print(f"swavbench {label}: error: {' and '.join(missing)} required", file=sys.stderr)
            return 2
        rec = entry.runner()(cfg, args.checkpoint, args.out)
    except (
        ConfigError,
        CheckpointError,
        TrunkLoadError,
        FileNotFoundError,
        ValueError,
        FloatingPointError,
    ) as e:
        print(f"swavbench {label}: error: {e}", file=sys.stderr)
        return 2
    kind = rec.config.get("backend") or rec.config.get("mode", "")
    print(f"{rec.protocol} on {rec.dataset} ({rec.trunk_kind} trunk, {kind}):")
    for key, value in rec.metrics.items():
        print(f"  {key:<28}{value:8.2f}" if isinstance(value, float) else f"  {key:<28}{value!s:>8}")
    print(f"record: {Path(args.out).resolve() / RECORD}")
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    doc = (
        "Evaluation protocols on a frozen or fine-tuned trunk\n\nRun an evaluation protocol on a checkpoint "
    )
    protocols = add_protocol_group(sub, "eval", doc + f"and write {RECORD} to --out.")
    ms = command(protocols, "make-subset", run=run_make_subset)
    ms.add_argument(
        "--data", required=True, help="ImageFolder split, e.g. ../shared/data/cifar10-subset/train"
    )
    ms.add_argument("--out", required=True, help="subset file to write")
    group = ms.add_mutually_exclusive_group(required=True)
    group.add_argument("--per-class", type=int, help="images per class")
    group.add_argument("--fraction", type=float, help="fraction of each class (at least one image)")
    ms.add_argument("--seed", type=int, default=0)

    b = command(sub, "eval-bench", run=run_eval_bench)
    b.add_argument("--checkpoint", default="random")
    b.add_argument(
        "--config", default="linear-cifar10-small", help="linear preset giving data, crop and trunk"
    )
    b.add_argument("--images", type=int, default=2000)
    b.add_argument("--heads", type=int, default=8)
    b.add_argument("--repeats", type=int, default=3)
    b.add_argument("overrides", nargs="*", metavar="key=value")
    add_data_root_argument(b)


def run_eval_bench(args: argparse.Namespace) -> int:
    """Print feature-extraction images/s and the N-head linear grid cost ratio

    Time feature extraction and one epoch of the augmented linear probe with 1 head and with an N-head
    grid, interleaved on the same images. Prints a table; writes nothing.
    """
    from benchmark.linear import LinearConfig
    from swavbench.checks.eval_bench import run

    try:
        cfg = load_dataclass(LinearConfig, EVAL_CONFIGS, args.config, overrides=list(args.overrides))
        run(args.checkpoint, cfg, args.images, n_heads=args.heads, repeats=args.repeats)
    except (ConfigError, CheckpointError, TrunkLoadError, FileNotFoundError) as e:
        print(f"swavbench eval-bench: error: {e}", file=sys.stderr)
        return 2
    return 0


def run_make_subset(args: argparse.Namespace) -> int:
    """Write a class-balanced labelled subset file (for semisup)

    Draw a seeded class-balanced subset of an ImageFolder split and write one class/file path per line,
    the format `eval semisup subset=FILE` reads.
    """
    from benchmark.subsets import make_balanced_subset

    try:
        path = make_balanced_subset(
            args.data, args.out, args.per_class, fraction=args.fraction, seed=args.seed
        )
    except (FileNotFoundError, ValueError) as e:
        print(f"swavbench eval make-subset: error: {e}", file=sys.stderr)
        return 2
    print(f"subset: {path.resolve()} ({len(path.read_text().splitlines())} images)")
    return 0


def run_protocol(args: argparse.Namespace) -> int:
    """Run the registry entry the subcommand was built for (``eval`` and ``transfer`` alike)."""
    entry = registry.get(args.protocol_name)
    chosen = getattr(args, "backend", None)
    args.config = args.config or entry.default_preset(chosen)
    return run_configured(entry, args, [f"backend={chosen}"] if chosen else [])
