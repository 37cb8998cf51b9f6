"""Low-shot ImageNet as MSN (Assran et al. 2022, Sec. 5.1; its ``logistic_eval.py``) evaluates frozen
features: a logistic regression on 1, 2, 5 and 13 (about 1%) labelled images per class, for several
fixed-seed draws; top-1 on the whole val split, reported as the mean over draws ± the 95% CI half-width.

The classifier is MSN's: each feature row centred and L2-normalised, multinomial logistic regression
without intercept, L2 penalty ``lambd`` (cyanure's per-image penalty lambd / n, which is scikit-learn's
C = 1 / lambd). C is fixed: one image per class leaves nothing to choose it on.

The draws are nested (a draw's image of a class is the first of its 2, 5 and 13) and deterministic: each
class's images sorted by path, permuted by a generator seeded with (seed, draw). Each draw is written to
``splits/draw<d>-<k>shot.txt`` (paths under the train folder) with ``splits/SHA256SUMS``. The view is
kNN's (DINO's ``eval_knn.py``), so train features another protocol cached are reused; otherwise only the
drawn images are extracted."""

from __future__ import annotations

import copy
import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer

from benchmark import feature_cache
from benchmark.features import TORCHVISION_STD, eval_transform, image_folder_splits
from benchmark.protocol import ImageFolderSplits, TrunkConfig, run_and_record
from swavbench.core import durable, ranks
from swavbench.core.data_root import resolve_fields
from swavbench.core.record import ResultRecord
from swavbench.core.stats import ci95_halfwidth


@dataclass
class LowshotConfig(ImageFolderSplits):
    """Shots per class, draws, MSN's penalty, and kNN's view (resize 256, center crop 224, bicubic)."""

    shots: list[int] = field(default_factory=lambda: [1, 2, 5, 13])
    draws: int = 3  # MSN: three subsets per shot count
    lambd: float = 0.0025  # MSN logistic_eval.py's default
    max_iter: int = 1000
    resize: int = 256
    crop: int = 224
    interpolation: str = "bicubic"
    std: list[float] = field(default_factory=lambda: list(TORCHVISION_STD))
    batch_size: int = 256
    num_workers: int = 8
    seed: int = 0
    mode: str = "frozen-features"
    trunk: TrunkConfig = field(default_factory=TrunkConfig)


def centred_unit_rows(x: np.ndarray) -> np.ndarray:
    """Each row minus its mean, then scaled to unit L2 norm (cyanure's preprocess, columns=False)."""
    x = x - x.mean(axis=1, keepdims=True)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def classifier(c: float, *, max_iter: int, seed: int):  # noqa: ANN201 - a scikit-learn pipeline
    """MSN's low-shot classifier: unit rows, L-BFGS multinomial logistic regression, no intercept."""
    return make_pipeline(
        FunctionTransformer(centred_unit_rows),
        LogisticRegression(C=c, fit_intercept=False, max_iter=max_iter, random_state=seed),
    )


def draw_splits(labels: list[int], *, shots: list[int], draws: int, seed: int) -> dict[tuple[int, int], list]:
    """(draw, k) -> sorted indices of ``k`` images per class; ``labels`` in the dataset's (path) order."""
    by_class: dict[int, list[int]] = {}
    for i, y in enumerate(labels):
        by_class.setdefault(int(y), []).append(i)
    most = max(shots)
    for y, idx in by_class.items():
        if len(idx) < most:
            raise ValueError(f"class {y} has {len(idx)} train images, fewer than {most} shots: lower shots")
    out = {}
    for d in range(draws):
        rng = np.random.default_rng([seed, d])
        firsts = {y: rng.permutation(idx)[:most] for y, idx in sorted(by_class.items())}
        for k in shots:
            out[d, k] = sorted(int(i) for f in firsts.values() for i in f[:k])
    return out


def write_splits(draws: dict, train, out_dir: Path) -> None:  # noqa: ANN001 - an ImageFolder
    """One file of image paths (relative to the ``train`` folder) per draw, and their sha256 sums."""
    sums = []
    for (d, k), idx in sorted(draws.items()):
        name = f"draw{d}-{k}shot.txt"
        text = "".join(f"{Path(train.samples[i][0]).relative_to(train.root).as_posix()}\n" for i in idx)
        durable.write_text(out_dir / "splits" / name, text)
        sums.append(f"{hashlib.sha256(text.encode()).hexdigest()}  {name}\n")
    durable.write_text(out_dir / "splits" / "SHA256SUMS", "".join(sums))


def train_features(loaded, train, needed: list[int], *, device, cfg: LowshotConfig):  # noqa: ANN001
    """(features, labels) of the train images ``needed`` (sorted): from the whole split's cached features,
    else extracted for those images alone."""
    whole = feature_cache.lookup(loaded, train, cfg=cfg, desc="train features")
    if whole is not None:
        return whole[0][needed], whole[1][needed]
    part = copy.copy(train)
    part.samples = [train.samples[i] for i in needed]
    part.imgs, part.targets = part.samples, [y for _, y in part.samples]
    return feature_cache.extract(loaded, part, device, cfg=cfg, desc=f"{len(needed)} drawn train images")


def run_lowshot(cfg: LowshotConfig, checkpoint: str, out_dir: str | Path) -> ResultRecord:
    """Draw the splits, fit a classifier per (draw, shots) on frozen features, score val, write the record."""
    cfg = resolve_fields(cfg)
    out_dir = Path(out_dir)

    def body(loaded, device):
        tf = eval_transform(cfg.resize, cfg.crop, interpolation=cfg.interpolation, std=tuple(cfg.std))
        train, val = image_folder_splits(cfg, tf)
        draws = draw_splits(train.targets, shots=cfg.shots, draws=cfg.draws, seed=cfg.seed)
        if ranks.is_main():
            write_splits(draws, train, out_dir)
        needed = sorted({i for idx in draws.values() for i in idx})
        xs, ys = (t.double().numpy() for t in train_features(loaded, train, needed, device=device, cfg=cfg))
        xva, yva = (
            t.double().numpy() for t in feature_cache.extract(loaded, val, device, cfg=cfg, desc="val")
        )
        row = {i: r for r, i in enumerate(needed)}
        metrics = {}
        for k in cfg.shots:
            top1 = []
            for d in range(cfg.draws):
                rows = [row[i] for i in draws[d, k]]
                clf = classifier(1.0 / cfg.lambd, max_iter=cfg.max_iter, seed=cfg.seed)
                top1.append(100.0 * clf.fit(xs[rows], ys[rows]).score(xva, yva))
                metrics[f"{k}shot_top1_draw{d}"] = top1[-1]
            metrics[f"{k}shot_top1"] = float(np.mean(top1))
            metrics[f"{k}shot_top1_ci95"] = ci95_halfwidth(
                float(np.std(top1, ddof=1)) if cfg.draws > 1 else 0.0, cfg.draws
            )
        return metrics, {"train_drawn": len(needed), "val": len(val)}

    return run_and_record("lowshot", cfg, checkpoint, out_dir=out_dir, body=body)
