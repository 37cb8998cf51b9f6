"""VOC07 linear SVM (paper Table 3; Goyal et al. 2019 protocol): pooled res5 features of the
resized (224) and center-cropped images, L2-normalised; one linear SVM per class with cost C
chosen by cross-validated AP on trainval; VOC07 11-point AP per class on test, and mAP.
Low-shot variant: k positives per class (all negatives), several seeded draws, mean and std.
Data-parallel: features extracted on shards and gathered; each process fits a share of the classes."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch.nn.functional as F
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.svm import LinearSVC

from benchmark.features import eval_transform, extract_features
from benchmark.protocol import TrunkConfig, run_and_record
from benchmark.record import ResultRecord
from benchmark.voc import (
    VOC07_CLASSES,
    VOCImages,
    discover_classes,
    image_labels,
    read_split,
    voc07_ap,
    voc_root,
)
from swavbench import ranks
from swavbench.data_root import resolve_fields


@dataclass
class SvmConfig:
    """VOC07 SVM protocol settings (defaults: the paper's VOC07 classification)."""

    DATASET_FIELDS: ClassVar[tuple[str, ...]] = ("root",)  # named under the data root (swavbench.data_root)

    dataset: str = "voc07"
    root: str = "VOCdevkit/VOC2007"
    train_split: str = "trainval"
    test_split: str = "test"
    classes: list[str] = field(
        default_factory=lambda: list(VOC07_CLASSES)
    )  # [] = every class in the annotations
    resize: int = 224
    crop: int = 224
    normalize: bool = True
    costs: list[float] = field(default_factory=lambda: [1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0])
    positive_weight: float = 2.0
    cv_folds: int = 3
    max_iter: int = 2000
    low_shot_ks: list[int] = field(default_factory=list)  # e.g. [1, 2, 4, 8, 16, 32, 64, 96]
    low_shot_samples: int = 5
    low_shot_cost: float = 1.0  # used when a draw has too few positives to cross-validate
    batch_size: int = 64
    num_workers: int = 8
    seed: int = 0
    mode: str = "frozen-features"
    trunk: TrunkConfig = field(default_factory=TrunkConfig)


def _svm(cost: float, cfg: SvmConfig) -> LinearSVC:
    return LinearSVC(
        C=cost,
        class_weight={1: cfg.positive_weight, -1: 1.0},
        loss="squared_hinge",
        max_iter=cfg.max_iter,
        random_state=cfg.seed,
    )


def fit_class(x: np.ndarray, y: np.ndarray, cfg: SvmConfig) -> LinearSVC:
    """Best-C SVM for one class on samples labelled +-1 (difficult ones already removed)."""
    n_pos = int((y > 0).sum())
    folds = min(cfg.cv_folds, n_pos, int((y < 0).sum()))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        if folds >= 2:
            cv = StratifiedKFold(folds, shuffle=True, random_state=cfg.seed)
            scores = [
                cross_val_score(_svm(c, cfg), x, y, cv=cv, scoring="average_precision").mean()
                for c in cfg.costs
            ]
            cost = cfg.costs[int(np.argmax(scores))]
        else:
            cost = cfg.low_shot_cost
        return _svm(cost, cfg).fit(x, y)


def svm_map(
    xtr: np.ndarray, ytr: np.ndarray, xte: np.ndarray, *, yte: np.ndarray, cfg: SvmConfig
) -> list[float]:
    """Per-class test AP (%) of SVMs trained on (xtr, ytr); labels (N, C) in {1, 0, -1}. In a data-parallel
    run each process fits every world_size-th class and every process gets all the APs."""
    mine = {}
    for c in ranks.shard(ytr.shape[1]):
        keep = ytr[:, c] != 0
        clf = fit_class(xtr[keep], ytr[keep, c], cfg)
        mine[c] = voc07_ap(clf.decision_function(xte), yte[:, c])
    every = {c: ap for part in ranks.all_gather_objects(mine) for c, ap in part.items()}
    return [every[c] for c in range(ytr.shape[1])]


def low_shot_draw(ytr: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Labels with all but k random positives per class turned into 'ignore' (0)."""
    y = ytr.copy()
    for c in range(y.shape[1]):
        pos = np.flatnonzero(y[:, c] > 0)
        if len(pos) < k:
            raise ValueError(f"class {c} has {len(pos)} positives in the training split, fewer than k={k}")
        drop = rng.permutation(pos)[k:]
        y[drop, c] = 0
    return y


def run_svm(cfg: SvmConfig, checkpoint: str, out_dir: str | Path) -> ResultRecord:
    """Per-class SVMs on frozen features of the VOC tree; writes the record."""
    cfg = resolve_fields(cfg)

    def body(loaded, device):
        root = voc_root(cfg.root)
        train_ids, test_ids = read_split(root, cfg.train_split), read_split(root, cfg.test_split)
        classes = list(cfg.classes) or discover_classes(root, train_ids)
        ytr, yte = image_labels(root, train_ids, classes), image_labels(root, test_ids, classes)
        for c, name in enumerate(classes):
            if not (ytr[:, c] > 0).any() or not (yte[:, c] > 0).any():
                raise ValueError(
                    f"class {name!r} has no positive image in {cfg.train_split} or {cfg.test_split} under "
                    f"{root}: drop it from `classes` or fix the annotations"
                )
            if not (ytr[:, c] < 0).any():
                raise ValueError(
                    f"class {name!r} is in every {cfg.train_split} image under {root}: an SVM needs negative "
                    "images too; drop it from `classes` or add images without it"
                )
        tf = eval_transform(cfg.resize, cfg.crop)
        feats = []
        for ids, name in ((train_ids, cfg.train_split), (test_ids, cfg.test_split)):
            f, _ = extract_features(
                loaded.trunk,
                VOCImages(root, ids, tf),
                device,
                batch_size=max(1, cfg.batch_size // ranks.world_size()),
                num_workers=cfg.num_workers,
                desc=name,
            )
            feats.append((F.normalize(f, dim=1) if cfg.normalize else f).numpy().astype(np.float64))
        xtr, xte = feats
        aps = svm_map(xtr, ytr, xte, yte=yte, cfg=cfg)
        metrics = {"mAP": float(np.mean(aps)), **{f"AP_{c}": ap for c, ap in zip(classes, aps)}}
        for k in cfg.low_shot_ks:
            runs = []
            for s in range(cfg.low_shot_samples):
                y_k = low_shot_draw(ytr, k, np.random.default_rng(cfg.seed * 1000 + s))
                runs.append(float(np.mean(svm_map(xtr, y_k, xte, yte=yte, cfg=cfg))))
            metrics[f"lowshot_k{k}_mAP_mean"] = float(np.mean(runs))
            metrics[f"lowshot_k{k}_mAP_std"] = float(np.std(runs))
        return metrics, {
            cfg.train_split: len(train_ids),
            cfg.test_split: len(test_ids),
            "classes": len(classes),
        }

    return run_and_record(
        "svm", cfg, checkpoint, out_dir=out_dir, dataset=cfg.dataset, seed=cfg.seed, body=body
    )
