"""The pretraining-method registry: each entry loads, freezes and restores its own config, and says what a
job of it cannot run."""

from dataclasses import asdict

import pytest

from pretrain import methods
from pretrain.config import load_config
from pretrain.supervised import CONFIG_DIR, SupervisedConfig
from swavbench.core.config import ConfigError, load_dataclass


def test_settings_are_what_each_method_resolves_and_come_back_whole():
    swav, sup = methods.get("swav"), methods.get("supervised")
    cfg = swav.load("tiny", ["optim.epochs=3"])
    assert swav.settings(cfg) == load_config("tiny", ["optim.epochs=3"]).to_dict()
    assert swav.from_settings(swav.settings(cfg)).to_dict() == cfg.to_dict()
    assert swav.schedule(cfg) == (3, 0) and swav.cooperative
    scfg = sup.load("cpu-small", ["epochs=2"])
    direct = load_dataclass(SupervisedConfig, CONFIG_DIR, "cpu-small", overrides=["epochs=2"])
    assert sup.settings(scfg) == {"supervised": asdict(direct)}
    assert asdict(sup.from_settings(sup.settings(scfg))) == asdict(direct)
    assert sup.schedule(scfg) == (2, 0) and not sup.cooperative and sup.data(scfg) == direct.data


def test_what_a_job_cannot_run_is_said_before_it_is_submitted():
    sup = methods.get("supervised")
    scfg = sup.load("cpu-small", ["batch_size=10"])
    sup.check_world(scfg, 2)
    with pytest.raises(
        ConfigError, match="batch_size=10 is the global batch and must split over the job's 3"
    ):
        sup.check_world(scfg, 3)
    swav = methods.get("swav")
    cfg = swav.load("tiny", ["optim.epochs=4", "run.keep_epoch_checkpoints=2"])
    swav.check_eval_epochs(cfg, [2])
    with pytest.raises(ValueError, match=r"eval epochs \[3, 4\]"):
        swav.check_eval_epochs(cfg, [2, 3, 4])
    with pytest.raises(KeyError, match="methods: swav, supervised"):
        methods.get("byol")
