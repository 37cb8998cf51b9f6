"""``swavbench`` command line, the front door: one subcommand per stage of the harness. What every stage
shares is in ``swavbench.core`` (the ground floor); the self-checks are in ``swavbench.checks``."""

from __future__ import annotations

import argparse
import logging
import re


class Parser(argparse.ArgumentParser):
    """argparse with "did you mean" for a misspelt subcommand or choice (subparsers inherit it)."""

    def error(self, message: str):  # noqa: ANN201 - argparse's signature
        from swavbench.core.config import did_you_mean

        found = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
        if found:
            choices = re.findall(r"'?([\w.-]+)'?", found.group(2))
            message += did_you_mean(found.group(1), choices)
        super().error(message)


def version() -> str:
    """The installed package version, and the git commit when run from a checkout."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    from swavbench.core.record import code_commit

    try:
        v = installed("swav-bench")
    except PackageNotFoundError:
        v = "not installed"
    commit = code_commit()
    return f"swavbench {v}" + (f" (commit {commit})" if commit else "")


class _Version(argparse.Action):
    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, nargs=0, help="print the version and exit")

    def __call__(self, parser, namespace, values, option_string=None):  # noqa: PLR0917 - argparse's
        print(version())
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="swavbench",
        description="SwAV pretraining and the evaluation / transfer benchmarks around it.",
    )
    parser.add_argument("--version", action=_Version)
    parser.add_argument(
        "--data-root",
        help="folder the presets' datasets are named under (default $SWAVBENCH_DATA, else ../shared/data "
        "beside the repository checkout)",
    )
    parser.add_argument(
        "--wandb",
        metavar="PROJECT",
        help="also log pretraining and every evaluation this command starts into this Weights & Biases "
        "project (pip install -e '.[wandb]'; WANDB_MODE=offline works without an account)",
    )
    parser.add_argument(
        "--trust-checkpoints",
        action="store_true",
        help="unpickle checkpoints that hold arbitrary Python objects (this can run code from the file: "
        "only for files you trust; by default only tensors and plain data are read)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    from benchmark import cli as benchmark_cli
    from pretrain import cli as pretrain_cli
    from results import cli as results_cli
    from slurm import cli as slurm_cli
    from transfer import cli as transfer_cli

    pretrain_cli.add_parsers(sub)
    benchmark_cli.add_parsers(sub)
    transfer_cli.add_parsers(sub)
    results_cli.add_parsers(sub)
    slurm_cli.add_parsers(sub)
    from swavbench import dashboard, demo_data, presets
    from swavbench.checks import gpu_check

    gpu_check.add_parser(sub)
    demo_data.add_parser(sub)
    presets.add_parser(sub)
    dashboard.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)
    args = build_parser().parse_args(argv)
    if getattr(args, "data_root", None):
        from swavbench.core.data_root import set_data_root

        set_data_root(args.data_root)
    if args.trust_checkpoints:
        from swavbench.core.state import trust_checkpoints

        trust_checkpoints()
    from swavbench.core.environment import temporary_environment
    from swavbench.core.tracking import PROJECT_ENV

    # --wandb: for this command and the jobs it starts, not for an in-process caller afterwards
    with temporary_environment({PROJECT_ENV: args.wandb} if args.wandb else {}):
        return int(args.func(args) or 0)
