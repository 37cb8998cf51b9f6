"""Where real clusters differ from the local one: an older SLURM (no ``squeue --me``), a suite name that
would break the ``#SBATCH`` block, a damaged ``launch.json``. Each is refused or handled before anything
is submitted."""

from __future__ import annotations

import getpass
import json
import os
from pathlib import Path

import pytest
import yaml

import swavbench
from slurm.launch import Launcher
from slurm.scheduler import Scheduler
from slurm.suite import load_suite
from swavbench.core.config import ConfigError


def test_squeue_asks_for_this_users_jobs_without_me(tmp_path, monkeypatch):
    """``squeue --me`` needs SLURM >= 20.11; ``-u USER`` works on every version."""
    args = tmp_path / "squeue-args"
    squeue = tmp_path / "bin" / "squeue"
    squeue.parent.mkdir()
    squeue.write_text(f'#!/bin/sh\necho "$@" > {args}\necho "77|RUNNING|swavbench-t"\n')
    squeue.chmod(0o755)
    monkeypatch.setenv("PATH", f"{squeue.parent}{os.pathsep}{os.environ['PATH']}")
    assert Scheduler("slurm").is_live("77", tag="swavbench-t")
    called = args.read_text().split()
    assert "--me" not in called and called[called.index("-u") + 1] == getpass.getuser()


def test_a_suite_name_that_would_break_the_sbatch_block_is_refused(tmp_path, capsys):
    path = tmp_path / "suite.yaml"
    job = {"protocol": "knn", "preset": "knn-cifar10-small"}
    path.write_text(yaml.safe_dump({"name": "s\n#SBATCH --wrap=touch /tmp/owned", "jobs": [job]}))
    with pytest.raises(ConfigError, match="suite name .* is not a valid job name"):
        load_suite(str(path))
    run = tmp_path / "run"
    argv = ["launch", "suite", "--suite", str(path), "--checkpoint", "random", "--run-dir", str(run)]
    assert swavbench.main([*argv, "--executor", "local"]) == 2
    assert "suite name" in capsys.readouterr().err and not (run / "launch.json").exists()


def test_a_damaged_launch_state_is_named_with_its_fix(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "launch.json").write_text("{")
    assert swavbench.main(["status", str(run)]) == 2
    err = capsys.readouterr().err
    assert f"{run / 'launch.json'} is damaged" in err and "move it aside" in err and "Traceback" not in err
    with pytest.raises(ValueError, match="nothing was submitted"):
        Launcher(run, "local")
    (run / "launch.json").write_text(json.dumps({"jobs": []}))
    with pytest.raises(ValueError, match="no 'jobs' mapping"):
        Launcher(run, "local")
    assert Path(run / "launch.json").read_text() == json.dumps({"jobs": []})  # left as it was


def test_a_checkpoint_without_settings_is_compared_by_its_own_config(tmp_path, generated_data):
    """A pretraining folder without settings.json (older, or copied by hand): its checkpoint's stored config
    decides whether it is this configuration's run, so another configuration's finished run is not
    counted as done (nor resumed as a hybrid)."""
    from pretrain.config import load_config
    from pretrain.train import pretrain
    from slurm.launch import ConfigConflict

    over = [f"data.path={generated_data}", "optim.epochs=1"]
    run = tmp_path / "run"
    pretrain(load_config("tiny", over), run / "pretrain", progress=False)
    assert not (run / "pretrain" / "settings.json").exists()
    launcher = Launcher(run, "local", dry_run=True)
    with pytest.raises(ConfigConflict, match=r"model.n_prototypes: \[30\] -> \[40\].*Nothing was submitted"):
        launcher.check_pretrain("tiny", [*over, "model.n_prototypes=[40]"])
    launcher.check_pretrain("tiny", [*over, "data.num_workers=0"])  # the same run (a resumable change)
    with pytest.raises(ConfigConflict, match="not a supervised run"):
        launcher.check_pretrain("cpu-small", ["optim.epochs=1"], method="supervised")
    # a settings.json damaged by hand: its path and the fix, before anything is submitted
    for damaged in ("{not json", "[1, 2]"):
        (run / "pretrain" / "settings.json").write_text(damaged)
        with pytest.raises(ConfigConflict, match=r"pretrain/settings.json is not the settings.*or remove it"):
            launcher.check_pretrain("tiny", over)
    (run / "pretrain" / "settings.json").unlink()
    launcher.check_pretrain("tiny", over)  # removed, as the message says: the checkpoint decides again


