"""Crash safety of pretraining runs: a crash anywhere inside a checkpoint rotation, an unreadable latest
checkpoint or a torn log line never restarts a run from scratch, and resuming gives the loss trajectory
of an uninterrupted run; a run is only discarded on --restart; a resume never mixes two configurations."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
import torch
from process_helpers import children, cli

from pretrain.config import load_config
from pretrain.train import pretrain
from swavbench.core import durable
from swavbench.core.state import CheckpointError, load_checkpoint

REPO = Path(__file__).resolve().parents[2]


def settings(data: Path, *extra: str) -> list[str]:
    return [
        f"data.path={data}",
        "optim.epochs=2",
        "run.checkpoint_every_iters=2",
        "data.num_workers=0",
        *extra,
    ]


def losses(run: Path) -> dict[int, float]:
    lines = (run / "train_log.jsonl").read_text().splitlines()
    return {r["iteration"]: r["loss"] for r in map(json.loads, lines)}


def same_trajectory(a: dict[int, float], b: dict[int, float]) -> None:
    assert sorted(a) == sorted(b)
    for i in a:  # same process, same seed: equal up to float reordering (measured: bit-identical here)
        assert math.isclose(a[i], b[i], rel_tol=1e-6, abs_tol=1e-6), (i, a[i], b[i])


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, generated_data) -> dict[int, float]:
    run = tmp_path_factory.mktemp("full")
    pretrain(load_config("tiny", settings(generated_data)), run, progress=False)
    return losses(run)


class Crash(RuntimeError):
    pass


# os.replace calls (1: config.yaml, 2: first checkpoint): 3 rotates .prev at iteration 4, 6 writes the new
# checkpoint at iteration 6
@pytest.mark.parametrize("fail_at", [3, 6])
def test_crash_inside_the_rotation_resumes_from_the_newest_whole_checkpoint(
    tmp_path, generated_data, uninterrupted, monkeypatch, fail_at
):
    calls = {"n": 0}
    real_replace = os.replace

    def replace(src, dst):
        calls["n"] += 1
        if calls["n"] == fail_at:
            raise Crash(f"injected crash at os.replace #{fail_at} ({Path(dst).name})")
        return real_replace(src, dst)

    monkeypatch.setattr(durable.os, "replace", replace)
    with pytest.raises(Crash):
        pretrain(load_config("tiny", settings(generated_data)), tmp_path, progress=False)
    monkeypatch.setattr(durable.os, "replace", real_replace)
    assert (tmp_path / "checkpoint.pth").is_file()  # never a moment without the latest checkpoint
    before = load_checkpoint(tmp_path / "checkpoint.pth")["iteration"]
    assert before > 0
    pretrain(load_config("tiny", settings(generated_data)), tmp_path, resume=True, progress=False)
    same_trajectory(uninterrupted, losses(tmp_path))


def test_missing_latest_resumes_from_prev_not_from_scratch(tmp_path, generated_data, uninterrupted, caplog):
    # the reproduction of the issue: a run past its first epoch, checkpoint.pth gone, .prev kept
    first = load_config("tiny", settings(generated_data, "run.max_iters=12"))
    pretrain(first, tmp_path, progress=False)
    prev_iteration = load_checkpoint(tmp_path / "checkpoint.pth.prev")["iteration"]
    (tmp_path / "checkpoint.pth").unlink()
    kept = {i: v for i, v in losses(tmp_path).items() if i <= prev_iteration}
    with caplog.at_level("INFO", logger="swavbench.pretrain"):
        pretrain(load_config("tiny", settings(generated_data)), tmp_path, resume=True, progress=False)
    assert f"checkpoint.pth.prev (epoch 1, iteration {prev_iteration})" in caplog.text
    assert prev_iteration > 0
    log = losses(tmp_path)
    assert {i: log[i] for i in kept} == kept  # the log was continued, not rewritten
    assert sorted(log) == sorted(uninterrupted)


def test_unreadable_latest_is_set_aside_and_the_run_goes_on(tmp_path, generated_data, uninterrupted, caplog):
    pretrain(load_config("tiny", settings(generated_data, "run.max_iters=12")), tmp_path, progress=False)
    latest = tmp_path / "checkpoint.pth"
    latest.write_bytes(latest.read_bytes()[:2000])  # e.g. a disk error after the write
    with caplog.at_level("INFO", logger="swavbench.pretrain"):
        pretrain(load_config("tiny", settings(generated_data)), tmp_path, resume=True, progress=False)
    assert "skipped checkpoint.pth" in caplog.text and "truncated or corrupt" in caplog.text
    assert (tmp_path / "checkpoint.pth.unreadable").stat().st_size == 2000  # kept for inspection
    assert load_checkpoint(latest)["epoch"] == 2
    # the last iterations were redone from the previous checkpoint: the trajectory is the uninterrupted one
    same_trajectory(uninterrupted, losses(tmp_path))


def test_a_transient_read_error_is_retried_and_never_sets_a_good_checkpoint_aside(
    tmp_path, generated_data, uninterrupted, monkeypatch
):
    """Issue #34 item 5: EIO / ESTALE while reading the latest checkpoint is retried; when it passes the run
    goes on from that checkpoint, when it persists the run stops and every file stays where it was."""
    import errno

    from swavbench.core import state

    pretrain(load_config("tiny", settings(generated_data, "run.max_iters=12")), tmp_path, progress=False)
    latest = tmp_path / "checkpoint.pth"
    monkeypatch.setattr(state, "READ_RETRY_DELAYS", (0.0, 0.0, 0.0))
    real_load, failures = torch.load, {"left": 2}

    def flaky(path, *a, **k):
        if Path(path) == latest and failures["left"] > 0:
            failures["left"] -= 1
            raise OSError(errno.ESTALE, "Stale file handle", str(path))
        return real_load(path, *a, **k)

    monkeypatch.setattr(state.torch, "load", flaky)
    with pytest.raises(state.CheckpointUnavailable, match=r"after 4 tries.*left as it is"):
        failures["left"] = 4  # every try fails: the run stops, nothing is set aside
        pretrain(load_config("tiny", settings(generated_data)), tmp_path, resume=True, progress=False)
    assert latest.is_file() and not list(tmp_path.glob("*.unreadable"))
    assert load_checkpoint(latest)["iteration"] == 12
    failures["left"] = 2  # two failures, then the read works: resumed from the latest, as uninterrupted
    pretrain(load_config("tiny", settings(generated_data)), tmp_path, resume=True, progress=False)
    assert not list(tmp_path.glob("*.unreadable")) and failures["left"] == 0
    same_trajectory(uninterrupted, losses(tmp_path))


def test_the_first_process_chooses_the_resume_file_for_all(tmp_path, generated_data):
    """Issue #34 item 5: under DDP the processes resume from one file, the first process' choice, even when
    another process sees the files differently (before, each chose its own and they diverged)."""
    from ddp_helpers import resume_with_a_different_view, run_ddp

    pretrain(load_config("tiny", settings(generated_data, "run.max_iters=12")), tmp_path, progress=False)
    ends = run_ddp(resume_with_a_different_view, 2, settings(generated_data), str(tmp_path))
    assert ends == [12, 12]  # both at the latest checkpoint's iteration (process 1 alone would take .prev)


def test_no_readable_checkpoint_is_an_error_not_a_fresh_start(tmp_path, generated_data):
    pretrain(load_config("tiny", settings(generated_data, "optim.epochs=1")), tmp_path, progress=False)
    for p in (tmp_path / "checkpoint.pth", tmp_path / "checkpoint.pth.prev"):
        p.write_bytes(b"garbage")
    log_before = (tmp_path / "train_log.jsonl").read_text()
    with pytest.raises(CheckpointError, match=r"(?s)no checkpoint .* can be read.*--restart"):
        pretrain(load_config("tiny", settings(generated_data)), tmp_path, resume=True, progress=False)
    assert (tmp_path / "train_log.jsonl").read_text() == log_before  # nothing changed
    assert (tmp_path / "checkpoint.pth").read_bytes() == b"garbage"


def test_torn_log_line_is_dropped_and_said(tmp_path, generated_data, uninterrupted, caplog):
    pretrain(load_config("tiny", settings(generated_data, "run.max_iters=12")), tmp_path, progress=False)
    log = tmp_path / "train_log.jsonl"
    with open(log, "a") as f:
        f.write('{"iteration": 99, "loss": 4.1')  # a crash in the middle of a line
    with caplog.at_level("INFO", logger="swavbench.pretrain"):
        pretrain(load_config("tiny", settings(generated_data)), tmp_path, resume=True, progress=False)
    assert "dropped 1 torn line" in caplog.text
    same_trajectory(uninterrupted, losses(tmp_path))


def test_existing_run_needs_resume_or_restart(tmp_path, generated_data):
    cfg = load_config("tiny", settings(generated_data, "optim.epochs=1"))
    (tmp_path / "train_log.jsonl").write_text('{"iteration": 1, "loss": 4.0}\n')  # killed before a checkpoint
    with pytest.raises(CheckpointError, match=r"train_log.jsonl.*--resume.*--restart"):
        pretrain(cfg, tmp_path, progress=False)
    pretrain(cfg, tmp_path, resume=True, progress=False)  # nothing to continue: starts at iteration 0
    first = losses(tmp_path)
    assert sorted(first)[0] == 1 and load_checkpoint(tmp_path / "checkpoint.pth")["epoch"] == 1
    with pytest.raises(CheckpointError, match="--restart"):
        pretrain(cfg, tmp_path, progress=False)
    other = load_config("tiny", settings(generated_data, "optim.epochs=1", "run.seed=5"))
    pretrain(other, tmp_path, restart=True, progress=False)
    assert (
        losses(tmp_path) != first
        and load_checkpoint(tmp_path / "checkpoint.pth")["config"]["run"]["seed"] == 5
    )


def test_resume_refuses_another_configuration(tmp_path, generated_data):
    pretrain(load_config("tiny", settings(generated_data, "optim.epochs=1")), tmp_path, progress=False)
    changed = load_config("tiny", settings(generated_data, "optim.base_lr=0.2"))
    with pytest.raises(CheckpointError, match=r"optim.base_lr: 0.3 -> 0.2.*mix"):
        pretrain(changed, tmp_path, resume=True, progress=False)
    # how a run runs may change; a longer schedule continues
    more = load_config("tiny", settings(generated_data, "data.num_workers=1", "run.log_every_iters=3"))
    pretrain(more, tmp_path, resume=True, progress=False)
    assert load_checkpoint(tmp_path / "checkpoint.pth")["epoch"] == 2


def test_checkpoint_from_before_a_setting_existed_resumes(tmp_path, generated_data):
    """A checkpoint written before optim.global_batch / optim.lr_scaling existed lacks them: not a conflict
    (they state what the old run left implicit); a setting it has and that differs still is one."""
    pretrain(load_config("tiny", settings(generated_data, "optim.epochs=1")), tmp_path, progress=False)
    ckpt = load_checkpoint(tmp_path / "checkpoint.pth")
    for key in ("global_batch", "lr_scaling"):
        del ckpt["config"]["optim"][key]
    torch.save(ckpt, tmp_path / "checkpoint.pth")
    stated = load_config("tiny", settings(generated_data, "optim.global_batch=16"))  # 1 process x 16
    pretrain(stated, tmp_path, resume=True, progress=False)
    assert load_checkpoint(tmp_path / "checkpoint.pth")["epoch"] == 2
    with pytest.raises(CheckpointError, match=r"optim.global_batch: 16 -> 32"):
        changed = load_config(
            "tiny", settings(generated_data, "optim.global_batch=32", "optim.lr_scaling=none")
        )
        pretrain(changed, tmp_path, resume=True, progress=False)


# -- untrusted checkpoints ------------------------------------------------------------------------
class Payload:
    """Unpickling this object creates ``marker``: stands for arbitrary code in a downloaded file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def tiny_trunk_state() -> dict[str, torch.Tensor]:
    from pretrain.model import build_trunk

    torch.manual_seed(0)
    return build_trunk("resnet18", small_stem=True, width_multiplier=0.25).state_dict()


