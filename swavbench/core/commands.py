"""A ``swavbench`` subcommand's parser, built one way for every command: a one-line summary (the parent's
listing), what it does (``--help``), example lines after the options, and the function it runs."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence


def command(
    sub: argparse._SubParsersAction,
    name: str,
    summary: str,
    *,
    description: str = "",
    examples: Sequence[str] = (),
    notes: str = "",
    run: Callable | None = None,
) -> argparse.ArgumentParser:
    """The parser of ``name``; ``description`` defaults to the summary; ``notes``: lines after the
    examples (kept as written, as the examples are)."""
    epilog = "\n".join(
        [*(["examples:"] if examples else []), *(f"  {e}" for e in examples), *([notes] * bool(notes))]
    )
    parser = sub.add_parser(
        name,
        help=summary,
        description=description or summary[0].upper() + summary[1:] + ".",
        epilog=epilog or None,
        formatter_class=argparse.RawDescriptionHelpFormatter if epilog else argparse.HelpFormatter,
    )
    if run is not None:
        parser.set_defaults(func=run)
    return parser
