"""Relaunch safety of the launcher: an unanswering scheduler never means "resubmit", two launchers of
one run directory never both submit, a launcher killed between submission and saving is reconciled by
the job's tag, a pretraining folder holds one configuration, an adopted pretraining that dies blocks its
evaluations, --force starts finished jobs from nothing (the old folder is kept aside), and status
reports all of it. Local executor and a stub SLURM here; the real local SLURM cluster where marked."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml
from process_helpers import tagged_pids

import swavbench
from slurm.launch import ConfigConflict, Launcher, SchedulerUnavailable
from slurm.scheduler import TAG_ENV, Scheduler
from slurm.status import job_table
from slurm.suite import Resources, load_suite

REPO = Path(__file__).resolve().parents[2]
RES = Resources(cpus=1, mem_gb=1, time_min=10)


@pytest.fixture
def knn_suite(tmp_path, generated_data) -> Path:
    g = generated_data.parent
    common = [f"train={g / 'train'}", f"val={g / 'val'}", "num_workers=0", "trunk.width_multiplier=0.125"]
    jobs = [
        {
            "protocol": "knn",
            "preset": "knn-cifar10-small",
            "name": f"knn-k{k}",
            "overrides": [*common, f"ks=[{k}]"],
        }
        for k in (5, 10)
    ]
    jobs.append({"protocol": "linear", "preset": "linear-cifar10-small", "overrides": [*common, "epochs=2"]})
    for j in jobs:
        j["resources"] = {"cpus": 1, "mem_gb": 1, "time_min": 10}
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump({"name": "tiny", "jobs": jobs}))
    return path


def wait_records(run: Path, n: int, timeout: float = 600) -> list[dict]:
    deadline = time.time() + timeout
    while time.time() < deadline:
        recs = [json.loads(p.read_text()) for p in (run / "evals").glob("*/result.json")]
        if len(recs) >= n:
            return recs
        time.sleep(0.5)
    raise AssertionError(f"{n} records did not appear in {run}")


def submitted_folders(run: Path) -> list[str]:
    """Job folders, named by job id (not submitit's staging folders '%j' and '.submission')."""
    folders = (run / "submitit").iterdir() if (run / "submitit").is_dir() else []
    return sorted(p.name for p in folders if p.name[0] not in "%.")


# -- the scheduler does not answer ----------------------------------------------------------------
def stub_slurm(bin_dir: Path, *, squeue_fails: bool) -> Path:
    """sbatch that records its calls and 'submits' job 4242 (+n); squeue that fails or lists nothing."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    calls = bin_dir / "sbatch-calls"
    (bin_dir / "sbatch").write_text(
        f'#!/bin/sh\necho "$@" >> {calls}\nn=$(wc -l < {calls})\necho "Submitted batch job $((4241 + n))"\n'
    )
    fail = 'echo "slurm_load_jobs error: Socket timed out on send/recv operation" >&2; exit 1'
    (bin_dir / "squeue").write_text(f"#!/bin/sh\n{fail if squeue_fails else 'exit 0'}\n")
    for f in ("sbatch", "squeue"):
        (bin_dir / f).chmod(0o755)
    return calls


def test_failing_squeue_submits_nothing_and_explains(tmp_path, knn_suite, monkeypatch, capsys):
    bin_dir = tmp_path / "bin"
    calls = stub_slurm(bin_dir, squeue_fails=False)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    run = tmp_path / "run"
    first = Launcher(run, "slurm").suite(load_suite(str(knn_suite)), "random")
    assert [p.action for p in first] == ["submitted"] * 3
    n_calls = len(calls.read_text().splitlines())
    stub_slurm(bin_dir, squeue_fails=True)  # the controller is busy: the queued jobs' state is unknown
    launcher = Launcher(run, "slurm", squeue_retry_delays=(0.1, 0.1))
    with pytest.raises(SchedulerUnavailable, match=r"failed 3 times.*Nothing was submitted"):
        launcher.suite(load_suite(str(knn_suite)), "random")
    assert len(calls.read_text().splitlines()) == n_calls  # no second sbatch
    state = json.loads((run / "launch.json").read_text())
    assert sorted(j["job_id"] for j in state["jobs"].values()) == sorted(p.job_id for p in first)
    launcher.close()
    # the CLI says why and exits 2 (in this process, with short pauses: the real ones add up to 15 s)
    monkeypatch.setattr("slurm.scheduler.SQUEUE_RETRY_DELAYS", (0.1, 0.1))
    argv = ["launch", "suite", "--suite", str(knn_suite), "--checkpoint", "random", "--run-dir", str(run)]
    assert swavbench.main([*argv, "--executor", "slurm"]) == 2
    assert "controller is busy or down" in capsys.readouterr().err
    assert len(calls.read_text().splitlines()) == n_calls


# -- two launchers at once --------------------------------------------------------------------------
def test_two_concurrent_launches_run_every_job_exactly_once(tmp_path, knn_suite):
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "swavbench", "launch", "suite", "--suite", str(knn_suite), "--checkpoint"]
    cmd += ["random", "--run-dir", str(run), "--executor", "local"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    procs = [
        subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ]
    procs.append(
        subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    )
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    actions = [
        [ln.split()[0] for ln in out.splitlines() if ln.split() and ln.split()[1] == "eval"]
        for out, _ in outs
    ]
    assert sorted(a.count("submitted") for a in actions) == [0, 3], outs  # one launcher submitted all three
    assert any("waiting for pid" in out for out, _ in outs) or min(a.count("submitted") for a in actions) == 0
    recs = wait_records(run, 3)
    assert sorted(r["status"] for r in recs) == ["ok"] * 3
    assert len(submitted_folders(run)) == 3  # three job folders: nothing ran twice
    state = json.loads((run / "launch.json").read_text())
    assert len({j["job_id"] for j in state["jobs"].values()}) == 3


def test_second_launcher_gives_up_with_a_message_after_waiting(tmp_path, knn_suite):
    run = tmp_path / "run"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; sys.path.insert(0, sys.argv[1]); from slurm.launch import Launcher; "
            "held = Launcher(sys.argv[2], 'local'); print('held', flush=True); time.sleep(60)",
            str(REPO),
            str(run),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        from slurm.launch import LaunchBusy

        with pytest.raises(LaunchBusy, match=rf"is being launched by pid {holder.pid} .*swavbench status"):
            Launcher(run, "local", lock_wait_s=1)
    finally:
        holder.kill()
        holder.wait()
    Launcher(run, "local", lock_wait_s=1).close()  # the lock went with the process


# -- killed between submission and save -------------------------------------------------------------
def test_launcher_killed_after_submitting_is_reconciled_by_tag(tmp_path, knn_suite, monkeypatch):
    run = tmp_path / "run"
    suite = load_suite(str(knn_suite))

    def die(self, p, job):  # the launcher dies right after the job started, before saving its id
        raise KeyboardInterrupt("killed")

    with monkeypatch.context() as m:
        m.setattr(Launcher, "_record", die)
        with pytest.raises(KeyboardInterrupt):
            Launcher(run, "local").suite(suite, "random")
    state = json.loads((run / "launch.json").read_text())
    (intent,) = [j for j in state["jobs"].values() if j["action"] == "submitting"]  # recorded before
    assert intent["job_id"] == "" and intent["tag"].startswith("swavbench-")
    pids = tagged_pids(TAG_ENV, intent["tag"])
    assert pids, "the job was started"
    relaunch = Launcher(run, "local")
    planned = relaunch.suite(suite, "random")
    first = next(p for p in planned if p.key in state["jobs"])
    if first.action == "live":  # still running: adopted under the id found by its tag
        assert int(first.job_id) in pids
    else:  # it finished in the meantime: its record says ok
        assert first.action == "done"
    assert [p.action for p in planned[1:]] == ["submitted", "submitted"]
    relaunch.wait()
    recs = wait_records(run, 3)
    assert sorted(r["status"] for r in recs) == ["ok"] * 3
    assert len(submitted_folders(run)) == 3  # the first job ran once


def test_slurm_array_submitted_by_a_killed_launcher_is_found_by_its_comment(
    slurm_cluster, tmp_path, knn_suite, monkeypatch
):
    run = tmp_path / "run"
    suite = load_suite(str(knn_suite))
    blocker = subprocess.run(
        ["sbatch", "--parsable", "-o", "/dev/null", "--wrap", "sleep 8"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()  # the evaluations wait for it (afterok): still queued when the launcher comes back

    def die(self, p, job):
        raise KeyboardInterrupt("killed after sbatch, before saving the job ids")

    with monkeypatch.context() as m:
        m.setattr(Launcher, "_record", die)
        with pytest.raises(KeyboardInterrupt):
            Launcher(run, "slurm").suite(suite, "random", after=blocker)
    state = json.loads((run / "launch.json").read_text())
    intents = list(state["jobs"].values())
    assert all(j["job_id"] == "" and j["action"] == "submitting" for j in intents)
    assert len({j["tag"] for j in intents}) == 1  # one array: one tag, task i is the i-th job
    assert sorted(j["task"] for j in intents) == [0, 1, 2]
    with Launcher(run, "slurm") as relaunch:
        planned = relaunch.suite(suite, "random", after=blocker)
        assert [p.action for p in planned] == ["live"] * 3  # adopted, not submitted again
        array = {p.job_id.split("_")[0] for p in planned}
        assert len(array) == 1 and sorted(p.job_id.split("_")[1] for p in planned) == ["0", "1", "2"]
    recs = wait_records(run, 3, timeout=300)
    assert sorted(r["status"] for r in recs) == ["ok"] * 3
    (array_id,) = array
    assert {f.split("_")[0] for f in submitted_folders(run)} == {array_id}  # one array, submitted once
    deadline = time.time() + 120  # the tasks leave the queue a moment after writing their records
    while {r["state"] for r in job_table(run)} != {"done"} and time.time() < deadline:
        time.sleep(1)
    assert {r["state"] for r in job_table(run)} == {"done"}


# -- a pretraining folder holds one configuration ---------------------------------------------------
def test_pipeline_relaunched_with_another_pretraining_config_is_refused(tmp_path, knn_suite, generated_data):
    run = tmp_path / "run"
    suite = load_suite(str(knn_suite))
    base = [f"data.path={generated_data}", "optim.epochs=1", "run.max_iters=3"]
    with Launcher(run, "local") as launcher:
        launcher.pipeline("tiny", base, suite, resources=RES)
        assert set(launcher.wait().values()) == {"ok"}
    before = {p: p.read_text() for p in (run / "evals").glob("*/result.json")}
    folders = submitted_folders(run)
    with Launcher(run, "local") as launcher, pytest.raises(ConfigConflict) as err:
        launcher.pipeline(
            "tiny",
            [*base[:1], "optim.epochs=1", "run.max_iters=3", "optim.base_lr=0.2"],
            suite,
            resources=RES,
        )
    assert "optim.base_lr: 0.3 -> 0.2" in str(err.value) and "Nothing was submitted" in str(err.value)
    assert submitted_folders(run) == folders
    assert {p: p.read_text() for p in (run / "evals").glob("*/result.json")} == before
    # the same configuration again: everything is done
    with Launcher(run, "local") as launcher:
        assert {p.action for p in launcher.pipeline("tiny", base, suite, resources=RES)} == {"done"}
    # a folder written before optim.global_batch / lr_scaling existed: the same run, under its own key
    path = run / "pretrain" / "settings.json"
    held = json.loads(path.read_text())
    for key in ("global_batch", "lr_scaling"):
        del held["settings"]["optim"][key]
    path.write_text(json.dumps({"key": "0123456789abcdef", "settings": held["settings"]}))
    with Launcher(run, "local") as launcher:
        key, *_ = launcher.check_pretrain("tiny", base)
        assert key == "0123456789abcdef"


# -- an adopted pretraining that dies ---------------------------------------------------------------
def test_adopted_pretraining_that_dies_blocks_its_evaluations(tmp_path, knn_suite, generated_data):
    run = tmp_path / "run"
    suite = load_suite(str(knn_suite))
    overrides = [f"data.path={generated_data}", "optim.epochs=200", "run.checkpoint_every_iters=2"]
    first = Launcher(run, "local")
    p = first.pretrain_job("tiny", overrides, RES)
    first.close()  # the first launcher goes away; its pretraining runs on
    tag = json.loads((run / "launch.json").read_text())["jobs"][p.key]["tag"]
    deadline = time.time() + 300
    while not (Path(p.out_dir) / "checkpoint.pth").is_file() and time.time() < deadline:
        time.sleep(0.2)

    def crash() -> None:  # e.g. out of memory: the whole job dies
        for pid in tagged_pids(TAG_ENV, tag):
            os.kill(pid, signal.SIGKILL)

    relaunch = Launcher(run, "local")
    timer = threading.Timer(3.0, crash)
    timer.start()
    try:
        with pytest.raises(RuntimeError, match=r"ended before its 200 epochs.*evaluations were not started"):
            relaunch.pipeline("tiny", overrides, suite, resources=RES)
    finally:
        timer.cancel()
    assert relaunch.state["jobs"][p.key]["action"] == "submitted" and not (run / "evals").exists()
    (row,) = job_table(run)
    assert row["state"] == "failed" and "stopped before epoch 200" in row["result"], row


# -- --force ----------------------------------------------------------------------------------------
def test_force_reruns_a_finished_probe_from_nothing_and_keeps_the_old_folder(tmp_path, knn_suite):
    run = tmp_path / "run"
    suite = load_suite(str(knn_suite))
    with Launcher(run, "local") as launcher:
        planned = launcher.suite(suite, "random")
        assert set(launcher.wait().values()) == {"ok"}
    linear = Path(planned[2].out_dir)
    old = json.loads((linear / "result.json").read_text())
    assert (linear / "linear_state.pt").is_file()  # the finished probe's state, which a resume would reuse
    with Launcher(run, "local", force=True) as launcher:
        again = launcher.suite(suite, "random")
        assert [p.action for p in again] == ["submitted"] * 3
        assert set(launcher.wait().values()) == {"ok"}
    new = json.loads((linear / "result.json").read_text())
    (kept,) = [d for d in (run / "replaced").iterdir() if d.name.startswith(linear.name)]
    assert json.loads((kept / "result.json").read_text()) == old  # the earlier result is not lost
    assert new["created"] >= old["created"] and new["metrics"] == pytest.approx(old["metrics"])
    from results.collect import collect

    df, problems, failed = collect([run])
    assert not problems and not failed
    assert len(set(df.record)) == 3  # the replaced records are not counted twice


def test_status_shows_a_running_retry_behind_a_failed_record(tmp_path, knn_suite):
    run = tmp_path / "run"
    suite = load_suite(str(knn_suite))
    sleeper = subprocess.Popen(["sleep", "60"], env=dict(os.environ, **{TAG_ENV: "swavbench-retry"}))
    try:
        with Launcher(run, "local") as launcher:
            planned = launcher.suite(suite, "random")
            launcher.wait()
        out = Path(planned[0].out_dir)
        rec = json.loads((out / "result.json").read_text())
        rec.update(status="failed", error="RuntimeError: CUDA out of memory")
        (out / "result.json").write_text(json.dumps(rec))
        state = json.loads((run / "launch.json").read_text())
        state["jobs"][planned[0].key].update(  # the retry, submitted after the failure
            job_id=str(sleeper.pid), tag="swavbench-retry", submitted_at=time.time() + 2
        )
        (run / "launch.json").write_text(json.dumps(state))
        assert Scheduler("local").is_live(str(sleeper.pid), tag="swavbench-retry")
        rows = {r["name"]: r for r in job_table(run)}
        row = rows[planned[0].name]
        assert row["state"] == "running" and row["result"].startswith("retrying after: RuntimeError"), row
        assert rows[planned[1].name]["state"] == "done"
    finally:
        sleeper.kill()
        sleeper.wait()
    assert job_table(run)[0]["state"] == "failed"


def test_a_lost_lease_stops_the_launcher_before_it_submits(tmp_path, knn_suite):
    """A launcher whose lease another one took over (it looked dead) submits nothing more."""
    from slurm.launch import _HELD, LaunchBusy

    run = tmp_path / "run"
    with Launcher(run, "local") as launcher:
        lease_file = run / ".launch.lease"
        lease_file.write_text(json.dumps({**json.loads(lease_file.read_text()), "token": "someone-else"}))
        _HELD[run.resolve()][0].renew()
        with pytest.raises(LaunchBusy, match="took over the launch lease"):
            launcher.suite(load_suite(str(knn_suite)), "random")
    assert not (run / "submitit").exists()


def test_lost_launch_state_and_force_on_the_real_cluster(slurm_cluster, tmp_path, knn_suite):
    """Issue #34 items 11 and 3 on the local SLURM cluster. Deleting launch.json while the jobs are queued:
    the relaunch finds them by their derived tags (one single job, one array) and submits nothing. --force
    then cancels the live jobs before submitting their replacements, which run once each."""
    run = tmp_path / "run"
    suite = yaml.safe_load(knn_suite.read_text())
    suite["jobs"][2]["resources"]["mem_gb"] = 2  # linear alone: a single job; the two kNN: an array
    knn_suite.write_text(yaml.safe_dump(suite))
    suite = load_suite(str(knn_suite))
    blocker = subprocess.run(
        ["sbatch", "--parsable", "-o", "/dev/null", "--wrap", "sleep 12"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    with Launcher(run, "slurm") as first:
        ids = {p.key: p.job_id for p in first.suite(suite, "random", after=blocker)}
    assert sum("_" in i for i in ids.values()) == 2 and len(ids) == 3
    (run / "launch.json").unlink()
    with Launcher(run, "slurm") as again:
        planned = again.suite(suite, "random", after=blocker)
    assert [p.action for p in planned] == ["live"] * 3
    assert {p.key: p.job_id for p in planned} == ids  # the same jobs, found by their tags
    with Launcher(run, "slurm", force=True) as forced:
        planned = forced.suite(suite, "random", after=blocker)
        assert [p.action for p in planned] == ["submitted"] * 3
        new = {p.key: p.job_id for p in planned}
        assert not set(new.values()) & set(ids.values())
        assert not any(forced.scheduler.is_live(i) for i in ids.values())  # cancelled
    recs = wait_records(run, 3, timeout=300)
    assert sorted(r["status"] for r in recs) == ["ok"] * 3
    ran = {f.name.split("_")[0] for f in (run / "submitit").glob("*/*_log.out")}
    assert ran == {i.split("_")[0] for i in new.values()}  # only the replacements ran


def test_a_job_lost_with_its_node_is_requeued_and_finishes(slurm_cluster, tmp_path, knn_suite):
    """Issue #34 item 16 on the local SLURM cluster: the node goes down under a running evaluation
    (NODE_FAIL); SLURM requeues it (--requeue), status says requeued, and it finishes with its record."""
    suite = yaml.safe_load(knn_suite.read_text())
    suite["jobs"] = [{**suite["jobs"][2], "overrides": [*suite["jobs"][2]["overrides"][:-1], "epochs=6"]}]
    knn_suite.write_text(yaml.safe_dump(suite))
    run = tmp_path / "run"
    with Launcher(run, "slurm") as launcher:
        (p,) = launcher.suite(load_suite(str(knn_suite)), "random")
    node = subprocess.run(["sinfo", "-h", "-o", "%N"], capture_output=True, text=True).stdout.split()[0]
    deadline = time.time() + 120
    while Scheduler("slurm").state(p.job_id) != "RUNNING" and time.time() < deadline:
        time.sleep(0.5)
    subprocess.run(
        ["scontrol", "update", f"nodename={node}", "state=down", "reason=swavbench-test"], check=True
    )
    try:
        deadline = time.time() + 30  # the accounting database hears of the node failure a moment later
        while (row := job_table(run)[0])["state"] != "requeued" and time.time() < deadline:
            time.sleep(0.5)
        assert row["state"] == "requeued", row
    finally:
        subprocess.run(["scontrol", "update", f"nodename={node}", "state=resume"], capture_output=True)
    (rec,) = wait_records(run, 1, timeout=300)
    assert rec["status"] == "ok"
    deadline = time.time() + 120  # the accounting database hears of the end a moment after the record
    while True:
        history = subprocess.run(
            ["sacct", "-n", "-D", "-X", "-P", "-j", p.job_id, "-o", "State"], capture_output=True, text=True
        ).stdout.split()
        if "COMPLETED" in history or time.time() > deadline:
            break
        time.sleep(0.5)
    assert history[0] == "NODE_FAIL" and "COMPLETED" in history, history
