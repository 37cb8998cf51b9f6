"""The house's floors, read from the code: ``swavbench/core/`` (what every stage shares) imports no stage,
each stage imports only floors below it or its own, and the command line, the front door and the
self-checks sit on top. Every import counts, also those inside functions."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
STAGES = ("pretrain", "benchmark", "transfer", "results", "slurm")  # in data-flow order: pretrain lowest
TOP = len(STAGES) + 1
TOP_FILES = {"slurm/main_job.py"}  # besides the front door: every module directly under swavbench/


def floor(rel: str) -> int:
    """0: swavbench/core; 1..5: the stages; TOP: command lines, the front door, self-checks."""
    if rel.startswith("swavbench/core/"):
        return 0
    front_door = rel.startswith("swavbench/") and rel.count("/") == 1  # __init__, presets, dashboard, ...
    if rel.endswith("/cli.py") or rel.startswith("swavbench/checks/") or front_door or rel in TOP_FILES:
        return TOP
    return STAGES.index(rel.split("/")[0]) + 1


def module_file(name: str) -> str | None:
    """The repository file of a dotted module name (a package's __init__.py), or None if not ours."""
    base = REPO / Path(*name.split("."))
    for cand in (base.with_suffix(".py"), base / "__init__.py"):
        if cand.is_file():
            return cand.relative_to(REPO).as_posix()
    return None


def imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)  # ``from pkg import module``
    return found


def test_nothing_imports_upward_and_core_imports_no_stage():
    files = [p for d in ("swavbench", *STAGES) for p in (REPO / d).rglob("*.py")]
    assert len(files) > 50 and any("core" in p.parts for p in files)
    upward = []
    for path in files:
        rel = path.relative_to(REPO).as_posix()
        for name in imports(path):
            target = module_file(name)
            if target and target != rel and floor(target) > floor(rel):
                upward.append(f"{rel} (floor {floor(rel)}) imports {name} (floor {floor(target)})")
    assert upward == []


def test_the_floor_rule_catches_an_upward_import(tmp_path):
    """The walk above sees imports inside functions and ``from package import module``."""
    probe = tmp_path / "probe.py"
    probe.write_text("def f():\n    from slurm import launch\n    import pretrain.model\n")
    found = {module_file(n) for n in imports(probe)} - {None}
    assert found == {"slurm/__init__.py", "slurm/launch.py", "pretrain/model.py"}
    assert floor("slurm/launch.py") > floor("pretrain/model.py") > floor("swavbench/core/state.py")
