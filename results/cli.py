"""``swavbench report RUN_DIR...``."""

from __future__ import annotations

import argparse
import sys

from swavbench.core.commands import command


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = command(sub, "report", run=run_report)
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    p.add_argument(
        "--out", default=None, help="report folder (default: RUN_DIR/report for one run dir, else ./report)"
    )
    p.add_argument(
        "--tolerance",
        type=float,
        default=1.0,
        help="points below the published number still counted as reproduced (default 1.0)",
    )
    p.add_argument(
        "--reference",
        action="append",
        default=[],
        metavar="CSV",
        help="extra published numbers (same columns as results/data/swav_paper.csv); repeatable",
    )
    p.add_argument("--title", default="swav-bench report")


def run_report(args: argparse.Namespace) -> int:
    """Result records -> paper-shaped tables (terminal, Markdown, LaTeX, HTML) and plots

    Collect every result.json under the run directories into one table (Parquet + CSV), print the
    paper-shaped tables with the published SwAV and supervised numbers beside, and write report.md,
    report.tex, report.html and plots/ to --out.
    """
    from pathlib import Path

    from results.report import make_report

    out = args.out or (str(Path(args.run_dirs[0]) / "report") if len(args.run_dirs) == 1 else "report")
    try:
        rep = make_report(args.run_dirs, out, args.tolerance, references=args.reference, title=args.title)
    except (FileNotFoundError, ValueError) as e:
        print(f"swavbench report: error: {e}", file=sys.stderr)
        return 2
    print(rep.terminal)
    print(f"\n{rep.n_rows} result rows, {rep.n_failed} failed jobs, {rep.n_problems} skipped records")
    print(
        f"report: {Path(out).resolve() / 'report.html'} "
        "(also report.md, report.tex, results.parquet, results.csv)"
    )
    return 0
