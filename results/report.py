"""``swavbench report``: collect records, build the paper-shaped tables, write every format."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from results.collect import collect, save
from results.comparison import comparison_tables
from results.plots import all_plots
from results.reference import load_reference
from results.render import LEGEND, html_report, issues_text, latex, markdown, terminal
from results.tables import paper_tables
from swavbench.core import durable


@dataclass
class Report:
    terminal: str
    files: dict[str, Path]
    n_rows: int
    n_failed: int
    n_problems: int


def make_report(
    run_dirs: list[str | Path],
    out_dir: str | Path,
    tolerance: float = 1.0,
    *,
    references: list[str | Path] = (),
    title: str = "swav-bench report",
) -> Report:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    durable.remove_stale_temps(out)
    df, problems, failed = collect(run_dirs)
    ref = load_reference(references)
    # first the at-a-glance comparison (and the smoke checks apart), then the paper-shaped tables
    tables = comparison_tables(df) + paper_tables(df, ref, tolerance) if not df.empty else []
    parquet, csv = save(df, out)
    for stale in (out / "plots").glob("*.png"):  # plots of an earlier report of this folder
        stale.unlink()
    plots = all_plots(df, out / "plots")
    issues = issues_text(problems, failed)
    legend = f"{LEGEND}; tolerance {tolerance:g} points"
    term = "\n\n".join([terminal(t) for t in tables] + [legend] + ([issues] if issues else []))
    md = (
        "\n\n".join(
            [f"# {title}", legend]
            + [markdown(t) for t in tables]
            + [f"![{p.stem}](plots/{p.name})" for p in plots]
            + (["## Failed and skipped records", "```", issues, "```"] if issues else [])
        )
        + "\n"
    )
    tex = "% requires \\usepackage{booktabs,amssymb}\n" + "\n\n".join(latex(t) for t in tables) + "\n"
    files = {
        "parquet": parquet,
        "csv": csv,
        "markdown": durable.write_text(out / "report.md", md),
        "latex": durable.write_text(out / "report.tex", tex),
        "html": durable.write_text(
            out / "report.html", html_report(tables, plots, problems, failed=failed, title=title)
        ),
    }
    files.update({p.stem: p for p in plots})
    return Report(term, files, len(df), len(failed), len(problems))
