"""Durable writes: every file the harness keeps (checkpoints, records, launch state, reports, plots,
tables, subset lists, feature caches) is written to a unique temporary file beside its target, flushed
and fsynced, moved over the target with ``os.replace`` and the directory fsynced. A crash, a kill or
an exception at any point leaves the previous file whole; a killed writer's temporary file is removed
by ``remove_stale_temps`` at the start of the next run."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

TEMP_SUFFIX = ".swavbench-tmp"
STALE_AFTER_S = 6 * 3600.0  # older than any single write: a temporary file this old lost its writer


def fsync_dir(directory: str | Path) -> None:
    """Make a rename in ``directory`` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A unique temporary path beside ``path`` for writers that want a file name (``savefig``,
    ``to_parquet``); once the block ends without an exception the file is fsynced and moved over
    ``path``. On an exception the temporary file is removed and ``path`` is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:  # a unique name; created with the process umask, like a plain open() would
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}{TEMP_SUFFIX}")
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            break
        except FileExistsError:
            continue
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


@contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """A temporary folder beside ``path`` to fill; once the block ends without an exception it replaces
    ``path`` (an older one is removed first) and the parent is fsynced. On an exception the temporary
    folder is removed and ``path`` is left as it was: nobody ever sees a half-written folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent))
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    fsync_dir(path.parent)


def write_with(path: str | Path, writer: Callable[[IO[bytes]], Any]) -> Path:
    """Call ``writer(f)`` on a binary file that becomes ``path`` atomically and durably."""
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        writer(f)
        f.flush()
    return path


def write_bytes(path: str | Path, data: bytes) -> Path:
    return write_with(path, lambda f: f.write(data))


def write_text(path: str | Path, text: str) -> Path:
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: str | Path, obj: Any) -> Path:
    """``obj`` as indented JSON (keys in insertion order) with a final newline."""
    return write_text(path, json.dumps(obj, indent=2) + "\n")


def torch_save(obj: Any, path: str | Path) -> Path:
    """``torch.save`` through a durable write (checkpoints, resumable protocol state, feature caches)."""
    import torch

    return write_with(path, lambda f: torch.save(obj, f))


def remove_stale_temps(directory: str | Path, *, max_age_s: float = STALE_AFTER_S) -> list[Path]:
    """Delete temporary files of this module under ``directory`` (not recursive) older than ``max_age_s``:
    they belong to writers that were killed. Returns what was removed."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    now, removed = time.time(), []
    for p in directory.glob(f".*{TEMP_SUFFIX}"):
        try:
            if now - p.stat().st_mtime > max_age_s:
                p.unlink()
                removed.append(p)
        except OSError:  # finished or cleaned by another process meanwhile, or a read-only folder
            continue
    return removed


def keep_previous(path: str | Path, previous: str | Path) -> None:
    """Make ``previous`` a copy of ``path`` (a hard link where the filesystem allows) without a
    moment where ``path`` is missing; used before ``path`` is replaced by a newer version."""
    path, previous = Path(path), Path(previous)
    if not path.is_file():
        return
    with atomic_path(previous) as tmp:
        tmp.unlink()
        try:
            os.link(path, tmp)
        except OSError:  # no hard links here (some network filesystems): copy
            import shutil

            shutil.copyfile(path, tmp)


def move_aside(path: str | Path, target: str | Path) -> Path:
    """Rename ``path`` (a file or a folder) to ``target`` in one step, durably (both directories fsynced):
    an unreadable checkpoint kept for inspection, a finished output folder replaced by ``--force``."""
    path, target = Path(path), Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(path, target)
    fsync_dir(target.parent)
    if path.parent != target.parent:
        fsync_dir(path.parent)
    return target