ARCH = ["trunk.arch=resnet18", "trunk.small_stem=true", "trunk.width_multiplier=0.25"]


def test_pickled_payload_is_refused_by_every_reader_and_never_runs(tmp_path, generated_data):
    marker = tmp_path / "payload-ran"
    evil = tmp_path / "evil.pth"
    torch.save({"state_dict": tiny_trunk_state(), "meta": Payload(marker)}, evil)
    run = tmp_path / "run"
    run.mkdir()
    torch.save(
        {"format": "swav-bench/1", "epoch": 1, "iteration": 5, "x": Payload(marker)}, run / "checkpoint.pth"
    )
    commands = {
        "eval knn": ["eval", "knn", "--checkpoint", str(evil), "--out", str(tmp_path / "knn"), *ARCH],
        "eval linear": ["eval", "linear", "--checkpoint", str(evil), "--out", str(tmp_path / "lin"), *ARCH],
        "transfer detection": [
            "transfer",
            "detection",
            "--checkpoint",
            str(evil),
            "--out",
            str(tmp_path / "det"),
            "--backend",
            "torchvision",
            *ARCH,
        ],
        "convert": [
            "convert",
            "--checkpoint",
            str(evil),
            "--to",
            "torchvision",
            "--out",
            str(tmp_path / "c.pth"),
        ],
        "pretrain --resume CKPT": [
            "pretrain",
            "--config",
            "tiny",
            "--out",
            str(tmp_path / "p"),
            "--resume",
            str(evil),
            f"data.path={generated_data}",
        ],
        "pretrain --resume": [
            "pretrain",
            "--config",
            "tiny",
            "--out",
            str(run),
            f"data.path={generated_data}",
            "--resume",
        ],
    }
    for name, args in commands.items():
        res = cli(*args)
        assert res.returncode != 0, name
        assert "--trust-checkpoints" in res.stderr and "pickled Python objects" in res.stderr, (
            name,
            res.stderr[-800:],
        )
        assert not marker.exists(), f"{name} ran the payload"
    # the payload is real: the explicit opt-in unpickles it (and so runs it)
    res = cli(
        "--trust-checkpoints",
        "convert",
        "--checkpoint",
        str(evil),
        "--to",
        "torchvision",
        "--out",
        str(tmp_path / "c.pth"),
        "--arch",
        "resnet18",
        "--small-stem",
        "--width-multiplier",
        "0.25",
    )
    assert res.returncode == 0, res.stderr[-800:]
    assert marker.exists()
    converted = torch.load(tmp_path / "c.pth", weights_only=True)
    torch.testing.assert_close(converted["conv1.weight"], tiny_trunk_state()["conv1.weight"])


