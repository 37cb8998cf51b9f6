"""The run directory's launch lease, held across hosts: a file created with O_CREAT | O_EXCL holding the
holder's host, pid and a heartbeat. fcntl.flock is node-local on Lustre ``localflock``, BeeGFS and NFS
``local_lock`` / ``nolock`` (two launchers on two login nodes both "hold" it) and raises ENOSYS on Lustre
``noflock``; exclusive creation is atomic on all of them (NFS since v3).

A lease is stale, and set aside, when its holder is a dead process of this host, or when its heartbeat is
older than ``stale_s`` (its holder's host crashed or lost the filesystem)."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from swavbench.core import durable

STALE_S = 120.0  # a heartbeat older than this: the holder is gone (clusters keep clocks within a second)
BEAT_S = 10.0  # how often the holder renews its heartbeat


class LeaseBusy(RuntimeError):
    """Another live launcher holds the lease."""


@dataclass
class Lease:
    """A held lease; ``release()`` removes it. A daemon thread renews the heartbeat meanwhile."""

    path: Path
    token: str
    _stop: threading.Event = field(default_factory=threading.Event)
    lost: bool = False  # the lease was set aside by another launcher (this one looked dead to it)

    def renew(self) -> bool:
        """Renew the heartbeat; False (and ``lost``) once another launcher has set this lease aside."""
        if _read(self.path).get("token") != self.token:
            self.lost = True
            return False
        with contextlib.suppress(OSError):  # a missed beat is retried; STALE_S spans many of them
            _write(self.path, self.token)
        return True

    def _beat(self, every: float) -> None:
        while not self._stop.wait(every) and self.renew():
            pass

    def release(self) -> None:
        self._stop.set()
        if _read(self.path).get("token") == self.token:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()


def _content(token: str) -> str:
    return json.dumps(
        {"host": socket.gethostname(), "pid": os.getpid(), "token": token, "beat": time.time()}
        | {"since": time.strftime("%Y-%m-%d %H:%M:%S")}
    )


def _write(path: Path, token: str) -> None:
    """Renew the heartbeat: a whole new file renamed over the lease, so a reader never sees half of one."""
    durable.write_text(path, _content(token))


def _read(path: Path) -> dict:
    """The lease's fields; {} when absent, {"raw": text} while it is being written or if damaged."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}
    try:
        data = json.loads(text)
        return data if isinstance(data, dict) else {"raw": text}
    except json.JSONDecodeError:
        return {"raw": text}


def describe(info: dict) -> str:
    if "pid" not in info:
        return "another process"
    return f"pid {info['pid']} on {info.get('host', '?')} since {info.get('since', '?')}"


def _stale(path: Path, info: dict, stale_s: float) -> str | None:
    """Why the lease at ``path`` (read as ``info``) belongs to nobody any more, or None."""
    if info.get("host") == socket.gethostname() and isinstance(info.get("pid"), int):
        try:
            os.kill(info["pid"], 0)
        except ProcessLookupError:
            return f"its holder, {describe(info)}, has ended"
        except PermissionError:
            pass  # alive, another user's
    beat = info.get("beat")
    if not isinstance(beat, (int, float)):
        with contextlib.suppress(FileNotFoundError):
            beat = path.stat().st_mtime  # half-written or damaged: judged by its age
    if isinstance(beat, (int, float)) and time.time() - beat > stale_s:
        return f"no heartbeat from {describe(info)} for {time.time() - beat:.0f} s"
    return None


def _set_aside(path: Path, seen: dict) -> bool:
    """Move a stale lease out of the way; True when the lease moved was the one judged stale (another
    launcher may have set it aside and taken a new one meanwhile: that one is put back)."""
    aside = path.with_name(f"{path.name}.stale-{uuid.uuid4().hex[:8]}")
    try:
        durable.move_aside(path, aside)
    except FileNotFoundError:
        return False
    if _read(aside) != seen:
        with contextlib.suppress(FileExistsError):
            os.link(aside, path)  # back, unless yet another launcher holds a new lease already
        aside.unlink()
        return False
    aside.unlink()
    return True


def acquire(path: Path, *, wait_s: float, stale_s: float = STALE_S, on_wait=None) -> Lease:
    """Hold the lease at ``path``, waiting up to ``wait_s`` for a live holder (``on_wait(holder)`` is
    called once when waiting starts); LeaseBusy names the holder when the wait ends."""
    token, deadline, said = uuid.uuid4().hex, time.monotonic() + wait_s, False
    while True:
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            info = _read(path)
            if not info:
                continue  # released just now
            why = _stale(path, info, stale_s)
            if why is not None:
                if _set_aside(path, info):
                    print(f"swavbench launch: took over the stale lease {path}: {why}", flush=True)
                continue
            if time.monotonic() >= deadline:
                raise LeaseBusy(describe(info)) from None
            if not said and on_wait is not None:
                on_wait(describe(info))
            said = True
            time.sleep(0.5)
            continue
        with os.fdopen(fd, "w") as f:
            f.write(_content(token))
            f.flush()
            os.fsync(f.fileno())
        lease = Lease(path, token)
        threading.Thread(target=lease._beat, args=(min(BEAT_S, stale_s / 4),), daemon=True).start()
        return lease
