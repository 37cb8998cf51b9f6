"""``swavbench dashboard ROOT``: every run and sweep under ROOT on one local page, live while jobs run.

It reads only what the runs already write (``launch.json`` through ``swavbench status``, the records through
the report's own collect / tables, ``train_log.jsonl``) and keeps no database. The page asks for the state
every few seconds and replaces only the runs that changed. It is read-only: GET only, nothing can be
launched or changed from it, and it listens on 127.0.0.1 unless told otherwise."""

from __future__ import annotations

import argparse
import hashlib
import html
import json
import math
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlparse

from swavbench.core.commands import command
from swavbench.core.paths import LAUNCH_STATE, TRAIN_LOG

SERVED = {".html": "text/html", ".png": "image/png", ".svg": "image/svg+xml", ".md": "text/plain"}
CURVES = (("loss", "loss"), ("lr", "learning rate"), ("images_per_s", "images / s"))


def find_runs(root: Path) -> list[Path]:
    """Launch run directories under ``root`` (folders holding launch.json), set-aside folders excluded."""
    found = [p.parent for p in root.rglob(LAUNCH_STATE) if not {"replaced", "submitit"} & set(p.parts)]
    return sorted(found)


def read_log(path: Path) -> list[dict]:
    """The lines of a train log that parse (a torn last line while it is written is skipped)."""
    out = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def curve_svg(points: list[tuple[float, float]], label: str, *, width: int = 300, height: int = 110) -> str:
    """A small line plot (inline SVG) of (iteration, value) points, its range written beside it."""
    pts = [(x, y) for x, y in points if isinstance(y, (int, float)) and math.isfinite(y)]
    if len(pts) < 2:
        return ""
    (x0, x1), (y0, y1) = (
        (min(p[0] for p in pts), max(p[0] for p in pts)),
        (min(p[1] for p in pts), max(p[1] for p in pts)),
    )
    sx, sy = (width - 10) / ((x1 - x0) or 1), (height - 30) / ((y1 - y0) or 1)
    line = " ".join(f"{5 + (x - x0) * sx:.1f},{height - 20 - (y - y0) * sy:.1f}" for x, y in pts)
    return (
        f"<svg class='curve' width='{width}' height='{height}' role='img' aria-label='{html.escape(label)}'>"
        f"<polyline fill='none' stroke='#1565c0' stroke-width='1.5' points='{line}'/>"
        f"<text x='5' y='{height - 5}' font-size='11'>{html.escape(label)}: {y0:.3g} to {y1:.3g}, "
        f"iterations {x0:g}-{x1:g}</text></svg>"
    )


def heat_table(table) -> str:  # noqa: ANN001 - results.tables.Table
    """A sweep table with each column's cells shaded by value, darkest the best (a heat map of variants)."""
    ranges = {}
    for c in table.columns:
        finite = [
            cells[c.header].mean for _, cells in table.rows if c.header in cells and cells[c.header].finite
        ]
        ranges[c.header] = (min(finite), max(finite)) if len(finite) > 1 else None
    head = "".join(f"<th>{html.escape(h)}</th>" for h in [table.row_header, *ranges])
    body = []
    for name, cells in table.rows:
        tds = [f"<td>{html.escape(name)}</td>"]
        for c in table.columns:
            cell, span = cells.get(c.header), ranges[c.header]
            style = ""
            if cell is not None and span and cell.finite:
                alpha = 0.1 + 0.6 * (cell.mean - span[0]) / ((span[1] - span[0]) or 1)
                style = f" class='heat' style='background:rgba(46,125,50,{alpha:.2f})'"
            tds.append(f"<td{style}>{html.escape(cell.text() if cell else '—')}</td>")
        body.append(f"<tr>{''.join(tds)}</tr>")
    return (
        f"<h3>{html.escape(table.title)}</h3><table class='sweep'><thead><tr>{head}</tr></thead>"
        f"<tbody>{''.join(body)}</tbody></table>"
    )


