"""The paper suite as sbatch sees it (a stand-in sbatch keeps every script): resources are per node, CPUs
are split over the node's tasks, every script fits an 8-GPU / 96-CPU node and carries the requeue signal;
names and suite keys are checked before anything is submitted."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml
from sbatch_stub import directives, stand_in_sbatch

from slurm.launch import Launcher
from slurm.suite import expand_sweep, load_suite
from swavbench.core.config import ConfigError

NODE = {"gpus": 8, "cpus": 96}


def test_paper_pipeline_scripts_fit_an_8_gpu_node(tmp_path, monkeypatch):
    kept = stand_in_sbatch(tmp_path / "bin")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    with Launcher(tmp_path / "run", "slurm") as launcher:
        suite = load_suite("paper")
        planned = launcher.pipeline("rn50-800ep-bs4096", [], suite, resources=suite.pretrain)
    assert all(p.action == "submitted" for p in planned)
    scripts = [p.read_text() for p in sorted(kept.iterdir())]
    assert len(scripts) >= 2
    for script in scripts:
        d = directives(script)
        tasks, cpus = int(d.get("ntasks-per-node", 1)), int(d["cpus-per-task"])
        assert tasks * cpus <= NODE["cpus"], d  # was 8 x 80 = 640 CPUs per node for the pretraining
        assert int(d.get("gpus-per-node", 0)) <= NODE["gpus"], d
        assert d["signal"].startswith("USR2@"), d  # the warning the jobs save at before the time limit
    pretrain = directives(scripts[0])
    assert (pretrain["nodes"], pretrain["ntasks-per-node"], pretrain["cpus-per-task"]) == ("8", "8", "10")
    assert pretrain["gpus-per-node"] == "8"


def test_bad_names_and_suite_keys_are_refused_before_submission(tmp_path):
    job = {"protocol": "knn", "preset": "knn-cifar10-small"}
    cases = {
        "typo.yaml": {"name": "x", "jobz": [job]},
        "newline.yaml": {"name": "x", "jobs": [{**job, "name": "knn\n#SBATCH --wrap=rm"}]},
        "escape.yaml": {"name": "x", "jobs": [{**job, "name": "../../elsewhere"}]},
    }
    for file, raw in cases.items():
        (tmp_path / file).write_text(yaml.safe_dump(raw))
        with pytest.raises(ConfigError, match=r"unknown suite key\(s\) jobz|not a valid job name"):
            load_suite(str(tmp_path / file))
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump({"variants": [{"run.seed/../x": 1}]}))
    with pytest.raises(ConfigError, match="not a valid job name"):
        expand_sweep(tmp_path / "sweep.yaml")


def stand_in_sinfo(bin_dir: Path, lines: str) -> None:
    (bin_dir / "sinfo").write_text(f"#!/bin/sh\nprintf '{lines}'\n")
    (bin_dir / "sinfo").chmod(0o755)


def test_preflight_lists_every_problem_and_submits_nothing(tmp_path, monkeypatch, capsys):
    from swavbench import main

    kept = stand_in_sbatch(tmp_path / "bin")
    stand_in_sinfo(tmp_path / "bin", "gpu*|96|gpu:a100:8(S:0-1)|a100\\ncpu|64|(null)|(null)\\n")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    suite = {
        "name": "bad",
        "jobz": 1,  # a typo of a suite key
        "jobs": [
            {"protocol": "knn", "preset": "knn-cifar10-small", "name": "knn\n#SBATCH --wrap=rm"},
            {"protocol": "linear", "preset": "linear-cifar10-small", "overrides": ["epochz=3"]},
            {"protocol": "svm", "preset": "no-such-preset"},
            {
                "protocol": "knn",
                "preset": "knn-cifar10-small",
                "name": "far",
                "resources": {"partition": "big"},
            },
            {
                "protocol": "linear",
                "preset": "linear-cifar10-small",
                "name": "uneven",
                "resources": {"gpus": 3},
            },
        ],
        "pretrain_resources": {"gpus": 8, "cpus": 128},  # more CPUs than a node of the default partition
    }
    (tmp_path / "suite.yaml").write_text(yaml.safe_dump(suite))
    (tmp_path / "sweep.yaml").write_text(
        yaml.safe_dump({"variants": [{"optim.base_lrr": 1.0}, {"run.seed": 1}]})
    )
    rc = main(
        [
            "launch",
            "sweep",
            "--executor",
            "slurm",
            "--run-dir",
            str(tmp_path / "run"),
            "--suite",
            str(tmp_path / "suite.yaml"),
            "--sweep",
            str(tmp_path / "sweep.yaml"),
            "--config",
            "cpu-small",
        ]
    )
    err = capsys.readouterr().err
    assert rc == 2 and not list(kept.iterdir()) and not (tmp_path / "run" / "launch.json").exists(), err
    for expected in (
        "unknown suite key(s) jobz",
        "is not a valid job name",
        "unknown config key 'epochz'",
        "unknown preset 'no-such-preset'",
        "partition big not found; the cluster has cpu, gpu",
        "batch_size=256 is the global batch and must split over its 3 processes",
        "unknown config key 'optim.base_lrr'",
        "asks 128 CPUs and 8 GPUs per node; the largest node of partition gpu has 96 CPUs and 8 GPUs",
    ):
        assert expected in err, (expected, err)
    assert err.count("swavbench launch: error:") == 1  # one error listing them all


def test_sinfo_node_shapes_and_partition_lists():
    from slurm.preflight import Preflight, parse_sinfo
    from slurm.suite import Resources

    parts = parse_sinfo("gpu*|96|gpu:a100:8(S:0-1)|a100\ngpu*|64|gpu:a100:4|a100,ib\ncpu|32+|(null)|(null)\n")
    assert (parts["gpu"].cpus, parts["gpu"].gpus, parts["gpu"].default) == (96, 8, True)
    assert parts["gpu"].features == {"a100", "ib"} and parts["cpu"].cpus == 0  # "32+": sizes vary
    check = Preflight("slurm")
    check.resources = [
        ("fits", Resources(gpus=8, cpus=96)),
        ("list", Resources(gpus=4, cpus=200, partition="cpu,gpu")),  # the largest of the list: gpu, 96 CPUs
        ("unknown sizes", Resources(cpus=500, partition="cpu")),
    ]
    check.cluster_fit(parts)
    assert len(check.errors) == 1 and check.errors[0].startswith("list: asks 200 CPUs"), check.errors
    check = Preflight("slurm")
    check.resources = [("no default", Resources())]
    check.cluster_fit(parse_sinfo("a|8|(null)|(null)\n"))
    assert not check.errors and "no partition set" in check.warnings[0]


def test_preflight_says_when_the_reference_detection_backend_is_missing(monkeypatch):
    from slurm import preflight

    monkeypatch.setattr(preflight, "detectron2_available", lambda: False)
    check = preflight.Preflight("slurm")
    check.suite("paper")
    missing = [w for w in check.warnings if "backend detectron2 is not installed" in w]
    assert len(set(missing)) == 2 and "detection-voc0712-c4" in missing[0] and not check.errors  # one per job


def test_eval_arrays_run_one_task_per_gpu(tmp_path, monkeypatch):
    """Every evaluation of the paper suite starts one process per reserved GPU (the array's
    --ntasks-per-node), each with its share of the node's CPUs."""
    kept = stand_in_sbatch(tmp_path / "bin")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    from slurm.launch import eval_tasks
    from swavbench.core import registry

    with Launcher(tmp_path / "run", "slurm") as launcher:
        suite = load_suite("paper")
        launcher.suite(suite, "random")
        jobs = launcher.state["jobs"]
    scripts = {5000 + int(p.stem): directives(p.read_text()) for p in kept.iterdir()}
    for entry in suite.entries:
        (job,) = [j for j in jobs.values() if j["name"] == f"{entry.name}-s0"]
        d = scripts[int(job["job_id"].split("_")[0])]
        tasks = int(d.get("ntasks-per-node", 1))
        assert tasks == eval_tasks(entry), (entry.name, d)
        assert registry.get(entry.protocol).data_parallel
        assert tasks == entry.resources.gpus == int(d.get("gpus-per-node", 1)), (entry.name, d)
        assert tasks * int(d["cpus-per-task"]) <= NODE["cpus"], d
