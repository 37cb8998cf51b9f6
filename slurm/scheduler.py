"""What the cluster says right now about a launch's jobs: which are queued or running, and which job
carries a launch's tag (so a job submitted by a launcher killed before it saved the id is found again).

SLURM: one ``squeue`` call per snapshot (``%i|%T|%k``: array tasks one per line, the tag in the job's
comment). It is retried with backoff when it fails; if it keeps failing the launch stops with
SchedulerUnavailable: an unknown state must never read as "not running", which would submit running
jobs a second time. Local executor: processes, recognised by the tag in their environment."""

from __future__ import annotations

import contextlib
import getpass
import hashlib
import json
import os
import re
import signal
import subprocess
import time
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

from swavbench.core.environment import temporary_environment

# squeue keeps finished jobs for a while (MinJobAge); every other state (PENDING, RUNNING, REQUEUED,
# COMPLETING, SUSPENDED, STOPPED, SIGNALING, REQUEUE_HOLD, SPECIAL_EXIT, ...) means the job may still run
FINISHED_STATES = {
    "COMPLETED",
    "CANCELLED",
    "FAILED",
    "TIMEOUT",
    "NODE_FAIL",
    "PREEMPTED",
    "BOOT_FAIL",
    "DEADLINE",
    "OUT_OF_MEMORY",
    "REVOKED",
}
TAG_ENV = "SWAVBENCH_JOB_TAG"  # local executor: the tag travels in the job's environment


def squeue_command() -> list[str]:
    """This user's jobs, array tasks one per line: ``-u USER`` rather than ``--me``, which SLURM < 20.11
    lacks."""
    return ["squeue", "-h", "-r", "-u", getpass.getuser(), "-o", "%i|%T|%k"]


class SchedulerUnavailable(RuntimeError):
    """The scheduler could not say which jobs are live; nothing may be submitted."""


def job_tag(run_dir: Path, keys: list[str]) -> str:
    """The tag of one submission (a job, or a SLURM array of jobs), derived from the run directory and the
    job keys: a relaunch that lost launch.json finds the live jobs again by computing it."""
    blob = json.dumps([str(Path(run_dir).resolve()), sorted(keys)])
    return f"swavbench-{hashlib.sha256(blob.encode()).hexdigest()[:12]}"


@dataclass(frozen=True)
class LiveJob:
    job_id: str
    state: str
    tag: str
    top: bool = True  # local: the job's controller (its pid is the job id), not one of its tasks

    @property
    def live(self) -> bool:
        return self.state not in FINISHED_STATES


def tagged_environment(tag: str) -> AbstractContextManager[None]:
    """Local executor: processes started inside carry ``tag`` in their environment."""
    return temporary_environment({TAG_ENV: tag})


SQUEUE_RETRY_DELAYS = (1.0, 2.0, 4.0, 8.0)  # pauses (s) between squeue attempts before SchedulerUnavailable


def max_array_size(default: int = 1001) -> int:
    """The cluster's MaxArraySize (``scontrol show config``; SLURM's default 1001 when it does not answer):
    an array's task indices must stay below it."""
    try:
        out = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return default
    found = re.search(r"^MaxArraySize\s*=\s*(\d+)", out.stdout, flags=re.M) if out.returncode == 0 else None
    return max(1, int(found.group(1))) if found else default


