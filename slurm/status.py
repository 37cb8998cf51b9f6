"""``swavbench status RUN_DIR``: every job of a launch with its state, SLURM id, elapsed time and
the result's headline metric or the end of its error."""

from __future__ import annotations

import json
import subprocess
from datetime import datetime
from pathlib import Path

from slurm.launch import pretraining_done, pretraining_progress, read_launch_state
from slurm.scheduler import Scheduler, SchedulerUnavailable
from swavbench.core import registry
from swavbench.core.paths import CHECKPOINT, LAUNCH_STATE, RECORD
from swavbench.core.record import upgrade


def headline(record: dict) -> str:
    """The metric ``status`` shows for a record: the first of its protocol's headline metrics it has,
    else its first metric."""
    record = upgrade(record)
    entry = registry.for_record(record.get("protocol", ""), record.get("benchmark", ""))
    metrics = record.get("metrics") or {}
    wanted = [m for m in (entry.headline if entry else ()) if m in metrics]
    return wanted[0] if wanted else next(iter(metrics), "")


INTERRUPTED = ("PREEMPTED", "NODE_FAIL", "BOOT_FAIL")  # ended by the cluster, not by the job


class Accounting:
    """sacct for every SLURM job of a run at once (a 200-job sweep asks the database once, not hundreds of
    times): each job's latest state and elapsed time, and the states of its earlier runs (``-D``). A job
    asked about later (found by its tag) is looked up alone."""

    def __init__(self, job_ids: list[str], *, chunk: int = 400):
        self.rows: list[list[str]] = []
        self.asked: set[str] = set()
        self.chunk = chunk
        self._query(job_ids)

    def _query(self, job_ids: list[str]) -> None:
        ids = sorted({j for j in job_ids if j} | {j.split("_")[0] for j in job_ids if j})
        ids = [j for j in ids if j not in self.asked]
        self.asked.update(ids)
        for i in range(0, len(ids), self.chunk):
            command = [
                "sacct",
                "-n",
                "-D",
                "-X",
                "-P",
                "-o",
                "JobID,State,Elapsed",
                "-j",
                ",".join(ids[i : i + self.chunk]),
            ]
            out = subprocess.run(command, capture_output=True, text=True)
            if out.returncode == 0:
                self.rows += [(ln.split("|") + ["", ""])[:3] for ln in out.stdout.strip().splitlines()]

    def _rows(self, job_id: str) -> list[list[str]]:
        """The job's rows, oldest first: its own, else (an array task that never started) its array's."""
        self._query([job_id])
        return [r for r in self.rows if r[0] == job_id] or [
            r for r in self.rows if _array_covers(r[0], job_id)
        ]

    def state(self, job_id: str) -> tuple[str, str]:
        """(state, elapsed) of the job's latest run, or ('', '') when unknown."""
        rows = self._rows(job_id)
        return (rows[-1][1].split()[0], rows[-1][2]) if rows else ("", "")

    def requeued(self, job_id: str) -> bool:
        """A run of the job was requeued, preempted or lost with its node (asked of a live job: that run was
        an earlier one)."""
        return any(r[1].split()[0] in ("REQUEUED", *INTERRUPTED) for r in self._rows(job_id))


def _array_covers(sacct_id: str, job_id: str) -> bool:
    """'123_[0-3,7]' (array tasks that never started are one sacct row) covers '123_2'."""
    parent, _, task = job_id.partition("_")
    if not sacct_id.startswith(parent + "_[") or not task.isdigit():
        return False
    for part in sacct_id[len(parent) + 2 :].rstrip("]").split("%")[0].split(","):
        lo, _, hi = part.partition("-")
        if lo.isdigit() and int(lo) <= int(task) <= int(hi or lo):
            return True
    return False


def job_table(run_dir: str | Path) -> list[dict]:
    """One row per job of ``RUN_DIR/launch.json``. A live job shows as pending / running / requeued even
    behind an older record (a retry of a failed job, a --force re-run); a pretraining is done only when
    its checkpoint reached its epochs. When the scheduler cannot answer, states read 'unknown'."""
    run_dir = Path(run_dir)
    path = run_dir / LAUNCH_STATE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: {run_dir} is not a launch run directory")
    state = read_launch_state(path)
    schedulers: dict[str, Scheduler] = {}
    accounting = Accounting(
        [j.get("job_id", "") for j in state["jobs"].values() if j.get("executor") == "slurm"]
    )
    rows = []
    for key, job in state["jobs"].items():
        kind = job.get("executor", "local")
        sched = schedulers.setdefault(kind, Scheduler(kind, retry_delays=(1, 2)))
        out = Path(job["out_dir"])
        row = {"name": job["name"], "kind": job["kind"], "job_id": job.get("job_id", ""), "state": ""}
        row.update({"elapsed": "", "result": "", "key": key, "out_dir": str(out)})
        live = _scheduler_state(sched, row, job)
        sacct = ""
        if kind == "slurm" and row["job_id"]:
            sacct, row["elapsed"] = accounting.state(row["job_id"])
        rec_path = out / RECORD
        rec = json.loads(rec_path.read_text()) if job["kind"] == "eval" and rec_path.is_file() else None
        if rec is not None:
            row["result"] = _record_result(rec)
            row["elapsed"] = row["elapsed"] or f"{rec.get('wall_time_s', 0):.0f}s"
        if live and live != "UNKNOWN" and rec is not None and _written_by_this_job(rec, job):
            live = ""  # the job wrote its record and is leaving the queue (COMPLETING)
        if live and live != "UNKNOWN":
            requeued = live == "REQUEUED" or (kind == "slurm" and accounting.requeued(row["job_id"]))
            live = "REQUEUED" if requeued else live
        row["state"], row["result"] = _verdict(job, row["result"], live=live, rec=rec, sacct=sacct)
        if row["state"] == "missing":
            row["result"] = _log_tail(run_dir, row["job_id"])
        rows.append(row)
    return rows


