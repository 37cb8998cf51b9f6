"""Every example command in README.md and in the command line's --help runs as written (issue #35): each
parses, and each runs to exit 0 with --print-config (pretrain, eval, transfer) or --dry-run (run, launch)
where it would train; gpu-check (it needs a GPU) and dashboard (it serves until stopped) only parse."""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
from pathlib import Path

import pytest

import swavbench
from swavbench.core.data_root import ENV, data_root

REPO = Path(__file__).resolve().parents[1]


def readme_examples() -> list[str]:
    text = (REPO / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", text, flags=re.S)
    return [ln for b in blocks for ln in b.splitlines() if ln.startswith("swavbench ")]


def help_examples() -> list[str]:
    """Example lines of every (sub)command's description and epilog: 'swavbench ...' (after a launcher
    such as ``torchrun ... $(which swavbench)``)."""
    found, todo = [], [swavbench.build_parser()]
    while todo:
        parser = todo.pop()
        for text in (parser.description or "", parser.epilog or ""):
            for line in text.splitlines():
                line = line.strip().replace("$(which swavbench)", "swavbench")
                if "swavbench " in line and not line.startswith("swavbench ") and "$(" not in line:
                    line = line[line.index("swavbench ") :]
                if line.startswith("swavbench ") and "`" not in line:  # not prose quoting a command
                    found.append(line)
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                todo += list(action.choices.values())
    return found


def runnable(line: str) -> list[str] | None:
    """The example's argv with --print-config / --dry-run where it would train; None: parse only."""
    argv = shlex.split(line, comments=True)[1:]
    if argv[0] in (
        "gpu-check",
        "dashboard",
    ):  # a GPU; a server until Ctrl-C (tests/test_dashboard.py runs it)
        return None
    if argv[0] in ("pretrain", "eval", "transfer"):
        return (
            [*argv[:2], "--print-config", *argv[2:]] if argv[0] != "pretrain" else [*argv, "--print-config"]
        )
    if argv[0] in ("run", "launch") and "--dry-run" not in argv:
        return [*argv, "--dry-run"]
    return argv


EXAMPLES = sorted(set(readme_examples() + help_examples()))


def test_the_examples_were_found():
    assert len(readme_examples()) >= 8 and len(help_examples()) >= 10, (readme_examples(), help_examples())


@pytest.mark.parametrize("line", EXAMPLES)
def test_example_runs_as_written(line, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # what the example writes lands here
    bin_dir = tmp_path / "bin"  # the examples' cluster: one partition of paper-sized nodes (8 GPUs, 3 days)
    bin_dir.mkdir()
    for name, out in (
        ("sinfo", "gpu*|96|gpu:a100:8|(null)|3-00:00:00|1000000"),
        ("squeue", ""),
        ("scontrol", ""),
    ):
        (bin_dir / name).write_text(f"#!/bin/sh\necho '{out}'\n")
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv(ENV, os.environ.get(ENV, str(data_root()[0])))  # --data-root sets it: restored after
    if " status " in f" {line} ":
        run = tmp_path / shlex.split(line)[2]
        run.mkdir(parents=True)
        (run / "launch.json").write_text(json.dumps({"jobs": {}}))  # a run folder, as after `swavbench run`
    argv = runnable(line)
    parsed = swavbench.build_parser().parse_args(shlex.split(line, comments=True)[1:])
    assert parsed.func is not None
    if argv is not None:
        assert swavbench.main(argv) == 0, capsys.readouterr().err[-2000:]
