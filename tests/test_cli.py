import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]


def test_help_for_every_subcommand():
    out = subprocess.run(
        [sys.executable, "-m", "swavbench", "--help"], cwd=REPO, capture_output=True, text=True
    )
    assert out.returncode == 0 and "pretrain" in out.stdout
    for sub in ("pretrain", "pretrain-bench"):
        res = subprocess.run(
            [sys.executable, "-m", "swavbench", sub, "--help"], cwd=REPO, capture_output=True, text=True
        )
        assert res.returncode == 0 and "--config" in res.stdout
    res = subprocess.run(
        [sys.executable, "-m", "swavbench", "pretrain", "--help"], cwd=REPO, capture_output=True, text=True
    )
    assert "rn50-800ep-bs4096" in res.stdout and "cpu-small" in res.stdout


def test_print_config_resolves_overrides():
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "swavbench",
            "pretrain",
            "--config",
            "tiny",
            "--print-config",
            "optim.epochs=9",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0 and re.search(r"^  epochs: 9$", res.stdout, re.M)


@pytest.mark.parametrize(
    ("group", "name", "preset", "override", "line"),
    [
        ("eval", "svm", "svm-voc07-lowshot", "low_shot_samples=3", "low_shot_samples: 3"),
        ("transfer", "detection", "detection-voc0712-c4", "iterations=100", "iterations: 100"),
    ],
)
def test_eval_and_transfer_print_their_resolved_config(group, name, preset, override, line):
    cmd = [sys.executable, "-m", "swavbench", group, name, "--config", preset, "--print-config", override]
    res = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    cfg = yaml.safe_load(res.stdout)
    assert re.search(rf"^{line}$", res.stdout, re.M) and cfg["trunk"]["arch"] == "resnet50"
    if name == "detection":  # the preset's values, resolved
        assert cfg["lr"] == 0.1 and cfg["warmup_factor"] == 0.333 and cfg["backend"] == "detectron2"
    missing = subprocess.run(cmd[:-2], cwd=REPO, capture_output=True, text=True)
    assert missing.returncode == 2 and "--checkpoint and --out required" in missing.stderr


def test_ci_runs_the_readme_commands():
    readme = (REPO / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)\n```", readme, re.S)
    install_and_run, test_cmd = blocks[0].strip(), blocks[1].strip()
    ci = (REPO / ".ci" / "run").read_text()
    install = install_and_run.split(" && .venv/bin/swavbench")[0]
    assert install in ci and test_cmd in ci
