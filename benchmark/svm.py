"""VOC07 linear SVM (paper Table 3; the protocol of Goyal et al. 2019 as VISSL runs it): pooled res5
features of the images resized to 256 and center-cropped to 224, L2-normalised; one linear SVM per class
(squared hinge, L2, dual, positives weighted 2) with cost C chosen by 3-fold cross-validated AP on
trainval in file order; "difficult"-only images are negatives in training and ignored in testing. The
headline mAP is the all-points AP of the published numbers; the VOC2007 11-point AP is recorded beside.
Low-shot (Goyal / VISSL ``create_low_shot_samples``, ``svm_low_shot_trainer``): per class and draw k
positives and (classes - 1) x k negatives, every cost trained, the cost with the best mean test mAP
reported. Data-parallel: features extracted on shards and gathered; each process fits a share of the
classes."""

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

from benchmark import feature_cache
from benchmark.features import TORCHVISION_STD, eval_transform
from benchmark.protocol import TrunkConfig, run_and_record
from benchmark.voc import (
    VOC07_CLASSES,
    VOCImages,
    all_points_ap,
    discover_classes,
    image_labels,
    read_split,
    voc07_ap,
    voc_root,
)
from swavbench.core import ranks
from swavbench.core.data_root import resolve_fields
from swavbench.core.record import ResultRecord

# VISSL configs/config/benchmark/linear_image_classification/voc07/ SVM cost list
VOC07_COSTS = [0.01, 0.1, 1.0, 2.0, 5.0, 10.0, 15.0, 20.0, 50.0, 100.0, 1000.0]
DIFFICULT_IN_TRAINING = ("negative", "ignore")
LOW_SHOT_NEGATIVES = ("sampled", "all")


@dataclass
class SvmConfig:
    """VOC07 SVM protocol settings (defaults: the paper's VOC07 classification)."""

    DATASET_FIELDS: ClassVar[tuple[str, ...]] = ("root",)  # named under the data root (core.data_root)

    dataset: str = "voc07"
    root: str = "VOCdevkit/VOC2007"
    train_split: str = "trainval"
    test_split: str = "test"
    classes: list[str] = field(
        default_factory=lambda: list(VOC07_CLASSES)
    )  # [] = every class in the annotations
    resize: int = 256  # shorter side, then a center crop
    crop: int = 224
    std: list[float] = field(default_factory=lambda: list(TORCHVISION_STD))  # VISSL's transforms' std
    normalize: bool = True
    costs: list[float] = field(default_factory=lambda: list(VOC07_COSTS))
    positive_weight: float = 2.0
    cv_folds: int = 3  # stratified, in file order (no shuffling), as sklearn's cv=3 in the reference
    max_iter: int = 2000
    difficult_in_training: str = "negative"  # negative (reference code) | ignore
    low_shot_ks: list[int] = field(default_factory=list)  # e.g. [1, 2, 4, 8, 16, 32, 64, 96]
    low_shot_samples: int = 5
    low_shot_negatives: str = "sampled"  # sampled: (classes - 1) x k per draw (published) | all
    batch_size: int = 64
    num_workers: int = 8
    seed: int = 0
    mode: str = "frozen-features"
    trunk: TrunkConfig = field(default_factory=TrunkConfig)


def _svm(cost: float, cfg: SvmConfig) -> LinearSVC:
    return LinearSVC(
        C=cost,
        class_weight={1: cfg.positive_weight, -1: 1.0},
        penalty="l2",
        loss="squared_hinge",
        dual=True,
        max_iter=cfg.max_iter,
        random_state=cfg.seed,
    )


def train_labels(y: np.ndarray, cfg: SvmConfig) -> np.ndarray:
    """Training labels of one class in {1, -1, 0 = unused}: VOC "difficult" (0) images become negatives
    (the reference code's training) or are left out."""
    return np.where(y == 0, -1, y) if cfg.difficult_in_training == "negative" else y


def fit_class(x: np.ndarray, y: np.ndarray, cfg: SvmConfig) -> LinearSVC:
    """Best-C SVM for one class on samples labelled +-1, C by cross-validated AP over ``costs``."""
    folds = min(cfg.cv_folds, int((y > 0).sum()), int((y < 0).sum()))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        if len(cfg.costs) > 1:
            if folds < 2:
                raise ValueError(
                    f"{int((y > 0).sum())} positives / {int((y < 0).sum())} negatives: too few to "
                    "cross-validate the cost; give one cost (costs=[C]) or more images"
                )
            cv = StratifiedKFold(folds, shuffle=False)
            scores = [
                cross_val_score(_svm(c, cfg), x, y, cv=cv, scoring="average_precision").mean()
                for c in cfg.costs
            ]
            cost = cfg.costs[int(np.argmax(scores))]
        else:
            cost = cfg.costs[0]
        return _svm(cost, cfg).fit(x, y)


def svm_aps(
    xtr: np.ndarray, ytr: np.ndarray, xte: np.ndarray, *, yte: np.ndarray, cfg: SvmConfig
) -> list[tuple[float, float]]:
    """Per-class test (all-points AP, 11-point AP) in % of SVMs trained on (xtr, ytr); labels (N, C) in
    {1, 0, -1}. In a data-parallel run each process fits every world_size-th class and every process gets
    all the APs."""
    mine = {}
    for c in ranks.shard(ytr.shape[1]):
        y = train_labels(ytr[:, c], cfg)
        keep = y != 0
        scores = fit_class(xtr[keep], y[keep], cfg).decision_function(xte)
        mine[c] = (all_points_ap(scores, yte[:, c]), voc07_ap(scores, yte[:, c]))
    every = {c: ap for part in ranks.all_gather_objects(mine) for c, ap in part.items()}
    return [every[c] for c in range(ytr.shape[1])]


