"""matplotlib figures for the report: accuracy vs pretraining epochs, sweep heat map (2-D
grids of key=value variant names), per-protocol bars (model vs supervised vs random), and the
pretraining loss curves from ``train_log.jsonl``."""

from __future__ import annotations

import json
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from results.tables import aggregate, headline_metrics, ranked_only, top1_columns  # noqa: E402
from swavbench.core import durable
from swavbench.core.paths import TRAIN_LOG, file_part
from swavbench.core.stats import ci95_halfwidth  # noqa: E402


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    try:
        with durable.atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=110, format="png")
    finally:
        plt.close(fig)
    return path


def protocol_bars(df: pd.DataFrame, out: Path) -> list[Path]:
    df = ranked_only(df)  # smoke checks rank nothing: no bars
    if df.empty:
        return []
    agg = aggregate(df)
    paths = []
    for (bench, dataset), grp in agg.groupby(["benchmark", "dataset"]):
        metrics = [m for m in headline_metrics(bench) if m in set(grp.metric)][:1]
        if not metrics:
            continue
        g = grp[grp.metric == metrics[0]].sort_values("mean", ascending=False)
        fig, ax = plt.subplots(figsize=(max(4, 1.2 * len(g)), 3.2))
        colors = [
            "#888888" if m == "random" else "#d98c1f" if m.startswith("supervised") else "#2b6cb0"
            for m in g.model
        ]
        # error bars: the 95% CI of the mean, drawn only where there are >= 2 seeds (one run has none)
        ci = [ci95_halfwidth(sd, n) if n >= 2 else float("nan") for sd, n in zip(g["std"], g["n"])]
        multi = any(n >= 2 for n in g["n"])
        ax.bar(g.model, g["mean"], yerr=ci if multi else None, color=colors, capsize=3 if multi else 0)
        ax.set_ylabel(metrics[0])
        ax.set_title(f"{bench} on {dataset}")
        ax.tick_params(axis="x", rotation=20)
        paths.append(_save(fig, out / file_part(f"bars_{bench}_{dataset}.png")))
    return paths


def accuracy_vs_epochs(df: pd.DataFrame, out: Path) -> list[Path]:
    agg = aggregate(df, by_epochs=True)
    measure: dict[str, str] = {}  # each table-1 protocol's top-1 headline, as the training-length table
    for bench, metric in top1_columns():
        measure.setdefault(bench, metric)
    sub = agg[agg.pretrain_epochs.notna() & (agg.benchmark.map(measure) == agg.metric)]
    if sub.empty or sub.pretrain_epochs.nunique() < 2:
        return []
    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    for (model, bench, dataset), g in sub.groupby(["model", "benchmark", "dataset"]):
        g = g.sort_values("pretrain_epochs")
        ax.errorbar(
            g.pretrain_epochs, g["mean"], yerr=g["std"], marker="o", label=f"{model} ({bench}, {dataset})"
        )
    ax.set_xlabel("pretraining epochs")
    ax.set_ylabel("top-1 (%)")
    ax.legend(fontsize=7)
    return [_save(fig, out / "accuracy_vs_epochs.png")]


def _params(model: str) -> dict[str, str] | None:
    pairs = re.findall(r"([A-Za-z_.]+)=([^,_]+)", model)
    return dict(pairs) if pairs else None


def sweep_heatmap(df: pd.DataFrame, out: Path) -> list[Path]:
    """For variants named like 'n_prototypes=3000,epsilon=0.05' whose names vary in exactly two keys."""
    agg = aggregate(df)
    params = {m: _params(m) for m in agg.model.unique()}
    params = {m: p for m, p in params.items() if p}
    if len(params) < 4:
        return []
    keys = sorted({k for p in params.values() for k in p})
    varying = [k for k in keys if len({p.get(k) for p in params.values()}) > 1]
    if len(varying) != 2:
        return []
    paths = []
    a, b = varying
    for (bench, dataset), grp in agg[agg.model.isin(params)].groupby(["benchmark", "dataset"]):
        metric = next((m for m in headline_metrics(bench) if m in set(grp.metric)), None)
        if metric is None:
            continue
        g = grp[grp.metric == metric]
        grid = pd.DataFrame(
            {a: [params[m][a] for m in g.model], b: [params[m][b] for m in g.model], "v": g["mean"].values}
        )
        pivot = grid.pivot_table(index=a, columns=b, values="v")
        fig, ax = plt.subplots(figsize=(1.2 * pivot.shape[1] + 2, 0.8 * pivot.shape[0] + 1.5))
        im = ax.imshow(pivot.values, cmap="viridis")
        ax.set_xticks(range(pivot.shape[1]), pivot.columns)
        ax.set_yticks(range(pivot.shape[0]), pivot.index)
        ax.set_xlabel(b)
        ax.set_ylabel(a)
        for i in range(pivot.shape[0]):
            for j in range(pivot.shape[1]):
                ax.text(j, i, f"{pivot.values[i, j]:.1f}", ha="center", va="center", color="w", fontsize=8)
        fig.colorbar(im, ax=ax, label=metric)
        ax.set_title(f"{bench} on {dataset}")
        paths.append(_save(fig, out / file_part(f"sweep_{bench}_{dataset}.png")))
    return paths


def loss_curves(df: pd.DataFrame, out: Path) -> list[Path]:
    logs = {}
    for model, ckpt in df[["model", "checkpoint"]].drop_duplicates().itertuples(index=False):
        log = Path(str(ckpt)).parent / TRAIN_LOG
        if ckpt and log.is_file():
            logs[model] = log
    if not logs:
        return []
    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    for model, log in sorted(logs.items()):
        recs = [json.loads(ln) for ln in log.read_text().splitlines() if ln.strip()]
        ax.plot([r["iteration"] for r in recs], [r["loss"] for r in recs], label=model)
    ax.set_xlabel("iteration")
    ax.set_ylabel("SwAV loss")
    ax.legend(fontsize=7)
    return [_save(fig, out / "pretraining_loss.png")]


def all_plots(df: pd.DataFrame, out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    if df.empty:
        return []
    return (
        protocol_bars(df, out_dir)
        + accuracy_vs_epochs(df, out_dir)
        + sweep_heatmap(df, out_dir)
        + loss_curves(df, out_dir)
    )
