"""Low-shot ImageNet (issue #36 item 4): the draws are reproducible, nested and recorded; each draw's
top-1 equals an independent scikit-learn fit of MSN's classifier (rows centred and L2-normalised, C = 1 /
lambd, no intercept) on the recorded images; mean and CI over draws; train features another protocol cached
are reused instead of extracted."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats
from sklearn.linear_model import LogisticRegression

from benchmark import feature_cache, features
from benchmark.features import eval_transform, extract_features, image_folder
from benchmark.lowshot import draw_splits
from benchmark.trunk import TrunkSpec, load_trunk
from swavbench.core import registry

SPEC = ["trunk.arch=resnet18", "trunk.small_stem=true", "trunk.width_multiplier=0.125", "num_workers=0"]


def lowshot(generated_data, *extra: str):
    g = generated_data.parent
    overrides = [f"train={g / 'train'}", f"val={g / 'val'}", "shots=[1,2,5]", *SPEC, *extra]
    return registry.get("lowshot").load_config("lowshot-cifar10-small", overrides)


def test_draws_are_reproducible_nested_and_balanced():
    labels = [i % 4 for i in range(40)]  # 4 classes of 10
    a = draw_splits(labels, shots=[1, 2, 5], draws=3, seed=0)
    assert a == draw_splits(labels, shots=[1, 2, 5], draws=3, seed=0)
    assert a != draw_splits(labels, shots=[1, 2, 5], draws=3, seed=1)
    assert a[0, 5] != a[1, 5]  # the draws differ
    for d in range(3):
        assert set(a[d, 1]) < set(a[d, 2]) < set(a[d, 5])  # nested
        for k in (1, 2, 5):
            assert sorted(labels[i] for i in a[d, k]) == sorted(list(range(4)) * k)
    with pytest.raises(ValueError, match="fewer than 13 shots"):
        draw_splits(labels, shots=[1, 13], draws=1, seed=0)


def test_each_draw_matches_scikit_learn_on_the_recorded_images(tmp_path, generated_data):
    out = tmp_path / "out"
    rec = registry.get("lowshot").runner()(lowshot(generated_data), "random", out)
    g = generated_data.parent
    tf = eval_transform(32, 32)  # the small presets' one frozen view (the probe's)
    trunk = load_trunk("random", TrunkSpec("resnet18", small_stem=True, width_multiplier=0.125), 0).trunk
    train = image_folder(g / "train", tf)
    (xtr, ytr), (xva, yva) = [
        (f.double().numpy(), y.numpy())
        for f, y in (
            extract_features(trunk, ds, torch.device("cpu"), num_workers=0)
            for ds in (train, image_folder(g / "val", tf))
        )
    ]

    def unit(x):  # written out here, not taken from the module
        x = x - x.mean(axis=1)[:, None]
        return x / np.sqrt((x**2).sum(axis=1))[:, None]

    index = {Path(p).relative_to(g / "train").as_posix(): i for i, (p, _) in enumerate(train.samples)}
    drawn = set()
    sums = dict(line.split()[::-1] for line in (out / "splits" / "SHA256SUMS").read_text().splitlines())
    for k in (1, 2, 5):
        top1 = []
        for d in range(3):
            name = f"draw{d}-{k}shot.txt"
            text = (out / "splits" / name).read_text()
            assert hashlib.sha256(text.encode()).hexdigest() == sums[name]
            rows = [index[line] for line in text.splitlines()]
            drawn |= set(rows)
            assert sorted(np.bincount(ytr[rows])) == [k] * len(train.classes)
            clf = LogisticRegression(C=400.0, fit_intercept=False, max_iter=1000, random_state=0)
            top1.append(100 * clf.fit(unit(xtr[rows]), ytr[rows]).score(unit(xva), yva))
            assert rec.metrics[f"{k}shot_top1_draw{d}"] == pytest.approx(top1[-1], abs=1e-9)
        assert rec.metrics[f"{k}shot_top1"] == pytest.approx(np.mean(top1))
        half = stats.t.ppf(0.975, 2) * np.std(top1, ddof=1) / np.sqrt(3)
        assert rec.metrics[f"{k}shot_top1_ci95"] == pytest.approx(half)
    assert rec.splits == {"train_drawn": len(drawn), "val": len(yva)}


def test_whole_train_features_cached_by_knn_are_reused(tmp_path, generated_data, monkeypatch):
    monkeypatch.setenv(feature_cache.CACHE_ENV, str(tmp_path / "features"))
    calls, real = [], features.extract_features
    monkeypatch.setattr(
        features, "extract_features", lambda *a, **k: calls.append(k["desc"]) or real(*a, **k)
    )
    g = generated_data.parent
    alone = registry.get("lowshot").runner()(lowshot(generated_data), "random", tmp_path / "alone")
    assert calls[0].endswith("drawn train images") and calls[1:] == ["val"]
    knn = registry.get("knn").load_config(
        "knn-cifar10-small", [f"train={g / 'train'}", f"val={g / 'val'}", *SPEC]
    )
    registry.get("knn").runner()(knn, "random", str(tmp_path / "knn"))
    calls.clear()
    after = registry.get("lowshot").runner()(lowshot(generated_data), "random", tmp_path / "after")
    assert calls == []  # the whole train split and val from kNN's files
    # the same images' features, extracted in other batches: float noise may move one borderline val image
    assert after.metrics == pytest.approx(alone.metrics, abs=100 / after.splits["val"] + 1e-9)
