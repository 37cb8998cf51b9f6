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


def headline(record: dict) -> str:
    """The metric ``status`` shows for a record: the first of its protocol's headline metrics it has,
    else its first metric."""
    entry = registry.for_benchmark(record.get("protocol", ""))
    metrics = record.get("metrics") or {}
    wanted = [m for m in (entry.headline if entry else ()) if m in metrics]
    return wanted[0] if wanted else next(iter(metrics), "")


def _sacct(job_id: str) -> list[list[str]]:
    out = subprocess.run(
        ["sacct", "-n", "-X", "-P", "-j", job_id, "-o", "JobID,State,Elapsed"], capture_output=True, text=True
    )
    return (
        [(ln.split("|") + ["", ""])[:3] for ln in out.stdout.strip().splitlines()]
        if out.returncode == 0
        else []
    )


def _array_covers(sacct_id: str, job_id: str) -> bool:
    """'123_[0-3,7]' (array tasks that never started are one sacct row) covers '123_2'."""
    parent, _, task = job_id.partition("_")
    if not sacct_id.startswith(parent + "_[") or not task.isdigit():
        return sacct_id == job_id
    for part in sacct_id[len(parent) + 2 :].rstrip("]").split("%")[0].split(","):
        lo, _, hi = part.partition("-")
        if lo.isdigit() and int(lo) <= int(task) <= int(hi or lo):
            return True
    return False


def _slurm_state(job_id: str) -> tuple[str, str]:
    """(state, elapsed) from sacct, or ('', '') when unknown. Array tasks: their own row, else the array's."""
    rows = [r for r in _sacct(job_id) if r[0] == job_id] or _sacct(job_id)
    if not rows and "_" in job_id:
        rows = [r for r in _sacct(job_id.split("_")[0]) if _array_covers(r[0], job_id)]
    if not rows:
        return "", ""
    _, state, elapsed = rows[-1]
    return state.split()[0], elapsed


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
    rows = []
    for key, job in state["jobs"].items():
        kind = job.get("executor", "local")
        sched = schedulers.setdefault(kind, Scheduler(kind, retry_delays=(1, 2)))
        out = Path(job["out_dir"])
        row = {
            "name": job["name"],
            "kind": job["kind"],
            "job_id": job.get("job_id", ""),
            "state": "",
            "elapsed": "",
            "result": "",
            "key": key,
            "out_dir": str(out),
        }
        tag = job.get("tag", "")
        try:
            if not row["job_id"] and tag:  # the launcher died before saving the id
                row["job_id"] = sched.find(tag, job.get("task"))
            live = sched.state(row["job_id"]) if kind == "slurm" else ""
            if kind != "slurm" and sched.is_live(row["job_id"], tag=tag):
                live = "RUNNING"
        except SchedulerUnavailable:
            live = "UNKNOWN"
        sacct_state = ""
        if kind == "slurm" and row["job_id"]:
            sacct_state, row["elapsed"] = _slurm_state(row["job_id"])
        rec_path = out / RECORD
        rec = json.loads(rec_path.read_text()) if job["kind"] == "eval" and rec_path.is_file() else None
        if rec is not None:
            if rec.get("status") == "ok":
                metric = headline(rec)
                row["result"] = f"{metric} {rec['metrics'].get(metric, float('nan')):.2f}"
            else:
                row["result"] = str(rec.get("error", ""))[-160:]
            if not row["elapsed"]:
                row["elapsed"] = f"{rec.get('wall_time_s', 0):.0f}s"
        if live and live != "UNKNOWN" and rec is not None and _written_by_this_job(rec, job):
            live = ""  # the job wrote its record and is leaving the queue (COMPLETING)
        if live == "UNKNOWN":
            row["state"] = "unknown"
            row["result"] = "the scheduler did not answer" + (
                f"; record: {row['result']}" if row["result"] else ""
            )
        elif live:
            requeued = live == "REQUEUED" or (kind == "slurm" and _requeued(row["job_id"]))
            row["state"] = (
                "requeued" if requeued else "pending" if live in ("PENDING", "CONFIGURING") else "running"
            )
            if rec is not None:
                row["result"] = (
                    "retrying after: " if rec.get("status") != "ok" else "re-running; was: "
                ) + row["result"]
        elif rec is not None:
            row["state"] = "done" if rec.get("status") == "ok" else "failed"
        elif job["kind"] == "pretrain" and (out / CHECKPOINT).is_file():
            epochs = int(job.get("epochs") or 0)
            if not epochs or pretraining_done(out, epochs, int(job.get("max_iters") or 0)):
                row["state"], row["result"] = "done", str(out / CHECKPOINT)
            else:
                row["state"] = "failed"
                row["result"] = f"stopped before epoch {epochs}: {pretraining_progress(out)}" + (
                    f" (SLURM {sacct_state})" if sacct_state else ""
                )
        elif sacct_state:
            row["state"] = "failed" if sacct_state not in ("COMPLETED",) else "done"
            row["result"] = f"SLURM {sacct_state}" + (
                f" (dependency {job['depends_on']} failed)"
                if sacct_state == "CANCELLED" and job.get("depends_on")
                else ""
            )
        else:
            row["state"] = "missing"
            row["result"] = _log_tail(run_dir, row["job_id"])
        rows.append(row)
    return rows


def _written_by_this_job(record: dict, job: dict) -> bool:
    """The record was written after the job was submitted (not an older record behind a retry)."""
    try:
        created = datetime.fromisoformat(record["created"]).timestamp()
    except (KeyError, TypeError, ValueError):
        return False
    return created >= float(job.get("submitted_at") or 0) - 1.0  # records keep whole seconds


def _requeued(job_id: str) -> bool:
    out = subprocess.run(
        ["sacct", "-n", "-D", "-X", "-P", "-j", job_id, "-o", "State"], capture_output=True, text=True
    )
    return "REQUEUED" in out.stdout


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
