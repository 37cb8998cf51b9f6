"""``swavbench run`` end to end on the tiny preset under the local executor, on a small copy of the shared
data: the report has the three rows (swav, supervised, random) and every protocol's column; a run killed
midway continues when re-run (finished jobs are not redone); a finished run re-run submits nothing."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared" / "data"
pytestmark = pytest.mark.skipif(not (SHARED / "bccd").is_dir(), reason=f"shared data not found at {SHARED}")


def copy_first(src: Path, dst: Path, n: int) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    for f in sorted(src.iterdir())[:n]:
        shutil.copy(f, dst / f.name)


@pytest.fixture(scope="module")
def mini_shared(tmp_path_factory) -> Path:
    """cifar10-subset (10 classes x 6/3), scene15 (3 classes x 5/3) and bccd (8 trainval, 3 test) copies."""
    root = tmp_path_factory.mktemp("mini") / "data"
    for split, n in (("train", 6), ("val", 3)):
        for c in sorted((SHARED / "cifar10-subset" / split).iterdir()):
            copy_first(c, root / "cifar10-subset" / split / c.name, n)
        for c in sorted((SHARED / "scene15" / split).iterdir())[:3]:
            copy_first(c, root / "scene15" / split / c.name, 5 if split == "train" else 3)
    bccd = root / "bccd"
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (bccd / sub).mkdir(parents=True)
    splits = {s: (SHARED / "bccd/ImageSets/Main" / f"{s}.txt").read_text().split() for s in ("train", "test")}

    def names(i: str) -> str:
        return (SHARED / "bccd/Annotations" / f"{i}.xml").read_text()

    train = splits["train"][:6]
    for cls in ("RBC", "WBC", "Platelets"):  # the SVM needs a negative image of every class
        if all(f"<name>{cls}</name>" in names(i) for i in train):
            train.append(next(i for i in splits["train"] if f"<name>{cls}</name>" not in names(i)))
    ids = {"train": train, "test": splits["test"][:3]}
    ids["trainval"] = ids["train"]
    for s, names in ids.items():
        (bccd / "ImageSets/Main" / f"{s}.txt").write_text("\n".join(names) + "\n")
        for i in names:
            shutil.copy(SHARED / "bccd/Annotations" / f"{i}.xml", bccd / "Annotations")
            shutil.copy(SHARED / "bccd/JPEGImages" / f"{i}.jpg", bccd / "JPEGImages")
    return root


def swavbench(*args: str, cwd: Path = REPO, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "swavbench", *args], cwd=cwd, capture_output=True, text=True, **kw
    )


def records(jobs: Path) -> dict[str, float]:
    return {str(p): p.stat().st_mtime for p in jobs.glob("evals/*/result.json")}


def test_run_end_to_end_resume_and_idempotence(mini_shared, tmp_path):
    out = tmp_path / "main"
    args = ["run", "--config", "tiny", "--out", str(out), "--data-root", str(mini_shared), "--no-progress"]
    elsewhere = tmp_path / "cwd"  # swavbench run works from any working directory
    elsewhere.mkdir()
    # 1. start, and kill the whole process group once some evaluations have finished (as Ctrl-C would)
    proc = subprocess.Popen(
        [sys.executable, "-m", "swavbench", *args],
        cwd=elsewhere,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 600
    while len(records(out / "jobs")) < 3 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    before = records(out / "jobs")
    assert before, "no evaluation finished before the kill"
    # 2. re-run: continues, does not redo what finished
    res = swavbench(*args, cwd=elsewhere, timeout=900)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    after = records(out / "jobs")
    # 3 trunks x 5 ranking protocols, and the detection smoke check on the SwAV trunk only (it ranks nothing)
    assert len(after) == 3 * 5 + 1
    smoke = [json.loads(Path(p).read_text()) for p in after if "detection" in p]
    assert [r["model"] for r in smoke] == ["swav"]
    assert all(after[p] == t for p, t in before.items())  # records written before the kill were kept
    for table_row in ("swav", "supervised", "random"):
        assert (
            f"\n{table_row} " in res.stdout
            or f"\n| {table_row} " in res.stdout
            or f" {table_row} " in res.stdout
        )
    md = (out / "report" / "report.md").read_text()
    for column in (
        "knn cifar10-subset k20_top1",
        "linear cifar10-subset top1",
        "semisup cifar10-subset top1",
        "svm bccd mAP",
        "linear scene15 top1",
        "detection-frcnn-c4 bccd AP50",
    ):
        assert column in md, column
    for model in ("swav", "supervised", "random"):
        assert f"| {model} |" in md, model
    assert (out / "report" / "report.html").is_file()
    # the verdicts, every protocol: one seed ranks nothing; the 20-iteration detection is a smoke check
    verdicts = res.stdout.split("SwAV vs random vs supervised (mean")[1].splitlines()[1:7]
    assert len(verdicts) == 6 and all(" -> " in v for v in verdicts), verdicts
    assert sum("1 seed: no verdict" in v for v in verdicts) == 5
    assert any(v.strip().startswith("detection-frcnn-c4 bccd AP50") and "smoke check" in v for v in verdicts)
    assert md.index("SwAV vs random vs supervised") < md.index("Smoke checks") < md.index("Table 1")
    # 3. re-run once more: nothing is submitted, the report is printed again
    state = json.loads((out / "jobs" / "launch.json").read_text())
    res = swavbench(*args, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert json.loads((out / "jobs" / "launch.json").read_text()) == state
    assert records(out / "jobs") == after and "| swav |" in (out / "report" / "report.md").read_text()


def test_dry_run_paper_prints_the_graph_and_gpu_hours(tmp_path):
    res = swavbench(
        "run",
        "--config",
        "paper",
        "--executor",
        "local",
        "--out",
        str(tmp_path / "p"),
        "--dry-run",
        "--no-progress",
        timeout=300,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert "swav-s0" in res.stdout and "supervised-s0" in res.stdout and "random-" in res.stdout
    assert "GPU-hours" in res.stdout
    assert not (tmp_path / "p" / "jobs" / "swav-s0").exists()
    # VOC07+12 detection is published as the mean of 5 runs: each trunk gets the suite's 5, not one (the
    # random control runs the frozen-feature protocols only at this scale)
    for trunk, runs in (("swav", 5), ("supervised", 5), ("random", 0)):
        voc = [ln for ln in res.stdout.splitlines() if f" {trunk}-detection-voc0712-c4-p0-s" in ln]
        assert len(voc) == runs, (trunk, voc)


def test_paper_dry_run_random_control_and_gpu_hours_by_trunk_and_protocol(tmp_path, capsys):
    """At paper scale the random control runs the frozen-feature protocols only (unless asked for more), and
    the dry run says where the GPU-hours go."""
    import swavbench as cli
    from slurm.suite import load_suite
    from swavbench.core import registry

    out = ["--executor", "local", "--out", str(tmp_path / "p"), "--dry-run", "--no-progress"]
    assert cli.main(["run", "--config", "paper", *out]) == 0
    text = capsys.readouterr().out
    frozen = {e.name for e in load_suite("paper").entries if not registry.get(e.protocol).fine_tunes}
    random_jobs = {
        ln.split()[2].removeprefix("random-").rsplit("-s", 1)[0]
        for ln in text.splitlines()
        if ln.startswith("dry-run") and " random-" in ln
    }
    assert random_jobs == frozen and len(frozen) == 9, random_jobs  # 6 of the paper's, 3 beyond it
    assert "random-imagenet-variants" in text  # after the random trunk's own linear probe
    line = text.split("GPU-hours by trunk: ")[1].splitlines()[0]
    by_trunk = dict(kv.rsplit(" ", 1) for kv in line.split(", "))
    # the random trunk's bound, summed here from the suite's resources (gpus x nodes x time limit per run)
    suite = load_suite("paper")
    hours = sum(
        e.resources.gpus * e.resources.nodes * e.resources.time_min / 60 * len(e.seeds)
        for e in suite.entries
        if e.name in frozen
    )
    assert float(by_trunk["random"]) == pytest.approx(hours, abs=0.5)
    assert "GPU-hours by protocol: pretraining" in text
    assert cli.main(["run", "--config", "paper", *out, "random_protocols=every"]) == 2
    assert "random_protocols must be all or frozen" in capsys.readouterr().err


def test_supervised_baseline_from_a_published_file(mini_shared, tmp_path, capsys):
    """supervised_checkpoint: the baseline is a trunk file (torchvision layout, as the published ResNet-50),
    evaluated under the supervised label without pretraining one; a missing file stops before submission."""
    import torch

    import swavbench as cli
    from pretrain.config import load_config
    from pretrain.model import build_trunk

    m = load_config("tiny").model
    trunk = build_trunk(m.arch, small_stem=m.small_stem, width_multiplier=m.width_multiplier)
    torch.save(trunk.state_dict(), tmp_path / "resnet-sup.pth")
    suite = tmp_path / "knn.yaml"
    job = {"protocol": "knn", "preset": "knn-cifar10-small", "overrides": ["num_workers=0"]}
    suite.write_text(json.dumps({"name": "knn", "jobs": [job]}))
    opts = ["run", "--config", "tiny", "--data-root", str(mini_shared), "--no-progress"]
    overrides = [f"suite={suite}", "random=false"]
    missing = f"supervised_checkpoint={tmp_path / 'none.pth'}"
    assert cli.main([*opts, "--out", str(tmp_path / "x"), *overrides, missing]) == 2
    assert "supervised_checkpoint" in capsys.readouterr().err
    assert not (tmp_path / "x" / "jobs" / "launch.json").exists()
    given = f"supervised_checkpoint={tmp_path / 'resnet-sup.pth'}"
    res = swavbench(*opts, "--out", str(tmp_path / "m"), *overrides, given, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    jobs = tmp_path / "m" / "jobs"
    assert not (jobs / "supervised-s0").exists()  # nothing pretrained for the baseline
    recs = [json.loads(p.read_text()) for p in jobs.glob("evals/*/result.json")]
    by_model = {r["model"]: r for r in recs}
    assert set(by_model) == {"swav", "supervised"} and all(r["status"] == "ok" for r in recs)
    assert by_model["supervised"]["checkpoint"] == str(tmp_path / "resnet-sup.pth")
