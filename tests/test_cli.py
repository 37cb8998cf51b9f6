import re
import subprocess
import sys
from pathlib import Path

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


def test_ci_runs_the_readme_commands():
    readme = (REPO / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)\n```", readme, re.S)
    install_and_run, test_cmd = blocks[0].strip(), blocks[1].strip()
    ci = (REPO / ".ci" / "run").read_text()
    install = install_and_run.split(" && .venv/bin/swavbench")[0]
    assert install in ci and test_cmd in ci
