import pytest
import torch

from benchmark.trunk import load_trunk
from pretrain.checkpoint import CheckpointError, load_checkpoint
from pretrain.config import ModelConfig
from pretrain.supervised import SupervisedConfig, train_supervised


def tiny(data, **kw):
    return SupervisedConfig(
        data=str(data),
        model=ModelConfig(arch="resnet18", small_stem=True, width_multiplier=0.125),
        epochs=2,
        batch_size=32,
        lr=0.1,
        crop=32,
        min_scale=0.5,
        num_workers=0,
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
    more.epochs = 3
    train_supervised(more, tmp_path, resume=True, progress=False)
    assert load_checkpoint(ckpt)["epoch"] == 3
