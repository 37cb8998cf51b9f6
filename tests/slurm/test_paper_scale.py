"""The paper suite as sbatch sees it (a stand-in sbatch keeps every script): resources are per node, CPUs
are split over the node's tasks, every script fits an 8-GPU / 96-CPU node and carries the requeue signal;
names and suite keys are checked before anything is submitted."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import yaml

from pretrain.config import ConfigError
from slurm.launch import Launcher
from slurm.suite import expand_sweep, load_suite

NODE = {"gpus": 8, "cpus": 96}


def stand_in_sbatch(bin_dir: Path) -> Path:
    """``sbatch`` keeping each script it is given; ``squeue`` that lists nothing."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    kept = bin_dir / "scripts"
    kept.mkdir()
    (bin_dir / "sbatch").write_text(
        "#!/bin/sh\n"
        f'n=$(ls {kept} | wc -l)\nfor a in "$@"; do last="$a"; done\ncp "$last" {kept}/$n.sh\n'
        'echo "Submitted batch job $((5000 + n))"\n'
    )
    (bin_dir / "squeue").write_text("#!/bin/sh\nexit 0\n")
    for f in ("sbatch", "squeue"):
        (bin_dir / f).chmod(0o755)
    return kept


def directives(script: str) -> dict[str, str]:
    return dict(re.findall(r"^#SBATCH --([\w-]+)(?:=(.*))?$", script, flags=re.M))


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
