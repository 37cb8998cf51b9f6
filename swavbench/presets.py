"""``swavbench presets [GROUP]``: every preset shipped in configs/, one line each: its name and its
description, which says what it is and the published source it follows."""

from __future__ import annotations

import argparse
import textwrap

import yaml

from swavbench.core.commands import command
from swavbench.core.paths import CONFIGS

GROUPS = {  # command-line name -> configs/ folder
    "pretrain": "pretrain",
    "supervised": "supervised",
    "eval": "eval",
    "transfer": "transfer",
    "suite": "suites",
    "sweep": "sweeps",
    "main": "main",
}


def describe(group: str) -> list[tuple[str, str]]:
    """(name, one-line description) of every preset of ``group``."""
    out = []
    for path in sorted((CONFIGS / GROUPS[group]).glob("*.yaml")):
        raw = yaml.safe_load(path.read_text()) or {}
        text = " ".join(str(raw.get("description", "")).split()) if isinstance(raw, dict) else ""
        out.append((path.stem, text or "(no description)"))
    return out


def run(args: argparse.Namespace) -> int:
    """List the shipped presets with what each is and its published source

    List the presets of configs/ (pass one to --config), each with its description.
    """
    for group in [args.group] if args.group else list(GROUPS):
        rows = describe(group)
        print(f"{group} ({len(rows)}, configs/{GROUPS[group]}/):")
        width = max(len(name) for name, _ in rows)
        for name, text in rows:
            lines = textwrap.wrap(text, 108 - width) or [""]
            print(f"  {name.ljust(width)}  {lines[0]}")
            for more in lines[1:]:
                print(f"  {' ' * width}  {more}")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = command(sub, "presets", run=run)
    p.add_argument("group", nargs="?", choices=list(GROUPS), help="only this group")