def jobs_html(rows: list[dict]) -> str:
    cols = ("name", "kind", "state", "job_id", "elapsed", "result")
    head = "".join(f"<th>{c}</th>" for c in cols)
    body = "".join(
        f"<tr class='job' data-name='{html.escape(r['name'])}' data-state='{html.escape(r['state'])}'>"
        + "".join(f"<td class='{c}'>{html.escape(str(r[c]))}</td>" for c in cols)
        + "</tr>"
        for r in rows
    )
    return f"<table class='jobs'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def run_view(run: Path, root: Path) -> str:
    """One run's section: live job states, headline metrics with mean ± CI and verdicts (as the report
    computes them), the sweep table as a heat map, pretraining curves and a link to its report."""
    from results.collect import collect
    from results.comparison import comparison_tables
    from results.reference import load_reference
    from results.render import html_table
    from results.tables import paper_tables
    from slurm.status import job_table

    rel = run.relative_to(root).as_posix() or "."
    parts = []
    try:
        rows = job_table(run)
        pretrains = [r for r in rows if r["kind"] == "pretrain"]
        kind = "sweep" if sum("=" in r["name"] for r in pretrains) > 1 else "run"  # variants: key=value names
        states = {s: sum(r["state"] == s for r in rows) for s in dict.fromkeys(r["state"] for r in rows)}
        summary = ", ".join(f"{n} {s}" for s, n in states.items()) or "no jobs yet"
        parts.append(f"<h2>{kind} {html.escape(rel)} <small>({html.escape(summary)})</small></h2>")
        parts.append(jobs_html(rows))
    except (OSError, ValueError) as e:  # a damaged launch.json: said, the page goes on
        parts.append(f"<h2>run {html.escape(rel)}</h2><p class='error'>{html.escape(str(e))}</p>")
        rows, pretrains = [], []
    df, _, _ = collect([run])
    if not df.empty:
        parts += [html_table(t) for t in comparison_tables(df)]
        sweep = [t for t in paper_tables(df, load_reference()) if t.title.startswith("Sweep")]
        parts += [heat_table(t) for t in sweep]
    logs = sorted({*run.glob(f"*/{TRAIN_LOG}"), *(Path(r["out_dir"]) / TRAIN_LOG for r in pretrains)})
    for log in [p for p in logs if p.is_file()]:
        recs = read_log(log)
        svgs = "".join(
            curve_svg([(r.get("iteration", 0), r.get(k)) for r in recs], name) for k, name in CURVES
        )
        if svgs:
            parts.append(f"<div class='curves'><h3>{html.escape(log.parent.name)}</h3>{svgs}</div>")
    beside = [run.parent / "report" / "report.html"] if run.name == "jobs" else []  # a main job's OUT/report
    for report in [*sorted(run.glob("**/report.html")), *(p for p in beside if p.is_file())][:3]:
        link = "/files/" + report.relative_to(root).as_posix()
        parts.append(
            f"<p><a class='report' href='{html.escape(link)}'>report: {html.escape(link[7:])}</a></p>"
        )
    return "\n".join(parts)


def state(root: Path) -> dict:
    """Every run's section and its fingerprint (the page replaces only the sections that changed)."""
    runs = []
    for run in find_runs(root):
        view = run_view(run, root)
        runs.append(
            {
                "id": run.relative_to(root).as_posix() or ".",
                "html": view,
                "sig": hashlib.sha1(view.encode()).hexdigest(),
            }
        )
    return {"root": str(root), "runs": runs, "time": time.strftime("%H:%M:%S")}