def test_account_qos_and_extra_options_reach_every_script(tmp_path, monkeypatch):
    """The cluster file gives defaults, a suite's resources override them, --account / --qos override both;
    extra options land as #SBATCH lines; preflight checks accounts against the user's associations."""
    from sbatch_stub import directives, stand_in_sbatch

    from slurm.preflight import Preflight
    from slurm.site import load_site

    kept = stand_in_sbatch(tmp_path / "bin")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    site_file = tmp_path / "cluster.yaml"
    site_file.write_text(yaml.safe_dump({"account": "lab", "qos": "normal", "sbatch": ["reservation=paper"]}))
    monkeypatch.setenv("SWAVBENCH_CLUSTER", str(site_file))
    res = {"cpus": 1, "mem_gb": 1, "time_min": 10}
    jobs = [
        {"protocol": "knn", "preset": "knn-cifar10-small", "name": "a", "resources": res},
        {
            "protocol": "knn",
            "preset": "knn-cifar10-small",
            "name": "b",
            "seeds": [1],
            "resources": {**res, "account": "other", "sbatch": ["exclusive"]},
        },
    ]
    suite_file = tmp_path / "suite.yaml"
    suite_file.write_text(yaml.safe_dump({"name": "s", "jobs": jobs}))
    suite = load_suite(str(suite_file))
    with Launcher(tmp_path / "run", "slurm") as launcher:
        launcher.suite(suite, "random")
    with Launcher(tmp_path / "forced", "slurm", site=load_site(account="mine", qos="high")) as launcher:
        launcher.suite(suite, "random")
    got = [directives(p.read_text()) for p in sorted(kept.iterdir(), key=lambda p: int(p.stem))]
    forced = ("mine", "high", "paper")
    assert [(d["account"], d["qos"], d.get("reservation")) for d in got] == [
        ("lab", "normal", "paper"),
        ("other", "normal", "paper"),
        forced,
        forced,
    ]
    assert "exclusive" in got[1] and "exclusive" not in got[0]
    assert all("requeue" in d for d in got)  # SLURM requeues after a node failure, whatever JobRequeue says
    check = Preflight("slurm")
    check.suite(suite)
    check.accounts(load_site(), pairs={("lab", "normal"), ("lab", "high")})
    assert len(check.errors) == 1 and "account 'other' is not one of yours (lab" in check.errors[0]
    check = Preflight("slurm")
    check.suite(suite)
    check.accounts(load_site(account="lab", qos="gold"), pairs={("lab", "normal"), ("lab", "high")})
    wanted = "QOS 'gold' is not allowed for account lab (high, normal)"
    assert check.errors and all(wanted in e for e in check.errors)
    bad = tmp_path / "bad.yaml"
    job = {**jobs[0], "resources": {"sbatch": ["x=1\nrm -rf ~"]}}
    bad.write_text(yaml.safe_dump({"name": "s", "jobs": [job]}))
    with pytest.raises(ConfigError, match="must be name or name=value on one line"):
        load_suite(str(bad))


def test_a_wrong_account_is_refused_on_the_real_cluster_before_submission(slurm_cluster, tmp_path, capsys):
    """On the local SLURM cluster (accounting on): an account the user has no association with stops the
    launch with the user's accounts listed; nothing is submitted."""
    from slurm.site import associations

    mine = associations()
    assert mine, "the local cluster's sacctmgr lists this user's associations"
    argv = ["launch", "suite", "--suite", "cpu-small", "--checkpoint", "random", "--executor", "slurm"]
    run = tmp_path / "run"
    assert swavbench.main([*argv, "--run-dir", str(run), "--account", "nosuch-lab"]) == 2
    err = capsys.readouterr().err
    assert "account 'nosuch-lab' is not one of yours" in err and sorted(mine)[0][0] in err
    assert not (run / "launch.json").exists()


