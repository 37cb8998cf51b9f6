"""``swavbench launch suite|pipeline|sweep`` and ``swavbench status``."""

from __future__ import annotations

import argparse
import json
import sys

EXECUTORS = ["auto", "slurm", "local", "debug"]


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--suite", default="cpu-small", help="suite preset (configs/suites/) or YAML path (default cpu-small)")
    p.add_argument("--run-dir", required=True, help="where jobs write their outputs, logs and launch.json")
    p.add_argument("--executor", choices=EXECUTORS, default="auto",
                   help="auto: SLURM when sbatch exists, else local processes; debug runs in this process")
    p.add_argument("--force", action="store_true", help="re-run jobs whose record already says ok")
    p.add_argument("--dry-run", action="store_true", help="print the job graph and resources; submit nothing")
    p.add_argument("--wait", action="store_true", help="block until every submitted job ended")


def add_parsers(sub: argparse._SubParsersAction) -> None:
    launch = sub.add_parser("launch", help="submit evaluation suites, pretrain->eval pipelines and sweeps (submitit)",
                            description="Turn 'evaluate this checkpoint' or 'pretrain these variants and evaluate "
                            "each' into jobs (SLURM, local processes or in-process). Re-running is idempotent.")
    kinds = launch.add_subparsers(dest="kind", required=True, metavar="KIND")
    s = kinds.add_parser("suite", help="one job per protocol run of a suite on a checkpoint")
    s.add_argument("--checkpoint", required=True)
    _common(s)
    s.set_defaults(func=run_launch)
    p = kinds.add_parser("pipeline", help="pretraining job, then the suite on its final checkpoint (afterok)")
    p.add_argument("--config", default="cpu-small", help="pretraining preset")
    p.add_argument("overrides", nargs="*", metavar="section.key=value")
    _common(p)
    p.set_defaults(func=run_launch)
    w = kinds.add_parser("sweep", help="one pipeline per variant of a sweep YAML (grid or list of overrides)")
    w.add_argument("--sweep", required=True, help="YAML with 'grid: {section.key: [values]}' and/or 'variants: [...]'")
    w.add_argument("--config", default="cpu-small", help="pretraining preset the variants override")
    _common(w)
    w.set_defaults(func=run_launch)
    st = sub.add_parser("status", help="state of every job of a launch run directory",
                        description="One row per job: state (pending/running/requeued/done/failed/missing), SLURM id, "
                        "elapsed time, and the headline metric or the end of the error.")
    st.add_argument("run_dir")
    st.add_argument("--json", action="store_true", help="machine-readable output")
    st.set_defaults(func=run_status)


def run_launch(args: argparse.Namespace) -> int:
    from pathlib import Path

    from pretrain.config import ConfigError
    from slurm.launch import Launcher
    from slurm.suite import expand_sweep, load_suite

    try:
        suite = load_suite(args.suite)
        launcher = Launcher(args.run_dir, args.executor, args.force, args.dry_run)
        if args.kind == "suite":
            planned = launcher.suite(suite, args.checkpoint)
        elif args.kind == "pipeline":
            planned = launcher.pipeline(args.config, list(args.overrides), suite, suite.pretrain)
        else:
            planned = []
            for name, overrides in expand_sweep(args.sweep):
                sub = Launcher(Path(args.run_dir) / name, args.executor, args.force, args.dry_run)
                planned += sub.pipeline(args.config, overrides, suite, suite.pretrain, name=f"pretrain-{name}")
                launcher.jobs.update(sub.jobs)
    except (ConfigError, FileNotFoundError, ValueError) as e:
        print(f"swavbench launch: error: {e}", file=sys.stderr)
        return 2
    for p in planned:
        dep = f" after {p.depends_on}" if p.depends_on else ""
        print(f"{p.action:<10} {p.kind:<8} {p.name:<32} job {p.job_id or '-'}{dep}  [{p.resources}]  -> {p.out_dir}")
    if args.wait:
        for key, outcome in launcher.wait().items():
            if outcome != "ok":
                print(f"job {key}: {outcome}", file=sys.stderr)
    return 0


def run_status(args: argparse.Namespace) -> int:
    from slurm.status import job_table, render

    try:
        rows = job_table(args.run_dir)
    except FileNotFoundError as e:
        print(f"swavbench status: error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(rows, indent=2) if args.json else render(rows))
    return 0
