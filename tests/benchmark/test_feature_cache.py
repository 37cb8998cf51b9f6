"""The frozen-feature protocols share their features (issue #36 item 1): a second protocol run on the same
trunk, split and view extracts nothing and gets the same numbers; another view or trunk is a miss; readers
never see a partial file while a writer replaces it; the folder stays within its bound, least recently
used first; the processes of a data-parallel job agree on hit or miss."""

from __future__ import annotations

import os
import threading
import time

import pytest
import torch
from ddp_helpers import run_ddp, run_protocols

from benchmark import feature_cache, features
from swavbench.core import durable, registry
from swavbench.core.state import load_checkpoint


def knn(generated_data, out, *extra: str):
    g = generated_data.parent
    overrides = [
        f"train={g / 'train'}",
        f"val={g / 'val'}",
        "num_workers=0",
        "trunk.width_multiplier=0.125",
        *extra,
    ]
    return registry.get("knn").load_config("knn-cifar10-small", overrides), "random", str(out)


@pytest.fixture
def counted(monkeypatch, tmp_path):
    """The cache folder set, and every real extraction counted."""
    monkeypatch.setenv(feature_cache.CACHE_ENV, str(tmp_path / "features"))
    calls, real = [], features.extract_features

    def counting(*a, **k):
        calls.append(k.get("desc"))
        return real(*a, **k)

    monkeypatch.setattr(features, "extract_features", counting)
    return calls


def test_a_second_protocol_on_the_same_features_extracts_nothing(tmp_path, generated_data, counted):
    run = registry.get("knn").runner()
    first = run(*knn(generated_data, tmp_path / "a", "ks=[5]"))
    assert counted == ["train features", "val features"]
    second = run(*knn(generated_data, tmp_path / "b", "ks=[5,10]"))
    assert counted == ["train features", "val features"]  # both splits from the cache
    assert second.metrics["k5_top1"] == first.metrics["k5_top1"]
    assert len(list((tmp_path / "features").glob("*.features.pt"))) == 2
    run(*knn(generated_data, tmp_path / "c", "resize=40", "crop=32"))  # another view: extracted again
    assert counted[2:] == ["train features", "val features"]
    cfg, _, out = knn(generated_data, tmp_path / "d")
    cfg.seed = 1  # another random trunk (its weights come from the seed)
    run(cfg, "random", out)
    assert len(counted) == 6
    os.environ[feature_cache.CACHE_ENV] = feature_cache.OFF  # (restored by monkeypatch) the cache off
    run(*knn(generated_data, tmp_path / "e", "ks=[5]"))
    assert len(counted) == 8


def test_readers_see_whole_files_while_a_writer_replaces_them_and_the_size_stays_bounded(tmp_path):
    path = tmp_path / "k.features.pt"
    durable.torch_save({"key": "k", "features": torch.zeros(2000, 64), "labels": torch.zeros(2000)}, path)
    stop, seen = threading.Event(), []

    def writer() -> None:
        i = 0
        while not stop.is_set():
            i += 1
            durable.torch_save(
                {"key": "k", "features": torch.full((2000, 64), float(i)), "labels": torch.zeros(2000)}, path
            )

    t = threading.Thread(target=writer)
    t.start()
    try:
        deadline = time.time() + 2.0
        while time.time() < deadline:
            f = load_checkpoint(path)["features"]
            seen.append(float(f[0, 0]))
            assert f.shape == (2000, 64) and bool((f == f[0, 0]).all())  # one whole version, never a mix
    finally:
        stop.set()
        t.join()
    assert len(set(seen)) > 1  # the writer did replace it meanwhile
    sizes = {}
    for i, name in enumerate(("old", "mid", "new")):
        p = tmp_path / f"{name}{feature_cache.SUFFIX}"
        durable.torch_save(torch.zeros(25_000), p)  # about 100 kB each
        os.utime(p, (1000 + i, 1000 + i))
        sizes[name] = p.stat().st_size
    keep = tmp_path / f"old{feature_cache.SUFFIX}"  # just written by this job: kept whatever its age
    gone = feature_cache.evict(tmp_path, sizes["old"] + sizes["new"] + path.stat().st_size + 10, keep=keep)
    assert [p.name for p in gone] == [f"mid{feature_cache.SUFFIX}"]


def test_the_processes_of_a_job_agree_and_share_one_file(tmp_path, generated_data, monkeypatch):
    monkeypatch.setenv(feature_cache.CACHE_ENV, str(tmp_path / "features"))
    cases = [("knn", *knn(generated_data, tmp_path / "a")), ("knn", *knn(generated_data, tmp_path / "b"))]
    two = run_ddp(run_protocols, 2, cases)
    assert [r.metrics for r in two[0]] == [r.metrics for r in two[1]]
    assert two[0][0].metrics == two[0][1].metrics  # the second run read what the first extracted
    assert len(list((tmp_path / "features").glob("*.features.pt"))) == 2


def test_the_small_storys_knn_and_cached_probe_share_one_extraction(tmp_path, generated_data, counted):
    """The small presets use one frozen view: in the main job the probe (and low-shot) read what kNN
    extracted, once per trunk and split."""
    registry.get("knn").runner()(*knn(generated_data, tmp_path / "knn"))
    assert counted == ["train features", "val features"]
    g = generated_data.parent
    over = [f"train={g / 'train'}", f"val={g / 'val'}", "num_workers=0", "trunk.width_multiplier=0.125"]
    linear = registry.get("linear")
    linear.runner()(
        linear.load_config("linear-cifar10-small", [*over, "epochs=1"]), "random", tmp_path / "lin"
    )
    assert counted == ["train features", "val features"]  # nothing more extracted
