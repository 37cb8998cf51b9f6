"""Paper-shaped tables from the tidy results: every number is the mean over seeds (runs) ± the half-width of
its 95% confidence interval (Student t, n - 1 degrees of freedom) with n, the delta
to the published number where one exists for that dataset, and a reproduced mark (|delta| <=
tolerance, or better than published). Published SwAV / supervised rows sit beside."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pandas as pd

from results.reference import published
from swavbench.core import registry
from swavbench.core.registry import all_benchmarks, benchmarks_of_table, beyond_paper_benchmarks
from swavbench.core.stats import ci95_halfwidth


@dataclass
class Cell:
    mean: float
    std: float = 0.0
    n: int = 1
    published: float | None = None
    delta: float | None = None
    reproduced: bool | None = None
    best: bool = False
    footnote: str = ""  # a mark after the number, explained in the table's note
    label: str = ""  # a text cell (a verdict): shown instead of the number

    @property
    def ci95(self) -> float:
        """Half-width of the 95% confidence interval of the mean over n runs (0 for one run)."""
        return ci95_halfwidth(self.std, self.n)

    @property
    def interval(self) -> tuple[float, float]:
        """The 95% confidence interval of the mean (a point for one run)."""
        return self.mean - self.ci95, self.mean + self.ci95

    @property
    def finite(self) -> bool:
        return math.isfinite(self.mean) and math.isfinite(self.std)

    def text(self, *, marks: bool = True) -> str:
        if self.label:
            return self.label
        if not self.finite:  # shown as such, with its count; never compared
            return f"{self.mean} (n={self.n}, not finite)"
        s = f"{self.mean:.1f}" + (f" ± {self.ci95:.1f} (n={self.n})" if self.n > 1 else "")
        if self.delta is not None and marks:
            s += f" ({self.delta:+.1f} {'✓' if self.reproduced else '✗'})"
        return s + self.footnote


@dataclass
class Column:
    benchmark: str
    dataset: str = ""
    metric: str = ""

    @property
    def header(self) -> str:
        return " ".join(p for p in (self.benchmark, self.dataset, self.metric) if p)


@dataclass
class Table:
    title: str
    columns: list[Column]
    rows: list[tuple[str, dict[str, Cell]]] = field(default_factory=list)
    note: str = ""
    row_header: str = "model"


def headline_metrics(benchmark: str) -> list[str]:
    """The table columns of a report key: its protocol's headline metrics (registry)."""
    entry = registry.for_benchmark(benchmark)
    return list(entry.headline) if entry else []


def aggregate(df: pd.DataFrame, *, by_epochs: bool = False) -> pd.DataFrame:
    """mean / std (sample, 0 for one seed) / n over seeds per (model, benchmark, dataset, metric).

    A model evaluated at several pretraining epochs counts with its last one, unless
    ``by_epochs`` keeps every epoch apart (training-length table and curve)."""
    df = df.copy()
    df["pretrain_epochs"] = df["pretrain_epochs"].astype("float64").fillna(-1.0)
    if not by_epochs:
        df = df[df["pretrain_epochs"] == df.groupby("model")["pretrain_epochs"].transform("max")]
    keys = ["model", "pretrain_epochs", "benchmark", "dataset", "metric"]
    for col in ("backend", "protocol"):
        df[col] = df[col].fillna("") if col in df else ""
    # a NaN or inf seed (a diverged run) makes its cell NaN / inf and counts in n: never dropped or ranked
    out = (
        df.groupby(keys, sort=True)
        .agg(
            mean=("value", lambda v: v.mean(skipna=False)),
            std=("value", lambda v: v.std(skipna=False)),
            n=("value", "size"),
            backend=("backend", "first"),
            protocol=("protocol", "first"),
        )
        .reset_index()
    )
    out["std"] = out["std"].where(out["n"] > 1, 0.0)
    out["pretrain_epochs"] = out["pretrain_epochs"].where(out["pretrain_epochs"] >= 0)
    out["arch"] = out["model"].map(df.groupby("model")["arch"].first())
    batch = df.groupby("model")["pretrain_batch"].first() if "pretrain_batch" in df else None
    out["pretrain_batch"] = out["model"].map(batch) if batch is not None else None
    return out


