"""The report's first table: SwAV vs random vs supervised, one row per protocol, each number the mean over
seeds ± the 95% confidence half-width, and a verdict that ranks two trunks only when their intervals do
not overlap. Protocols whose preset says ``smoke: true`` (too short to rank at this scale, e.g. 20
detection iterations) are listed apart: they ran and produced a valid record; their numbers rank nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from results.tables import Cell, Column, Table, aggregate, family, headline_metrics
from swavbench.core.registry import all_benchmarks

TRUNKS = ("SwAV", "random", "supervised")
ONE_SEED = "1 seed: no verdict (--seeds 3)"


@dataclass
class Row:
    """One protocol: benchmark, dataset, metric, and the three trunks' cells (None: not evaluated)."""

    column: Column
    cells: dict[str, Cell]
    smoke: bool = False

    @property
    def verdict(self) -> str:
        return verdict(self.cells)


def order(a: Cell, b: Cell) -> int | None:
    """+1: a above b with disjoint 95% intervals, -1: below, 0: the intervals overlap; None: fewer than 2
    seeds on either side (one run has no interval: it ranks nothing)."""
    if a.n < 2 or b.n < 2 or not (a.finite and b.finite):  # a NaN / inf seed ranks nothing
        return None
    (a_lo, a_hi), (b_lo, b_hi) = a.interval, b.interval
    return 1 if a_lo > b_hi else -1 if a_hi < b_lo else 0


def verdict(cells: dict[str, Cell]) -> str:
    """'SwAV > random; supervised > SwAV', 'not separated', ... from the intervals."""
    swav, rnd, sup = (cells.get(k) for k in TRUNKS)
    parts = []
    for a, b, name_a, name_b in ((swav, rnd, "SwAV", "random"), (sup, swav, "supervised", "SwAV")):
        if a is None or b is None:
            continue
        o = order(a, b)
        if o is None:
            return ONE_SEED
        parts.append(
            f"{name_a} > {name_b}" if o > 0 else f"{name_a} < {name_b}" if o < 0 else f"{name_a} ≈ {name_b}"
        )
    if not parts:
        return ""
    return "; ".join(parts) if any("≈" not in p for p in parts) else "not separated"


def comparison_rows(df: pd.DataFrame) -> list[Row]:
    """One row per (benchmark, dataset) evaluated on a SwAV trunk: its first headline metric; empty when
    the results hold no single SwAV model (a sweep: its own table compares the variants)."""
    if df.empty:
        return []
    agg = aggregate(df)
    swav_models = sorted({m for m in agg.model if family(m) == "swav"})
    sup_models = sorted({m for m in agg.model if family(m) == "supervised"})
    if len(swav_models) != 1:
        return []
    names = {swav_models[0]: "SwAV", "random": "random"}
    if len(sup_models) == 1:
        names[sup_models[0]] = "supervised"
    smoke = set()
    if "smoke" in df:
        smoke = {
            (b, d)
            for b, d in df[df.smoke.fillna(False).astype(bool)][["benchmark", "dataset"]].itertuples(
                index=False
            )
        }
    rows = []
    for (bench, dataset), grp in agg[agg.model == swav_models[0]].groupby(["benchmark", "dataset"]):
        metric = next((m for m in headline_metrics(bench) if m in set(grp.metric)), None)
        if metric is None:
            continue
        cells = {}
        for model, name in names.items():
            hit = agg[
                (agg.model == model)
                & (agg.benchmark == bench)
                & (agg.dataset == dataset)
                & (agg.metric == metric)
            ]
            if not hit.empty:
                r = hit.iloc[0]
                cells[name] = Cell(float(r["mean"]), float(r["std"]), int(r["n"]))
        rows.append(Row(Column(bench, dataset, metric), cells, smoke=(bench, dataset) in smoke))
    known = all_benchmarks()  # tables 1, 2, 3 order; smoke checks last
    rank = {b: i for i, b in enumerate(known)}

    def key(r: Row) -> tuple:
        b = r.column.benchmark
        return (r.smoke, rank.get(b, rank.get(b.split("-")[0], len(known))), r.column.header)

    return sorted(rows, key=key)


def comparison_tables(df: pd.DataFrame) -> list[Table]:
    """'SwAV vs random vs supervised' (ranked protocols), 'Smoke checks' (ran, valid record, not ranked)."""
    rows = comparison_rows(df)
    cols = [Column(t) for t in TRUNKS] + [Column("verdict")]
    tables = []
    ranked = [r for r in rows if not r.smoke]
    if ranked:
        t = Table(
            "SwAV vs random vs supervised — mean ± 95% CI over seeds, ranked where the CIs are disjoint",
            cols,
            row_header="protocol",
            note="≈: the 95% intervals overlap, the two are not separated at this number of seeds.",
        )
        for r in ranked:
            t.rows.append(
                (
                    r.column.header,
                    {**{k: v for k, v in r.cells.items()}, "verdict": Cell(0.0, label=r.verdict)},
                )
            )
        tables.append(t)
    smoke = [r for r in rows if r.smoke]
    if smoke:
        t = Table(
            "Smoke checks — ran and wrote a valid record; too short at this scale to rank the trunks",
            [Column(k) for k in TRUNKS],
            row_header="protocol",
        )
        for r in smoke:
            t.rows.append((r.column.header, dict(r.cells)))
        tables.append(t)
    return tables


def verdict_lines(df: pd.DataFrame) -> list[str]:
    """What ``swavbench run`` prints last: every protocol's numbers and verdict, smoke checks marked."""
    lines = []
    for r in comparison_rows(df):
        nums = ", ".join(f"{k} {c.text(marks=False)}" for k, c in r.cells.items())
        tail = "smoke check (ran, valid record; not ranked)" if r.smoke else r.verdict
        lines.append(f"{r.column.header}: {nums} -> {tail}")
    return lines
