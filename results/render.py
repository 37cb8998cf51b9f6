"""Tables -> aligned terminal text, Markdown, LaTeX (booktabs) and one self-contained HTML page."""

from __future__ import annotations

import base64
import html
from pathlib import Path

from results.collect import Failed, Problem
from results.tables import Table

LEGEND = (
    "mean over seeds ± 95% CI half-width (Student t) with the number of runs n; "
    "(delta to the published number, ✓ reproduced within tolerance / ✗ not)"
)


def _grid(table: Table, *, marks: bool = True) -> tuple[list[str], list[list[str]], list[list[bool]]]:
    headers = [table.row_header] + [c.header for c in table.columns]
    body, best = [], []
    for name, cells in table.rows:
        body.append(
            [name] + [cells[c.header].text(marks=marks) if c.header in cells else "—" for c in table.columns]
        )
        best.append([False] + [c.header in cells and cells[c.header].best for c in table.columns])
    return headers, body, best


def terminal(table: Table) -> str:
    headers, body, best = _grid(table)
    body = [[v + (" *" if b else "") for v, b in zip(row, brow)] for row, brow in zip(body, best)]
    widths = [max(len(r[i]) for r in [headers, *body]) for i in range(len(headers))]

    def line(r):
        return "  ".join(v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(r, widths)))

    out = [table.title, line(headers), "  ".join("-" * w for w in widths)] + [line(r) for r in body]
    return "\n".join(out + ([table.note] if table.note else []))


def markdown(table: Table) -> str:
    headers, body, best = _grid(table)
    rows = [[f"**{v}**" if b else v for v, b in zip(row, brow)] for row, brow in zip(body, best)]
    out = [
        f"### {table.title}",
        "",
        "| " + " | ".join(headers) + " |",
        "|" + "|".join([":---"] + ["---:"] * (len(headers) - 1)) + "|",
    ]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    if table.note:
        out += ["", table.note]
    return "\n".join(out)


def latex_escape(s: str) -> str:
    repl = {
        "\\": r"\textbackslash{}",
        "&": r"\&",
        "%": r"\%",
        "$": r"\$",
        "#": r"\#",
        "_": r"\_",
        "{": r"\{",
        "}": r"\}",
        "~": r"\textasciitilde{}",
        "^": r"\textasciicircum{}",
        "±": r"$\pm$",
        "✓": r"\checkmark",
        "✗": r"$\times$",
        "—": "--",
    }
    return "".join(repl.get(ch, ch) for ch in s)


def latex(table: Table) -> str:
    headers, body, best = _grid(table)
    out = [
        r"\begin{table}[t]",
        r"\centering",
        f"\\caption{{{latex_escape(table.title)}}}",
        r"\begin{tabular}{l" + "r" * (len(headers) - 1) + "}",
        r"\toprule",
        " & ".join(latex_escape(h) for h in headers) + r" \\",
        r"\midrule",
    ]
    for row, brow in zip(body, best):
        out.append(
            " & ".join(f"\\textbf{{{latex_escape(v)}}}" if b else latex_escape(v) for v, b in zip(row, brow))
            + r" \\"
        )
    out += [r"\bottomrule", r"\end{tabular}"]
    if table.note:
        out.append(r"\par\smallskip\footnotesize " + latex_escape(table.note))
    out.append(r"\end{table}")
    return "\n".join(out)


def html_table(table: Table) -> str:
    headers, body, best = _grid(table)
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    rows = "".join(
        "<tr>"
        + "".join(
            f"<td>{'<b>' if b else ''}{html.escape(v)}{'</b>' if b else ''}</td>" for v, b in zip(r, br)
        )
        + "</tr>"
        for r, br in zip(body, best)
    )
    return (
        f"<h2>{html.escape(table.title)}</h2><table><thead><tr>{head}</tr></thead>"
        f"<tbody>{rows}</tbody></table>" + (f"<p>{html.escape(table.note)}</p>" if table.note else "")
    )


def html_report(
    tables: list[Table], plots: list[Path], problems: list[Problem], *, failed: list[Failed], title: str
) -> str:
    """One page; the PNG plots are embedded as data URIs, so the file stands alone."""
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
        "<style>body{font-family:sans-serif;max-width:1200px;margin:2em auto}table{border-collapse:collapse;"
        "margin-bottom:1em}td,th{border-bottom:1px solid #ccc;padding:4px 10px;text-align:right}"
        "td:first-child,th:first-child{text-align:left}img{max-width:100%}</style></head><body>",
        f"<h1>{html.escape(title)}</h1><p>{html.escape(LEGEND)}</p>",
    ]
    parts += [html_table(t) for t in tables]
    for p in plots:
        data = base64.b64encode(p.read_bytes()).decode()
        parts.append(
            f"<h3>{html.escape(p.stem)}</h3><img alt='{html.escape(p.stem)}' "
            f"src='data:image/png;base64,{data}'>"
        )
    parts.append(_issues_html(problems, failed))
    parts.append("</body></html>")
    return "\n".join(parts)


def _issues_html(problems: list[Problem], failed: list[Failed]) -> str:
    out = ""
    if failed:
        out += (
            "<h2>Failed jobs</h2><ul>"
            + "".join(
                f"<li>{html.escape(f.model)} / {html.escape(f.protocol)} / {html.escape(f.dataset)}: "
                f"{html.escape(f.error)} <code>{html.escape(f.path)}</code></li>"
                for f in failed
            )
            + "</ul>"
        )
    for kind, title in (("conflict", "Configuration conflicts"), ("skipped", "Skipped records")):
        chosen = [p for p in problems if p.kind == kind]
        if chosen:
            out += (
                f"<h2>{title}</h2><ul>"
                + "".join(
                    f"<li><code>{html.escape(p.path)}</code>: {html.escape(p.reason)}</li>" for p in chosen
                )
                + "</ul>"
            )
    return out


def issues_text(problems: list[Problem], failed: list[Failed]) -> str:
    lines = [f"FAILED {f.model} / {f.protocol} / {f.dataset}: {f.error} ({f.path})" for f in failed]
    lines += [f"{p.kind.upper()} {p.path}: {p.reason}" for p in problems]
    return "\n".join(lines)
