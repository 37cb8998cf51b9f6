"""The many-dataset logistic-regression transfer (issue #36 item 5): C chosen on a held-out part of train
and the test top-1, checked against scikit-learn's own grid search (a scaler + logistic regression pipeline
over the same predefined split), and the suite over the shared data (CIFAR-10 subset, 15-Scene)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, PredefinedSplit, train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import swavbench
from benchmark.features import eval_transform, extract_features, image_folder
from benchmark.trunk import TrunkSpec, load_trunk
from swavbench.core import registry
from transfer.logreg_suite import c_grid

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"


def test_c_selection_and_test_top1_match_scikit_learns_grid_search(tmp_path, generated_data):
    g = generated_data.parent
    entry = registry.get("transfer-logreg")
    overrides = [
        "names=[gen]",
        f"trains=[{g / 'train'}]",
        f"tests=[{g / 'val'}]",
        "resize=32",
        "crop=32",
        "c_min=0.001",
        "c_max=100",
        "c_steps=6",
        "max_iter=2000",  # converged: the two searches then agree exactly
        "num_workers=0",
        "trunk.arch=resnet18",
        "trunk.small_stem=true",
        "trunk.width_multiplier=0.125",
    ]
    cfg = entry.load_config("logreg-shared-small", overrides)
    rec = entry.runner()(cfg, "random", tmp_path / "out")
    # the same features, independently: the random trunk of seed 0 through the protocol's view
    trunk = load_trunk("random", TrunkSpec("resnet18", small_stem=True, width_multiplier=0.125), 0).trunk
    tf = eval_transform(32, 32, interpolation="bicubic")
    (xtr, ytr), (xte, yte) = [
        (f.double().numpy(), y.numpy())
        for f, y in (
            extract_features(
                trunk, image_folder(g / split, tf), __import__("torch").device("cpu"), num_workers=0
            )
            for split in ("train", "val")
        )
    ]
    _, val = train_test_split(np.arange(len(ytr)), test_size=0.2, stratify=ytr, random_state=0)
    fold = np.full(len(ytr), -1)
    fold[val] = 0  # one predefined split: fit on the rest, score on these
    search = GridSearchCV(
        make_pipeline(StandardScaler(), LogisticRegression(max_iter=cfg.max_iter, random_state=0)),
        {"logisticregression__C": c_grid(cfg)},
        cv=PredefinedSplit(fold),
    ).fit(xtr, ytr)
    assert rec.metrics["gen_C"] == pytest.approx(search.best_params_["logisticregression__C"])
    assert rec.metrics["gen_top1"] == pytest.approx(100 * search.score(xte, yte), abs=1e-9)
    assert rec.metrics["mean_top1"] == rec.metrics["gen_top1"]
    assert rec.splits == {"gen_train": len(ytr), "gen_test": len(yte)}


def test_the_suite_over_the_shared_datasets(tmp_path):
    out = tmp_path / "suite"
    argv = [
        "transfer",
        "logreg",
        "--checkpoint",
        "random",
        "--config",
        "logreg-shared-small",
        "--out",
        str(out),
    ]
    fewer = ["c_steps=3", "max_iter=100"]  # the preset's 7 values of C cost a minute more of test time
    assert swavbench.main([*argv, "--data-root", str(SHARED), "num_workers=0", *fewer]) == 0
    rec = json.loads((out / "result.json").read_text())
    m = rec["metrics"]
    assert rec["protocol"] == "transfer-logreg" and rec["status"] == "ok"
    assert rec["splits"]["cifar10-subset_train"] == 10_000 and rec["splits"]["cifar10-subset_test"] == 2_000
    scene = sum(1 for p in (SHARED / "scene15" / "val").rglob("*") if p.is_file())
    assert rec["splits"]["scene15_test"] == scene
    grid = c_grid(registry.get("transfer-logreg").load_config("logreg-shared-small", fewer))
    for name in ("cifar10-subset", "scene15"):
        assert 0.0 <= m[f"{name}_top1"] <= 100.0 and any(m[f"{name}_C"] == pytest.approx(c) for c in grid)
    assert m["mean_top1"] == pytest.approx((m["cifar10-subset_top1"] + m["scene15_top1"]) / 2)