def test_the_requeue_at_preemption_is_retried(capsys):
    """``scontrol requeue`` refused by a busy controller is tried again (submitit tries once)."""
    import subprocess

    from slurm.launch import retry_requeue

    class Env:
        calls = 0

        def _requeue(self, countdown):
            self.calls += 1
            if self.calls < 3:
                raise subprocess.CalledProcessError(1, ["scontrol", "requeue", "7"])

    env = Env()
    retry_requeue(env, delays=(0.01, 0.01, 0.01))
    retry_requeue(env, delays=(0.01,))  # wrapping twice keeps one retry loop
    env._requeue(3)
    assert env.calls == 3 and capsys.readouterr().out.count("scontrol requeue failed") == 2
    env.calls = -10
    with pytest.raises(subprocess.CalledProcessError):
        env._requeue(3)  # gives up after its pauses


def test_a_job_uses_its_own_process_group_variables_not_the_shells(monkeypatch):
    """SLURM exports the submitting shell's environment: a RANK / WORLD_SIZE / MASTER_PORT left there (an
    earlier torchrun) must not make a one-task job wait for absent peers, nor two jobs share a port."""
    import submitit

    from slurm import launch
    from swavbench.core.distributed import env_dist_info

    class Env:
        num_tasks, num_nodes, global_rank, local_rank, job_id, hostnames = 1, 1, 0, 0, "4242", ["node7"]

    monkeypatch.setattr(submitit, "JobEnvironment", Env)
    for name in launch.GROUP_VARIABLES:  # every one the job sets is restored after the test
        monkeypatch.delenv(name, raising=False)
    for name, value in dict(RANK="3", WORLD_SIZE="8", LOCAL_RANK="3", MASTER_PORT="1234").items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    monkeypatch.delenv("SLURM_PROCID", raising=False)
    launch.export_job_environment()
    assert env_dist_info().world_size == 1 and "MASTER_PORT" not in os.environ
    Env.num_tasks, Env.global_rank = 2, 1
    monkeypatch.setenv("MASTER_PORT", "1234")
    launch.export_job_environment()
    assert (os.environ["RANK"], os.environ["WORLD_SIZE"], os.environ["MASTER_ADDR"]) == ("1", "2", "node7")
    assert os.environ["MASTER_PORT"] == str(20000 + 4242 % 20000)  # the job's, not the shell's 1234
    assert "LOCAL_WORLD_SIZE" in os.environ  # (and monkeypatch removes it again)


def test_a_live_local_job_is_found_after_switching_to_slurm(tmp_path, monkeypatch, generated_data):
    """A run launched with the local executor, relaunched with SLURM: its live local job is looked up among
    processes (by its tag), not in squeue, so it is adopted, not submitted again; once it is gone, it is."""
    import subprocess
    import time

    from sbatch_stub import stand_in_sbatch

    from slurm.scheduler import TAG_ENV

    kept = stand_in_sbatch(tmp_path / "bin")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    g = generated_data.parent
    job = {
        "protocol": "knn",
        "preset": "knn-cifar10-small",
        "name": "knn",
        "overrides": [f"train={g / 'train'}", f"val={g / 'val'}", "num_workers=0"],
    }
    (tmp_path / "suite.yaml").write_text(yaml.safe_dump({"name": "s", "jobs": [job]}))
    suite, run = load_suite(str(tmp_path / "suite.yaml")), tmp_path / "run"
    (p,) = Launcher(run, "local", dry_run=True).suite(suite, "random")
    sleeper = subprocess.Popen(["sleep", "60"], env={**os.environ, TAG_ENV: "swavbench-local1"})
    try:
        entry = {
            "name": p.name,
            "kind": "eval",
            "out_dir": p.out_dir,
            "job_id": str(sleeper.pid),
            "tag": "swavbench-local1",
            "executor": "local",
            "submitted_at": time.time(),
        }
        run.mkdir()
        (run / "launch.json").write_text(json.dumps({"jobs": {p.key: entry}}))
        with Launcher(run, "slurm") as launcher:
            (again,) = launcher.suite(suite, "random")
        assert again.action == "live" and again.job_id == str(sleeper.pid) and not list(kept.iterdir())
    finally:
        sleeper.kill()
        sleeper.wait()
    with Launcher(run, "slurm") as launcher:
        (again,) = launcher.suite(suite, "random")
    assert again.action == "submitted" and len(list(kept.iterdir())) == 1