def ranked_only(df: pd.DataFrame) -> pd.DataFrame:
    """The rows of protocols that can rank trunks (not the smoke checks)."""
    if "smoke" not in df:
        return df
    return df[~df["smoke"].astype("boolean").fillna(False).astype(bool)]


def family(model: str) -> str | None:
    if model == "random":
        return None
    return "supervised" if model.startswith("supervised") else "swav"


def build(
    title: str,
    agg: pd.DataFrame,
    ref: pd.DataFrame,
    *,
    columns: list[Column],
    tolerance: float,
    published_rows: bool = True,
    mark_best: bool = False,
    note: str = "",
) -> Table:
    table = Table(title, columns, note=note)
    footnoted: set[str] = set()
    models = sorted(
        {
            m
            for c in columns
            for m in agg[
                (agg.benchmark == c.benchmark) & (agg.dataset == c.dataset) & (agg.metric == c.metric)
            ].model
        }
    )
    order = {"supervised": 1, "random": 2}
    for model in sorted(models, key=lambda m: (order.get(m, 0), m)):
        cells = {}
        for c in columns:
            hit = agg[
                (agg.model == model)
                & (agg.benchmark == c.benchmark)
                & (agg.dataset == c.dataset)
                & (agg.metric == c.metric)
            ]
            if hit.empty:
                continue
            r = hit.iloc[0]
            cell = Cell(float(r["mean"]), float(r["std"]), int(r["n"]))
            fam = family(model)
            epochs = None if pd.isna(r["pretrain_epochs"]) else int(r["pretrain_epochs"])
            batch = None if pd.isna(r["pretrain_batch"]) else int(r["pretrain_batch"])
            pub = (
                published(
                    ref,
                    fam,
                    c.benchmark,
                    dataset=c.dataset,
                    metric=c.metric,
                    arch=str(r["arch"]),
                    pretrain_epochs=epochs,
                    pretrain_batch=batch,
                    verdict=True,
                )
                if fam
                else None
            )
            entry = registry.for_benchmark(c.benchmark)
            reference = entry.reference_backends if entry else ()
            if pub and r["backend"] not in (reference or (r["backend"],)):
                cell.footnote = "†"  # another implementation than the published numbers': no verdict
                pub = None
                footnoted.add(str(r["backend"]))
            if pub:
                cell.published = pub[0]
                cell.delta = cell.mean - pub[0]
                cell.reproduced = cell.delta >= -tolerance
            cells[c.header] = cell
        table.rows.append((model, cells))
    if footnoted:
        table.note = (table.note + " " if table.note else "") + (
            f"† {', '.join(sorted(footnoted))} backend: not the implementation of the published numbers "
            "(Detectron2), so not compared with them."
        )
    if mark_best:
        for c in columns:
            scored = [cells[c.header] for _, cells in table.rows if c.header in cells]
            scored = [cell for cell in scored if cell.finite]  # inf is not the best
            if scored:
                max(scored, key=lambda x: x.mean).best = True
    if published_rows:
        add_published_rows(table, ref)
    return table


def add_published_rows(table: Table, ref: pd.DataFrame) -> None:
    """One row per method with published numbers for the table's columns: SwAV, the supervised baseline,
    then any other (calibration rows, such as DINO Table 2's ResNet-50 kNN of BYOL or MoCo v2)."""
    wanted = {(c.benchmark, c.dataset, c.metric) for c in table.columns}
    hit = pd.Series([k in wanted for k in zip(ref.benchmark, ref.dataset, ref.metric)], index=ref.index)
    rows = ref[hit & ref.arch.eq("resnet50")]
    for fam in ["swav", "supervised", *sorted(set(rows.model) - {"swav", "supervised"})]:
        cells = {}
        for c in table.columns:
            pub = published(ref, fam, c.benchmark, dataset=c.dataset, metric=c.metric)
            if pub:
                cells[c.header] = Cell(pub[0])
        if cells:
            name = {"swav": "SwAV", "supervised": "Supervised"}.get(fam, fam)
            table.rows.append((f"{name} (published)", cells))


