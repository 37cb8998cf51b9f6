"""The pretraining methods a pipeline runs: SwAV and the supervised baseline, one entry each (how a preset
loads, the settings frozen into the job and its run folder, the schedule, the data, the run function and
how it meets the scheduler's signal). Launch, preflight and the main job read the entry by name instead of
branching on the method."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from swavbench.core.config import ConfigError


class Method:
    """One pretraining method. Each trains on the one step loop (swavbench.core.epochs), so it saves at the
    scheduler's signal and its job requeues itself."""

    name = ""

    def load(self, preset: str, overrides: list[str]) -> Any:
        """The resolved, validated config of a preset (configs/<method>/ or a YAML path) with overrides."""
        raise NotImplementedError

    def settings(self, cfg: Any) -> dict:
        """The config as frozen at launch: the job runs it, and its hash is the pretraining's key."""
        raise NotImplementedError

    def from_settings(self, settings: dict) -> Any:
        raise NotImplementedError

    def upgrade(self, settings: dict) -> dict:
        """Settings frozen by an older version (a run folder's settings.json) in today's layout."""
        return settings

    def schedule(self, cfg: Any) -> tuple[int, int]:
        """(epochs, iteration cap or 0): when the run's final checkpoint is done."""
        raise NotImplementedError

    def data(self, cfg: Any) -> str:
        """The training images (a path under the data root, or a synthetic / automatic choice)."""
        raise NotImplementedError

    def check_world(self, cfg: Any, world_size: int) -> None:
        """ConfigError when the config cannot run as ``world_size`` processes."""

    def check_eval_epochs(self, cfg: Any, epochs: list[int]) -> None:
        """ValueError when intermediate checkpoints of ``epochs`` will not be kept (nothing to check where
        the method evaluates only its final checkpoint)."""

    def run(self, cfg: Any, out_dir: str | Path) -> Path:
        """Train (resuming from ``out_dir``) and return the final checkpoint."""
        raise NotImplementedError

    def conflicts(self, ckpt: dict, cfg: Any) -> list[str]:
        """``key: held -> wanted`` for what makes the checkpoint ``ckpt`` another configuration than ``cfg``
        (resuming it would make a hybrid; counting it as done would evaluate the wrong run)."""
        raise NotImplementedError


class Swav(Method):
    name = "swav"

    def load(self, preset, overrides):
        from pretrain.config import load_config

        return load_config(preset, overrides)

    def settings(self, cfg):
        return cfg.to_dict()

    def from_settings(self, settings):
        from pretrain.config import config_from_dict

        return config_from_dict(settings).validate()

    def schedule(self, cfg):
        return cfg.optim.epochs, cfg.run.max_iters

    def data(self, cfg):
        return cfg.data.path

    def check_world(self, cfg, world_size):
        from pretrain.config import plan_batch

        plan_batch(cfg, world_size)

    def check_eval_epochs(self, cfg, epochs):
        keep = cfg.run.keep_epoch_checkpoints
        bad = [e for e in epochs if not keep or e % keep or not 0 < e < cfg.optim.epochs]
        if bad:
            raise ValueError(
                f"eval epochs {bad}: the run keeps ckp-<epoch>.pth every run.keep_epoch_checkpoints={keep} "
                f"epochs below optim.epochs={cfg.optim.epochs}; set run.keep_epoch_checkpoints to divide them"
            )

    def run(self, cfg, out_dir):
        from pretrain.train import pretrain

        return pretrain(cfg, out_dir, resume=True, progress=False)

    def conflicts(self, ckpt, cfg):
        from pretrain.train import resume_conflicts

        if "config" not in ckpt or ckpt.get("supervised"):
            return ["a SwAV run's config: the checkpoint holds none (not a SwAV pretraining of this harness)"]
        return resume_conflicts(ckpt["config"], cfg)


class Supervised(Method):
    name = "supervised"

    def load(self, preset, overrides):
        from pretrain.supervised import CONFIG_DIR, SupervisedConfig
        from swavbench.core.config import load_dataclass

        return load_dataclass(SupervisedConfig, CONFIG_DIR, preset, overrides=overrides)

    def settings(self, cfg):
        return {"supervised": asdict(cfg)}

    def from_settings(self, settings):
        from pretrain.supervised import SupervisedConfig
        from swavbench.core.config import dataclass_from_dict

        return dataclass_from_dict(SupervisedConfig, self.upgrade(settings)["supervised"])

    def upgrade(self, settings):
        from pretrain.supervised import upgrade

        return (
            {**settings, "supervised": upgrade(settings["supervised"])}
            if "supervised" in settings
            else settings
        )

    def schedule(self, cfg):
        return cfg.optim.epochs, 0

    def data(self, cfg):
        return cfg.data.path

    def check_world(self, cfg, world_size):
        if cfg.optim.global_batch % world_size:
            raise ConfigError(
                f"optim.global_batch={cfg.optim.global_batch} must split over the job's "
                f"{world_size} processes"
            )

    def run(self, cfg, out_dir):
        from pretrain.supervised import train_supervised

        return train_supervised(cfg, out_dir, resume=True, progress=False)

    def conflicts(self, ckpt, cfg):
        from swavbench.core.config import differences

        if not ckpt.get("supervised"):
            return ["supervised: the checkpoint is not a supervised run"]
        return differences(ckpt.get("config", {}), {"model": asdict(cfg.model)})


METHODS: dict[str, Method] = {m.name: m for m in (Swav(), Supervised())}


def get(name: str) -> Method:
    """The entry of ``name``, or a KeyError listing every method."""
    if name not in METHODS:
        raise KeyError(f"unknown pretraining method {name!r}; methods: {', '.join(METHODS)}")
    return METHODS[name]