PAGE = """<!doctype html><html><head><meta charset='utf-8'><title>swavbench dashboard</title><style>
body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse;margin:.5em 0}
td,th{border-bottom:1px solid #ccc;padding:3px 8px;text-align:right}
td:first-child,th:first-child{text-align:left}
section{border-top:2px solid #888;margin-top:1.5em}.curves svg{margin-right:1em}.error{color:#b71c1c}
tr[data-state=running] .state{color:#1565c0}tr[data-state=done] .state{color:#2e7d32}
tr[data-state=failed] .state{color:#b71c1c}</style></head><body>
<h1>swavbench dashboard</h1><p>ROOT <code id='root'></code>, updated <span id='updated'>never</span>
(every INTERVAL s; read-only)</p><div id='runs'><p id='empty'>no runs yet</p></div>
<script>
const shown = {};
async function refresh() {
  try {
    const s = await (await fetch('/api/state', {cache: 'no-store'})).json();
    document.getElementById('root').textContent = s.root;
    document.getElementById('updated').textContent = s.time;
    const box = document.getElementById('runs');
    document.getElementById('empty').hidden = s.runs.length > 0;
    for (const r of s.runs) {
      let sec = document.getElementById('run:' + r.id);
      if (!sec) { sec = document.createElement('section'); sec.id = 'run:' + r.id; box.appendChild(sec); }
      if (shown[r.id] !== r.sig) { sec.innerHTML = r.html; shown[r.id] = r.sig; }
    }
  } catch (e) { document.getElementById('updated').textContent = 'server unreachable: ' + e; }
}
refresh(); setInterval(refresh, INTERVAL * 1000);
</script></body></html>"""


def make_server(
    root: Path, host: str = "127.0.0.1", port: int = 8765, *, interval: float = 2.0
) -> ThreadingHTTPServer:
    """The dashboard's HTTP server (not started): GET /, /api/state and report files under ROOT."""
    root = root.resolve()
    page = PAGE.replace("INTERVAL", f"{interval:g}").encode()
    lock = threading.Lock()  # one state computation at a time: a slow disk is read once per poll

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            path = unquote(urlparse(self.path).path)
            if path == "/":
                return self._send(200, "text/html", page)
            if path == "/api/state":
                with lock:
                    body = json.dumps(state(root)).encode()
                return self._send(200, "application/json", body)
            if path.startswith("/files/"):
                target = (root / path[len("/files/") :]).resolve()
                if target.is_relative_to(root) and target.is_file() and target.suffix in SERVED:
                    return self._send(200, SERVED[target.suffix], target.read_bytes())
            return self._send(404, "text/plain", b"not found")

        def _refuse(self) -> None:
            self._send(405, "text/plain", b"read-only: nothing can be changed from the dashboard")

        do_POST = do_PUT = do_DELETE = do_PATCH = _refuse  # noqa: N815 - http.server's names

        def _send(self, code: int, kind: str, body: bytes) -> None:
            self.send_response(code)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:  # quiet: the page polls every few seconds
            pass

    return ThreadingHTTPServer((host, port), Handler)


def run(args: argparse.Namespace) -> int:
    """A live local web page over every run and sweep under a folder (read-only)

    Serve a page showing every run and sweep under ROOT: job states, headline metrics with mean ± CI and
    verdicts, sweep heat maps, pretraining curves, links to reports; it updates while jobs run. Read-only;
    loopback only unless --host says otherwise.
    """
    root = Path(args.root)
    if not root.is_dir():
        print(
            f"swavbench dashboard: error: {root} is not a folder (give the folder your runs are under)",
            file=sys.stderr,
        )
        return 2
    server = make_server(root, args.host, args.port, interval=args.interval)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(
            f"warning: serving on {args.host}: anyone who can reach this host can read the runs",
            file=sys.stderr,
        )
    print(
        f"swavbench dashboard: http://{args.host}:{server.server_address[1]}/ over {root.resolve()} "
        "(Ctrl-C stops)"
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = command(sub, "dashboard", run=run)
    p.add_argument("root", help="folder holding the run directories (e.g. runs)")
    p.add_argument("--port", type=int, default=8765, help="port (default 8765; 0: any free port)")
    p.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1)")
    p.add_argument("--interval", type=float, default=2.0, help="seconds between the page's updates")