def test_preflight_checks_time_and_memory_against_the_partition():
    """A job asking more time than the partition's MaxTime (the paper suite asks 48-72 h; many clusters
    cap at 24-48 h) or more memory than its nodes have would stay PENDING forever: said before submission."""
    from slurm.preflight import Preflight, parse_sinfo, slurm_minutes
    from slurm.suite import Resources

    limits = ("infinite", "2-00:00:00", "1:00:00", "30:00", "45", "1-12", "1-12:30")
    assert [slurm_minutes(t) for t in limits] == [0, 2880, 60, 30, 45, 2160, 2190]
    parts = parse_sinfo("gpu*|96|gpu:a100:8|(null)|2-00:00:00|512000\ncpu|64|(null)|(null)|infinite|256000\n")
    assert (parts["gpu"].max_time_min, parts["gpu"].mem_mb, parts["cpu"].max_time_min) == (2880, 512000, 0)
    check = Preflight("slurm")
    check.resources = [
        ("long", Resources(gpus=8, cpus=80, mem_gb=400, time_min=4320)),
        ("fat", Resources(gpus=8, cpus=80, mem_gb=600, time_min=600)),
        ("fine", Resources(gpus=8, cpus=80, mem_gb=400, time_min=2880)),
        ("cpu", Resources(partition="cpu", cpus=8, mem_gb=64, time_min=10000)),
    ]
    check.cluster_fit(parts)
    assert len(check.errors) == 2, check.errors
    assert check.errors[0].startswith("long: asks 4320 min; partition gpu allows at most 2880 (MaxTime)")
    assert "set resources.piece_min: 2880 to run it in pieces" in check.errors[0]
    assert check.errors[1].startswith("fat: asks 600 GB per node; the largest node of partition gpu has 500")
    check = Preflight("slurm")  # the cluster file's partition is checked as the job would be submitted
    check.resources = [("site", Resources(cpus=8, mem_gb=64)), ("own", Resources(partition="cpu", cpus=8))]
    check.cluster_fit(parts, site_partition="gpu-old")
    assert check.errors == [
        "site: partition gpu-old not found; the cluster has cpu, gpu (fix partition in the cluster file "
        "(slurm.site))"
    ]
    check = Preflight("slurm")
    check.resources = [("site", Resources(cpus=80, gpus=8, mem_gb=64))]
    check.cluster_fit(parts, site_partition="cpu")  # not the default gpu partition: cpu has no GPUs
    assert check.errors and check.errors[0].startswith("site: asks 80 CPUs and 8 GPUs per node")
    check = Preflight("slurm")  # the 72 h job in pieces of 24 h: each submission fits
    check.resources = [("long", Resources(gpus=8, cpus=80, mem_gb=400, time_min=4320, piece_min=1440))]
    check.cluster_fit(parts)
    assert check.errors == []


def test_a_job_longer_than_the_partition_allows_runs_in_pieces_over_requeues(tmp_path, monkeypatch):
    """Issue #34 item 7: a 72 h pretraining with piece_min 24 h asks 24 h per submission and may be requeued
    twice more than max_requeues (the pieces), in its sbatch script and in the job it runs."""
    import pickle

    from sbatch_stub import directives, stand_in_sbatch

    from slurm.suite import Resources

    kept = stand_in_sbatch(tmp_path / "bin")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    run = tmp_path / "run"
    res = Resources(cpus=1, mem_gb=1, time_min=4320, piece_min=1440)
    with Launcher(run, "slurm", max_requeues=3) as launcher:
        (p,) = [
            j
            for j in launcher.pipeline("tiny", [], load_suite("cpu-small"), resources=res)
            if j.kind == "pretrain"
        ]
    assert "time=4320min in 3 pieces of 1440min" in p.resources
    script = (kept / "0.sh").read_text()
    assert directives(script)["time"] == "1440" and "requeue" in directives(script)
    submitted = run / "submitit" / p.job_id / f"{p.job_id}_submitted.pkl"
    assert pickle.loads(submitted.read_bytes()).function.max_requeues == 3 + 2


