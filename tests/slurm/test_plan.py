"""A launch resolves each job's config once (slurm.plan): preflight, the launch keys and the jobs read the
same resolved config. Counted here at the two places configs are resolved: a protocol preset and a
pretraining method's preset."""

from __future__ import annotations

from pathlib import Path

import pytest

import swavbench
from pretrain import methods
from swavbench.core import registry


@pytest.fixture
def resolutions(monkeypatch) -> list[str]:
    seen: list[str] = []
    protocol_load = registry.Protocol.load_config

    def count_protocol(self, preset, overrides=()):
        seen.append(f"{self.name} {preset}")
        return protocol_load(self, preset, overrides)

    monkeypatch.setattr(registry.Protocol, "load_config", count_protocol)
    for cls in (methods.Swav, methods.Supervised):

        def count_method(self, preset, overrides, load=cls.load):
            seen.append(f"{self.name} {preset}")
            return load(self, preset, overrides)

        monkeypatch.setattr(cls, "load", count_method)
    return seen


def planned_lines(out: str) -> list[str]:
    return [ln for ln in out.splitlines() if ln.startswith("dry-run")]


def test_launch_suite_dry_run_resolves_each_job_once(tmp_path, capsys, resolutions):
    argv = ["launch", "suite", "--suite", "cpu-small", "--checkpoint", "random", "--run-dir", str(tmp_path)]
    assert swavbench.main([*argv, "--dry-run"]) == 0
    jobs = planned_lines(capsys.readouterr().out)
    assert len(jobs) == 6 and len(resolutions) == len(jobs), resolutions


def test_pipeline_and_main_job_dry_runs_resolve_each_job_once(tmp_path, capsys, resolutions):
    argv = ["launch", "pipeline", "--suite", "cpu-small", "--config", "tiny", "--run-dir", str(tmp_path)]
    assert swavbench.main([*argv, "--dry-run"]) == 0
    jobs = planned_lines(capsys.readouterr().out)
    assert len(jobs) == 7 and len(resolutions) == len(jobs), resolutions
    resolutions.clear()
    assert swavbench.main(["run", "--dry-run", "--seeds", "2", "--out", str(tmp_path / "main")]) == 0
    jobs = planned_lines(capsys.readouterr().out)
    # per seed: SwAV and supervised pretraining, the suite's 6 jobs on SwAV, its 5 that rank (not the
    # detection smoke check) on each control trunk
    assert len(jobs) == 2 * (2 + 6 + 2 * 5) and len(resolutions) == len(jobs), sorted(resolutions)


def test_the_data_root_is_a_field_of_the_plan_that_preflight_and_the_jobs_read(tmp_path, monkeypatch):
    """The environment is the user's input when a plan is made; from then on preflight checks the datasets
    and the launcher hands the jobs the plan's root, whatever the environment says later."""
    from slurm.launch import Launcher
    from slurm.plan import Plan
    from slurm.preflight import Preflight
    from slurm.suite import Resources, Suite, SuiteEntry

    monkeypatch.setenv("SWAVBENCH_DATA", str(tmp_path / "user-root"))
    plan = Plan()
    assert plan.data_root == (tmp_path / "user-root").resolve()
    monkeypatch.setenv("SWAVBENCH_DATA", str(tmp_path / "elsewhere"))
    check = Preflight("local", plan=plan)
    entry = SuiteEntry("knn", "knn-cifar10-small", name="knn", resources=Resources(gpus=0))
    check.suite(Suite("one", "a kNN job", [entry]))
    assert check.warnings and all(str(tmp_path / "user-root" / "cifar10-subset") in w for w in check.warnings)
    launcher = Launcher(tmp_path / "run", "local", dry_run=True, plan=plan)
    assert launcher.data_root == str(plan.data_root)


def test_a_detr_job_named_detection_keeps_the_key_and_folder_of_a_detr_job(tmp_path):
    """DETR is a backend of detection now: a suite job ``protocol: detection`` with a DETR preset has the
    launch key (and so the folder) the same job had as ``protocol: detr``, so a relaunch of a paper suite
    launched before finds its DETR job instead of submitting it again."""
    from dataclasses import asdict

    from slurm.launch import Launcher, stable_hash
    from slurm.suite import Resources, Suite, SuiteEntry

    planned = {}
    for name in ("detection", "detr"):
        entry = SuiteEntry(name, "detr-coco", name="detr-coco", resources=Resources(gpus=0))
        launcher = Launcher(tmp_path / name, "local", dry_run=True)
        (planned[name],) = launcher.suite(Suite("one", "COCO DETR", [entry]), "random")
    cfg = registry.get("detr").load_config("detr-coco", ["seed=0"])
    assert planned["detection"].key == planned["detr"].key == stable_hash(["random", "detr", asdict(cfg), 0])
    assert Path(planned["detection"].out_dir).name == Path(planned["detr"].out_dir).name
