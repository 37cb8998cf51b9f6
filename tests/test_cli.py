import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]


def test_help_for_every_subcommand(capsys):
    out = subprocess.run(
        [sys.executable, "-m", "swavbench", "--help"], cwd=REPO, capture_output=True, text=True
    )
    assert out.returncode == 0 and "pretrain" in out.stdout
    import swavbench

    for sub in ("pretrain", "pretrain-bench"):  # in this process: each process start costs seconds
        with pytest.raises(SystemExit) as done:
            swavbench.main([sub, "--help"])
        help_text = capsys.readouterr().out
        assert done.value.code == 0 and "--config" in help_text
        if sub == "pretrain":
            assert "rn50-800ep-bs4096" in help_text and "cpu-small" in help_text


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
    # and nothing else installs or runs: every command of .ci/run is setup or one of the README's two
    setup = ("set -euo pipefail", 'cd "$(dirname "$0")/.."', "rm -rf .venv", "export OMP_NUM_THREADS=2")
    lines = [ln.strip() for ln in ci.splitlines()[1:] if ln.strip() and not ln.lstrip().startswith("#")]
    assert [ln for ln in lines if ln not in (*setup, install, test_cmd)] == []


def test_a_command_line_that_tells_what_it_has(capsys):
    """Issue #35: --version, `presets` with every shipped preset and its description, "did you mean" for
    a misspelt subcommand, protocol, preset or key."""
    import swavbench
    from swavbench.core.record import code_commit

    with pytest.raises(SystemExit) as done:
        swavbench.main(["--version"])
    assert done.value.code == 0
    commit = code_commit()
    out = capsys.readouterr().out
    assert out.startswith("swavbench 0.") and (commit is None or commit in out)
    assert swavbench.main(["presets"]) == 0
    out = capsys.readouterr().out
    shipped = sorted(p.stem for p in (REPO / "configs").glob("*/*.yaml"))
    listed = re.findall(r"^  (\S+)  ", out, flags=re.M)
    assert sorted(listed) == shipped
    assert re.search(r"rn50-800ep-bs4096 +Paper's main result \(75\.3% linear top-1\)", out)
    for argv, wanted in (
        (["pretrian"], "did you mean pretrain"),
        (["eval", "knnn"], "did you mean knn"),
        (["pretrain", "--config", "cpu-smal", "--print-config"], "did you mean cpu-small?"),
        (
            ["pretrain", "--config", "tiny", "--print-config", "optim.base_lrr=1"],
            "did you mean optim.base_lr",
        ),
        (["eval", "knn", "--print-config", "tempreature=0.1"], "did you mean temperature?"),
    ):
        try:
            code = swavbench.main(argv)
        except SystemExit as e:  # argparse's own errors
            code = e.code
        assert code == 2 and wanted in capsys.readouterr().err, argv