def test_an_evaluation_refuses_a_checkpoint_other_than_the_one_it_was_launched_for(tmp_path, generated_data):
    """Each evaluation job carries its checkpoint's identity: a replaced file, a pretraining folder re-run
    under another configuration, or a pretraining not finished (a --force re-run in flight) is refused
    before anything is evaluated."""
    import torch

    from benchmark.trunk import sha256_of
    from slurm.launch import CheckpointMismatch, EvalJob, check_identity

    trunk = tmp_path / "trunk.pth"
    torch.save({"conv1.weight": torch.zeros(1)}, trunk)
    launched = {"sha256": sha256_of(trunk)}
    check_identity(str(trunk), launched)
    torch.save({"conv1.weight": torch.ones(1)}, trunk)  # replaced after the launch
    job = EvalJob(
        "knn",
        "knn-cifar10-small",
        [],
        seed=0,
        checkpoint=str(trunk),
        out_dir=str(tmp_path / "e"),
        expect=launched,
    )
    with pytest.raises(CheckpointMismatch, match="the file was replaced"):
        job()
    assert not (tmp_path / "e").exists()  # nothing ran
    run = tmp_path / "pretrain"
    run.mkdir()
    (run / "settings.json").write_text(json.dumps({"key": "k1", "settings": {}}))
    torch.save({"epoch": 1, "iteration": 10}, run / "checkpoint.pth")
    final = {"key": "k1", "epochs": 2, "max_iters": 0}
    with pytest.raises(CheckpointMismatch, match="at epoch 1 of 2"):
        check_identity(str(run / "checkpoint.pth"), final)
    torch.save({"epoch": 2, "iteration": 20}, run / "checkpoint.pth")
    check_identity(str(run / "checkpoint.pth"), final)
    with pytest.raises(CheckpointMismatch, match="names another pretraining configuration"):
        check_identity(str(run / "checkpoint.pth"), {**final, "key": "k0"})
    with pytest.raises(CheckpointMismatch, match="from epoch 2, the job evaluates 1"):
        check_identity(str(run / "checkpoint.pth"), {"key": "k1", "epoch": 1})


def test_arrays_are_split_at_the_clusters_max_array_size(tmp_path, monkeypatch):
    """A group of jobs asking the same resources is one array, but never more tasks than MaxArraySize
    (sbatch rejects it): 5 jobs on a cluster of MaxArraySize 3 are arrays of 3 and 2."""
    from sbatch_stub import directives, stand_in_sbatch

    kept = stand_in_sbatch(tmp_path / "bin")
    scontrol = tmp_path / "bin" / "scontrol"
    scontrol.write_text('#!/bin/sh\necho "MaxArraySize            = 3"\necho "MaxJobCount = 10000"\n')
    scontrol.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    job = {
        "protocol": "knn",
        "preset": "knn-cifar10-small",
        "name": "knn",
        "seeds": [0, 1, 2, 3, 4],
        "resources": {"cpus": 1, "mem_gb": 1, "time_min": 10},
    }
    (tmp_path / "suite.yaml").write_text(yaml.safe_dump({"name": "s", "jobs": [job]}))
    with Launcher(tmp_path / "run", "slurm") as launcher:
        planned = launcher.suite(load_suite(str(tmp_path / "suite.yaml")), "random")
    assert [p.action for p in planned] == ["submitted"] * 5
    arrays = [directives(p.read_text())["array"] for p in sorted(kept.iterdir(), key=lambda p: int(p.stem))]
    assert arrays == ["0-2%3", "0-1%2"], arrays
    state = json.loads((tmp_path / "run" / "launch.json").read_text())["jobs"]
    assert sorted(j["task"] for j in state.values()) == [0, 0, 1, 1, 2]  # each job's index in its array


