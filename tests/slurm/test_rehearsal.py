"""The paper path rehearsed on the real local SLURM cluster: the paper suite's own pipeline (pretraining
then every evaluation, with afterok), scaled to this machine by ``--rehearse``, runs every job with 2
processes in one group and fills every cell of Tables 1-3 the suite covers."""

from __future__ import annotations

import json
from pathlib import Path

from process_helpers import cli

from slurm.suite import load_suite
from swavbench.checks.rehearsal import LABEL, TASKS
from transfer.detection_config import detectron2_available


def test_paper_pipeline_rehearsal_on_the_local_cluster(slurm_cluster, tmp_path):
    run = tmp_path / "rehearsal"
    res = cli(
        "launch",
        "pipeline",
        "--suite",
        "paper",
        "--config",
        "rn50-800ep-bs4096",
        "--run-dir",
        str(run),
        "--executor",
        "slurm",
        "--rehearse",
        timeout=1800,
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-6000:]
    paper = load_suite("paper")
    jobs = sum(len(e.seeds[:1]) for e in paper.entries) + 1  # every entry once, and the pretraining
    assert f"rehearsal of {jobs} jobs: ok" in res.stdout
    records = [json.loads(p.read_text()) for p in (run / "evals").glob("*/result.json")]
    assert len(records) == len(paper.entries)
    assert {r["benchmark"] for r in records} == {
        "linear",
        "knn",
        "semisup-1pct",
        "semisup-10pct",
        "svm",
        "svm-lowshot",
        "detection-frcnn-c4",
        "detection-maskrcnn-fpn",
        "detection-detr",
        "lowshot",
        "imagenet-variants",
        "transfer-logreg",
    }
    datasets = {"imagenet", "voc07", "places205", "inat18", "voc0712", "coco", "transfer-12"}
    assert {r["dataset"] for r in records} == datasets
    # ImageNet-ReaL / V2 / A / R read the head of the probe of this pipeline, submitted after it
    (variants,) = [r for r in records if r["protocol"] == "imagenet-variants"]
    assert (
        Path(variants["config"]["head"]).parent == run / "evals"
        and "linear-imagenet" in variants["config"]["head"]
    )
    assert set(variants["metrics"]) == {"val_top1", "real_top1", "v2_top1", "a_top1", "r_top1"}
    # the rehearsal rehearses the detection backend this host has, and says so when it is not the preset's
    backend = "detectron2" if detectron2_available() else "torchvision"
    detection = [r for r in records if r["protocol"] == "detection"]  # COCO DETR is detection's too
    assert [r["config"]["backend"] for r in detection].count("transformers") == 1
    assert sorted(r["config"]["backend"] for r in detection) == sorted([backend, backend, "transformers"])
    assert ("rehearsed on the torchvision backend" in res.stdout) == (backend == "torchvision")
    for rec in records:
        assert rec["status"] == "ok" and rec["world_size"] == TASKS and rec["model"] == LABEL, rec.get(
            "error"
        )
    settings = json.loads((run / "pretrain" / "settings.json").read_text())["settings"]
    assert settings["optim"]["global_batch"] == 4096 and settings["optim"]["lr_scaling"] == "linear"
    plan = (run / "pretrain" / "config.yaml").read_text()
    assert f"world_size: {TASKS}" in plan  # the pretraining ran as 2 processes too
    # the sbatch scripts: one task per process of every job, the evaluations after the pretraining
    scripts = [p.read_text() for p in (run / "submitit").rglob("*_submission.sh")]
    assert scripts and all(f"--ntasks-per-node={TASKS}" in s for s in scripts)
    assert sum("--dependency=afterok:" in s for s in scripts) >= 1
    assert Path(run / "rehearsal-data" / "imagenet" / "subsets" / "1pct.txt").is_file()
