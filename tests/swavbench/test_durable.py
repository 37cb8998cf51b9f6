"""The durable writer: the target is always whole (old or new), whatever happens while writing; a killed
writer's temporary file is cleaned by the next run; no package module renames files on its own."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from swavbench.core import durable
from swavbench.core.state import load_checkpoint, save_rotating

REPO = Path(__file__).resolve().parents[2]


def temps(directory: Path) -> list[Path]:
    return sorted(directory.glob(f".*{durable.TEMP_SUFFIX}"))


def test_writes_text_json_bytes_and_leaves_no_temp(tmp_path):
    durable.write_text(tmp_path / "a.txt", "héllo\n")
    durable.write_json(tmp_path / "sub" / "b.json", {"x": [1, 2], "y": "z"})
    durable.write_bytes(tmp_path / "c.bin", b"\x00\x01")
    assert (tmp_path / "a.txt").read_text() == "héllo\n"
    assert json.loads((tmp_path / "sub" / "b.json").read_text()) == {"x": [1, 2], "y": "z"}
    assert (tmp_path / "c.bin").read_bytes() == b"\x00\x01"
    assert temps(tmp_path) == [] and temps(tmp_path / "sub") == []


def test_files_get_the_umask_mode_like_a_plain_open(tmp_path):
    umask = os.umask(0o022)
    try:
        durable.write_text(tmp_path / "report.md", "x")
        (tmp_path / "plain.md").write_text("x")
    finally:
        os.umask(umask)
    mode = (tmp_path / "report.md").stat().st_mode & 0o777
    assert mode == (tmp_path / "plain.md").stat().st_mode & 0o777 == 0o644


def test_exception_midway_keeps_the_previous_file_and_no_temp(tmp_path):
    target = tmp_path / "record.json"
    durable.write_json(target, {"status": "ok", "value": 1})

    def half_then_fail(f):
        f.write(b'{"status": "ok", "val')
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        durable.write_with(target, half_then_fail)
    assert json.loads(target.read_text()) == {"status": "ok", "value": 1}
    assert temps(tmp_path) == []
    with pytest.raises(KeyboardInterrupt):  # Ctrl-C inside a writer that wants a file name (savefig, parquet)
        with durable.atomic_path(target) as tmp:
            tmp.write_text("partial")
            raise KeyboardInterrupt
    assert json.loads(target.read_text()) == {"status": "ok", "value": 1} and temps(tmp_path) == []


KILLED_WRITER = """
import sys, time
from pathlib import Path
from swavbench.core import durable

def slow(f):
    f.write(b"partial new content")
    f.flush()
    Path(sys.argv[2]).write_text("writing")
    time.sleep(600)

durable.write_with(Path(sys.argv[1]), slow)
"""


def test_kill_midway_keeps_the_previous_file_and_the_next_run_cleans_the_temp(tmp_path):
    target, started = tmp_path / "launch.json", tmp_path / "started"
    durable.write_json(target, {"jobs": {"a": 1}})
    proc = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(target), str(started)], cwd=REPO)
    deadline = time.time() + 120
    while not started.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    assert started.exists(), "the writer subprocess never started writing"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert json.loads(target.read_text()) == {"jobs": {"a": 1}}
    left = temps(tmp_path)
    assert len(left) == 1 and left[0].read_bytes() == b"partial new content"
    assert durable.remove_stale_temps(tmp_path) == []  # fresh: could belong to a live writer
    old = time.time() - durable.STALE_AFTER_S - 60
    os.utime(left[0], (old, old))
    assert durable.remove_stale_temps(tmp_path) == left and temps(tmp_path) == []
    assert json.loads(target.read_text()) == {"jobs": {"a": 1}}


def test_rotating_checkpoint_always_present_and_previous_kept(tmp_path):
    ckpt = tmp_path / "checkpoint.pth"
    save_rotating({"epoch": 1, "w": torch.ones(2)}, ckpt)
    assert not (tmp_path / "checkpoint.pth.prev").exists()
    save_rotating({"epoch": 2, "w": torch.zeros(2)}, ckpt)
    assert load_checkpoint(ckpt)["epoch"] == 2
    assert load_checkpoint(tmp_path / "checkpoint.pth.prev")["epoch"] == 1
    assert temps(tmp_path) == []


def test_no_package_module_does_its_own_temp_and_rename():
    """Every durable file goes through swavbench/core/durable.py: no other package module renames or
    builds temporary files itself."""
    pattern = re.compile(r"os\.replace\(|os\.rename\(|\.rename\(|tempfile\.|\.tmp\b|\.with_suffix\(\"\.tmp")
    offenders = []
    for pkg in ("pretrain", "benchmark", "transfer", "slurm", "results", "swavbench"):
        for path in sorted((REPO / pkg).rglob("*.py")):
            if path == REPO / "swavbench" / "core" / "durable.py":
                continue
            for n, line in enumerate(path.read_text().splitlines(), 1):
                if (
                    pattern.search(line)
                    and "rename(columns=" not in line
                    and "TemporaryDirectory" not in line
                ):
                    offenders.append(f"{path.relative_to(REPO)}:{n}: {line.strip()}")
    assert offenders == []