def test_the_launch_lease_holds_across_hosts_where_flock_does_not(tmp_path, monkeypatch, capsys):
    """Issue #34 item 2. flock is node-local on Lustre localflock, BeeGFS and NFS local_lock (simulated: it
    always succeeds) and raises ENOSYS on Lustre noflock: a launcher on another host still holds the run,
    a second one is refused naming it, and a lease whose heartbeat stopped is taken over."""
    import errno
    import fcntl
    import socket
    import time

    from slurm import lease
    from slurm.launch import LaunchBusy

    monkeypatch.setattr(fcntl, "flock", lambda *a: None)  # every host "gets" the lock
    run = tmp_path / "run"
    run.mkdir()
    with monkeypatch.context() as m:  # the launcher of another login node
        m.setattr(socket, "gethostname", lambda: "login2")
        other = lease.acquire(run / ".launch.lease", wait_s=0)
    busy = rf"launched by pid {os.getpid()} on login2 .*taken over 120 s after"
    with pytest.raises(LaunchBusy, match=busy):
        Launcher(run, "local", lock_wait_s=1)

    def noflock(*a):
        raise OSError(errno.ENOSYS, "Function not implemented")

    monkeypatch.setattr(fcntl, "flock", noflock)
    other._stop.set()  # its host crashed: the heartbeat stops; 200 s later it is stale
    held = json.loads((run / ".launch.lease").read_text())
    (run / ".launch.lease").write_text(json.dumps({**held, "beat": time.time() - 200}))
    with Launcher(run, "local", lock_wait_s=1) as mine:
        assert "took over the stale lease" in capsys.readouterr().out
        assert not other.renew() and other.lost  # the old holder learns it lost the run
        assert json.loads((run / ".launch.lease").read_text())["host"] == socket.gethostname()
        assert mine.state == {"jobs": {}}
    assert not (run / ".launch.lease").exists()  # released with the launcher


def test_status_of_a_200_job_sweep_asks_the_scheduler_once_and_calls_node_failure_interrupted(
    tmp_path, monkeypatch
):
    """Issue #34 item 16: one squeue and one sacct for all 200 jobs (before: one to three sacct calls per
    job), and a job the cluster ended (NODE_FAIL, PREEMPTED) reads 'interrupted' with the fix."""
    from slurm.status import job_table

    bin_dir, calls = tmp_path / "bin", tmp_path / "calls"
    bin_dir.mkdir()
    (bin_dir / "squeue").write_text(f"#!/bin/sh\necho squeue >> {calls}\nexit 0\n")
    (bin_dir / "sacct").write_text(
        f"#!/bin/sh\necho sacct >> {calls}\n"
        "for i in $(seq 6000 6199); do s=COMPLETED\n"
        "[ $i = 6007 ] && s=NODE_FAIL; [ $i = 6008 ] && s=PREEMPTED\n"
        'echo "$i|$s|00:01:00"; done\n'
    )
    for f in ("squeue", "sacct"):
        (bin_dir / f).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    run = tmp_path / "run"
    jobs = {
        f"k{i}": {
            "name": f"j{i}",
            "kind": "eval",
            "job_id": str(6000 + i),
            "executor": "slurm",
            "out_dir": str(run / "evals" / f"j{i}"),
            "tag": f"t{i}",
        }
        for i in range(200)
    }
    run.mkdir()
    (run / "launch.json").write_text(json.dumps({"jobs": jobs}))
    rows = {r["name"]: r for r in job_table(run)}
    assert sorted(calls.read_text().split()) == ["sacct", "squeue"]
    assert rows["j7"]["state"] == rows["j8"]["state"] == "interrupted"
    assert "SLURM NODE_FAIL" in rows["j7"]["result"] and "launch again" in rows["j7"]["result"]
    assert rows["j0"]["state"] == "done" and rows["j0"]["elapsed"] == "00:01:00"
