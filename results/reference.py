"""Published numbers the reports compare against: the SwAV paper's (shipped in
``results/data/swav_paper.csv``, each row citing its table) plus any CSV files a user adds
with the same columns: table, protocol, dataset, metric, model, arch, pretrain_epochs, value, source."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

PAPER_CSV = Path(__file__).parent / "data" / "swav_paper.csv"
COLUMNS = ["table", "protocol", "dataset", "metric", "model", "arch", "pretrain_epochs", "value", "source"]
# the paper's "linear" VOC07 number is the linear-SVM protocol
PROTOCOL_ALIASES = {("linear", "voc07"): "svm"}


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
        frames.append(df[COLUMNS])
    ref = pd.concat(frames, ignore_index=True)
    ref["benchmark"] = [PROTOCOL_ALIASES.get((p, d), p) for p, d in zip(ref["protocol"], ref["dataset"])]
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
) -> tuple[float, str] | None:
    """(value, source) of the published number for a model family ('swav' / 'supervised'), if any.
    For SwAV the row with the given pretraining epochs, else the longest schedule."""
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
        if pretrain_epochs is not None and (m.pretrain_epochs == pretrain_epochs).any():
            m = m[m.pretrain_epochs == pretrain_epochs]
        m = m.sort_values("pretrain_epochs", ascending=False)
    row = m.iloc[0]
    return float(row.value), str(row.source)