def _scheduler_state(sched: Scheduler, row: dict, job: dict) -> str:
    """The scheduler's state of the job ('' when not live, UNKNOWN when it did not answer); finds the job's
    id by its tag when the launcher died before saving it."""
    kind, tag = job.get("executor", "local"), job.get("tag", "")
    try:
        if not row["job_id"] and tag:
            row["job_id"] = sched.find(tag, job.get("task"))
        live = sched.state(row["job_id"]) if kind == "slurm" else ""
        if kind != "slurm" and sched.is_live(row["job_id"], tag=tag):
            live = "RUNNING"
    except SchedulerUnavailable:
        live = "UNKNOWN"
    return live


def _record_result(rec: dict) -> str:
    """An evaluation record in a cell: its headline metric, or the end of its error."""
    if rec.get("status") != "ok":
        return str(rec.get("error", ""))[-160:]
    metric = headline(rec)
    return f"{metric} {rec['metrics'].get(metric, float('nan')):.2f}"


def _verdict(job: dict, result: str, *, live: str, rec: dict | None, sacct: str) -> tuple[str, str]:
    """(state, result) of a job from the scheduler's word, its record, SLURM's accounting and its folder."""
    out = Path(job["out_dir"])
    if live == "UNKNOWN":
        return "unknown", "the scheduler did not answer" + (f"; record: {result}" if result else "")
    if live:
        state = (
            "requeued"
            if live == "REQUEUED"
            else "pending"
            if live in ("PENDING", "CONFIGURING")
            else "running"
        )
        if rec is not None:
            result = ("retrying after: " if rec.get("status") != "ok" else "re-running; was: ") + result
        return state, result
    if rec is not None:
        return ("done" if rec.get("status") == "ok" else "failed"), result
    if sacct in INTERRUPTED:
        return "interrupted", (
            f"SLURM {sacct}: ended by the cluster, not by the job; launch again to resubmit it "
            "(it continues from its saved state)"
        )
    if job["kind"] == "pretrain" and (out / CHECKPOINT).is_file():
        epochs = int(job.get("epochs") or 0)
        if not epochs or pretraining_done(out, epochs, int(job.get("max_iters") or 0)):
            return "done", str(out / CHECKPOINT)
        return "failed", f"stopped before epoch {epochs}: {pretraining_progress(out)}" + (
            f" (SLURM {sacct})" if sacct else ""
        )
    if sacct:
        failed_dependency = sacct == "CANCELLED" and job.get("depends_on")
        return ("failed" if sacct != "COMPLETED" else "done"), f"SLURM {sacct}" + (
            f" (dependency {job['depends_on']} failed)" if failed_dependency else ""
        )
    return "missing", ""


def _written_by_this_job(record: dict, job: dict) -> bool:
    """The record was written after the job was submitted (not an older record behind a retry)."""
    try:
        created = datetime.fromisoformat(record["created"]).timestamp()
    except (KeyError, TypeError, ValueError):
        return False
    return created >= float(job.get("submitted_at") or 0) - 1.0  # records keep whole seconds


def _log_tail(run_dir: Path, job_id: str) -> str:
    for log in sorted((run_dir / "submitit").glob(f"{job_id}*/*.err")) + sorted(
        (run_dir / "submitit").glob(f"{job_id}*/*.out")
    ):
        lines = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
        if lines:
            return lines[-1][-160:]
    return ""


def render(rows: list[dict]) -> str:
    cols = ["name", "kind", "state", "job_id", "elapsed", "result"]
    widths = [max(len(c), *(len(str(r[c])) for r in rows)) if rows else len(c) for c in cols]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cols, widths)), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(str(r[c]).ljust(w) for c, w in zip(cols, widths)) for r in rows]
    return "\n".join(lines)