def low_shot_draw(
    ytr: np.ndarray, k: int, rng: np.random.Generator, *, negatives: str, difficult_negative: bool = False
) -> np.ndarray:
    """Training labels of one draw, (N, C) in {1, -1, 0 = unused}: k random positives per class and, for
    ``negatives='sampled'``, (C - 1) x k random images without the class (never a difficult one); for
    ``'all'`` every image without the class (and the difficult ones when ``difficult_negative``, as the
    full-data SVM trains)."""
    n_classes = ytr.shape[1]
    if negatives == "sampled" and n_classes < 2:
        raise ValueError("low-shot draws sample (classes - 1) x k negatives: they need at least 2 classes")
    y = np.zeros_like(ytr)
    for c in range(n_classes):
        pos, neg = np.flatnonzero(ytr[:, c] > 0), np.flatnonzero(ytr[:, c] < 0)
        if len(pos) < k:
            raise ValueError(f"class {c} has {len(pos)} positives in the training split, fewer than k={k}")
        y[rng.choice(pos, k, replace=False), c] = 1
        if negatives == "all":
            y[neg, c] = -1
            if difficult_negative:
                y[ytr[:, c] == 0, c] = -1
            continue
        want = (n_classes - 1) * k
        if len(neg) < want:
            raise ValueError(
                f"class {c} has {len(neg)} images without it in the training split, fewer than the "
                f"(classes - 1) x k = {want} negatives a low-shot draw samples for k={k}: use smaller "
                "low_shot_ks or low_shot_negatives=all (every negative; not the published protocol)"
            )
        y[rng.choice(neg, want, replace=False), c] = -1
    return y


def low_shot_aps(xtr: np.ndarray, y: np.ndarray, xte: np.ndarray, *, yte: np.ndarray, cfg: SvmConfig):
    """(classes, costs) test all-points AP (%) of one draw's labels ``y`` (1 / -1 / 0 = unused), one SVM
    per class and cost; classes sharded over processes, every process gets the whole array."""
    mine = {}
    for c in ranks.shard(y.shape[1]):
        keep = y[:, c] != 0
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            mine[c] = [
                all_points_ap(_svm(cost, cfg).fit(xtr[keep], y[keep, c]).decision_function(xte), yte[:, c])
                for cost in cfg.costs
            ]
    every = {c: aps for part in ranks.all_gather_objects(mine) for c, aps in part.items()}
    return np.array([every[c] for c in range(y.shape[1])])


def low_shot_metrics(xtr: np.ndarray, ytr: np.ndarray, xte: np.ndarray, *, yte: np.ndarray, cfg: SvmConfig):
    """Per k: every cost trained on every draw; the reported cost is the one with the best mean test mAP
    over the draws (the published low-shot protocol), with the mean and std of its mAP over draws."""
    out = {}
    for k in cfg.low_shot_ks:
        maps = []  # (draws, costs)
        for s in range(cfg.low_shot_samples):
            rng = np.random.default_rng([cfg.seed, k, s])
            y = low_shot_draw(
                ytr,
                k,
                rng,
                negatives=cfg.low_shot_negatives,
                difficult_negative=cfg.difficult_in_training == "negative",
            )
            maps.append(low_shot_aps(xtr, y, xte, yte=yte, cfg=cfg).mean(axis=0))
        maps = np.array(maps)
        best = int(np.argmax(maps.mean(axis=0)))
        out[f"lowshot_k{k}_mAP_mean"] = float(maps[:, best].mean())
        out[f"lowshot_k{k}_mAP_std"] = float(maps[:, best].std())
        out[f"lowshot_k{k}_cost"] = float(cfg.costs[best])
    return out


def run_svm(cfg: SvmConfig, checkpoint: str, out_dir: str | Path) -> ResultRecord:
    """Per-class SVMs on frozen features of the VOC tree; writes the record."""
    cfg = resolve_fields(cfg)
    if cfg.difficult_in_training not in DIFFICULT_IN_TRAINING:
        raise ValueError(
            f"difficult_in_training must be negative or ignore, got {cfg.difficult_in_training!r}"
        )
    if cfg.low_shot_negatives not in LOW_SHOT_NEGATIVES:
        raise ValueError(f"low_shot_negatives must be sampled or all, got {cfg.low_shot_negatives!r}")
    if not cfg.costs:
        raise ValueError("costs is empty: give at least one SVM cost")

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
        tf = eval_transform(cfg.resize, cfg.crop, std=tuple(cfg.std))
        feats = []
        for ids, name in ((train_ids, cfg.train_split), (test_ids, cfg.test_split)):
            f, _ = feature_cache.extract(loaded, VOCImages(root, ids, tf), device, cfg=cfg, desc=name)
            feats.append((F.normalize(f, dim=1) if cfg.normalize else f).numpy().astype(np.float64))
        xtr, xte = feats
        aps = svm_aps(xtr, ytr, xte, yte=yte, cfg=cfg)
        metrics = {
            "mAP": float(np.mean([a for a, _ in aps])),
            "mAP_11point": float(np.mean([a11 for _, a11 in aps])),
            **{f"AP_{c}": a for c, (a, _) in zip(classes, aps)},
            **{f"AP11_{c}": a11 for c, (_, a11) in zip(classes, aps)},
        }
        metrics |= low_shot_metrics(xtr, ytr, xte, yte=yte, cfg=cfg)
        return metrics, {
            cfg.train_split: len(train_ids),
            cfg.test_split: len(test_ids),
            "classes": len(classes),
        }

    return run_and_record("svm", cfg, checkpoint, out_dir=out_dir, body=body)
