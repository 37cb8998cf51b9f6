"""Where real clusters differ from the local one: an older SLURM (no ``squeue --me``), a suite name that
would break the ``#SBATCH`` block, a damaged ``launch.json``. Each is refused or handled before anything
is submitted."""

from __future__ import annotations

import getpass
import json
import os
from pathlib import Path

import pytest
import yaml

import swavbench
from slurm.launch import Launcher
from slurm.scheduler import Scheduler
from slurm.suite import load_suite
from swavbench.core.config import ConfigError


def test_squeue_asks_for_this_users_jobs_without_me(tmp_path, monkeypatch):
    """``squeue --me`` needs SLURM >= 20.11; ``-u USER`` works on every version."""
    args = tmp_path / "squeue-args"
    squeue = tmp_path / "bin" / "squeue"
    squeue.parent.mkdir()
    squeue.write_text(f'#!/bin/sh\necho "$@" > {args}\necho "77|RUNNING|swavbench-t"\n')
    squeue.chmod(0o755)
    monkeypatch.setenv("PATH", f"{squeue.parent}{os.pathsep}{os.environ['PATH']}")
    assert Scheduler("slurm").is_live("77", tag="swavbench-t")
    called = args.read_text().split()
    assert "--me" not in called and called[called.index("-u") + 1] == getpass.getuser()


def test_a_suite_name_that_would_break_the_sbatch_block_is_refused(tmp_path, capsys):
    path = tmp_path / "suite.yaml"
    job = {"protocol": "knn", "preset": "knn-cifar10-small"}
    path.write_text(yaml.safe_dump({"name": "s\n#SBATCH --wrap=touch /tmp/owned", "jobs": [job]}))
    with pytest.raises(ConfigError, match="suite name .* is not a valid job name"):
        load_suite(str(path))
    run = tmp_path / "run"
    argv = ["launch", "suite", "--suite", str(path), "--checkpoint", "random", "--run-dir", str(run)]
    assert swavbench.main([*argv, "--executor", "local"]) == 2
    assert "suite name" in capsys.readouterr().err and not (run / "launch.json").exists()


def test_a_damaged_launch_state_is_named_with_its_fix(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "launch.json").write_text("{")
    assert swavbench.main(["status", str(run)]) == 2
    err = capsys.readouterr().err
    assert f"{run / 'launch.json'} is damaged" in err and "move it aside" in err and "Traceback" not in err
    with pytest.raises(ValueError, match="nothing was submitted"):
        Launcher(run, "local")
    (run / "launch.json").write_text(json.dumps({"jobs": []}))
    with pytest.raises(ValueError, match="no 'jobs' mapping"):
        Launcher(run, "local")
    assert Path(run / "launch.json").read_text() == json.dumps({"jobs": []})  # left as it was


def test_a_checkpoint_without_settings_is_compared_by_its_own_config(tmp_path, generated_data):
    """A pretraining folder without settings.json (older, or copied by hand): its checkpoint's stored config
    decides whether it is this configuration's run, so another configuration's finished run is not
    counted as done (nor resumed as a hybrid)."""
    from pretrain.config import load_config
    from pretrain.train import pretrain
    from slurm.launch import ConfigConflict

    over = [f"data.path={generated_data}", "optim.epochs=1"]
    run = tmp_path / "run"
    pretrain(load_config("tiny", over), run / "pretrain", progress=False)
    assert not (run / "pretrain" / "settings.json").exists()
    launcher = Launcher(run, "local", dry_run=True)
    with pytest.raises(ConfigConflict, match=r"model.n_prototypes: \[30\] -> \[40\].*Nothing was submitted"):
        launcher.check_pretrain("tiny", [*over, "model.n_prototypes=[40]"])
    launcher.check_pretrain("tiny", [*over, "data.num_workers=0"])  # the same run (a resumable change)
    with pytest.raises(ConfigConflict, match="not a supervised run"):
        launcher.check_pretrain("cpu-small", ["epochs=1"], method="supervised")
