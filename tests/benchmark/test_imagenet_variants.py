"""ImageNet-ReaL / V2 / A / R with a trained head (issue #36 item 3), on small fixtures laid out as the
real sets are (official val file names and a real.json, V2 folders named by class index, A / R folders
named by WordNet id for a subset of the classes): every metric against an independent computation from the
trunk's features and the head's weights; the official eval_linear checkpoint reads as the harness' own
head; ReaL accuracy on a hand-computed case; the probe's own head gives the probe's top-1."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from benchmark.features import eval_transform, extract_features, image_folder
from benchmark.imagenet_variants import real_accuracy
from benchmark.trunk import TrunkSpec, load_trunk
from swavbench.core import registry

SPEC = ["trunk.arch=resnet18", "trunk.small_stem=true", "trunk.width_multiplier=0.125", "num_workers=0"]
WNIDS = [f"n{i:08d}" for i in range(12)]  # 12 classes: V2's folder "10" sorts before "2"


def test_real_accuracy_by_hand():
    # counted: all but the empty set (4); correct: 3 in {3}, 4 in {2, 4}, 5 in {5, 9}; 1 not in {7}
    assert real_accuracy([3, 1, 4, 1, 5], [[3], [], [2, 4], [7], [5, 9]]) == (75.0, 4)


@pytest.fixture(scope="module")
def sets(tmp_path_factory, generated_data):
    """The four sets' layouts with the generated images, and real.json."""
    root, images = tmp_path_factory.mktemp("variants"), sorted(generated_data.rglob("*.png"))
    for w in WNIDS:
        (root / "train" / w).mkdir(parents=True)  # only the folder names are read
    real = []
    for j in range(1, 37):  # official val names, in no class order
        label = (j * 5) % 12
        dst = root / "val" / WNIDS[label] / f"ILSVRC2012_val_{j:08d}.JPEG"
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(images[j], dst)
        real.append([] if j % 5 == 0 else [label, (label + 1) % 12] if j % 3 == 0 else [(label + j) % 12])
    (root / "real.json").write_text(json.dumps(real))
    layouts = {"v2": [str(c) for c in range(12)], "a": WNIDS[:5], "r": WNIDS[3:7]}
    n = 40
    for name, folders in layouts.items():
        for i, f in enumerate(folders * 2):
            (root / name / f).mkdir(parents=True, exist_ok=True)
            shutil.copy(images[n], root / name / f / f"{i}.jpeg")
            n += 1
    return root


@pytest.fixture(scope="module")
def head():
    g = torch.Generator().manual_seed(3)
    return torch.randn(12, 64, generator=g), torch.randn(12, generator=g)


def run(sets, tmp_path, head_path):
    over = [f"{f}={sets / f}" for f in ("train", "val", "v2", "a", "r")]
    cfg = registry.get("imagenet-variants").load_config(
        "imagenet-variants-cifar10-small",
        [*over, f"real_labels={sets / 'real.json'}", f"head={head_path}", *SPEC],
    )
    return registry.get("imagenet-variants").runner()(cfg, "random", tmp_path / "out")


def test_every_set_against_an_independent_computation(tmp_path, sets, head):
    w, b = head
    state = {  # benchmark/linear.py's state: the second head has the best top-1, so it is the one used
        "heads": {"heads.0.weight": -w, "heads.0.bias": b, "heads.1.weight": w, "heads.1.bias": b},
        "results": [{"top1_best": 10.0}, {"top1_best": 20.0}],
    }
    torch.save(state, tmp_path / "linear_state.pt")
    rec = run(sets, tmp_path, tmp_path)
    trunk = load_trunk("random", TrunkSpec("resnet18", small_stem=True, width_multiplier=0.125), 0).trunk

    def predicted(name, allowed=None):
        ds = image_folder(sets / name, eval_transform(32, 32))
        x, _ = extract_features(trunk, ds, torch.device("cpu"), num_workers=0)
        out = x @ w.t() + b
        if allowed is not None:  # the other classes' logits out of the race
            out[:, [i for i in range(12) if WNIDS[i] not in allowed]] = -float("inf")
        return [(int(p), path) for p, (path, _) in zip(out.argmax(1), ds.samples)]

    def top1(pairs):
        return 100 * sum(pairs) / len(pairs)

    val = predicted("val")
    assert rec.metrics["val_top1"] == pytest.approx(top1([WNIDS[p] in path for p, path in val]))
    real = json.loads((sets / "real.json").read_text())
    counted = [(p, real[int(path[-13:-5]) - 1]) for p, path in val]
    counted = [p in labels for p, labels in counted if labels]
    assert (
        rec.metrics["real_top1"] == pytest.approx(top1(counted)) and rec.splits["real"] == len(counted) == 29
    )
    v2 = predicted("v2")
    assert rec.metrics["v2_top1"] == pytest.approx(top1([f"/{p}/" in path for p, path in v2]))
    for name, allowed in (("a", WNIDS[:5]), ("r", WNIDS[3:7])):
        pairs = predicted(name, allowed)
        assert rec.metrics[f"{name}_top1"] == pytest.approx(top1([WNIDS[p] in path for p, path in pairs]))
    assert rec.splits == {"val": 36, "real": 29, "v2": 24, "a": 10, "r": 8}

    official = {  # eval_linear.py's checkpoint of RegLog under DistributedDataParallel
        "epoch": 100,
        "state_dict": {"module.linear.weight": w, "module.linear.bias": b},
        "optimizer": {"state": {}, "param_groups": [{"lr": 0.3, "params": [0, 1]}]},
        "scheduler": {"last_epoch": 100},
        "best_acc": 75.3,
    }
    torch.save(official, tmp_path / "swav_800ep_eval_linear.pth.tar")
    again = run(sets, tmp_path / "official", tmp_path / "swav_800ep_eval_linear.pth.tar")
    assert again.metrics == rec.metrics


def test_heads_that_do_not_fit_are_refused(tmp_path, sets, head):
    w, b = head
    torch.save({"state_dict": {"linear.weight": w[:5], "linear.bias": b[:5]}}, tmp_path / "five.pth")
    with pytest.raises(ValueError, match="the head has 5 outputs, .* 12 class folders"):
        run(sets, tmp_path, tmp_path / "five.pth")
    bn = {"module.bn.weight": torch.ones(2048), "module.linear.weight": w, "module.linear.bias": b}
    torch.save({"state_dict": bn}, tmp_path / "bn.pth")
    with pytest.raises(ValueError, match="BatchNorm"):
        run(sets, tmp_path, tmp_path / "bn.pth")


def test_the_probes_own_head_gives_the_probes_top1(tmp_path, generated_data):
    g = generated_data.parent
    over = [f"train={g / 'train'}", f"val={g / 'val'}", *SPEC]
    linear = registry.get("linear")
    probe = linear.runner()(
        linear.load_config("linear-cifar10-small", [*over, "epochs=3"]), "random", tmp_path / "p"
    )
    cfg = registry.get("imagenet-variants").load_config(
        "imagenet-variants-cifar10-small", [*over, f"head={tmp_path / 'p'}"]
    )
    rec = registry.get("imagenet-variants").runner()(cfg, "random", tmp_path / "v")
    # the same images' features, extracted in other batches: float noise may move one borderline image
    assert rec.metrics["val_top1"] == pytest.approx(probe.metrics["top1"], abs=100 / rec.splits["val"] + 1e-9)
    assert set(rec.metrics) == {"val_top1"}