def fills(agg: pd.DataFrame, table: int) -> pd.Series:
    """Which rows of ``agg`` the paper's ``table`` holds: their protocol's registry entry says (the ImageNet
    probe's ``linear`` rows table 1, the transfer probe's table 3)."""
    entries = [registry.for_record(p, b) for p, b in zip(agg.protocol, agg.benchmark)]
    return pd.Series([e is not None and table in e.tables for e in entries], index=agg.index)


def columns_for(
    agg: pd.DataFrame, ref: pd.DataFrame, benchmarks: list[str], *, table: int | None
) -> list[Column]:
    """Headline columns for the given benchmarks present in results (``agg``; with ``table``, the rows that
    table holds); ``ref`` adds the published metrics of those columns. Published-only datasets go to their
    own table (``published_table``)."""
    rows = agg[fills(agg, table)] if table is not None else agg
    present = rows[["benchmark", "dataset"]].drop_duplicates().itertuples(index=False)
    pairs = {(b, d) for b, d in present if b in benchmarks or b.split("-")[0] in benchmarks}
    cols = []
    for b, d in sorted(pairs, key=lambda p: (benchmarks.index(p[0]) if p[0] in benchmarks else 99, p)):
        for m in headline_metrics(b):
            if ((agg.benchmark == b) & (agg.dataset == d) & (agg.metric == m)).any() or (
                (ref.benchmark == b) & (ref.dataset == d) & (ref.metric == m)
            ).any():
                cols.append(Column(b, d, m))
    return cols


def paper_tables(df: pd.DataFrame, ref: pd.DataFrame, tolerance: float = 1.0) -> list[Table]:
    """Tables 1-3 of the paper's shape, the sweep table and the training-length table. Smoke checks
    (``smoke: true`` presets) are left out: they rank nothing (``results.comparison`` lists them apart)."""
    pub = published_table(aggregate(df), ref) if not df.empty else None  # smoke checks' protocols too
    df = ranked_only(df)
    if df.empty:
        return [pub] if pub is not None else []
    agg = aggregate(df)
    tables = []
    t1 = columns_for(agg, ref, benchmarks_of_table(1), table=1)
    if t1:
        tables.append(
            build(
                "Table 1 — linear evaluation and kNN on frozen features",
                agg,
                ref,
                columns=t1,
                tolerance=tolerance,
            )
        )
    t2 = columns_for(agg, ref, benchmarks_of_table(2), table=None)
    if t2:
        tables.append(
            build("Table 2 — semi-supervised fine-tuning", agg, ref, columns=t2, tolerance=tolerance)
        )
    t3 = columns_for(agg, ref, benchmarks_of_table(3), table=3)
    if t3:
        tables.append(build("Table 3 — transfer", agg, ref, columns=t3, tolerance=tolerance))
    beyond = beyond_paper(agg, ref, tolerance)
    if beyond is not None:
        tables.append(beyond)
    variants = sorted(set(agg.model) - {"random"} - {m for m in agg.model if m.startswith("supervised")})
    if len(variants) > 1:
        cols = [
            c
            for c in columns_for(agg, ref, all_benchmarks(), table=None)
            if ((agg.benchmark == c.benchmark) & (agg.dataset == c.dataset)).any()
        ]
        sweep = agg[agg.model.isin(variants)]
        tables.append(
            build(
                "Sweep — one row per pretraining variant (best per column marked)",
                sweep,
                ref,
                columns=cols,
                tolerance=tolerance,
                published_rows=False,
                mark_best=True,
            )
        )
    if pub is not None:
        tables.append(pub)
    length = training_length(aggregate(df, by_epochs=True), ref)
    if length is not None:
        tables.append(length)
    return tables


