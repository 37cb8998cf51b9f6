"""``swavbench pretrain`` and ``swavbench pretrain-bench``."""

from __future__ import annotations

import argparse
import os
import sys

from pretrain.config import CONFIG_DIR, load_config
from pretrain.data import EmptyDatasetError
from swavbench.core.commands import command
from swavbench.core.config import ConfigError, list_presets
from swavbench.core.data_root import add_data_root_argument
from swavbench.core.state import CheckpointError


def data_override(key: str, value: str | None) -> list[str]:
    """``--data``: a folder given on the command line is relative to the working directory
    ('auto' and 'generated' are kept); preset paths are relative to the data root."""
    if not value:
        return []
    from pathlib import Path

    return [f"{key}={value if value in ('auto', 'generated') else Path(value).expanduser().resolve()}"]


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = command(
        sub,
        "pretrain",
        examples=[
            "swavbench pretrain --config cpu-small",
            "swavbench pretrain --config tiny --out runs/t optim.epochs=2 model.arch=resnet18",
            "torchrun --nproc_per_node 8 $(which swavbench) pretrain --config rn50-800ep-bs4096 "
            "data.path=imagenet/train",
        ],
        notes=f"presets: {', '.join(list_presets(CONFIG_DIR))}",
        run=run_pretrain,
    )
    p.add_argument(
        "--config",
        default="cpu-small",
        help="preset name from configs/pretrain/ or a YAML path (default: cpu-small)",
    )
    p.add_argument("--out", default=None, help="run directory (default: runs/pretrain-<preset>)")
    p.add_argument(
        "--data",
        default=None,
        help="shortcut for data.path=...: ImageFolder tree, flat image folder, 'generated' or 'auto'",
    )
    p.add_argument(
        "--resume",
        nargs="?",
        const=True,
        default=False,
        metavar="CKPT",
        help="continue the run in --out (or from CKPT) exactly where its newest readable checkpoint stopped",
    )
    p.add_argument(
        "--restart",
        action="store_true",
        help="discard the run in --out (checkpoints and log) and start afresh",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar (logs still written)")
    p.add_argument("--print-config", action="store_true", help="print the resolved config as YAML and exit")
    p.add_argument(
        "--supervised",
        action="store_true",
        help="train the supervised baseline instead (labels, cross-entropy; presets in configs/supervised/)",
    )
    p.add_argument(
        "overrides", nargs="*", metavar="section.key=value", help="config overrides, e.g. optim.epochs=5"
    )
    add_data_root_argument(p)

    b = command(sub, "pretrain-bench", run=run_bench)
    b.add_argument("--config", default="cpu-small")
    b.add_argument(
        "--data",
        default=None,
        help="shortcut for data.path=... (images for both timings; default: the preset's)",
    )
    b.add_argument("--steps", type=int, default=10, help="timed training steps (after 2 warm-up steps)")
    b.add_argument("--images", type=int, default=200, help="images through the data pipeline")
    b.add_argument("--repeats", type=int, default=3, help="interleaved repeats of every pipeline variant")
    b.add_argument(
        "--compile",
        action="store_true",
        help="also time our step with a torch.compile'd trunk (slow to start)",
    )
    b.add_argument("overrides", nargs="*", metavar="section.key=value")
    add_data_root_argument(b)


def run_pretrain(args: argparse.Namespace) -> int:
    """SwAV pretraining -> checkpoint

    Train SwAV (multi-crop, Sinkhorn codes, swapped prediction) and write checkpoints to --out. Launch
    under torchrun or srun for several processes; DDP is set up from the environment.
    """
    from pathlib import Path

    import yaml

    from pretrain.train import TrainingStopped, pretrain

    if args.supervised:
        return run_supervised(args)
    try:
        overrides = list(args.overrides) + data_override("data.path", args.data)
        cfg = load_config(args.config, overrides)
        if args.print_config:
            print(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
            return 0
        out = Path(args.out or f"runs/pretrain-{Path(args.config).stem}")
        ckpt = pretrain(cfg, out, resume=args.resume, restart=args.restart, progress=not args.no_progress)
    except (ConfigError, CheckpointError, EmptyDatasetError, FileNotFoundError, TrainingStopped) as e:
        print(f"swavbench pretrain: error: {e}", file=sys.stderr)
        return 2
    if os.environ.get("RANK", os.environ.get("SLURM_PROCID", "0")) == "0":
        print(f"checkpoint: {ckpt.resolve()}")
    return 0


def run_bench(args: argparse.Namespace) -> int:
    """Print pretraining throughput and multi-crop pipeline images/s per core

    Time training steps (images/s, ms/step) of a preset on this device, and the multi-crop data pipeline's
    images/s on one core. Prints a table; nothing is written.
    """
    from swavbench.checks.pretrain_bench import run

    try:
        cfg = load_config(args.config, list(args.overrides) + data_override("data.path", args.data))
        run(cfg, args.steps, args.images, repeats=args.repeats, compile_variant=args.compile)
    except (ConfigError, EmptyDatasetError, FileNotFoundError) as e:
        print(f"swavbench pretrain-bench: error: {e}", file=sys.stderr)
        return 2
    return 0


def run_supervised(args: argparse.Namespace) -> int:
    from dataclasses import asdict
    from pathlib import Path

    import yaml

    from pretrain.supervised import CONFIG_DIR, SupervisedConfig, train_supervised
    from swavbench.core.config import load_dataclass

    try:
        overrides = list(args.overrides) + data_override("data.path", args.data)
        cfg = load_dataclass(SupervisedConfig, CONFIG_DIR, args.config, overrides=overrides)
        if args.print_config:
            print(yaml.safe_dump(asdict(cfg), sort_keys=False))
            return 0
        out = Path(args.out or f"runs/supervised-{Path(args.config).stem}")
        ckpt = train_supervised(
            cfg, out, resume=bool(args.resume), restart=args.restart, progress=not args.no_progress
        )
    except (ConfigError, CheckpointError, FileNotFoundError) as e:
        print(f"swavbench pretrain --supervised: error: {e}", file=sys.stderr)
        return 2
    print(f"checkpoint: {ckpt.resolve()}")
    return 0
