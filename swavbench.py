"""``swavbench`` command line: one subcommand per stage of the harness."""

from __future__ import annotations

import argparse
import logging
import sys


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="swavbench",
        description="SwAV pretraining and the evaluation / transfer benchmarks around it.",
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
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
