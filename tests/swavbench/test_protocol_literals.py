"""A protocol's name lives in its modules, its presets and the registry (issue #33): a string literal naming
a protocol or one of its report keys anywhere else in the packages restates a registry fact; such a fact
becomes a field of the entry instead."""

from __future__ import annotations

import ast
from pathlib import Path

from swavbench.core.registry import PROTOCOLS

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("swavbench", "pretrain", "benchmark", "transfer", "results", "slurm")
# file -> the names it still spells out: none since issue #33 moved the last facts into the entries (a new
# literal fails the test; give the fact a registry field instead)
STILL_RESTATED: dict[str, set[str]] = {}
# the same words meaning something else: lr_scaling "linear" is the learning-rate rule, not the probe; the
# one migration of records from schemas 1 and 2 (swavbench/core/record.py: upgrade) spells their old names
OTHER_MEANING = {
    "pretrain/config.py": {"linear"},
    "swavbench/core/record.py": {"detection", "detr", "detection-detr", "transfer-linear", "linear"},
}


def homes() -> dict[str, set[str]]:
    """Name (protocol or report key) -> the files that may spell it: its protocol's module and that module's
    siblings named after it (transfer/detection_config.py for transfer/detection.py)."""
    out: dict[str, set[str]] = {}
    for p in PROTOCOLS.values():
        module = REPO / Path(*p.module.split(".")).with_suffix(".py")
        files = {f.relative_to(REPO).as_posix() for f in module.parent.glob(f"{module.stem}*.py")}
        for name in (p.name, *p.benchmarks):
            out.setdefault(name, set()).update(files)
    return out


def spelt(path: Path, rel: str, where: dict[str, set[str]]) -> set[str]:
    """The names the file ``rel`` spells outside their homes."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        text = node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None
        if text in where and rel not in where[text] and text not in OTHER_MEANING.get(rel, ()):
            found.add(text)
    return found


def restated() -> dict[str, set[str]]:
    where = homes()
    found = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            rel = path.relative_to(REPO).as_posix()
            if rel != "swavbench/core/registry.py" and (names := spelt(path, rel, where)):
                found[rel] = names
    return found


def test_protocol_names_are_spelt_only_in_their_homes_and_the_known_places():
    assert restated() == STILL_RESTATED


def test_the_scan_tells_a_home_from_a_new_place(tmp_path):
    stray = tmp_path / "stray.py"
    stray.write_text('KIND = "lowshot"\nOTHER = "a lowshot run"  # a sentence is not a name\n')
    assert spelt(stray, "results/stray.py", homes()) == {"lowshot"}
    assert spelt(stray, "benchmark/lowshot.py", homes()) == set()  # its home
