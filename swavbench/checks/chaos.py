"""Chaos benchmark (not a test): kill -9 the main job's whole process group at random moments, relaunch
until it completes, and compare every number with an uninterrupted run of the same preset.

    python -m swavbench.checks.chaos --config tiny --kills 5 --out /tmp/chaos [--data-root DIR] [--seed 0]

Prints the kills survived, the relaunches, every metric that differs from the uninterrupted run, and what
was left behind (temp files of killed writers, unreadable checkpoints set aside, live job processes)."""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from slurm.scheduler import Scheduler
from swavbench.core.paths import RECORD, REPO


def swavbench_run(config: str, out: Path, data_root: str | None) -> list[str]:
    cmd = [sys.executable, "-m", "swavbench", "run", "--config", config, "--out", str(out), "--no-progress"]
    return cmd + (["--data-root", data_root] if data_root else [])


def metrics(out: Path) -> dict[str, float]:
    """Every metric of every ok record, keyed by job folder name (without its key) and metric."""
    found = {}
    for rec in sorted((out / "jobs" / "evals").glob(f"*/{RECORD}")):
        data = json.loads(rec.read_text())
        if data.get("status") == "ok":
            for k, v in data["metrics"].items():
                if isinstance(v, (int, float)):
                    found[f"{rec.parent.name.rsplit('-', 1)[0]}:{k}"] = float(v)
    return found


def leftovers(out: Path) -> dict[str, list[str]]:
    return {
        "temp files": [str(p) for p in out.rglob("*.swavbench-tmp")],
        "set-aside checkpoints": [str(p) for p in out.rglob("*.unreadable")],
        "live job processes": sorted(Scheduler("local").snapshot()),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="tiny", help="main-job preset (configs/main/)")
    ap.add_argument("--out", required=True, help="folder for the reference and the chaos runs")
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--kills", type=int, default=5, help="kill -9 the run this many times")
    ap.add_argument("--min-s", type=float, default=5.0, help="shortest time before a kill")
    ap.add_argument("--max-s", type=float, default=40.0, help="longest time before a kill")
    ap.add_argument("--seed", type=int, default=0, help="seed of the kill times")
    args = ap.parse_args(argv)
    out, rng = Path(args.out), random.Random(args.seed)
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"))

    t0 = time.time()
    ref = subprocess.run(
        swavbench_run(args.config, out / "reference", args.data_root), cwd=REPO, env=env, capture_output=True
    )
    t_ref = time.time() - t0
    if ref.returncode != 0:
        print(ref.stderr.decode()[-3000:], file=sys.stderr)
        return 1
    kills, launches, t0 = 0, 0, time.time()
    while True:
        launches += 1
        proc = subprocess.Popen(
            swavbench_run(args.config, out / "chaos", args.data_root),
            cwd=REPO,
            env=env,
            start_new_session=True,  # its own process group: the launcher and every local job
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        if kills < args.kills:
            try:
                proc.wait(timeout=rng.uniform(args.min_s, args.max_s))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                kills += 1
                print(f"kill {kills} after launch {launches}", flush=True)
                continue
        if proc.wait() == 0:
            break
        if launches > args.kills + 5:
            print(f"launch {launches} failed (exit {proc.returncode}); giving up", file=sys.stderr)
            return 1
    t_chaos = time.time() - t0
    a, b = metrics(out / "reference"), metrics(out / "chaos")
    differ = {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}
    close = {
        k: v for k, v in differ.items() if None not in v and abs(v[0] - v[1]) <= 1e-6 * max(1, abs(v[0]))
    }
    print(f"reference: {t_ref:.0f} s; chaos: {kills} kills, {launches} launches, {t_chaos:.0f} s")
    print(f"metrics: {len(a)} in the reference, {len(b)} after the kills")
    print(f"differing: {len(differ) - len(close)} (and {len(close)} equal within 1e-6 relative)")
    for k, (x, y) in differ.items():
        if k not in close:
            print(f"  {k}: {x} vs {y}")
    for what, items in leftovers(out / "chaos").items():
        print(f"{what}: {len(items)}" + "".join(f"\n  {i}" for i in items[:10]))
    return 0 if len(differ) == len(close) else 1


if __name__ == "__main__":
    sys.exit(main())
