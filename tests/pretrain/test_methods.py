"""The pretraining-method registry: each entry loads, freezes and restores its own config, and says what a
job of it cannot run."""

from dataclasses import asdict

import pytest

from pretrain import methods
from pretrain.config import load_config
from pretrain.supervised import CONFIG_DIR, SupervisedConfig
from swavbench.core.config import ConfigError, differences, load_dataclass


def test_settings_are_what_each_method_resolves_and_come_back_whole():
    swav, sup = methods.get("swav"), methods.get("supervised")
    cfg = swav.load("tiny", ["optim.epochs=3"])
    assert swav.settings(cfg) == load_config("tiny", ["optim.epochs=3"]).to_dict()
    assert swav.from_settings(swav.settings(cfg)).to_dict() == cfg.to_dict()
    assert swav.schedule(cfg) == (3, 0)
    scfg = sup.load("cpu-small", ["optim.epochs=2"])
    direct = load_dataclass(SupervisedConfig, CONFIG_DIR, "cpu-small", overrides=["optim.epochs=2"])
    assert sup.settings(scfg) == {"supervised": asdict(direct)}
    assert asdict(sup.from_settings(sup.settings(scfg))) == asdict(direct)
    assert sup.schedule(scfg) == (2, 0) and sup.data(scfg) == direct.data.path


def test_what_a_job_cannot_run_is_said_before_it_is_submitted():
    sup = methods.get("supervised")
    scfg = sup.load("cpu-small", ["optim.global_batch=10"])
    sup.check_world(scfg, 2)
    with pytest.raises(ConfigError, match="optim.global_batch=10 must split over the job's 3 processes"):
        sup.check_world(scfg, 3)
    swav = methods.get("swav")
    cfg = swav.load("tiny", ["optim.epochs=4", "run.keep_epoch_checkpoints=2"])
    swav.check_eval_epochs(cfg, [2])
    with pytest.raises(ValueError, match=r"eval epochs \[3, 4\]"):
        swav.check_eval_epochs(cfg, [2, 3, 4])
    with pytest.raises(KeyError, match="methods: swav, supervised"):
        methods.get("byol")


def test_swav_and_supervised_share_one_override_schema_and_old_settings_still_match(tmp_path):
    """Issue #35: the keys both pretrainings have mean the same (data.path, model.*, optim.epochs,
    optim.base_lr, run.seed, ...), so one override list configures either; settings.json written in the flat
    layout of before reads as today's (an existing run folder is not a new configuration)."""
    shared = ["data.path=x", "model.arch=resnet18", "optim.epochs=3", "optim.base_lr=0.2", "run.seed=5"]
    swav, sup = methods.get("swav").load("tiny", shared), methods.get("supervised").load("cpu-small", shared)
    for cfg in (swav, sup):
        assert (cfg.data.path, cfg.model.arch, cfg.optim.epochs, cfg.optim.base_lr, cfg.run.seed) == (
            "x",
            "resnet18",
            3,
            0.2,
            5,
        )
    flat = {  # a supervised settings.json of the earlier layout
        "data": "x",
        "model": asdict(sup.model),
        "epochs": 3,
        "batch_size": sup.optim.global_batch,
        "lr": 0.2,
        "momentum": sup.optim.momentum,
        "weight_decay": sup.optim.weight_decay,
        "crop": sup.data.crop,
        "min_scale": sup.data.min_scale,
        "num_workers": sup.data.num_workers,
        "seed": 5,
        "sync_bn": True,
    }
    m = methods.get("supervised")
    assert differences(m.upgrade({"supervised": flat}), m.settings(sup)) == []
    assert asdict(m.from_settings({"supervised": flat})) == asdict(sup)
