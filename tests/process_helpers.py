"""Processes for the tests: the swavbench CLI in a subprocess, and the processes a signal would reach."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def cli(*args: str, timeout: float = 600, **kw) -> subprocess.CompletedProcess:
    """``python -m swavbench ARGS`` from the repository, one thread, output captured as text."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run(
        [sys.executable, "-m", "swavbench", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        **kw,
    )


def children() -> list[int]:
    """This process' children (e.g. DataLoader workers): what SLURM signals besides the main process."""
    kids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if int((proc / "stat").read_text().rpartition(")")[2].split()[1]) == os.getpid():
                    kids.append(int(proc.name))
            except (OSError, ValueError):
                pass
    return kids


def tagged_pids(variable: str, tag: str) -> list[int]:
    """Every process whose environment has ``variable=tag`` (a local job's controller and tasks)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if f"{variable}={tag}".encode() in (proc / "environ").read_bytes().split(b"\0"):
                    pids.append(int(proc.name))
            except OSError:
                pass
    return pids
