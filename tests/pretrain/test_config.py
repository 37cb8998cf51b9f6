import pytest
import yaml

from pretrain.config import CONFIG_DIR, PretrainConfig, load_config, plan_batch
from swavbench.core.config import ConfigError, list_presets


def test_presets_load_and_paper_recipes():
    names = list_presets(CONFIG_DIR)
    for required in ("tiny", "cpu-small", "rn50-800ep-bs4096", "rn50-200ep-bs256-queue"):
        assert required in names
    for name in names:
        load_config(name)
    paper = load_config("rn50-800ep-bs4096")
    assert paper.optim.base_lr == 4.8 and paper.swav.queue_length == 0 and paper.data.size_crops == [224, 96]
    assert paper.data.nmb_crops == [2, 6] and paper.model.n_prototypes == [3000] and paper.optim.epochs == 800
    small = load_config("rn50-200ep-bs256-queue")
    assert (
        small.swav.queue_length == 3840
        and small.optim.base_lr == 0.6
        and small.swav.freeze_prototypes_niters == 5005
    )


def test_overrides_types_and_lists():
    cfg = load_config(
        "tiny", ["optim.epochs=7", "data.size_crops=[24,12]", "run.precision=bf16", "model.small_stem=false"]
    )
    assert cfg.optim.epochs == 7 and cfg.data.size_crops == [24, 12] and cfg.run.precision == "bf16"
    assert cfg.model.small_stem is False


def test_unknown_key_lists_valid_keys(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_config("tiny", ["optim.epoch=3"])
    msg = str(e.value)  # the close match, then the keys of its section (not all 50-odd keys)
    assert "'optim.epoch'; did you mean optim.epochs" in msg and "optim.base_lr" in msg
    assert "swav.epsilon" not in msg
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"model": {"arch": "resnet18", "widht": 2}}))
    with pytest.raises(ConfigError, match=r"bad.yaml.*model.widht.*model.width_multiplier"):
        load_config(str(bad))


def test_bad_values_are_clear():
    with pytest.raises(ConfigError, match="expects int"):
        load_config("tiny", ["optim.epochs=two"])
    with pytest.raises(ConfigError, match="crops_for_assign"):
        load_config("tiny", ["swav.crops_for_assign=[0,9]"])
    with pytest.raises(ConfigError, match="unknown preset"):
        load_config("no-such-preset")
    with pytest.raises(ConfigError, match="unknown arch"):
        load_config("tiny", ["model.arch=vgg16"])
    assert PretrainConfig().run.precision == "bf16"


def test_global_batch_plan_refuses_another_batch_unless_told_how_to_adapt():
    cfg = load_config("rn50-800ep-bs4096")
    assert cfg.optim.global_batch == 4096 and cfg.optim.batch_size == 64
    full = plan_batch(cfg, 64)  # the paper's 64 GPUs
    assert (full.global_batch, full.base_lr, full.freeze_prototypes_niters) == (4096, 4.8, 313)
    with pytest.raises(
        ConfigError, match=r"global batch of 4096.*8 process\(es\) x optim.batch_size=64 = 512"
    ):
        plan_batch(cfg, 8)
    with pytest.raises(ConfigError, match="optim.batch_size=512 keeps it at 8 processes"):
        plan_batch(cfg, 8)
    kept = plan_batch(load_config("rn50-800ep-bs4096", ["optim.batch_size=512"]), 8)
    assert (kept.global_batch, kept.base_lr, kept.freeze_prototypes_niters) == (4096, 4.8, 313)
    for scaling, lr in (("linear", 4.8 / 8), ("sqrt", 4.8 / 8**0.5), ("none", 4.8)):
        p = plan_batch(load_config("rn50-800ep-bs4096", [f"optim.lr_scaling={scaling}"]), 8)
        assert p.base_lr == pytest.approx(lr) and p.final_lr == pytest.approx(lr / 1000)
        assert p.freeze_prototypes_niters == 313 * 8  # the same number of images as at batch 4096
    with pytest.raises(ConfigError, match="lr_scaling must be one of"):
        plan_batch(load_config("rn50-800ep-bs4096", ["optim.lr_scaling=cubic"]), 8)
    assert plan_batch(load_config("cpu-small"), 3).lr_scaling == "none"  # no published batch: no check
    assert load_config("rn50-400ep-bs256-queue").optim.global_batch == 256
