"""Weights & Biases logging (issue #35 item 3), offline (WANDB_MODE=offline: no account, no network): the
pretraining's curves and the W&B run id in its checkpoint, so a resumed run continues the same W&B run; an
evaluation's curves and metrics into one group, its run id kept in its folder; the same curves in
TensorBoard. The offline run files are read back here with a reader of their record format."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import swavbench
from pretrain.config import load_config
from pretrain.train import pretrain
from swavbench.core.state import load_checkpoint
from swavbench.core.tracking import GROUP_ENV, PROJECT_ENV


def wandb_records(path: Path):
    """The records of an offline ``run-<id>.wandb`` file: a 7-byte header, then LevelDB-log records
    (crc32, length, type; blocks of 32 KiB) holding W&B's Record protobufs."""
    from wandb.proto import wandb_internal_pb2 as pb

    data, pos, block, buf = path.read_bytes(), 7, 32768, b""
    while pos + 7 <= len(data):
        left = block - pos % block
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7]) if left >= 7 else (0, 0, 0)
        if left < 7 or (length == 0 and kind == 0):  # block trailer or padding
            pos += left
            continue
        chunk, pos = data[pos + 7 : pos + 7 + length], pos + 7 + length
        buf = chunk if kind in (1, 2) else buf + chunk  # full / first, else middle / last
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(buf)
            yield record


def offline_runs(folder: Path) -> list[dict]:
    """Each offline run under ``folder/wandb``: id, group, job type, history {step: {key: value}}, summary."""
    runs = []
    for f in sorted(folder.glob("wandb/offline-run-*/run-*.wandb")):
        run = {"history": {}, "summary": {}}
        for r in wandb_records(f):
            kind = r.WhichOneof("record_type")
            if kind == "run":
                run.update(id=r.run.run_id, group=r.run.run_group, job_type=r.run.job_type)
            elif kind == "history":
                items = {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in r.history.item}
                run["history"][items.pop("_step")] = {k: v for k, v in items.items() if not k.startswith("_")}
            elif kind == "summary":
                for i in r.summary.update:
                    run["summary"][i.key or "/".join(i.nested_key)] = json.loads(i.value_json)
        runs.append(run)
    return runs


@pytest.fixture
def offline(monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    for name in (PROJECT_ENV, GROUP_ENV):  # set then removed: whatever a test sets is undone after it
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)


def test_pretraining_logs_to_wandb_and_a_resumed_run_continues_the_same_run(
    tmp_path, generated_data, offline
):
    out = tmp_path / "pre"
    common = [f"data.path={generated_data}", "run.wandb=swav-bench-tests", "run.log_every_iters=2"]
    pretrain(load_config("tiny", [*common, "optim.epochs=1"]), out, progress=False)
    first_id = load_checkpoint(out / "checkpoint.pth")["wandb_id"]
    pretrain(load_config("tiny", [*common, "optim.epochs=2"]), out, resume=True, progress=False)
    assert load_checkpoint(out / "checkpoint.pth")["wandb_id"] == first_id != ""
    runs = offline_runs(out)
    assert [r["id"] for r in runs] == [first_id, first_id]  # the resumed run continued it
    assert {r["job_type"] for r in runs} == {"pretrain"} and runs[0]["group"] == tmp_path.name
    logged = {step: h["train/loss"] for r in runs for step, h in r["history"].items()}
    log = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
    assert logged == pytest.approx({r["iteration"]: r["loss"] for r in log})  # every logged point, both runs


def test_an_evaluation_logs_its_curves_and_metrics_and_keeps_its_run_id(tmp_path, generated_data, offline):
    g = generated_data.parent
    out = tmp_path / "runs" / "probe"
    argv = ["--wandb", "swav-bench-tests", "eval", "linear", "--checkpoint", "random", "--config"]
    overrides = [f"train={g / 'train'}", f"val={g / 'val'}", "num_workers=0", "trunk.width_multiplier=0.125"]
    assert swavbench.main([*argv, "linear-cifar10-small", "--out", str(out), *overrides, "epochs=3"]) == 0
    record = json.loads((out / "result.json").read_text())
    (run,) = offline_runs(out)
    assert run["job_type"] == "linear" and run["id"] == (out / "wandb_id").read_text().strip()
    assert run["group"] == "runs"  # one group per run directory (launches set it to theirs)
    assert run["summary"]["top1_best_epoch"] == pytest.approx(record["metrics"]["top1_best_epoch"])
    assert sorted(run["history"]) == [1, 2, 3]  # one point per epoch
    best = max(h["val/top1_best_head"] for h in run["history"].values())
    assert best == pytest.approx(record["metrics"]["top1_best_epoch"])
    tb = EventAccumulator(str(out / "tensorboard"))
    tb.Reload()
    assert [e.step for e in tb.Scalars("train/loss_per_head")] == [1, 2, 3]
    losses = [e.value for e in tb.Scalars("train/loss_per_head")]
    assert losses == pytest.approx([run["history"][s]["train/loss_per_head"] for s in (1, 2, 3)], rel=1e-6)
    # the job again into the same folder (as a requeued job): the same W&B run
    assert swavbench.main([*argv, "linear-cifar10-small", "--out", str(out), *overrides, "epochs=3"]) == 0
    assert [r["id"] for r in offline_runs(out)] == [run["id"]] * 2
    assert PROJECT_ENV not in os.environ  # the command's --wandb ended with it


def test_launched_jobs_join_the_group_of_their_own_run_directory(
    tmp_path, generated_data, offline, monkeypatch
):
    """Two launches from one process (as a notebook or a sweep script makes them): each run directory is its
    own W&B group, and nothing is left in this process' environment."""
    from slurm.launch import Launcher
    from slurm.suite import Resources, Suite, SuiteEntry

    g = generated_data.parent
    monkeypatch.setenv(PROJECT_ENV, "swav-bench-tests")
    over = [
        f"train={g / 'train'}",
        f"val={g / 'val'}",
        "num_workers=0",
        "trunk.width_multiplier=0.125",
        "ks=[5]",
    ]
    entry = SuiteEntry("knn", "knn-cifar10-small", name="knn", overrides=over, resources=Resources(cpus=1))
    for run in ("sweep-a", "sweep-b"):
        launcher = Launcher(tmp_path / run, "debug")  # the debug executor runs the job in this process
        (planned,) = launcher.suite(Suite("one", "", [entry]), "random")
        assert set(launcher.wait().values()) == {"ok"}
        launcher.close()
        (wandb_run,) = offline_runs(Path(planned.out_dir))
        assert wandb_run["group"] == run
    assert GROUP_ENV not in os.environ
