import json
from pathlib import Path

import pytest
import torch

import benchmark.protocol as protocol
from benchmark.semisup import SemisupConfig, run_semisup
from benchmark.subsets import SHIPPED, make_balanced_subset, read_subset, select
from pretrain.config import load_config
from pretrain.train import pretrain
from swavbench.core.state import load_checkpoint


def test_shipped_imagenet_subsets():
    assert len(read_subset(SHIPPED["imagenet-1pct"])) == 12811
    assert len(read_subset(SHIPPED["imagenet-10pct"])) == 128116
    assert read_subset(SHIPPED["imagenet-1pct"])[0].endswith(".JPEG")


def test_balanced_subset_is_seeded_and_balanced(tmp_path, generated_data):
    a = make_balanced_subset(generated_data, tmp_path / "a.txt", per_class=3, seed=1)
    b = make_balanced_subset(generated_data, tmp_path / "b.txt", per_class=3, seed=1)
    c = make_balanced_subset(generated_data, tmp_path / "c.txt", per_class=3, seed=2)
    lines = read_subset(a)
    assert lines == read_subset(b) and lines != read_subset(c)
    classes = [ln.split("/")[0] for ln in lines]
    assert len(lines) == 30 and all(classes.count(k) == 3 for k in set(classes))
    frac = read_subset(make_balanced_subset(generated_data, tmp_path / "f.txt", fraction=0.25))
    assert len(frac) == 40  # 16 images per class -> 4


def test_subset_naming_missing_images_is_an_error(tmp_path, generated_data):
    samples = [(str(p), 0) for p in sorted(generated_data.rglob("*.png"))]
    first, second = (Path(p).relative_to(generated_data).as_posix() for p, _ in samples[:2])
    listed = tmp_path / "subset.txt"
    listed.write_text(f"{first}\nnot-there.JPEG\n")
    with pytest.raises(FileNotFoundError, match=r"subset.txt names 1 images not found.*not-there.JPEG"):
        select(samples, generated_data, str(listed))
    listed.write_text(f"{first}\n{Path(second).name}\n")  # class/name path, or a bare name when unique
    assert [p for p, _ in select(samples, generated_data, str(listed))] == [p for p, _ in samples[:2]]


def test_finetuning_changes_trunk_and_bn_statistics(tmp_path, generated_data, monkeypatch):
    ckpt = pretrain(
        load_config("tiny", [f"data.path={generated_data}", "run.max_iters=2"]),
        tmp_path / "pre",
        progress=False,
    )
    seen = []
    real = protocol.load_trunk
    monkeypatch.setattr(protocol, "load_trunk", lambda *a, **k: seen.append(real(*a, **k)) or seen[-1])
    cfg = SemisupConfig(
        dataset="generated",
        train=str(generated_data),
        val=str(generated_data.parent / "val"),
        subset="balanced:4",
        epochs=2,
        batch_size=16,
        milestones=[1],
        crop=32,
        resize=32,
        num_workers=0,
    )
    rec = run_semisup(cfg, str(ckpt), tmp_path / "out")
    saved = load_checkpoint(ckpt)["state_dict"]
    after = {k: v.cpu() for k, v in seen[0].trunk.state_dict().items()}
    assert not torch.equal(after["conv1.weight"], saved["conv1.weight"])
    assert not torch.equal(after["bn1.running_mean"], saved["bn1.running_mean"])
    data = json.loads((tmp_path / "out" / "result.json").read_text())
    assert (
        data["status"] == "ok"
        and data["splits"]["train_labelled"] == 40
        and data["config"]["mode"] == "finetune"
    )
    assert (tmp_path / "out" / "subset.txt").is_file() and 0 <= rec.metrics["top1"] <= 100


def test_interrupted_finetuning_resumes_to_the_same_result(generated_data, tmp_path, monkeypatch):

    g = generated_data.parent
    cfg = SemisupConfig(
        train=str(g / "train"),
        val=str(g / "val"),
        subset="balanced:4",
        epochs=3,
        milestones=[2],
        batch_size=8,
        crop=32,
        resize=32,
        num_workers=0,
    )
    cfg.trunk.arch, cfg.trunk.small_stem, cfg.trunk.width_multiplier = "resnet18", True, 0.125
    straight = run_semisup(cfg, "random", tmp_path / "straight").metrics
    import swavbench.core.epochs as epochs_mod  # the one resumable loop writes every protocol's state

    real_save = epochs_mod.atomic_save

    def save_then_die(obj, path):
        real_save(obj, path)
        if obj["epoch"] == 1:
            raise KeyboardInterrupt("preempted")

    monkeypatch.setattr(epochs_mod, "atomic_save", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        run_semisup(cfg, "random", tmp_path / "cut")
    monkeypatch.setattr(epochs_mod, "atomic_save", real_save)
    assert run_semisup(cfg, "random", tmp_path / "cut").metrics == pytest.approx(straight)