def beyond_paper(agg: pd.DataFrame, ref: pd.DataFrame, tolerance: float) -> Table | None:
    """The protocols beyond the paper's tables, with the published number where one exists and "no
    published reference" in a row of its own where none does."""
    cols = columns_for(agg, ref, beyond_paper_benchmarks(), table=None)
    if not cols:
        return None
    table = build(
        "Beyond the paper — low-shot, ImageNet variants, many-dataset linear transfer",
        agg,
        ref,
        columns=cols,
        tolerance=tolerance,
    )
    published = {  # a cell judged against a published number, or a published row's
        h
        for name, cells in table.rows
        for h, c in cells.items()
        if c.published is not None or name.endswith("(published)")
    }
    label = "no published reference"
    missing = {c.header: Cell(math.nan, label=label) for c in cols if c.header not in published}
    if missing:
        table.rows.append(("published reference", missing))
    return table


def top1_columns() -> list[tuple[str, str]]:
    """(report key, metric) of the table-1 protocols' top-1 headlines, first preferred: the training-length
    table's and curve's measure (the probe's best epoch, as published; its last; kNN)."""
    return [(b, m) for b in registry.benchmarks_of_table(1) for m in headline_metrics(b) if "top1" in m]


def training_length(agg: pd.DataFrame, ref: pd.DataFrame) -> Table | None:
    """Pretraining epochs -> linear (best epoch, as published; else last; else kNN) top-1, per model, with the
    published schedule rows."""
    for bench, metric in top1_columns():
        sub = agg[
            (agg.benchmark == bench) & (agg.metric == metric) & agg.pretrain_epochs.notna() & fills(agg, 1)
        ]
        if not sub.empty:
            break
    else:
        return None
    cols = [Column(bench, d, metric) for d in sorted(sub.dataset.unique())]
    table = Table("Training length — pretraining epochs vs top-1", cols)
    for (model, epochs), grp in sub.groupby(["model", "pretrain_epochs"]):
        cells = {
            f"{bench} {r.dataset} {metric}": Cell(float(r["mean"]), float(r["std"]), int(r["n"]))
            for _, r in grp.iterrows()
        }
        table.rows.append((f"{model} @ {int(epochs)} ep", cells))
    if not any(c.header == Column(bench, "imagenet", metric).header for c in cols):
        return table  # published schedule rows only beside an ImageNet column (the Published table has them)
    pub = ref[
        (ref.model == "swav")
        & (ref.benchmark == bench)
        & (ref.dataset == "imagenet")
        & (ref.metric == metric)
        & (ref.arch == "resnet50")
        & ref.table.astype(str).eq("zoo")
    ]
    for _, r in pub.sort_values("pretrain_epochs").iterrows():
        if not math.isnan(r.pretrain_epochs):
            table.rows.append(
                (
                    f"SwAV published @ {int(r.pretrain_epochs)} ep (ImageNet, bs 4096)",
                    {Column(bench, "imagenet", metric).header: Cell(float(r.value))},
                )
            )
    return table


def published_table(agg: pd.DataFrame, ref: pd.DataFrame) -> Table | None:
    """The paper's numbers for the protocols this report ran, on the paper's datasets it did not run:
    their own table, so small-data columns never sit beside published ImageNet ones."""
    ran = set(agg.benchmark)
    done = set(agg[["benchmark", "dataset"]].drop_duplicates().itertuples(index=False, name=None))
    cols = []
    for b, d, m in ref[["benchmark", "dataset", "metric"]].drop_duplicates().itertuples(index=False):
        if b in ran and (b, d) not in done and m in headline_metrics(b):
            cols.append(Column(b, d, m))
    cols = sorted(set((c.benchmark, c.dataset, c.metric) for c in cols))
    if not cols:
        return None
    # ImageNet kNN is published by DINO (its rows' table is dino-t2), not by the SwAV paper
    by_dino = ref[ref.table.astype(str).str.startswith("dino")]
    dino = bool(
        set(cols) & set(by_dino[["benchmark", "dataset", "metric"]].itertuples(index=False, name=None))
    )
    table = Table(
        "Published — Caron et al. 2020 (ResNet-50, the paper's datasets; not run in this report)"
        + (" and DINO, Caron et al. 2021, Table 2 (ImageNet kNN)" if dino else ""),
        [Column(*c) for c in cols],
    )
    add_published_rows(table, ref)
    return table if table.rows else None