# -- the scheduler's warning signal ---------------------------------------------------------------
def test_signal_saves_at_the_next_iteration_and_the_resumed_run_matches(
    tmp_path, generated_data, monkeypatch
):
    """SLURM's preemption warning reaches every process of the step (SIGTERM, then USR2): the DataLoader
    workers ignore it; the trainer checkpoints at the next iteration boundary (mid-epoch, between the
    periodic checkpoints) and raises Interrupted; resumed, the run follows the uninterrupted trajectory."""
    import signal

    from pretrain.train import Trainer
    from swavbench.core import interrupt

    over = [f"data.path={generated_data}", "optim.epochs=2", "data.num_workers=2"]
    pretrain(load_config("tiny", over), tmp_path / "full", progress=False)
    real_step = Trainer.step

    def step(self, crops, epoch):
        if self.state.iteration == 12:  # epoch 1, batch 2: signal the workers, then this process
            for pid in children():
                os.kill(pid, signal.SIGTERM)
                os.kill(pid, signal.SIGUSR2)
        if self.state.iteration == 14:
            os.kill(os.getpid(), signal.SIGUSR2)
        return real_step(self, crops, epoch)

    monkeypatch.setattr(Trainer, "step", step)
    run = tmp_path / "cut"
    with interrupt.cooperative(signal.SIGUSR2), pytest.raises(interrupt.Interrupted, match="iteration 15"):
        pretrain(load_config("tiny", over), run, progress=False)
    ckpt = load_checkpoint(run / "checkpoint.pth")
    assert (ckpt["epoch"], ckpt["batch"], ckpt["iteration"]) == (1, 5, 15)  # not an epoch end
    monkeypatch.setattr(Trainer, "step", real_step)
    pretrain(load_config("tiny", over), run, resume=True, progress=False)
    same_trajectory(losses(tmp_path / "full"), losses(run))