class Scheduler:
    """Live jobs of one executor kind (``slurm``, ``local`` or ``debug``), from a snapshot that is at most
    ``max_age_s`` old."""

    def __init__(self, kind: str, *, retry_delays: tuple[float, ...] | None = None, max_age_s: float = 2.0):
        self.kind, self.max_age_s = kind, max_age_s
        self.retry_delays = SQUEUE_RETRY_DELAYS if retry_delays is None else retry_delays
        self._snapshot: dict[str, LiveJob] = {}
        self._taken = -1e18

    # -- snapshots ---------------------------------------------------------------------------
    def snapshot(self) -> dict[str, LiveJob]:
        if time.monotonic() - self._taken > self.max_age_s:
            self._snapshot = self._squeue() if self.kind == "slurm" else self._processes()
            self._taken = time.monotonic()
        return self._snapshot

    def refresh(self) -> None:
        self._taken = -1e18

    def _squeue(self) -> dict[str, LiveJob]:
        errors = []
        command = squeue_command()
        for delay in (*self.retry_delays, None):
            try:
                out = subprocess.run(command, capture_output=True, text=True, timeout=60)
                if out.returncode == 0:
                    jobs = {}
                    for line in out.stdout.splitlines():
                        job_id, state, tag = (line.strip().split("|") + ["", ""])[:3]
                        if job_id:
                            jobs[job_id] = LiveJob(job_id, state.strip(), tag.strip())
                    return jobs
                errors.append(f"exit {out.returncode}: {out.stderr.strip()[-200:]}")
            except (OSError, subprocess.TimeoutExpired) as e:
                errors.append(f"{type(e).__name__}: {e}")
            if delay is not None:
                time.sleep(delay)
        raise SchedulerUnavailable(
            f"`{' '.join(command)}` failed {len(errors)} times over {sum(self.retry_delays):g} s "
            f"(last: {errors[-1]}): the SLURM controller is busy or down, so which jobs of this run are "
            "queued or running is unknown. Nothing was submitted (resubmitting could start running jobs "
            "twice); launch again once squeue answers"
        )

    @staticmethod
    def _processes() -> dict[str, LiveJob]:
        """Local jobs: every live (not zombie) process whose environment carries a tag; ``top`` marks the
        job's controller (its parent does not carry the tag), whose pid is submitit's job id."""
        tags: dict[int, str] = {}
        parents: dict[int, int] = {}
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                env = (proc / "environ").read_bytes().split(b"\0")
                fields = (proc / "stat").read_text().rpartition(")")[2].split()
            except OSError:
                continue
            if fields[:1] == ["Z"]:  # a zombie has exited
                continue
            tag = next(
                (e.split(b"=", 1)[1].decode() for e in env if e.startswith(TAG_ENV.encode() + b"=")), ""
            )
            if tag:
                tags[int(proc.name)] = tag
                parents[int(proc.name)] = int(fields[1])
        return {
            str(pid): LiveJob(str(pid), "RUNNING", tag, top=tags.get(parents[pid]) != tag)
            for pid, tag in tags.items()
        }

    # -- questions ---------------------------------------------------------------------------
    def is_live(self, job_id: str, *, tag: str = "") -> bool:
        """Queued or running right now. SLURM: the job id in squeue, in a state that is not finished.
        Local: any process carrying the job's tag (its tasks outlive a killed controller); jobs launched
        before tags existed: the process exists."""
        if not job_id or self.kind == "debug":
            return False
        if self.kind == "slurm":
            job = self.snapshot().get(job_id)
            return job is not None and job.live
        if not tag:
            try:
                os.kill(int(job_id), 0)
                return True
            except (ValueError, ProcessLookupError, PermissionError):
                return False
        return any(job.tag == tag for job in self.snapshot().values())

    def cancel(self, job_id: str, *, tag: str = "", wait_s: float = 60.0) -> None:
        """Stop a live job and wait until it is gone (``scancel``; local: SIGTERM, then SIGKILL, to every
        process carrying its tag). RuntimeError names the job if it outlives ``wait_s``."""
        deadline = time.monotonic() + wait_s
        while self.is_live(job_id, tag=tag):
            late = time.monotonic() > deadline - wait_s / 2
            if self.kind == "slurm":
                subprocess.run(["scancel", job_id], capture_output=True, timeout=60, check=False)
            else:
                pids = [j.job_id for j in self.snapshot().values() if j.tag == tag] if tag else [job_id]
                for pid in pids:
                    with contextlib.suppress(ProcessLookupError, PermissionError, ValueError):
                        os.kill(int(pid), signal.SIGKILL if late else signal.SIGTERM)
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"job {job_id} ({self.kind}) is still live {wait_s:.0f} s after it was cancelled: stop "
                    "it (scancel / kill) and launch again"
                )
            time.sleep(1.0)
            self.refresh()

    def state(self, job_id: str) -> str:
        """The scheduler's state of a live job ('' when it is not live)."""
        job = self.snapshot().get(job_id) if job_id and self.kind != "debug" else None
        return job.state if job is not None and job.live else ""

    def find(self, tag: str, task: int | None = None) -> str:
        """The id of the live job submitted with ``tag`` (``task``: its index in a SLURM array), or ''."""
        if not tag or self.kind == "debug":
            return ""
        for job in self.snapshot().values():
            if job.tag != tag or not job.live or not job.top:
                continue
            parent, _, index = job.job_id.partition("_")
            if task is None and not index:
                return job.job_id
            if task is not None and index == str(task):
                return job.job_id
        return ""
