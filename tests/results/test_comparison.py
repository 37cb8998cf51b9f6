"""The at-a-glance table: SwAV vs random vs supervised, mean ± 95% CI, verdicts only from disjoint CIs."""

import math

import pandas as pd
import pytest

from results.comparison import ONE_SEED, comparison_tables, verdict_lines
from results.reference import load_reference
from results.render import markdown, terminal
from results.tables import paper_tables

T_975_2 = 4.302653  # Student t, 0.975 quantile, 2 degrees of freedom (table value)


def frame(
    values: dict[tuple[str, str, str, str], list[float]], *, smoke: set[str] = frozenset()
) -> pd.DataFrame:
    """Rows as ``collect`` writes them: (model, benchmark, dataset, metric) -> one value per seed."""
    rows = []
    for (model, bench, dataset, metric), vals in values.items():
        for seed, v in enumerate(vals):
            rows.append(
                {
                    "model": model,
                    "benchmark": bench,
                    "dataset": dataset,
                    "metric": metric,
                    "value": v,
                    "seed": seed,
                    "pretrain_epochs": 3.0,
                    "pretrain_batch": 128,
                    "arch": "resnet18",
                    "backend": "",
                    "smoke": bench in smoke,
                }
            )
    return pd.DataFrame(rows)


RUN = {
    ("swav", "knn", "cifar10-subset", "k20_top1"): [40.0, 41.0, 42.0],
    ("random", "knn", "cifar10-subset", "k20_top1"): [30.0, 31.0, 32.0],
    ("supervised", "knn", "cifar10-subset", "k20_top1"): [50.0, 51.0, 52.0],
    ("swav", "linear", "cifar10-subset", "top1"): [45.0, 46.0, 47.0],
    ("random", "linear", "cifar10-subset", "top1"): [30.0, 30.5, 31.0],
    ("supervised", "linear", "cifar10-subset", "top1"): [44.0, 47.0, 50.0],
    ("swav", "svm", "bccd", "mAP"): [86.0, 88.0, 90.0],
    ("random", "svm", "bccd", "mAP"): [85.0, 87.0, 89.0],
    ("supervised", "svm", "bccd", "mAP"): [87.0, 88.0, 89.0],
    ("swav", "detection-frcnn-c4", "bccd", "AP50"): [3.0, 2.0, 4.0],
    ("random", "detection-frcnn-c4", "bccd", "AP50"): [1.0, 1.5, 1.2],
}


def test_verdicts_come_from_disjoint_confidence_intervals():
    ranked, smoke = comparison_tables(frame(RUN, smoke={"detection-frcnn-c4"}))
    rows = dict(ranked.rows)
    knn = rows["knn cifar10-subset k20_top1"]
    # mean 41, sample std 1: half-width t(0.975, 2) x 1 / sqrt(3)
    assert knn["SwAV"].mean == 41.0 and knn["SwAV"].ci95 == pytest.approx(T_975_2 / math.sqrt(3), abs=1e-5)
    assert knn["verdict"].text() == "SwAV > random; supervised > SwAV"
    # linear: supervised's interval (47 ± 7.45) covers SwAV's (46 ± 2.48): not ranked against each other
    assert rows["linear cifar10-subset top1"]["verdict"].text() == "SwAV > random; supervised ≈ SwAV"
    assert rows["svm bccd mAP"]["verdict"].text() == "not separated"
    assert "detection-frcnn-c4 bccd AP50" not in rows
    assert [name for name, _ in smoke.rows] == ["detection-frcnn-c4 bccd AP50"]
    assert list(smoke.rows[0][1]) == ["SwAV", "random"]  # numbers shown, no verdict column
    text = terminal(ranked)
    assert text.splitlines()[1].split()[:4] == ["protocol", "SwAV", "random", "supervised"]
    assert "41.0 ± 2.5 (n=3)" in text and "| svm bccd mAP |" in markdown(ranked)


def test_one_seed_ranks_nothing_and_every_protocol_gets_a_line():
    one = {k: v[:1] for k, v in RUN.items()}
    lines = verdict_lines(frame(one, smoke={"detection-frcnn-c4"}))
    assert len(lines) == 4
    assert sum(line.endswith(ONE_SEED) for line in lines) == 3
    assert [line.split()[0] for line in lines] == ["linear", "knn", "svm", "detection-frcnn-c4"]
    assert (
        lines[3]
        == "detection-frcnn-c4 bccd AP50: SwAV 3.0, random 1.0 -> smoke check (ran, valid record; not ranked)"
    )


def test_no_single_swav_model_no_comparison():
    sweep = {("swav-a", *k[1:]): v for k, v in RUN.items() if k[0] == "swav"}
    sweep.update({("swav-b", *k[1:]): v for k, v in RUN.items() if k[0] == "swav"})
    assert comparison_tables(frame(sweep)) == []


def test_paper_tables_leave_smoke_checks_and_published_columns_apart():
    """Small-data results: Tables 1-3 hold only their own columns (no detection smoke run, no dashes under
    published ImageNet columns); the paper's numbers are one table of their own."""
    df = frame(RUN, smoke={"detection-frcnn-c4"})
    tables = {t.title.split(" — ")[0]: t for t in paper_tables(df, load_reference())}
    headers = {c.header for name, t in tables.items() if name.startswith("Table") for c in t.columns}
    assert headers == {"linear cifar10-subset top1", "knn cifar10-subset k20_top1", "svm bccd mAP"}
    assert all(
        not name.endswith("(published)")
        for t in tables.values()
        if t.title.startswith("Table")
        for name, _ in t.rows
    )
    pub = tables["Published"]
    assert {c.header for c in pub.columns} >= {
        "linear imagenet top1_best_epoch",
        "detection-frcnn-c4 voc0712 AP50",
    }
    assert dict(pub.rows)["SwAV (published)"]["linear imagenet top1_best_epoch"].mean == 75.3
    assert all("published" not in name for name, _ in tables["Training length"].rows)
