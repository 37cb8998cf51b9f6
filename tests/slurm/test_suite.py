import pytest
import yaml

from slurm.suite import expand_sweep, load_suite, variant_name
from swavbench.core.config import ConfigError


def test_shipped_suites_load_with_resources():
    small, paper = load_suite("cpu-small"), load_suite("paper")
    every = ["knn", "linear", "semisup", "svm", "transfer-linear", "detection"]
    assert [e.protocol for e in small.entries] == every
    beyond = {
        "lowshot",
        "imagenet-variants",
        "transfer-logreg",
    }  # the protocols beyond the paper, at paper scale
    assert {e.protocol for e in paper.entries} == {*every, *beyond}  # COCO DETR: paper scale only
    assert {e.preset for e in paper.entries} >= {"linear-places205", "linear-inat18", "detection-voc0712-c4"}
    linear = next(e for e in paper.entries if e.preset == "linear-imagenet")
    assert linear.resources.gpus == 8 and linear.seeds == [0]


def test_bad_suites_are_clear(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"jobs": [{"protocol": "dance", "preset": "x"}]}))
    with pytest.raises(ConfigError, match="dance"):
        load_suite(str(bad))
    bad.write_text(
        yaml.safe_dump({"jobs": [{"protocol": "knn", "preset": "knn-imagenet", "resources": {"gpu": 1}}]})
    )
    with pytest.raises(ConfigError, match=r"resources.gpu.*resources.gpus"):
        load_suite(str(bad))
    with pytest.raises(ConfigError, match="unknown suite"):
        load_suite("no-such-suite")


def test_sweep_grid_expands_to_stable_readable_names(tmp_path):
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(
        yaml.safe_dump(
            {
                "grid": {"model.n_prototypes": [[30], [100]], "swav.epsilon": [0.02, 0.05]},
                "variants": [{"optim.epochs": 5}],
            }
        )
    )
    out = expand_sweep(sweep)
    assert [n for n, _ in out] == [
        "n_prototypes=30,epsilon=0.02",
        "n_prototypes=30,epsilon=0.05",
        "n_prototypes=100,epsilon=0.02",
        "n_prototypes=100,epsilon=0.05",
        "epochs=5",
    ]
    assert out == expand_sweep(sweep)  # stable
    assert out[0][1] == ["model.n_prototypes=[30]", "swav.epsilon=0.02"]
    assert variant_name({"swav.epsilon": 0.05, "model.arch": "resnet50w2"}) == "arch=resnet50w2,epsilon=0.05"
    assert len(expand_sweep("configs/sweeps/cpu-small-prototypes-epsilon.yaml")) == 4


def test_sweep_dry_run_plans_one_pipeline_per_variant(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "swavbench",
            "launch",
            "sweep",
            "--sweep",
            "configs/sweeps/cpu-small-prototypes-epsilon.yaml",
            "--suite",
            "cpu-small",
            "--run-dir",
            str(tmp_path),
            "--executor",
            "local",
            "--dry-run",
        ],
        cwd=repo,
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    pre = [ln for ln in lines if " pretrain " in ln]
    assert len(pre) == 4 and len(lines) == 4 * (1 + 6) and all(ln.startswith("dry-run") for ln in lines)
    for name in ("n_prototypes=30,epsilon=0.02", "n_prototypes=100,epsilon=0.05"):
        assert any(f"pretrain-{name}" in ln for ln in pre)
    assert not (tmp_path / "launch.json").exists()  # a dry run submits and records nothing
    paper = load_suite("paper")
    assert (paper.pretrain.nodes, paper.pretrain.gpus) == (8, 8)


def test_after_names_an_earlier_job_of_a_protocol_that_reads_one(tmp_path):
    bad = tmp_path / "bad.yaml"
    probe = {"protocol": "linear", "preset": "linear-imagenet", "name": "probe"}
    variants = {"protocol": "imagenet-variants", "preset": "imagenet-variants", "after": "probe"}
    for jobs, message in (
        ([variants, probe], r"after: 'probe' is not an earlier job of the suite \(none\)"),
        ([probe, {**variants, "after": "prob"}], r"'prob' is not an earlier job of the suite \(probe\)"),
        ([probe, {"protocol": "knn", "preset": "knn-imagenet", "after": "probe"}], "knn reads no other job"),
        ([{**probe, "seeds": [0, 1]}, {**variants, "seeds": [2]}], r"seeds \[2\] are not all seeds of probe"),
    ):
        bad.write_text(yaml.safe_dump({"jobs": jobs}))
        with pytest.raises(ConfigError, match=message):
            load_suite(str(bad))
    paper = load_suite("paper")
    (entry,) = [e for e in paper.entries if e.after]
    assert (entry.protocol, entry.after) == ("imagenet-variants", "linear-imagenet")
