"""A ``swavbench`` subcommand's parser, built one way for every command: its text is the docstring of the
function it runs (first line: the summary in the parent's listing; the rest: what ``--help`` says), then
example lines and notes after the options, kept as written."""

from __future__ import annotations

import argparse
import inspect
import textwrap
from collections.abc import Callable, Sequence


def command(
    sub: argparse._SubParsersAction,
    name: str,
    doc: str = "",
    *,
    run: Callable | None = None,
    examples: Sequence[str] = (),
    notes: str = "",
) -> argparse.ArgumentParser:
    """The parser of ``name``, described by ``doc`` (default: ``run``'s docstring), running ``run``."""
    summary, _, rest = inspect.cleandoc(doc or run.__doc__ or name).partition("\n")
    first = summary.split(" ", 1)[0]  # a listing in argparse's style: lower case, but not a name (SwAV)
    summary = summary[:1].lower() + summary[1:] if first[1:].islower() or len(first) == 1 else summary
    paragraphs = [" ".join(p.split()) for p in (rest.strip() or summary).split("\n\n")]
    description = "\n\n".join(
        textwrap.fill(p[:1].upper() + p[1:], 100, break_on_hyphens=False) for p in paragraphs
    )
    epilog = ["examples:", *(f"  {e}" for e in examples)] if examples else []
    if notes:
        epilog.append(notes)
    parser = sub.add_parser(
        name,
        help=summary,
        description=description,
        epilog="\n".join(epilog) or None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    if run is not None:
        parser.set_defaults(func=run)
    return parser