def test_a_slow_save_at_the_signal_is_not_cut_short_by_the_fallback(tmp_path, generated_data, monkeypatch):
    """The fallback (submitit's requeue, armed at the signal) is for a loop that never takes the request;
    once the trainer takes it, a save longer than the grace period runs to its end and the job is
    interrupted once."""
    import signal
    import time

    from pretrain.train import Trainer
    from swavbench.core import interrupt

    fallbacks = []
    real_step, real_save = Trainer.step, Trainer.save

    def step(self, crops, epoch):
        if self.state.iteration == 3:
            interrupt.request(signal.SIGUSR2)
        return real_step(self, crops, epoch)

    def slow_save(self):
        time.sleep(2.5)  # longer than the grace period (a step takes well under 1 s)
        real_save(self)

    monkeypatch.setattr(Trainer, "step", step)
    monkeypatch.setattr(Trainer, "save", slow_save)
    over = [f"data.path={generated_data}", "optim.epochs=1"]
    with interrupt.cooperative(signal.SIGUSR2, fallback=lambda *a: fallbacks.append(a), grace_s=1.0):
        with pytest.raises(interrupt.Interrupted, match="iteration 4"):
            pretrain(load_config("tiny", over), tmp_path / "run", progress=False)
        time.sleep(1.2)  # a fallback left armed would fire by now
    assert fallbacks == [] and load_checkpoint(tmp_path / "run" / "checkpoint.pth")["iteration"] == 4
