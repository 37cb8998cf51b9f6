"""Linear transfer over many datasets, as Kornblith et al. 2019 ("Do better ImageNet models transfer
better?") and DINOv2 evaluate frozen features: per dataset, L2-regularised multinomial logistic regression
(L-BFGS) on the trunk's pooled features, standardised with the train split's statistics; the inverse
regularisation C is chosen over a log grid on a validation split held out of train (stratified, seeded), the
model is refit on all of train with that C and scored on the test split. One record for the suite: each
dataset's top-1 and chosen C, and their mean (the headline).

The standard 12 (Kornblith et al. 2019, Table 1, with their published train / test splits) are named in
``STANDARD_12`` and the ``logreg-12`` preset; any ImageFolder datasets can be listed instead."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from benchmark import feature_cache
from benchmark.features import eval_transform, image_folder
from benchmark.protocol import TrunkConfig, run_and_record
from swavbench.core.data_root import resolve_fields
from swavbench.core.record import ResultRecord

# Kornblith et al. 2019, Table 1: dataset -> the split they train on / report on (mean-per-class accuracy for
# the starred ones in the paper; top-1 here for all, said in the record)
STANDARD_12 = {
    "food101": ("train (75,750)", "test (25,250)"),
    "cifar10": ("train (50,000)", "test (10,000)"),
    "cifar100": ("train (50,000)", "test (10,000)"),
    "birdsnap": ("train (47,386)", "test (2,443)"),
    "sun397": ("train (19,850), split 1", "test (19,850), split 1"),
    "cars": ("train (8,144)", "test (8,041)"),
    "aircraft": ("trainval (6,667)", "test (3,333)"),
    "voc2007": ("trainval (5,011)", "test (4,952)"),
    "dtd": ("train + val (3,760), split 1", "test (1,880), split 1"),
    "pets": ("trainval (3,680)", "test (3,369)"),
    "caltech101": ("30 per class (3,060)", "the rest (6,084)"),
    "flowers": ("train + val (2,040)", "test (6,149)"),
}


@dataclass
class LogregConfig:
    """The suite's datasets (``names`` with their ``trains`` / ``tests`` ImageFolder splits, under the data
    root), the view, and the C grid: ``c_steps`` values log-spaced from ``c_min`` to ``c_max``
    (Kornblith et al.: 45 from 1e-6 to 1e5)."""

    DATASET_FIELDS: ClassVar[tuple[str, ...]] = ("trains", "tests")

    dataset: str = "transfer-12"  # the record's dataset label: the suite
    names: list[str] = field(default_factory=list)
    trains: list[str] = field(default_factory=list)
    tests: list[str] = field(default_factory=list)
    resize: int = 224  # Kornblith et al.: the shorter side to 224, center crop 224
    crop: int = 224
    c_min: float = 1e-6
    c_max: float = 1e5
    c_steps: int = 45
    val_fraction: float = 0.2
    max_iter: int = 1000
    batch_size: int = 256
    num_workers: int = 8
    seed: int = 0
    mode: str = "frozen-features"
    trunk: TrunkConfig = field(default_factory=TrunkConfig)


def c_grid(cfg: LogregConfig) -> list[float]:
    return [float(c) for c in np.logspace(math.log10(cfg.c_min), math.log10(cfg.c_max), cfg.c_steps)]


def model(c: float, cfg: LogregConfig):  # noqa: ANN201 - a scikit-learn pipeline
    """Standardise with the fitted split's statistics, then L-BFGS multinomial logistic regression."""
    return make_pipeline(
        StandardScaler(), LogisticRegression(C=c, max_iter=cfg.max_iter, random_state=cfg.seed)
    )


def fit_and_score(train: tuple, test: tuple, *, cfg: LogregConfig) -> tuple[float, float]:
    """(top-1 on the test split, chosen C) from (features, labels) of each split: C by accuracy on a
    stratified held-out part of train (the smallest C among equals), then refit on all of train."""
    (xtr, ytr), (xte, yte) = train, test
    parts = train_test_split(
        np.arange(len(ytr)), test_size=cfg.val_fraction, stratify=ytr, random_state=cfg.seed
    )
    fit, val = (
        np.sort(p) for p in parts
    )  # the images keep their order: the fit does not depend on a shuffle
    scores = [model(c, cfg).fit(xtr[fit], ytr[fit]).score(xtr[val], ytr[val]) for c in c_grid(cfg)]
    best = c_grid(cfg)[int(np.argmax(scores))]  # the first of equals: the smallest C
    return 100.0 * model(best, cfg).fit(xtr, ytr).score(xte, yte), best


def run_logreg(cfg: LogregConfig, checkpoint: str, out_dir) -> ResultRecord:  # noqa: ANN001
    """Extract each dataset's train / test features (through the feature cache), fit, write the record."""
    if not cfg.names or not (len(cfg.names) == len(cfg.trains) == len(cfg.tests)):
        raise ValueError("names, trains and tests must list the same datasets (one of each per dataset)")
    cfg = resolve_fields(cfg)

    def body(loaded, device):
        tf = eval_transform(cfg.resize, cfg.crop, interpolation="bicubic")
        metrics, splits = {}, {}
        for name, train_dir, test_dir in zip(cfg.names, cfg.trains, cfg.tests):
            sets = [image_folder(train_dir, tf), image_folder(test_dir, tf)]
            if sets[0].classes != sets[1].classes:
                raise ValueError(f"{name}: class folders differ between {train_dir} and {test_dir}")
            (xtr, ytr), (xte, yte) = [
                feature_cache.extract(loaded, ds, device, cfg=cfg, desc=f"{name} {part}")
                for ds, part in zip(sets, ("train", "test"))
            ]
            as_np = [(x.double().numpy(), y.numpy()) for x, y in ((xtr, ytr), (xte, yte))]
            top1, c = fit_and_score(*as_np, cfg=cfg)
            metrics[f"{name}_top1"], metrics[f"{name}_C"] = top1, c
            splits[f"{name}_train"], splits[f"{name}_test"] = len(sets[0]), len(sets[1])
        metrics["mean_top1"] = float(np.mean([metrics[f"{n}_top1"] for n in cfg.names]))
        return metrics, splits

    return run_and_record("transfer-logreg", cfg, checkpoint, out_dir=out_dir, body=body)
