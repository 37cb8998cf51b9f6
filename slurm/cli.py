"""``swavbench launch suite|pipeline|sweep`` and ``swavbench status``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from swavbench.core.commands import command
from swavbench.core.data_root import add_data_root_argument

EXECUTORS = ["auto", "slurm", "local", "debug"]


def _site_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--account", default="", help="SLURM account of every job (default: the cluster file's)")
    p.add_argument("--qos", default="", help="SLURM QOS of every job (default: the cluster file's)")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--suite", default="cpu-small", help="suite preset (configs/suites/) or YAML path (default cpu-small)"
    )
    p.add_argument("--run-dir", required=True, help="where jobs write their outputs, logs and launch.json")
    p.add_argument(
        "--executor",
        choices=EXECUTORS,
        default="auto",
        help="auto: SLURM when sbatch exists, else local processes; debug runs in this process",
    )
    _site_arguments(p)
    p.add_argument("--force", action="store_true", help="re-run jobs whose record already says ok")
    p.add_argument("--dry-run", action="store_true", help="print the job graph and resources; submit nothing")
    p.add_argument("--wait", action="store_true", help="block until every submitted job ended")
    p.add_argument(
        "--rehearse",
        action="store_true",
        help="rehearse on this machine or cluster first: the same jobs on tiny generated data in the real "
        "formats (RUN_DIR/rehearsal-data), one node, 2 processes per job, iteration caps; waits, then checks "
        "every job ran with its processes and the report fills Tables 1-3",
    )
    add_data_root_argument(p)


def _pretraining_arguments(p: argparse.ArgumentParser, *, variants: bool) -> None:
    """The options of the kinds that pretrain (a pipeline; a sweep's ``variants``), then _common's."""
    each = " of every variant" if variants else ""
    p.add_argument(
        "--config",
        default="cpu-small",
        help="pretraining preset" + (" the variants override" if variants else ""),
    )
    p.add_argument(
        "--eval-epochs",
        default="",
        help=f"also evaluate these intermediate epochs{each}, e.g. 100,200,400 (checkpoints kept every "
        "run.keep_epoch_checkpoints epochs)",
    )
    _common(p)


def add_parsers(sub: argparse._SubParsersAction) -> None:
    kinds = command(sub, "launch", run_launch.__doc__).add_subparsers(
        dest="kind", required=True, metavar="KIND"
    )
    s = command(kinds, "suite", "one job per protocol run of a suite on a checkpoint", run=run_launch)
    s.add_argument("--checkpoint", required=True)
    _common(s)
    p = command(
        kinds, "pipeline", "pretraining job, then the suite on its final checkpoint (afterok)", run=run_launch
    )
    p.add_argument("overrides", nargs="*", metavar="section.key=value")
    _pretraining_arguments(p, variants=False)
    w = command(
        kinds, "sweep", "one pipeline per variant of a sweep YAML (grid or list of overrides)", run=run_launch
    )
    w.add_argument(
        "--sweep", required=True, help="YAML with 'grid: {section.key: [values]}' and/or 'variants: [...]'"
    )
    _pretraining_arguments(w, variants=True)
    _add_run_parser(sub)
    st = command(sub, "status", run=run_status)
    st.add_argument("run_dir")
    st.add_argument("--json", action="store_true", help="machine-readable output")


def _add_run_parser(sub: argparse._SubParsersAction) -> None:
    """``swavbench run``: the main job."""
    r = command(
        sub,
        "run",
        examples=[
            "swavbench run                # cpu-small, local processes, 6-9 min per seed on 2 cores",
            "swavbench run --config paper --executor slurm --data-root /datasets --dry-run",
        ],
        run=run_main_job,
    )
    r.add_argument(
        "--config",
        default="cpu-small",
        help="main-job preset (configs/main/) or YAML path (default cpu-small)",
    )
    r.add_argument("--executor", choices=EXECUTORS, help="override the preset's executor (cpu-small: local)")
    r.add_argument("--out", help="run folder (default runs/main-<config>)")
    _site_arguments(r)
    add_data_root_argument(r)
    r.add_argument("--seeds", type=int, help="number of seeds (0..N-1) instead of the preset's list")
    r.add_argument("--force", action="store_true", help="re-run jobs that already finished")
    r.add_argument(
        "--dry-run", action="store_true", help="print the job graph, resources and GPU-hours; submit nothing"
    )
    r.add_argument("--no-progress", action="store_true", help="no progress line (logs only)")
    r.add_argument(
        "--offline",
        action="store_true",
        help="without ../shared/data: never download the demo data (local archives via prepare-data)",
    )
    r.add_argument(
        "overrides", nargs="*", metavar="key=value", help="main-config overrides, e.g. max_parallel=1"
    )


def epochs_list(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"--eval-epochs takes comma-separated integers, got {text!r}") from None


def pretraining_overrides(args: argparse.Namespace, overrides: list[str]) -> list[str]:
    """The pretraining overrides of a launch (a rehearsal adds its size overrides)."""
    if not args.rehearse:
        return list(overrides)
    from swavbench.checks.rehearsal import PRETRAIN

    return [*overrides, *PRETRAIN]


def preflight_launch(args: argparse.Namespace, plan, site) -> tuple:
    """(suite, sweep variants) of a launch after checking every job it plans, resolving each job's config
    into ``plan`` (slurm.plan) for the launcher; PreflightError lists every problem (nothing is submitted)."""
    from slurm.preflight import Preflight, cluster_of
    from slurm.suite import Resources

    check = Preflight(cluster_of(args.executor), plan=plan)
    if args.rehearse:  # checked at the rehearsal's shape, which is what will be submitted
        from slurm.suite import load_suite
        from swavbench.checks.rehearsal import rehearsal_suite

        loaded = check._try(f"suite {args.suite}", lambda: load_suite(args.suite))
        random = args.kind == "suite" and args.checkpoint == "random"
        suite = check.suite(rehearsal_suite(loaded, plan.data_root, random_trunk=random)) if loaded else None
    else:
        suite = check.suite(args.suite)
    pretrain = suite.pretrain if suite is not None else Resources()
    variants: list[tuple[str, list[str]]] = []
    if args.kind == "pipeline":
        check.pretraining(args.config, pretraining_overrides(args, args.overrides), pretrain, name="pretrain")
    elif args.kind == "sweep":
        variants = check.sweep(args.sweep)
        variants = [(name, pretraining_overrides(args, overrides)) for name, overrides in variants]
        for name, overrides in variants:
            check.pretraining(args.config, overrides, pretrain, name=f"pretrain-{name}")
    check.cluster_fit(site_partition=site.partition)
    check.accounts(site)
    check.finish()
    return suite, variants


def user_errors() -> tuple[type[Exception], ...]:
    """What a launch reports as a fault of its input or of the scheduler, in one line and exit 2."""
    from slurm.launch import LaunchBusy, SchedulerUnavailable, SubmissionFailed
    from swavbench.core.config import ConfigError
    from swavbench.core.state import CheckpointError

    return (
        ConfigError,
        CheckpointError,
        FileNotFoundError,
        ValueError,
        LaunchBusy,
        SchedulerUnavailable,
        SubmissionFailed,
    )


def run_launch(args: argparse.Namespace) -> int:
    """Submit evaluation suites, pretrain->eval pipelines and sweeps (submitit)

    Turn 'evaluate this checkpoint' or 'pretrain these variants and evaluate each' into jobs (SLURM, local
    processes or in-process). Re-running is idempotent.
    """

    from slurm.launch import Launcher
    from slurm.plan import Plan
    from slurm.site import load_site

    try:
        if args.rehearse:  # its own data root, generated once
            from swavbench.checks.rehearsal_data import write_all

            root = write_all(Path(args.run_dir) / "rehearsal-data")
            args.wait = True
        plan, site = Plan(root if args.rehearse else None), load_site(account=args.account, qos=args.qos)
        suite, variants = preflight_launch(args, plan, site)
        launcher = Launcher(
            args.run_dir, args.executor, force=args.force, dry_run=args.dry_run, plan=plan, site=site
        )
        if args.kind == "suite":
            planned = launcher.suite(suite, args.checkpoint)
        elif args.kind == "pipeline":
            planned = launcher.pipeline(
                args.config,
                pretraining_overrides(args, args.overrides),
                suite,
                resources=suite.pretrain,
                eval_epochs=epochs_list(args.eval_epochs),
            )
        else:
            planned = []
            for name, overrides in variants:  # every variant's folder is checked before any submission
                Launcher(Path(args.run_dir) / name, args.executor, dry_run=True, plan=plan).check_pretrain(
                    args.config, overrides, name=f"pretrain-{name}"
                )
            for name, overrides in variants:
                folder = Path(args.run_dir) / name
                sub = Launcher(
                    folder, args.executor, force=args.force, dry_run=args.dry_run, plan=plan, site=site
                )
                planned += sub.pipeline(
                    args.config,
                    overrides,
                    suite,
                    resources=suite.pretrain,
                    name=f"pretrain-{name}",
                    eval_epochs=epochs_list(args.eval_epochs),
                )
                launcher.jobs.update(sub.jobs)
    except user_errors() as e:
        print(f"swavbench launch: error: {e}", file=sys.stderr)
        return 2
    for p in planned:
        dep = f" after {p.depends_on}" if p.depends_on else ""
        print(
            f"{p.action:<10} {p.kind:<8} {p.name:<32} job {p.job_id or '-'}{dep}  "
            f"[{p.resources}]  -> {p.out_dir}"
        )
    if args.wait:
        for key, outcome in launcher.wait().items():
            if outcome != "ok":
                print(f"job {key}: {outcome}", file=sys.stderr)
    if args.rehearse and not args.dry_run:  # a dry run planned the rehearsal; nothing ran to check
        from swavbench.checks.rehearsal import LABEL, check

        problems = check([p.out_dir for p in planned if p.kind == "eval"], suite, model=LABEL)
        for line in problems:
            print(f"rehearsal: {line}", file=sys.stderr)
        verdict = "FAILED (see above)" if problems else "ok: every evaluation ran with its processes"
        print(f"rehearsal of {len(planned)} jobs: {verdict}")
        return 1 if problems else 0
    return 0


def run_main_job(args: argparse.Namespace) -> int:
    """The main job: pretrain SwAV + a supervised baseline, evaluate them and a random trunk, report

    Pretrain SwAV and the supervised baseline on the same data, run the suite on both checkpoints and on a
    random-init trunk of the same architecture, then print the paper-shaped report and write it (Markdown,
    LaTeX, HTML with plots) to OUT/report. Re-running skips what is done and continues what was
    interrupted.
    """
    from results.collect import collect
    from results.comparison import verdict_lines
    from results.report import make_report
    from slurm.main_job import load_main_config, plan_data, run_main
    from slurm.plan import Plan
    from slurm.site import load_site

    try:
        cfg = load_main_config(args.config, list(args.overrides))
        if args.seeds:
            cfg.seeds = list(range(args.seeds))
        out = Path(args.out or f"runs/main-{Path(args.config).stem}")
        suite, plan = None, Plan()  # every config resolved once, from the data plan to the jobs
        site = load_site(account=args.account, qos=args.qos)
        if (args.executor or cfg.executor) == "local" and not args.dry_run:
            data = plan_data(cfg, offline=args.offline, plan=plan)  # the demo data without ../shared/data
            for line in data.lines:
                print(line)
            suite, cfg.supervised = data.suite, cfg.supervised if data.supervised else ""
        result = run_main(
            cfg,
            out,
            suite=suite,
            force=args.force,
            dry_run=args.dry_run,
            progress=not args.no_progress,
            executor=args.executor,
            plan=plan,
            site=site,
        )
    except user_errors() as e:
        print(f"swavbench run: error: {e}", file=sys.stderr)
        return 2
    if args.dry_run:
        for p in result["planned"]:
            dep = f" after {p.depends_on}" if p.depends_on else ""
            print(f"{p.action:<10} {p.kind:<8} {p.name:<40}{dep}  [{p.resources}]")
        print(
            f"{len(result['planned'])} jobs; at most {result['gpu_hours']:.0f} GPU-hours "
            "(sum of gpus x time limits)"
        )
        for what, by in (("trunk", lambda p: p.name.split("-")[0]), ("protocol", lambda p: p.protocol)):
            hours: dict[str, float] = {}
            for p in result["planned"]:
                key = by(p) if p.kind == "eval" or what == "trunk" else "pretraining"
                hours[key] = hours.get(key, 0.0) + p.gpu_hours
            print(f"GPU-hours by {what}: " + ", ".join(f"{k} {v:.0f}" for k, v in hours.items()))
        return 0
    evals = [
        p.out_dir for p in result["planned"] if p.kind == "eval"
    ]  # not records of earlier configs in jobs/
    report = make_report(evals, out / "report", title=f"swavbench run --config {args.config}")
    print(report.terminal)
    print(
        "\nSwAV vs random vs supervised (mean ± 95% CI over seeds; ranked only where the CIs are disjoint):"
    )
    for line in verdict_lines(collect(evals)[0]):
        print(f"  {line}")
    for line in result["failed"]:
        print(f"failed: {line}", file=sys.stderr)
    print(
        f"report: {report.files['html'].resolve()} (and report.md, report.tex, plots/); "
        f"jobs: swavbench status {result['jobs_dir']}; wall {result['elapsed_s']:.0f} s"
    )
    return 1 if result["failed"] else 0


def run_status(args: argparse.Namespace) -> int:
    """State of every job of a launch run directory

    One row per job: state (pending/running/requeued/done/failed/missing), SLURM id, elapsed time, and the
    headline metric or the end of the error.
    """
    from slurm.status import job_table, render

    try:
        rows = job_table(args.run_dir)
    except (FileNotFoundError, ValueError) as e:
        print(f"swavbench status: error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(rows, indent=2) if args.json else render(rows))
    return 0
