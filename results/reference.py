"""Published numbers the reports compare against: the SwAV paper's (shipped in
``results/data/swav_paper.csv``, each row citing its table) plus any CSV files a user adds
with the same columns: table, protocol, dataset, metric, model, arch, pretrain_epochs, value, source, and
optionally pretrain_batch (the pretraining's global batch; blank: not stated)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

PAPER_CSV = Path(__file__).parent / "data" / "swav_paper.csv"
COLUMNS = ["table", "protocol", "dataset", "metric", "model", "arch", "pretrain_epochs", "value", "source"]


def load_reference(extra: list[str | Path] = ()) -> pd.DataFrame:
    """The paper's numbers and the user's, with a ``benchmark`` column matching collected results."""
    frames = []
    for path in [PAPER_CSV, *map(Path, extra)]:
        if not path.is_file():
            raise FileNotFoundError(f"reference file {path} does not exist")
        df = pd.read_csv(path)
        missing = [c for c in COLUMNS if c not in df.columns]
        if missing:
            raise ValueError(
                f"reference file {path} lacks columns {', '.join(missing)} (needs {', '.join(COLUMNS)})"
            )
        if "pretrain_batch" not in df.columns:
            df["pretrain_batch"] = float("nan")
        frames.append(df[[*COLUMNS, "pretrain_batch"]])
    ref = pd.concat(frames, ignore_index=True)
    ref["benchmark"] = ref["protocol"]
    return ref


def published(
    ref: pd.DataFrame,
    family: str,
    benchmark: str,
    *,
    dataset: str,
    metric: str,
    arch: str = "resnet50",
    pretrain_epochs: int | None = None,
    pretrain_batch: int | None = None,
    verdict: bool = False,
) -> tuple[float, str] | None:
    """(value, source) of the published number for a model family ('swav' / 'supervised'), if any.

    ``verdict=False`` (the published rows of a table): SwAV's longest schedule at the largest batch.
    ``verdict=True`` (the number a result is judged against): only like with like — for SwAV the row of
    the same pretraining epochs and, when the result states it, the same global batch (a batch-256 queue
    run meets the 72.7 / 74.3 rows, not the batch-4096 ones); unknown epochs, or a batch that leaves more
    than one candidate, give None (no verdict) instead of a comparison with another schedule."""
    m = ref[
        (ref.model == family)
        & (ref.benchmark == benchmark)
        & (ref.dataset == dataset)
        & (ref.metric == metric)
        & (ref.arch == arch)
    ]
    if m.empty:
        return None
    if family == "swav":
        if verdict:
            if pretrain_epochs is None:
                return None
            m = m[m.pretrain_epochs == pretrain_epochs]
            if pretrain_batch is not None:
                m = m[m.pretrain_batch.isna() | (m.pretrain_batch == pretrain_batch)]
            if m.empty or m.value.nunique() > 1:
                return None
        m = m.assign(_batch=m.pretrain_batch.fillna(0)).sort_values(
            ["pretrain_epochs", "_batch"], ascending=False
        )
    row = m.iloc[0]
    return float(row.value), str(row.source)
