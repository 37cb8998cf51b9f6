import pytest
import torch

from benchmark.trunk import load_trunk
from pretrain.config import ModelConfig
from pretrain.model import build_trunk
from pretrain.supervised import (
    SupervisedConfig,
    SupervisedData,
    SupervisedOptim,
    SupervisedRun,
    train_supervised,
)
from swavbench.core.state import CheckpointError, load_checkpoint


def tiny(data, **kw):
    return SupervisedConfig(
        data=SupervisedData(str(data), num_workers=0, crop=32, min_scale=0.5),
        model=ModelConfig(arch="resnet18", small_stem=True, width_multiplier=0.125),
        optim=SupervisedOptim(epochs=2, global_batch=32, base_lr=0.1),
        **kw,
    )


def test_supervised_baseline_learns_and_loads_as_a_trunk(tmp_path, generated_data):
    ckpt = train_supervised(tiny(generated_data), tmp_path, progress=False)
    state = load_checkpoint(ckpt)
    assert state["supervised"] and state["epoch"] == 2 and "fc.weight" in state["state_dict"]
    assert state["classes"] == sorted(p.name for p in generated_data.iterdir())
    loaded = load_trunk(ckpt)
    assert loaded.supervised and loaded.label() == "supervised" and "fc.weight" in loaded.ignored_keys
    torch.testing.assert_close(loaded.trunk.state_dict()["conv1.weight"], state["state_dict"]["conv1.weight"])
    with pytest.raises(CheckpointError, match="--resume"):
        train_supervised(tiny(generated_data), tmp_path, progress=False)
    # resuming a finished run trains nothing more; a longer schedule continues from epoch 2
    more = tiny(generated_data)
    more.optim.epochs = 3
    train_supervised(more, tmp_path, resume=True, progress=False)
    assert load_checkpoint(ckpt)["epoch"] == 3


def test_two_processes_train_what_one_does(tmp_path, generated_data):
    """DDP with BatchNorm over the global batch: 2 gloo processes train what 1 process does at the same global
    batch. The machinery is exact in float64 (tests/swavbench/test_ranks.py); in float32 a random 1/8-width
    trunk amplifies rounding, so the updates are compared: 2 processes differ from one by at most 0.77% of
    the update's norm over seeds 3, 4, 5 at lr 0.001 (measured; 1 vs 2 threads of one process: up to 0.05%),
    processes training apart (each on its half) would differ by tens of percent."""
    from ddp_helpers import run_ddp, train_supervised_in_group

    cfg = tiny(generated_data, run=SupervisedRun(seed=4))
    cfg.optim.epochs, cfg.optim.base_lr = 1, 0.001
    torch.manual_seed(cfg.run.seed)  # the initial weights, as train_supervised draws them
    init = build_trunk("resnet18", small_stem=True, width_multiplier=0.125)
    init.fc = torch.nn.Linear(init.num_features, len(list(generated_data.iterdir())))
    init = init.state_dict()
    one = load_checkpoint(train_supervised(cfg, tmp_path / "one", progress=False))["state_dict"]
    paths = run_ddp(train_supervised_in_group, 2, cfg, str(tmp_path / "two"))
    assert paths[0] == paths[1] == str(tmp_path / "two" / "checkpoint.pth")
    two = load_checkpoint(paths[0])["state_dict"]
    assert one.keys() == two.keys() and load_checkpoint(paths[0])["epoch"] == 1
    learned = [k for k in one if "running" not in k and "num_batches" not in k]
    u1 = torch.cat([(one[k] - init[k]).flatten() for k in learned])
    u2 = torch.cat([(two[k] - init[k]).flatten() for k in learned])
    assert u1.norm() > 0 and float((u2 - u1).norm() / u1.norm()) < 0.05


def test_stopped_at_the_signal_mid_epoch_resumes_to_the_weights_of_a_run_never_stopped(
    tmp_path, generated_data, monkeypatch
):
    """The scheduler's signal during batch 2 of epoch 0: the state is saved at that position and the
    requeued run goes on from batch 2 (not from the epoch's start), ending with the same weights."""
    import pretrain.supervised as supervised
    from swavbench.core import interrupt

    cfg = tiny(generated_data)
    full = load_checkpoint(train_supervised(cfg, tmp_path / "full", progress=False))
    original = supervised.epoch_loader

    def signalled(*args, **kwargs):
        for i, batch in enumerate(original(*args, **kwargs)):
            if i == 1 and kwargs["epoch"] == 0:
                interrupt.request()
            yield batch

    monkeypatch.setattr(supervised, "epoch_loader", signalled)
    try:
        with pytest.raises(interrupt.Interrupted, match="epoch 0, batch 2"):
            train_supervised(cfg, tmp_path / "stopped", progress=False)
    finally:
        interrupt.clear()
    saved = load_checkpoint(tmp_path / "stopped" / "checkpoint.pth")
    assert (saved["epoch"], saved["batch"]) == (0, 2)
    monkeypatch.setattr(supervised, "epoch_loader", original)
    resumed = load_checkpoint(train_supervised(cfg, tmp_path / "stopped", resume=True, progress=False))
    assert (resumed["epoch"], resumed["batch"]) == (2, 0)
    for name, value in full["state_dict"].items():
        assert torch.equal(resumed["state_dict"][name], value), name
