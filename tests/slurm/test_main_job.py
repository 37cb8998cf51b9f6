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
    assert len(after) == 3 * 6  # 3 trunks x 6 protocols
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
